// `--constrain reference` against a straightforward re-implementation of the original Needle
// constrained decoder (needle/model/constrained.py: ToolConstraints, JsonStateMachine,
// build_token_strings, apply_constraints, ConstrainedDecoder.constrain_logits), written here
// independently of lib/decode. The model below keeps no incremental state: at every step it
// re-runs the original's character state machine over the whole text generated so far (the
// original's `buffer`, whole, with its `endswith` checks and backward scan), then checks every
// token id of the vocabulary against the trie, as the original's per-token check does.
//
// Compared over the e2e fixtures (tokenizer e2e_tok.model, goldens.jsonl): the masks of
// decode::make_reference_constraint and of the model must be equal, id by id, at every step
// of the golden id sequences (f32 and bf16 constrained, f32 free), of seeded random walks over
// the goldens' tool sets, and of walks that replace a golden span-opening token (to reach
// spans opened mid-token, off-trie buffers and unknown function names).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdio>
#include <map>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "decode/constraint.h"
#include "decode/constraint_reference.h"
#include "decode/constraint_text.h"
#include "eval/jsonl.h"
#include "fixtures.h"
#include "text/json.h"
#include "text/tokenizer.h"
#include "text/tools.h"

using namespace needle;

namespace {

// ---- Python strings: sequences of code points ---------------------------------------------

std::u32string utf8_to_chars(const std::string& s) {
  std::u32string out;
  size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<unsigned char>(s[i]);
    int len = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : (b >> 3) == 0x1E ? 4 : 0;
    if (len == 0 || i + static_cast<size_t>(len) > s.size()) {
      out.push_back(b);  // not expected in SentencePiece pieces; keep the byte's value
      ++i;
      continue;
    }
    char32_t c = len == 1 ? b : len == 2 ? (b & 0x1F) : len == 3 ? (b & 0x0F) : (b & 0x07);
    for (int k = 1; k < len; ++k) c = (c << 6) | (static_cast<unsigned char>(s[i + static_cast<size_t>(k)]) & 0x3F);
    out.push_back(c);
    i += static_cast<size_t>(len);
  }
  return out;
}

std::string chars_to_utf8(const std::u32string& s) {
  std::string out;
  for (char32_t c : s) {
    if (c < 0x80) {
      out += static_cast<char>(c);
    } else if (c < 0x800) {
      out += static_cast<char>(0xC0 | (c >> 6));
      out += static_cast<char>(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
      out += static_cast<char>(0xE0 | (c >> 12));
      out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (c & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (c >> 18));
      out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (c & 0x3F));
    }
  }
  return out;
}

bool ends_with(const std::u32string& s, const std::u32string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// build_token_strings: control and unknown ids "", byte pieces chr(byte), others the piece
// with U+2581 replaced by a space (user-defined symbols keep their spelling).
std::vector<std::u32string> token_strings(const text::Tokenizer& tok) {
  std::vector<std::u32string> out;
  for (int i = 0; i < tok.vocab_size(); ++i) {
    const auto kind = tok.kind(i);
    if (kind == text::PieceKind::Control || kind == text::PieceKind::Unknown) {
      out.emplace_back();
    } else if (kind == text::PieceKind::Byte) {
      const int v = text::byte_piece_value(tok.piece(i));
      out.push_back(v < 0 ? std::u32string() : std::u32string(1, static_cast<char32_t>(v)));
    } else {
      std::u32string s = utf8_to_chars(tok.piece(i));
      for (auto& c : s)
        if (c == U'\u2581') c = U' ';
      out.push_back(std::move(s));
    }
  }
  return out;
}

// ---- Trie / ToolConstraints ---------------------------------------------------------------

struct Trie {
  struct Node {
    std::map<char32_t, int> children;
    bool is_terminal = false;
  };
  std::vector<Node> nodes = std::vector<Node>(1);

  void insert(const std::u32string& word) {
    int n = 0;
    for (char32_t ch : word) {
      auto it = nodes[static_cast<size_t>(n)].children.find(ch);
      if (it == nodes[static_cast<size_t>(n)].children.end()) {
        nodes.emplace_back();
        const int child = static_cast<int>(nodes.size()) - 1;
        nodes[static_cast<size_t>(n)].children[ch] = child;
        n = child;
      } else {
        n = it->second;
      }
    }
    nodes[static_cast<size_t>(n)].is_terminal = true;
  }
  // -1 = None
  int get_node(const std::u32string& prefix) const {
    int n = 0;
    for (char32_t ch : prefix) {
      const auto& kids = nodes[static_cast<size_t>(n)].children;
      auto it = kids.find(ch);
      if (it == kids.end()) return -1;
      n = it->second;
    }
    return n;
  }
};

struct ToolConstraints {
  Trie name_trie;
  std::map<std::u32string, Trie> param_tries;

  explicit ToolConstraints(const std::string& tools_json) {
    auto parsed = json::parse(tools_json);
    if (!parsed.is_ok() || !parsed->is_array()) return;  // tools = []
    for (const auto& tool : parsed->array) {
      if (!tool.is_object()) continue;
      const json::Value* name = tool.find("name");
      // `if not name: continue`; a non-string name would make the original raise (documented:
      // skipped).
      if (name == nullptr || !name->is_string() || name->text.empty()) continue;
      const std::u32string uname = utf8_to_chars(name->text);
      name_trie.insert(uname);
      json::Value empty_params = json::Value::make_object();
      const json::Value* params = tool.find("parameters");
      if (params == nullptr) params = &empty_params;
      if (!params->is_object()) continue;
      Trie param_trie;
      const json::Value* props = params->find("properties");
      if (props == nullptr) props = params;
      if (props->is_object()) {
        for (const auto& [k, v] : props->object)
          if (!k.empty()) param_trie.insert(utf8_to_chars(k));
      } else if (props->is_array()) {
        for (const auto& e : props->array)
          if (e.is_string() && !e.text.empty()) param_trie.insert(utf8_to_chars(e.text));
      } else if (props->is_string()) {
        for (char32_t c : utf8_to_chars(props->text)) param_trie.insert(std::u32string(1, c));
      }
      param_tries[uname] = std::move(param_trie);
    }
  }
  const Trie* get_param_trie(const std::u32string& fn) const {
    auto it = param_tries.find(fn);
    return it == param_tries.end() ? nullptr : &it->second;
  }
};

// ---- JsonStateMachine, re-run from scratch over the whole text -----------------------------

enum class JsonState { FREE, IN_NAME, IN_ARG_KEY };

const char* state_name(JsonState s) {
  return s == JsonState::FREE ? "FREE" : s == JsonState::IN_NAME ? "IN_NAME" : "IN_ARG_KEY";
}

struct Machine {
  JsonState state = JsonState::FREE;
  std::u32string buffer;
  std::u32string constrained_buf;
  std::u32string current_function;
  bool in_arguments = false;
  int arguments_depth = 0;
  int nesting_depth = 0;
  bool in_string = false;
  bool prev_char_escape = false;

  void feed(const std::u32string& text) {
    for (char32_t ch : text) feed_char(ch);
  }

  void feed_char(char32_t ch) {
    if (state == JsonState::IN_NAME || state == JsonState::IN_ARG_KEY) {
      if (ch == U'"') {
        if (state == JsonState::IN_NAME) current_function = constrained_buf;
        constrained_buf.clear();
        state = JsonState::FREE;
      } else {
        constrained_buf += ch;
      }
      buffer += ch;
      return;
    }
    buffer += ch;
    if (in_string) {
      if (prev_char_escape) {
        prev_char_escape = false;
        return;
      }
      if (ch == U'\\') {
        prev_char_escape = true;
        return;
      }
      if (ch == U'"') in_string = false;
      return;
    }
    if (ch == U'{' || ch == U'[') {
      nesting_depth += 1;
    } else if (ch == U'}' || ch == U']') {
      nesting_depth = std::max(0, nesting_depth - 1);
      if (ch == U'}' && in_arguments && nesting_depth < arguments_depth) in_arguments = false;
      return;
    }
    if (ends_with(buffer, U"\"name\":\"") && !in_arguments) {
      state = JsonState::IN_NAME;
      constrained_buf.clear();
      return;
    }
    if (ends_with(buffer, U"\"arguments\":{")) {
      in_arguments = true;
      arguments_depth = nesting_depth;
      return;
    }
    if (in_arguments && nesting_depth == arguments_depth && at_arg_key_start()) {
      state = JsonState::IN_ARG_KEY;
      constrained_buf.clear();
      return;
    }
    if (ch == U'"' && is_value_quote()) in_string = true;
  }

  bool at_arg_key_start() const {
    if (buffer.size() < 2) return false;
    const std::u32string last2 = buffer.substr(buffer.size() - 2);
    return last2 == U"{\"" || last2 == U",\"";
  }

  bool is_value_quote() const {
    for (long j = static_cast<long>(buffer.size()) - 2; j >= 0; --j) {
      const char32_t c = buffer[static_cast<size_t>(j)];
      if (c == U' ' || c == U'\t' || c == U'\n' || c == U'\r') continue;
      return c == U':';
    }
    return false;
  }
};

// _check_token_valid
bool check_token_valid(const std::u32string& text, const Trie& trie, int node) {
  for (char32_t ch : text) {
    const auto& n = trie.nodes[static_cast<size_t>(node)];
    if (ch == U'"') return n.is_terminal;
    auto it = n.children.find(ch);
    if (it == n.children.end()) return false;
    node = it->second;
  }
  return true;
}

// constrain_logits + apply_constraints as a mask over the whole vocabulary, for the text
// generated so far (the machine is rebuilt from that text).
struct ModelMask {
  std::vector<uint8_t> mask;
  Machine machine;
  const char* why = "";  // which branch decided
};

ModelMask model_mask(const ToolConstraints& tc, const std::vector<std::u32string>& strings,
                     const std::u32string& text_so_far) {
  ModelMask r;
  r.machine.feed(text_so_far);
  const size_t n = strings.size();
  auto all = [&](const char* why) {
    r.mask.assign(n, 1);
    r.why = why;
    return r;
  };
  const Machine& m = r.machine;
  if (m.state == JsonState::FREE) return all("free");
  const Trie* trie = nullptr;
  if (m.state == JsonState::IN_NAME) {
    trie = &tc.name_trie;
  } else {
    trie = tc.get_param_trie(m.current_function);
    if (trie == nullptr) return all("no key trie");
  }
  const int node = trie->get_node(m.constrained_buf);
  if (node < 0) return all("off-trie");
  r.mask.assign(n, 0);
  bool any = false;
  for (size_t id = 0; id < n; ++id) {
    if (strings[id].empty()) continue;  // TokenIndex skips empty strings
    if (check_token_valid(strings[id], *trie, node)) {
      r.mask[id] = 1;
      any = true;
    }
  }
  if (!any) return all("nothing allowed");
  r.why = "trie";
  return r;
}

// ---- The comparison -------------------------------------------------------------------------

struct Fixture {
  text::Tokenizer tok;
  std::shared_ptr<const decode::TokenIndex> index;
  std::vector<std::u32string> strings;
};

struct Example {
  int no = 0;  // 1-based line order in goldens.jsonl
  std::string tools_json;  // model_json(): what the generator gives the reference engine
  std::vector<std::vector<int>> id_lists;  // f32_constrained_ids, bf16_constrained_ids, f32_free_ids
};

std::string show(const Fixture& f, int id) {
  std::ostringstream o;
  o << id << " '" << chars_to_utf8(f.strings[static_cast<size_t>(id)]) << "'";
  return o.str();
}

struct Tally {
  long steps = 0;          // masks compared
  long constrained = 0;    // ... of which the model's mask was not "everything"
  long fallback_steps = 0; // ... in a span but everything allowed (off-trie, no trie, nothing)
  long mismatches = 0;     // steps where the masks differ
  long done_mismatches = 0;
  std::map<std::string, long> why;  // the model's deciding branch, per compared step
  long outside = 0;        // golden tokens of constrained decoding outside the mask
  std::vector<std::string> reports;
};

// Compares the masks for the text so far; returns the engine's mask.
void compare_step(const Fixture& f, const ToolConstraints& tc, decode::Constraint& c,
                  const std::u32string& text, const std::string& where, std::vector<uint8_t>& ours, Tally& t) {
  const ModelMask mm = model_mask(tc, f.strings, text);
  c.allowed(ours);
  ++t.steps;
  ++t.why[mm.why];
  const bool everything = std::all_of(mm.mask.begin(), mm.mask.end(), [](uint8_t v) { return v != 0; });
  if (!everything) ++t.constrained;
  if (everything && mm.machine.state != JsonState::FREE) ++t.fallback_steps;
  const bool done_expected = mm.machine.state == JsonState::FREE;
  if (c.done() != done_expected) ++t.done_mismatches;
  std::vector<int> only_ours, only_model;
  for (size_t id = 0; id < mm.mask.size(); ++id) {
    const bool a = id < ours.size() && ours[id] != 0, b = mm.mask[id] != 0;
    if (a && !b) only_ours.push_back(static_cast<int>(id));
    if (b && !a) only_model.push_back(static_cast<int>(id));
  }
  if (ours.size() != mm.mask.size() || !only_ours.empty() || !only_model.empty()) {
    ++t.mismatches;
    if (t.reports.size() < 20) {
      std::ostringstream o;
      o << where << ": text so far '" << chars_to_utf8(text) << "', model state "
        << state_name(mm.machine.state) << " (" << mm.why << ") buf '" << chars_to_utf8(mm.machine.constrained_buf)
        << "' fn '" << chars_to_utf8(mm.machine.current_function) << "'; mask sizes " << ours.size() << "/"
        << mm.mask.size() << "; allowed only by ours (" << only_ours.size() << "):";
      for (size_t i = 0; i < std::min<size_t>(only_ours.size(), 8); ++i) o << " [" << show(f, only_ours[i]) << "]";
      o << "; allowed only by the model (" << only_model.size() << "):";
      for (size_t i = 0; i < std::min<size_t>(only_model.size(), 8); ++i) o << " [" << show(f, only_model[i]) << "]";
      t.reports.push_back(o.str());
    }
  }
}

std::unique_ptr<decode::Constraint> make_ours(const Fixture& f, const std::string& tools_json) {
  auto c = decode::make_reference_constraint(f.index, decode::reference_tools_from_json(tools_json));
  INFO(c.message());
  REQUIRE(c.is_ok());
  return std::move(c).value();
}

// Walks `ids` (stops at EOS or at a token outside the mask), comparing masks before every token.
void walk_ids(const Fixture& f, const ToolConstraints& tc, const std::string& tools_json, const std::vector<int>& ids,
              const std::string& label, bool must_be_allowed, Tally& t) {
  auto c = make_ours(f, tools_json);
  std::u32string text;
  std::vector<uint8_t> ours;
  for (size_t step = 0; step < ids.size(); ++step) {
    const int id = ids[step];
    if (id == text::kEosId) break;
    std::ostringstream where;
    where << label << " step " << step << " (next token " << show(f, id) << ")";
    compare_step(f, tc, *c, text, where.str(), ours, t);
    if (!ours[static_cast<size_t>(id)]) {  // outside the mask (free-decoding ids): stop here
      if (must_be_allowed) {
        ++t.outside;
        t.reports.push_back(where.str() + ": the golden token is outside the mask");
      }
      break;
    }
    auto st = c->advance(id);
    if (!st.is_ok()) {
      ++t.mismatches;
      t.reports.push_back(where.str() + ": advance rejected an allowed token: " + st.message());
      break;
    }
    text += f.strings[static_cast<size_t>(id)];
  }
}

bool structural(const std::u32string& s) {
  for (char32_t ch : s)
    if (ch == U'"' || ch == U'{' || ch == U'}' || ch == U'[' || ch == U']' || ch == U',' || ch == U':' || ch == U'\\')
      return true;
  return false;
}

// Follows `prefix` for `k` tokens, then picks random allowed tokens (seeded) for up to
// `steps` steps, comparing masks at every step. When everything is allowed, a quarter of the
// picks are tokens with JSON punctuation and a quarter tokens with a '"' followed by more text
// (a span opened mid-token), so that spans open and close often, also off the trie.
void random_walk(const Fixture& f, const ToolConstraints& tc, const std::string& tools_json,
                 const std::vector<int>& prefix, size_t k, int steps, std::mt19937& rng,
                 const std::vector<int>& structural_ids, const std::vector<int>& quote_ids,
                 const std::string& label, Tally& t) {
  auto c = make_ours(f, tools_json);
  std::u32string text;
  for (size_t i = 0; i < k && i < prefix.size(); ++i) {
    if (prefix[i] == text::kEosId || !c->advance(prefix[i]).is_ok()) return;
    text += f.strings[static_cast<size_t>(prefix[i])];
  }
  std::vector<uint8_t> ours;
  std::vector<int> cand;
  for (int step = 0; step < steps; ++step) {
    std::ostringstream where;
    where << label << " (golden prefix " << k << ") random step " << step;
    const long before = t.mismatches;
    compare_step(f, tc, *c, text, where.str(), ours, t);
    if (t.mismatches != before) return;  // the walk's state is in doubt from here
    const bool free_all = std::all_of(ours.begin(), ours.end(), [](uint8_t v) { return v != 0; });
    cand.clear();
    const unsigned roll = rng() % 4;
    if (free_all && roll == 0) {
      cand = structural_ids;
    } else if (free_all && roll == 1) {
      cand = quote_ids;
    } else {
      for (size_t id = 0; id < ours.size(); ++id)
        if (ours[id] && static_cast<int>(id) != text::kEosId) cand.push_back(static_cast<int>(id));
    }
    if (cand.empty()) return;
    const int id = cand[std::uniform_int_distribution<size_t>(0, cand.size() - 1)(rng)];
    auto st = c->advance(id);
    if (!st.is_ok()) {
      ++t.mismatches;
      t.reports.push_back(where.str() + ": advance rejected an allowed token " + show(f, id) + ": " + st.message());
      return;
    }
    text += f.strings[static_cast<size_t>(id)];
  }
}

// At golden step `i` (where the golden opens a span), substitutes `subst` for the golden token,
// then follows the golden again (a random allowed token where the golden's is not allowed) for
// up to `steps` steps, comparing masks at every step: spans opened mid-token with text after
// the quote, off-trie buffers, unknown names (no key trie).
void mutation_walk(const Fixture& f, const ToolConstraints& tc, const std::string& tools_json,
                   const std::vector<int>& g, size_t i, const std::vector<int>& subst, int steps, std::mt19937& rng,
                   const std::string& label, Tally& t) {
  auto c = make_ours(f, tools_json);
  std::u32string text;
  for (size_t k = 0; k < i; ++k) {
    if (!c->advance(g[k]).is_ok()) return;
    text += f.strings[static_cast<size_t>(g[k])];
  }
  std::vector<uint8_t> ours;
  std::vector<int> cand;
  for (int step = 0; step <= steps; ++step) {
    std::ostringstream where;
    where << label << " (golden step " << i << " replaced by";
    for (int q : subst) where << " [" << show(f, q) << "]";
    where << ") step " << step;
    const long before = t.mismatches;
    compare_step(f, tc, *c, text, where.str(), ours, t);
    if (t.mismatches != before || step == steps) return;
    int id = 0;
    if (static_cast<size_t>(step) < subst.size()) {
      id = subst[static_cast<size_t>(step)];
    } else {
      const size_t gi = i + 1 + static_cast<size_t>(step) - subst.size();
      id = gi < g.size() ? g[gi] : text::kEosId;
      if (id == text::kEosId || !ours[static_cast<size_t>(id)]) {
        cand.clear();
        for (size_t k = 0; k < ours.size(); ++k)
          if (ours[k] && static_cast<int>(k) != text::kEosId) cand.push_back(static_cast<int>(k));
        if (cand.empty()) return;
        id = cand[std::uniform_int_distribution<size_t>(0, cand.size() - 1)(rng)];
      }
    }
    if (!ours[static_cast<size_t>(id)]) return;
    auto st = c->advance(id);
    if (!st.is_ok()) {
      ++t.mismatches;
      t.reports.push_back(where.str() + ": advance rejected an allowed token " + show(f, id) + ": " + st.message());
      return;
    }
    text += f.strings[static_cast<size_t>(id)];
  }
}

std::optional<Fixture> load_fixture() {
  if (!fixtures::exists(fixtures::shared("e2e/e2e_tok.model")) ||
      !fixtures::exists(fixtures::shared("e2e/goldens.jsonl")))
    return std::nullopt;
  auto tok = text::Tokenizer::from_file(fixtures::shared("e2e/e2e_tok.model"));
  INFO(tok.message());
  REQUIRE(tok.is_ok());
  Fixture f;
  f.tok = std::move(tok).value();
  auto idx = decode::TokenIndex::build(decode::vocab_from_tokenizer(f.tok));
  INFO(idx.message());
  REQUIRE(idx.is_ok());
  f.index = std::move(idx).value();
  f.strings = token_strings(f.tok);
  REQUIRE(f.strings.size() == f.index->size());
  return f;
}

std::vector<Example> load_examples() {
  auto reader = eval::JsonlReader::open(fixtures::shared("e2e/goldens.jsonl"));
  INFO(reader.message());
  REQUIRE(reader.is_ok());
  std::vector<Example> out;
  eval::JsonlLine line;
  while (reader->next(line)) {
    Example e;
    e.no = static_cast<int>(out.size()) + 1;
    const json::Value* tools_text = line.value.find("tools");
    REQUIRE(tools_text != nullptr);
    auto tools = text::parse_tools(tools_text->text);
    INFO(tools.message());
    REQUIRE(tools.is_ok());
    e.tools_json = tools->model_json();
    for (const char* key : {"f32_constrained_ids", "bf16_constrained_ids", "f32_free_ids"}) {
      std::vector<int> ids;
      if (const json::Value* v = line.value.find(key))
        for (const auto& x : v->array) ids.push_back(static_cast<int>(x.number));
      e.id_lists.push_back(std::move(ids));
    }
    out.push_back(std::move(e));
  }
  REQUIRE(reader->errors().empty());
  return out;
}

void report(const Tally& t, const char* what) {
  std::printf("[refmask] %s: %ld masks compared, %ld constrained, %ld span steps falling back to everything, "
              "%ld mismatching steps, %ld done() mismatches, %ld constrained golden tokens outside the mask\n",
              what, t.steps, t.constrained, t.fallback_steps, t.mismatches, t.done_mismatches, t.outside);
  std::printf("[refmask]   by the model's branch:");
  for (const auto& [k, v] : t.why) std::printf(" %s %ld;", k.c_str(), v);
  std::printf("\n");
  for (const auto& r : t.reports) std::printf("[refmask]   %s\n", r.c_str());
}

}  // namespace

TEST_CASE("refmask: the model's token strings are the reference engine's character view", "[refmask]") {
  auto f = load_fixture();
  if (!f) {
    WARN("SKIPPED: shared e2e fixtures not present");
    return;
  }
  int differ = 0;
  for (size_t id = 0; id < f->strings.size(); ++id)
    if (f->strings[id] != f->index->chars(static_cast<int>(id))) {
      if (differ < 5) {
        INFO("id " << id << " piece " << f->tok.piece(static_cast<int>(id)));
        CHECK(chars_to_utf8(f->strings[id]) == chars_to_utf8(f->index->chars(static_cast<int>(id))));
      }
      ++differ;
    }
  CHECK(differ == 0);
  // The user-defined symbol is seen as its spelling, a byte piece as one Latin-1 character.
  CHECK(f->strings[text::kToolCallId] == U"<tool_call>");
  CHECK(f->strings[text::kEosId].empty());
}

TEST_CASE("refmask: reference masks equal the re-implemented original on the golden sequences", "[refmask]") {
  auto f = load_fixture();
  if (!f) {
    WARN("SKIPPED: shared e2e fixtures not present");
    return;
  }
  auto examples = load_examples();
  REQUIRE(!examples.empty());
  Tally golden, other, walks;
  for (const auto& e : examples) {
    const ToolConstraints tc(e.tools_json);
    walk_ids(*f, tc, e.tools_json, e.id_lists[0], "example " + std::to_string(e.no) + " f32_constrained_ids", true, golden);
    walk_ids(*f, tc, e.tools_json, e.id_lists[1], "example " + std::to_string(e.no) + " bf16_constrained_ids", true, other);
    walk_ids(*f, tc, e.tools_json, e.id_lists[2], "example " + std::to_string(e.no) + " f32_free_ids", false, other);
  }
  report(golden, "golden f32_constrained_ids");
  report(other, "golden bf16_constrained_ids + f32_free_ids");

  // Random walks over each example's tool set, from several points of its golden sequence.
  std::vector<int> structural_ids;
  for (size_t id = 0; id < f->strings.size(); ++id)
    if (static_cast<int>(id) != text::kEosId && structural(f->strings[id])) structural_ids.push_back(static_cast<int>(id));
  std::vector<int> quote_ids;
  for (size_t id = 0; id < f->strings.size(); ++id) {
    const auto& str = f->strings[id];
    const size_t q = str.find(U'"');
    if (q != std::u32string::npos && q + 1 < str.size()) quote_ids.push_back(static_cast<int>(id));
  }
  std::mt19937 rng(20240611);
  for (const auto& e : examples) {
    const ToolConstraints tc(e.tools_json);
    const auto& g = e.id_lists[0];
    // From the start, from four random points, and from just before and just after each
    // span the golden opens.
    std::vector<size_t> starts = {0};
    for (int r = 0; r < 4; ++r) starts.push_back(std::uniform_int_distribution<size_t>(0, g.size())(rng));
    {
      Machine m;
      for (size_t i = 0; i < g.size(); ++i) {
        const JsonState before = m.state;
        m.feed(f->strings[static_cast<size_t>(g[i])]);
        if (before == JsonState::FREE && m.state != JsonState::FREE) {
          starts.push_back(i);
          starts.push_back(i + 1);
        }
      }
    }
    for (size_t s = 0; s < starts.size(); ++s)
      random_walk(*f, tc, e.tools_json, g, starts[s], 60, rng, structural_ids, quote_ids,
                  "example " + std::to_string(e.no) + " walk " + std::to_string(s), walks);
  }
  report(walks, "random walks");

  // Mutations at every point where the golden opens a span (see below).
  Tally mutations;
  std::map<std::u32string, int> by_text;
  for (size_t id = 0; id < f->strings.size(); ++id)
    if (!f->strings[id].empty()) by_text.emplace(f->strings[id], static_cast<int>(id));
  for (const auto& e : examples) {
    const ToolConstraints tc(e.tools_json);
    const auto& g = e.id_lists[0];
    Machine m;
    for (size_t i = 0; i < g.size(); ++i) {
      const JsonState before = m.state;
      const std::u32string& open = f->strings[static_cast<size_t>(g[i])];
      m.feed(open);
      if (!(before == JsonState::FREE && m.state != JsonState::FREE)) continue;
      // The opening token's text split in two, A + B, A a token: A, then each token that
      // extends B (8 at most, e.g. `",` then `"x`: a span opened mid-token with text after
      // its quote); and 12 random tokens containing a '"' in place of the opening token.
      std::vector<std::vector<int>> substs;
      for (size_t k = 0; k < open.size(); ++k) {
        const std::u32string a = open.substr(0, k), b = open.substr(k);
        auto ia = by_text.find(a);
        if (k > 0 && ia == by_text.end()) continue;
        std::vector<int> ext;
        for (size_t id = 0; id < f->strings.size(); ++id)
          if (f->strings[id].size() > b.size() && f->strings[id].compare(0, b.size(), b) == 0)
            ext.push_back(static_cast<int>(id));
        std::shuffle(ext.begin(), ext.end(), rng);
        if (ext.size() > 8) ext.resize(8);
        for (int q : ext) substs.push_back(k > 0 ? std::vector<int>{ia->second, q} : std::vector<int>{q});
      }
      for (int r = 0; r < 12; ++r)
        substs.push_back({quote_ids[std::uniform_int_distribution<size_t>(0, quote_ids.size() - 1)(rng)]});
      for (const auto& q : substs)
        mutation_walk(*f, tc, e.tools_json, g, i, q, 10, rng, "example " + std::to_string(e.no), mutations);
    }
  }
  report(mutations, "mutation walks");

  INFO("first mismatches (golden): " << (golden.reports.empty() ? "" : golden.reports.front()));
  INFO("first mismatches (other ids): " << (other.reports.empty() ? "" : other.reports.front()));
  INFO("first mismatches (walks): " << (walks.reports.empty() ? "" : walks.reports.front()));
  INFO("first mismatches (mutations): " << (mutations.reports.empty() ? "" : mutations.reports.front()));
  CHECK(golden.steps > 0);
  CHECK(golden.constrained > 0);
  CHECK(golden.mismatches == 0);
  CHECK(other.mismatches == 0);
  CHECK(walks.mismatches == 0);
  CHECK(mutations.mismatches == 0);
  CHECK(mutations.why["off-trie"] > 0);
  CHECK(mutations.why["no key trie"] > 0);
  CHECK(golden.outside + other.outside == 0);
  CHECK(golden.done_mismatches + other.done_mismatches + walks.done_mismatches + mutations.done_mismatches == 0);
}
