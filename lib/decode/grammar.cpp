// The schema grammar: a pushdown automaton over bytes. One stack frame per open JSON
// construct; finite string sets (tool names, typed object keys, enums, true/false/null) are
// deterministic byte automata (LitDfa) that accept every member in each allowed encoding.
// Invariant: every state the grammar accepts can still be completed (no dead states), so
// masking tokens by "feeding their bytes succeeds" never leaves the model stuck.
#include "decode/grammar.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <map>

namespace needle::decode {

namespace {

// ---- Literal automata ------------------------------------------------------------------

// A unit of a literal: a code point inside a JSON string (encoded raw or escaped) or a fixed
// structural byte (kStruct + byte).
constexpr uint32_t kStruct = 0x200000;

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

void append_u_escape(std::string& out, uint32_t v) {
  static const char* hex = "0123456789abcdef";
  out += "\\u";
  for (int sh = 12; sh >= 0; sh -= 4) out.push_back(hex[(v >> sh) & 0xF]);
}

// The encodings we accept for one unit. For a string character: Python's escapes for '"',
// '\\' and controls; raw ASCII otherwise; non-ASCII raw UTF-8 or \uXXXX (lowercase hex,
// surrogate pairs above U+FFFF), as json.dumps writes with or without ensure_ascii.
// Second member: whether the encoding is raw multi-byte UTF-8.
std::vector<std::pair<std::string, bool>> encodings(uint32_t unit) {
  std::vector<std::pair<std::string, bool>> out;
  if (unit >= kStruct) {
    out.push_back({std::string(1, static_cast<char>(unit - kStruct)), false});
    return out;
  }
  std::string e;
  switch (unit) {
    case '"': e = "\\\""; break;
    case '\\': e = "\\\\"; break;
    case '\n': e = "\\n"; break;
    case '\r': e = "\\r"; break;
    case '\t': e = "\\t"; break;
    case '\b': e = "\\b"; break;
    case '\f': e = "\\f"; break;
    default:
      if (unit < 0x20) {
        append_u_escape(e, unit);
      } else if (unit < 0x80) {
        e.push_back(static_cast<char>(unit));
      } else {
        std::string raw;
        append_utf8(raw, unit);
        out.push_back({raw, true});
        if (unit < 0x10000) {
          append_u_escape(e, unit);
        } else {
          const uint32_t v = unit - 0x10000;
          append_u_escape(e, 0xD800 + (v >> 10));
          append_u_escape(e, 0xDC00 + (v & 0x3FF));
        }
      }
  }
  out.push_back({e, false});
  return out;
}

std::vector<uint32_t> content_units(std::string_view utf8) {
  std::vector<uint32_t> out;
  for (size_t i = 0; i < utf8.size();) {
    const auto b0 = static_cast<unsigned char>(utf8[i]);
    size_t n = b0 < 0x80 ? 1 : b0 < 0xE0 ? 2 : b0 < 0xF0 ? 3 : 4;
    if (i + n > utf8.size()) n = 1;
    uint32_t cp = n == 1 ? b0 : (b0 & (0x7Fu >> n));
    for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(utf8[i + k]) & 0x3F);
    out.push_back(cp);
    i += n;
  }
  return out;
}

std::vector<uint32_t> struct_units(std::string_view bytes) {
  std::vector<uint32_t> out;
  for (char c : bytes) out.push_back(kStruct + static_cast<unsigned char>(c));
  return out;
}

// Deterministic byte automaton accepting a finite set of literals (ids 0..n-1).
struct LitDfa {
  struct Node {
    uint32_t first = 0, n = 0;  // edges_[first, first + n)
    int32_t accept = -1;        // literal id ending here
    bool mid = false;           // inside a raw multi-byte UTF-8 character
  };
  std::vector<Node> nodes;
  std::vector<std::pair<uint8_t, int32_t>> edges;
  size_t words = 0;            // bitset words per node in `reach`
  std::vector<uint64_t> reach;  // literal ids reachable from each node (accept included)

  int32_t step(int32_t node, uint8_t b) const {
    const Node& nd = nodes[static_cast<size_t>(node)];
    for (uint32_t i = nd.first; i < nd.first + nd.n; ++i)
      if (edges[i].first == b) return edges[i].second;
    return -1;
  }
  // Some literal not yet in `used` is reachable from `node`.
  bool live(int32_t node, const uint64_t* used) const {
    const uint64_t* r = reach.data() + static_cast<size_t>(node) * words;
    for (size_t w = 0; w < words; ++w)
      if (r[w] & ~used[w]) return true;
    return false;
  }
};

class LitDfaBuilder {
 public:
  // Returns false if an equal literal was already added (the first id keeps it).
  bool add(const std::vector<uint32_t>& units, int id) {
    size_t n = 0;
    for (uint32_t u : units) {
      auto it = trie_[n].kids.find(u);
      if (it == trie_[n].kids.end()) {
        const size_t m = trie_.size();
        trie_[n].kids.emplace(u, m);
        trie_.emplace_back();
        n = m;
      } else {
        n = it->second;
      }
    }
    if (trie_[n].accept >= 0) return false;
    trie_[n].accept = id;
    ++count_;
    max_id_ = std::max(max_id_, id);
    return true;
  }

  LitDfa build() const {
    LitDfa d;
    std::vector<std::vector<std::pair<uint8_t, int32_t>>> out(1);
    std::vector<LitDfa::Node> nodes(1);
    std::vector<int32_t> dfa_of(trie_.size(), -1);
    dfa_of[0] = 0;
    auto new_node = [&](bool mid) {
      nodes.push_back({});
      nodes.back().mid = mid;
      out.emplace_back();
      return static_cast<int32_t>(nodes.size() - 1);
    };
    auto find_edge = [&](int32_t from, uint8_t b) -> int32_t {
      for (auto& e : out[static_cast<size_t>(from)])
        if (e.first == b) return e.second;
      return -1;
    };
    for (size_t t = 0; t < trie_.size(); ++t) {  // parents come before children
      const int32_t d0 = dfa_of[t];
      nodes[static_cast<size_t>(d0)].accept = trie_[t].accept;
      for (const auto& [unit, child] : trie_[t].kids) {
        const int32_t dc = new_node(false);
        dfa_of[child] = dc;
        for (const auto& [enc, raw] : encodings(unit)) {
          int32_t cur = d0;
          for (size_t k = 0; k + 1 < enc.size(); ++k) {
            const auto b = static_cast<uint8_t>(enc[k]);
            int32_t nx = find_edge(cur, b);
            if (nx < 0) {
              nx = new_node(raw);
              out[static_cast<size_t>(cur)].push_back({b, nx});
            }
            cur = nx;
          }
          out[static_cast<size_t>(cur)].push_back({static_cast<uint8_t>(enc.back()), dc});
        }
      }
    }
    for (size_t i = 0; i < nodes.size(); ++i) {
      nodes[i].first = static_cast<uint32_t>(d.edges.size());
      nodes[i].n = static_cast<uint32_t>(out[i].size());
      d.edges.insert(d.edges.end(), out[i].begin(), out[i].end());
    }
    d.nodes = std::move(nodes);
    d.words = static_cast<size_t>(std::max(max_id_ + 1, 1) + 63) / 64;
    d.reach.assign(d.nodes.size() * d.words, 0);
    std::vector<uint8_t> done(d.nodes.size(), 0);
    for (size_t i = 0; i < d.nodes.size(); ++i) fill_reach(d, static_cast<int32_t>(i), done);
    return d;
  }

 private:
  static void fill_reach(LitDfa& d, int32_t n, std::vector<uint8_t>& done) {
    const auto un = static_cast<size_t>(n);
    if (done[un]) return;
    done[un] = 1;
    const auto& nd = d.nodes[un];
    if (nd.accept >= 0) d.reach[un * d.words + static_cast<size_t>(nd.accept) / 64] |=
        uint64_t{1} << (nd.accept % 64);
    for (uint32_t e = nd.first; e < nd.first + nd.n; ++e) {
      const int32_t c = d.edges[e].second;
      fill_reach(d, c, done);
      for (size_t w = 0; w < d.words; ++w)
        d.reach[un * d.words + w] |= d.reach[static_cast<size_t>(c) * d.words + w];
    }
  }

  struct TNode {
    std::map<uint32_t, size_t> kids;
    int accept = -1;
  };
  std::vector<TNode> trie_ = std::vector<TNode>(1);
  int count_ = 0, max_id_ = -1;
};

// ---- Compiled schema ---------------------------------------------------------------------

enum class SK : uint8_t { Any, String, Number, Integer, Boolean, Null, Array, Object, FreeObject };

struct CSchema {
  SK kind = SK::Any;
  bool nullable = false;
  int32_t enum_dfa = -1;
  int32_t items = -1;    // Array
  int32_t key_dfa = -1;  // Object
  std::vector<int32_t> prop_schema;
  std::vector<uint64_t> required;  // bitset over property ids, key_dfa words long
};

// ---- Shortest completions: tables ---------------------------------------------------------

constexpr int64_t kInf = int64_t{1} << 40;  // no completion (a needed byte is not available)

int64_t add(int64_t a, int64_t b) { return a >= kInf || b >= kInf ? kInf : std::min(a + b, kInf); }

using ByteSet = std::array<bool, 256>;

// One literal reachable from a literal-automaton node: `dist` bytes away, `cost` = dist plus
// what choosing that literal adds to the completion of the enclosing construct (see
// build_completion).
struct LitOpt {
  int64_t cost;
  int32_t lit;
  int32_t dist;
};

struct DfaCompletion {
  std::vector<uint32_t> off;  // per node: opts[off[n], off[n + 1]), sorted by (cost, lit)
  std::vector<LitOpt> opts;
  const LitOpt* begin(int32_t n) const { return opts.data() + off[static_cast<size_t>(n)]; }
  const LitOpt* end(int32_t n) const { return opts.data() + off[static_cast<size_t>(n) + 1]; }
  int32_t dist(int32_t n, int32_t lit) const {
    for (const LitOpt* o = begin(n); o != end(n); ++o)
      if (o->lit == lit) return o->dist;
    return -1;
  }
};

// Per grammar and set of usable bytes (every byte for SchemaMatcher; the bytes with a
// single-byte token for a constraint): the lengths that make shortest completions computable
// from any state in O(stack depth + required keys).
struct Completion {
  ByteSet avail{};
  std::vector<DfaCompletion> dfas;
  std::vector<int64_t> minval;              // per schema: length of its shortest value
  std::vector<uint8_t> null_min;            // per schema: that value is `null`
  std::vector<std::vector<int64_t>> item;   // per Object schema, per property id: |,"key":v|
  int64_t call = kInf;                      // shortest {"name":..,"arguments":{..}}
};

}  // namespace

struct Grammar {
  SchemaOptions opt;
  std::vector<CSchema> schemas;
  std::vector<LitDfa> dfas;
  int32_t any_schema = -1, tf_dfa = -1, null_dfa = -1, name_dfa = -1;
  std::vector<int32_t> tool_args;  // per name literal id: the arguments object schema
  size_t n_tools = 0;
  std::shared_ptr<const Completion> completion;  // every byte usable

  int32_t add_dfa(const LitDfaBuilder& b) {
    dfas.push_back(b.build());
    return static_cast<int32_t>(dfas.size() - 1);
  }
  int32_t compile(const ArgSchema& s);
  int32_t compile_object(const std::vector<ArgProp>& props, bool free_if_empty);
};

int32_t Grammar::compile_object(const std::vector<ArgProp>& props, bool free_if_empty) {
  CSchema c;
  if (props.empty() && free_if_empty) {
    c.kind = SK::FreeObject;
    schemas.push_back(c);
    return static_cast<int32_t>(schemas.size() - 1);
  }
  c.kind = SK::Object;
  LitDfaBuilder keys;
  std::map<std::string, int> first_id;
  std::vector<int> id_of(props.size());
  for (size_t i = 0; i < props.size(); ++i) {
    auto [it, fresh] = first_id.emplace(props[i].name, static_cast<int>(i));
    id_of[i] = it->second;
    if (fresh) keys.add(content_units(props[i].name), static_cast<int>(i));
  }
  c.key_dfa = add_dfa(keys);
  const size_t words = dfas[static_cast<size_t>(c.key_dfa)].words;
  c.required.assign(words, 0);
  for (size_t i = 0; i < props.size(); ++i)
    if (props[i].required)
      c.required[static_cast<size_t>(id_of[i]) / 64] |= uint64_t{1} << (id_of[i] % 64);
  c.prop_schema.assign(props.size(), -1);
  for (size_t i = 0; i < props.size(); ++i)
    if (id_of[i] == static_cast<int>(i)) c.prop_schema[i] = compile(props[i].schema);
  schemas.push_back(std::move(c));
  return static_cast<int32_t>(schemas.size() - 1);
}

int32_t Grammar::compile(const ArgSchema& s) {
  if (!s.enum_values.empty()) {
    LitDfaBuilder b;
    int id = 0;
    for (const auto& v : s.enum_values) {
      std::vector<uint32_t> units;
      if (v.is_string) {
        units.push_back(kStruct + '"');
        for (uint32_t u : content_units(v.text)) units.push_back(u);
        units.push_back(kStruct + '"');
      } else {
        units = struct_units(v.text);
      }
      if (!units.empty()) b.add(units, id++);
    }
    if (s.nullable) b.add(struct_units("null"), id++);
    if (id > 0) {
      CSchema c;
      c.kind = SK::Any;
      c.enum_dfa = add_dfa(b);
      schemas.push_back(c);
      return static_cast<int32_t>(schemas.size() - 1);
    }
  }
  switch (s.type) {
    case ArgType::Any: return any_schema;
    case ArgType::Object: {
      const int32_t i = compile_object(s.properties, /*free_if_empty=*/true);
      schemas[static_cast<size_t>(i)].nullable = s.nullable;
      return i;
    }
    case ArgType::Array: {
      const int32_t items = s.items.empty() ? any_schema : compile(s.items[0]);
      CSchema c;
      c.kind = SK::Array;
      c.items = items;
      c.nullable = s.nullable;
      schemas.push_back(c);
      return static_cast<int32_t>(schemas.size() - 1);
    }
    default: break;
  }
  CSchema c;
  c.nullable = s.nullable;
  switch (s.type) {
    case ArgType::String: c.kind = SK::String; break;
    case ArgType::Number: c.kind = SK::Number; break;
    case ArgType::Integer: c.kind = SK::Integer; break;
    case ArgType::Boolean: c.kind = SK::Boolean; break;
    case ArgType::Null: c.kind = SK::Null; break;
    default: c.kind = SK::Any; break;
  }
  schemas.push_back(c);
  return static_cast<int32_t>(schemas.size() - 1);
}

namespace {
std::shared_ptr<const Completion> build_completion(const Grammar& g, const ByteSet& avail);
}  // namespace

Result<std::shared_ptr<const Grammar>> compile_grammar(const std::vector<ToolSpec>& tools,
                                                       const SchemaOptions& opt) {
  if (opt.max_int_digits < 1 || opt.max_frac_digits < 1 || opt.max_exp_digits < 1)
    return make_error("schema constraint: number digit limits must be >= 1");
  auto g = std::make_shared<Grammar>();
  g->opt = opt;
  CSchema any;
  any.kind = SK::Any;
  g->schemas.push_back(any);
  g->any_schema = 0;
  LitDfaBuilder tf, null;
  tf.add(struct_units("true"), 0);
  tf.add(struct_units("false"), 1);
  null.add(struct_units("null"), 0);
  g->tf_dfa = g->add_dfa(tf);
  g->null_dfa = g->add_dfa(null);
  LitDfaBuilder names;
  int id = 0;
  for (const auto& t : tools) {
    if (t.name.empty()) continue;  // the original skips nameless tools too
    if (!names.add(content_units(t.name), id)) continue;  // duplicate name: the first wins
    g->tool_args.push_back(g->compile_object(t.args, /*free_if_empty=*/false));
    ++id;
  }
  g->n_tools = static_cast<size_t>(id);
  g->name_dfa = g->add_dfa(names);
  ByteSet all;
  all.fill(true);
  g->completion = build_completion(*g, all);
  return std::shared_ptr<const Grammar>(std::move(g));
}

// ---- The pushdown machine ----------------------------------------------------------------

namespace {

enum class FK : uint8_t { Root, Call, Object, FreeObject, Array, String, Number, Literal };

struct Frame {
  FK kind;
  uint8_t stage = 0;
  uint8_t a = 0, b = 0;   // String: UTF-8 bytes left, range of the next one; Number: integer
  int32_t x = 0, y = 0;   // see each handler
  int32_t z = 0;          // Object: offset of its used-key bitset in GState::used
};

struct GState {
  std::vector<Frame> frames;
  std::vector<uint64_t> used;  // bitsets of keys already written, one slice per open Object
};

enum class R { Ok, Bad, Retry };

// Stages.
enum : uint8_t { RStart, RSpace, ROpen, RAfter, RNext, RDone };
enum : uint8_t { CFix1, CName, CFix2, CArgs, CEnd };
enum : uint8_t { OInit, OOpen, OKey, OColon, OValue, OAfter, OComma };
enum : uint8_t { AInit, AOpen, AAfter, ANext };
enum : uint8_t { SInit, SContent, SUtf8, SEsc, SU0, SU1, SU2, SU3, SLSlash, SLU, SL0, SL1, SL2, SL3 };
enum : uint8_t { NStart, NMinus, NZero, NInt, NDot, NFrac, NE, NESign, NExp };

constexpr char kFix1[] = "\"name\":\"";
constexpr char kFix2[] = ",\"arguments\":";
constexpr int32_t kFix1Len = sizeof(kFix1) - 1, kFix2Len = sizeof(kFix2) - 1;
// UTF-8 continuation byte ranges, by the range code a String frame keeps in `b`.
constexpr uint8_t kUtf8Lo[] = {0x80, 0xA0, 0x80, 0x90, 0x80};
constexpr uint8_t kUtf8Hi[] = {0xBF, 0xBF, 0x9F, 0xBF, 0x8F};

int hexval(uint8_t c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
bool is_digit(uint8_t c) { return c >= '0' && c <= '9'; }

class Machine {
 public:
  explicit Machine(const Grammar& g) : g_(g) {}

  void init(GState& s) const {
    s.frames.clear();
    s.used.clear();
    s.frames.push_back(Frame{FK::Root});
  }
  bool complete(const GState& s) const {
    return s.frames.size() == 1 && s.frames[0].stage == RDone;
  }

  bool feed(GState& s, uint8_t c) const {
    for (;;) {
      if (s.frames.empty()) return false;
      R r = R::Bad;
      switch (s.frames.back().kind) {
        case FK::Root: r = root(s, c); break;
        case FK::Call: r = call(s, c); break;
        case FK::Object: r = object(s, c); break;
        case FK::FreeObject: r = free_object(s, c); break;
        case FK::Array: r = array(s, c); break;
        case FK::String: r = string(s, c); break;
        case FK::Number: r = number(s, c); break;
        case FK::Literal: r = literal(s, c); break;
      }
      if (r == R::Ok) return true;
      if (r == R::Bad) return false;
    }
  }

  // A token may end in this state: completable with single-byte tokens. `cont_ok`: every
  // UTF-8 continuation byte exists as a single-byte token.
  bool token_end_ok(const GState& s, bool cont_ok) const {
    if (cont_ok) return true;
    const Frame& f = s.frames.back();
    switch (f.kind) {
      case FK::String: return f.stage != SUtf8;
      case FK::Literal: return !dfa(f.x).nodes[static_cast<size_t>(f.y)].mid;
      case FK::Object:
        return f.stage != OKey || !key_dfa(f).nodes[static_cast<size_t>(f.y)].mid;
      case FK::Call:
        return f.stage != CName || !dfa(g_.name_dfa).nodes[static_cast<size_t>(f.x)].mid;
      default: return true;
    }
  }

  bool in_plain_string(const GState& s) const {
    const Frame& f = s.frames.back();
    return f.kind == FK::String && f.stage == SContent;
  }

 private:
  const LitDfa& dfa(int32_t i) const { return g_.dfas[static_cast<size_t>(i)]; }
  const CSchema& schema(int32_t i) const { return g_.schemas[static_cast<size_t>(i)]; }
  const LitDfa& key_dfa(const Frame& f) const { return dfa(schema(f.x).key_dfa); }

  static void push(GState& s, FK k, uint8_t stage = 0, int32_t x = 0, int32_t y = 0) {
    Frame f{k};
    f.stage = stage;
    f.x = x;
    f.y = y;
    s.frames.push_back(f);
  }

  R root(GState& s, uint8_t c) const {
    Frame& f = s.frames.back();
    switch (f.stage) {
      case RStart:
        if (c == ' ' && g_.opt.allow_leading_space) return f.stage = RSpace, R::Ok;
        [[fallthrough]];
      case RSpace:
        if (c == '[') return f.stage = ROpen, R::Ok;
        return R::Bad;
      case ROpen:
        if (c == ']') return f.stage = RDone, R::Ok;
        [[fallthrough]];
      case RNext:
        if (c == '{' && g_.n_tools > 0) {
          f.stage = RAfter;
          push(s, FK::Call);
          return R::Ok;
        }
        return R::Bad;
      case RAfter:
        if (c == ',') return f.stage = RNext, R::Ok;
        if (c == ']') return f.stage = RDone, R::Ok;
        return R::Bad;
      default: return R::Bad;
    }
  }

  // {"name":"NAME","arguments":{...}} -- the '{' was consumed by the root.
  R call(GState& s, uint8_t c) const {
    Frame& f = s.frames.back();
    switch (f.stage) {
      case CFix1:
        if (c != static_cast<uint8_t>(kFix1[f.x])) return R::Bad;
        if (++f.x == static_cast<int32_t>(sizeof(kFix1) - 1)) f.stage = CName, f.x = 0;
        return R::Ok;
      case CName: {
        const LitDfa& d = dfa(g_.name_dfa);
        // A '"' is an edge only after a backslash (an escape); otherwise it closes the name.
        const int32_t nx = d.step(f.x, c);
        if (nx >= 0) {
          f.x = nx;
          return R::Ok;
        }
        if (c == '"') {
          const int32_t acc = d.nodes[static_cast<size_t>(f.x)].accept;
          if (acc < 0) return R::Bad;
          f.y = acc;
          f.stage = CFix2;
          f.x = 0;
          return R::Ok;
        }
        return R::Bad;
      }
      case CFix2:
        if (c != static_cast<uint8_t>(kFix2[f.x])) return R::Bad;
        if (++f.x == static_cast<int32_t>(sizeof(kFix2) - 1)) f.stage = CArgs;
        return R::Ok;
      case CArgs: {
        if (c != '{') return R::Bad;
        f.stage = CEnd;
        push_object(s, g_.tool_args[static_cast<size_t>(f.y)]);
        return R::Retry;
      }
      case CEnd:
        if (c != '}') return R::Bad;
        s.frames.pop_back();
        return R::Ok;
      default: return R::Bad;
    }
  }

  void push_object(GState& s, int32_t schema_idx) const {
    const LitDfa& d = dfa(schema(schema_idx).key_dfa);
    push(s, FK::Object, OInit, schema_idx, 0);
    s.frames.back().z = static_cast<int32_t>(s.used.size());
    s.used.resize(s.used.size() + d.words, 0);
  }

  R object(GState& s, uint8_t c) const {
    Frame& f = s.frames.back();
    const CSchema& sc = schema(f.x);
    const LitDfa& d = dfa(sc.key_dfa);
    uint64_t* used = s.used.data() + f.z;
    auto required_ok = [&] {
      for (size_t w = 0; w < d.words; ++w)
        if (sc.required[w] & ~used[w]) return false;
      return true;
    };
    auto close = [&] {
      s.used.resize(static_cast<size_t>(f.z));
      s.frames.pop_back();
      return R::Ok;
    };
    switch (f.stage) {
      case OInit:
        if (c != '{') return R::Bad;
        f.stage = OOpen;
        return R::Ok;
      case OOpen:
        if (c == '}') return required_ok() ? close() : R::Bad;
        [[fallthrough]];
      case OComma:
        if (c == '"' && d.live(0, used)) {
          f.stage = OKey;
          f.y = 0;
          return R::Ok;
        }
        return R::Bad;
      case OKey: {
        const int32_t nx = d.step(f.y, c);  // '"' is an edge only inside an escape
        if (nx >= 0) {
          if (!d.live(nx, used)) return R::Bad;
          f.y = nx;
          return R::Ok;
        }
        if (c == '"') {
          const int32_t acc = d.nodes[static_cast<size_t>(f.y)].accept;
          if (acc < 0 || (used[acc / 64] >> (acc % 64) & 1)) return R::Bad;
          used[acc / 64] |= uint64_t{1} << (acc % 64);
          f.y = acc;
          f.stage = OColon;
          return R::Ok;
        }
        return R::Bad;
      }
      case OColon:
        if (c != ':') return R::Bad;
        f.stage = OValue;
        return R::Ok;
      case OValue: {
        f.stage = OAfter;
        return start_value(s, sc.prop_schema[static_cast<size_t>(f.y)], c);
      }
      case OAfter:
        if (c == ',') {
          if (!d.live(0, used)) return R::Bad;
          f.stage = OComma;
          return R::Ok;
        }
        if (c == '}') return required_ok() ? close() : R::Bad;
        return R::Bad;
      default: return R::Bad;
    }
  }

  R free_object(GState& s, uint8_t c) const {
    Frame& f = s.frames.back();
    switch (f.stage) {
      case OInit:
        if (c != '{') return R::Bad;
        f.stage = OOpen;
        return R::Ok;
      case OOpen:
        if (c == '}') return s.frames.pop_back(), R::Ok;
        [[fallthrough]];
      case OComma:
        if (c != '"') return R::Bad;
        f.stage = OColon;
        push(s, FK::String, SContent);
        return R::Ok;
      case OColon:
        if (c != ':') return R::Bad;
        f.stage = OValue;
        return R::Ok;
      case OValue:
        f.stage = OAfter;
        return start_value(s, g_.any_schema, c);
      case OAfter:
        if (c == ',') return f.stage = OComma, R::Ok;
        if (c == '}') return s.frames.pop_back(), R::Ok;
        return R::Bad;
      default: return R::Bad;
    }
  }

  R array(GState& s, uint8_t c) const {
    Frame& f = s.frames.back();
    switch (f.stage) {
      case AInit:
        if (c != '[') return R::Bad;
        f.stage = AOpen;
        return R::Ok;
      case AOpen:
        if (c == ']') return s.frames.pop_back(), R::Ok;
        [[fallthrough]];
      case ANext:
        f.stage = AAfter;
        return start_value(s, f.x, c);
      case AAfter:
        if (c == ',') return f.stage = ANext, R::Ok;
        if (c == ']') return s.frames.pop_back(), R::Ok;
        return R::Bad;
      default: return R::Bad;
    }
  }

  // Pushes the frame for a value of schema `idx` starting with byte c; the byte is then
  // re-fed to it (Retry). Bad if no value of the schema starts with c.
  R start_value(GState& s, int32_t idx, uint8_t c) const {
    const CSchema& sc = schema(idx);
    if (sc.enum_dfa >= 0) return push_literal(s, sc.enum_dfa, c);
    if (c == 'n' && (sc.nullable || sc.kind == SK::Null || sc.kind == SK::Any))
      return push_literal(s, g_.null_dfa, c);
    const bool num_start = c == '-' || is_digit(c);
    switch (sc.kind) {
      case SK::String:
        if (c != '"') return R::Bad;
        push(s, FK::String, SInit);
        return R::Retry;
      case SK::Number:
      case SK::Integer:
        if (!num_start) return R::Bad;
        push(s, FK::Number, NStart);
        s.frames.back().a = sc.kind == SK::Integer;
        return R::Retry;
      case SK::Boolean: return push_literal(s, g_.tf_dfa, c);
      case SK::Null: return R::Bad;
      case SK::Array:
        if (c != '[') return R::Bad;
        push(s, FK::Array, AInit, sc.items);
        return R::Retry;
      case SK::Object:
        if (c != '{') return R::Bad;
        push_object(s, idx);
        return R::Retry;
      case SK::FreeObject:
        if (c != '{') return R::Bad;
        push(s, FK::FreeObject, OInit);
        return R::Retry;
      case SK::Any:
        if (c == '"') {
          push(s, FK::String, SInit);
        } else if (num_start) {
          push(s, FK::Number, NStart);
        } else if (c == 't' || c == 'f') {
          return push_literal(s, g_.tf_dfa, c);
        } else if (c == '[') {
          push(s, FK::Array, AInit, g_.any_schema);
        } else if (c == '{') {
          push(s, FK::FreeObject, OInit);
        } else {
          return R::Bad;
        }
        return R::Retry;
    }
    return R::Bad;
  }

  R push_literal(GState& s, int32_t d, uint8_t c) const {
    if (dfa(d).step(0, c) < 0) return R::Bad;
    push(s, FK::Literal, 0, d, 0);
    return R::Retry;
  }

  R literal(GState& s, uint8_t c) const {
    Frame& f = s.frames.back();
    const LitDfa& d = dfa(f.x);
    const int32_t nx = d.step(f.y, c);
    if (nx >= 0) {
      f.y = nx;
      return R::Ok;
    }
    if (d.nodes[static_cast<size_t>(f.y)].accept >= 0) {  // complete: the byte is the parent's
      s.frames.pop_back();
      return R::Retry;
    }
    return R::Bad;
  }

  R string(GState& s, uint8_t c) const {
    Frame& f = s.frames.back();
    switch (f.stage) {
      case SInit:
        if (c != '"') return R::Bad;
        f.stage = SContent;
        return R::Ok;
      case SContent:
        if (c == '"') return s.frames.pop_back(), R::Ok;
        if (c == '\\') return f.stage = SEsc, R::Ok;
        if (c < 0x20) return R::Bad;
        if (c < 0x80) return R::Ok;
        // UTF-8 lead byte: b = range code of the next byte (see SUtf8).
        if (c >= 0xC2 && c <= 0xDF) {
          f.a = 1, f.b = 0;
        } else if (c >= 0xE0 && c <= 0xEF) {
          f.a = 2, f.b = c == 0xE0 ? 1 : c == 0xED ? 2 : 0;
        } else if (c >= 0xF0 && c <= 0xF4) {
          f.a = 3, f.b = c == 0xF0 ? 3 : c == 0xF4 ? 4 : 0;
        } else {
          return R::Bad;
        }
        f.stage = SUtf8;
        return R::Ok;
      case SUtf8: {
        if (c < kUtf8Lo[f.b] || c > kUtf8Hi[f.b]) return R::Bad;
        f.b = 0;
        if (--f.a == 0) f.stage = SContent;
        return R::Ok;
      }
      case SEsc:
        if (c == 'u') return f.stage = SU0, f.x = 0, R::Ok;
        if (std::strchr("\"\\/bfnrt", c) && c != 0) return f.stage = SContent, R::Ok;
        return R::Bad;
      case SU0:
      case SU1:
      case SU2:
      case SU3: {
        const int h = hexval(c);
        if (h < 0) return R::Bad;
        if (f.stage == SU1 && f.x == 0xD && h >= 0xC) return R::Bad;  // lone low surrogate
        f.x = f.x * 16 + h;
        if (f.stage != SU3) return ++f.stage, R::Ok;
        f.stage = (f.x >= 0xD800 && f.x <= 0xDBFF) ? SLSlash : SContent;
        return R::Ok;
      }
      case SLSlash:
        if (c != '\\') return R::Bad;
        return f.stage = SLU, R::Ok;
      case SLU:
        if (c != 'u') return R::Bad;
        return f.stage = SL0, R::Ok;
      case SL0:
        if (hexval(c) != 0xD) return R::Bad;
        return f.stage = SL1, R::Ok;
      case SL1:
        if (hexval(c) < 0xC) return R::Bad;
        return f.stage = SL2, R::Ok;
      case SL2:
        if (hexval(c) < 0) return R::Bad;
        return f.stage = SL3, R::Ok;
      case SL3:
        if (hexval(c) < 0) return R::Bad;
        return f.stage = SContent, R::Ok;
      default: return R::Bad;
    }
  }

  R number(GState& s, uint8_t c) const {
    Frame& f = s.frames.back();
    const bool integer = f.a != 0;
    const bool digit = is_digit(c);
    const auto& o = g_.opt;
    auto end = [&]() {  // the number is complete iff it is in an accepting state
      if (f.stage == NZero || f.stage == NInt || f.stage == NFrac || f.stage == NExp) {
        s.frames.pop_back();
        return R::Retry;
      }
      return R::Bad;
    };
    auto go = [&](uint8_t st, int32_t count) {
      f.stage = st;
      f.x = count;
      return R::Ok;
    };
    switch (f.stage) {
      case NStart:
        if (c == '-') return go(NMinus, 0);
        [[fallthrough]];
      case NMinus:
        if (c == '0') return go(NZero, 1);
        if (digit) return go(NInt, 1);
        return R::Bad;
      case NZero:
      case NInt:
        if (digit && f.stage == NInt && f.x < o.max_int_digits) return go(NInt, f.x + 1);
        if (!integer && c == '.') return go(NDot, 0);
        if (!integer && (c == 'e' || c == 'E')) return go(NE, 0);
        return end();
      case NDot:
        if (digit) return go(NFrac, 1);
        return R::Bad;
      case NFrac:
        if (digit && f.x < o.max_frac_digits) return go(NFrac, f.x + 1);
        if (c == 'e' || c == 'E') return go(NE, 0);
        return end();
      case NE:
        if (c == '+' || c == '-') return go(NESign, 0);
        [[fallthrough]];
      case NESign:
        if (digit) return go(NExp, 1);
        return R::Bad;
      case NExp:
        if (digit && f.x < o.max_exp_digits) return go(NExp, f.x + 1);
        return end();
      default: return R::Bad;
    }
  }

  const Grammar& g_;
};

// ---- Shortest completions ------------------------------------------------------------------
//
// The shortest byte string that takes a state to a complete output: each open frame, from the
// innermost out, is finished in the fewest bytes (a parent frame is always in its "after the
// value" stage while a child is open, so the frames' costs simply add up). Values are the
// shortest of their schema (`0`, `""`, `true`, `[]`, `{}`, `null` when nullable and shorter,
// the shortest enum literal, a typed object with only its required keys); literals (names,
// keys, enums) take their shortest encoding over the usable bytes; the cheapest still unused
// key is chosen when a key is open or has to be started.

using DistList = std::vector<std::pair<int32_t, int32_t>>;  // (literal, bytes), by literal

// Distances from `n` to every literal reachable over usable bytes (the automaton is acyclic).
void literal_distances(const LitDfa& d, const ByteSet& avail, int32_t n, std::vector<DistList>& out,
                       std::vector<uint8_t>& done) {
  const auto un = static_cast<size_t>(n);
  if (done[un]) return;
  done[un] = 1;
  const LitDfa::Node& nd = d.nodes[un];
  DistList acc;
  if (nd.accept >= 0) acc.push_back({nd.accept, 0});
  for (uint32_t e = nd.first; e < nd.first + nd.n; ++e) {
    if (!avail[d.edges[e].first]) continue;
    const int32_t ch = d.edges[e].second;
    literal_distances(d, avail, ch, out, done);
    for (const auto& [lit, k] : out[static_cast<size_t>(ch)]) acc.push_back({lit, k + 1});
  }
  std::sort(acc.begin(), acc.end());
  acc.erase(std::unique(acc.begin(), acc.end(),
                        [](const auto& a, const auto& b) { return a.first == b.first; }),
            acc.end());
  out[un] = std::move(acc);
}

bool bit(const std::vector<uint64_t>& bits, size_t i) { return bits[i / 64] >> (i % 64) & 1; }

std::shared_ptr<const Completion> build_completion(const Grammar& g, const ByteSet& avail) {
  auto c = std::make_shared<Completion>();
  c->avail = avail;
  const size_t n_dfas = g.dfas.size();
  std::vector<std::vector<DistList>> dist(n_dfas);
  for (size_t i = 0; i < n_dfas; ++i) {
    const LitDfa& d = g.dfas[i];
    dist[i].resize(d.nodes.size());
    std::vector<uint8_t> done(d.nodes.size(), 0);
    for (size_t n = 0; n < d.nodes.size(); ++n)
      literal_distances(d, avail, static_cast<int32_t>(n), dist[i], done);
  }
  auto root_dist = [&](int32_t dfa, size_t lit) -> int64_t {
    for (const auto& [l, k] : dist[static_cast<size_t>(dfa)][0])
      if (static_cast<size_t>(l) == lit) return k;
    return kInf;
  };
  // Shortest values, children before parents (compile() pushes a schema after its parts).
  const size_t n_schemas = g.schemas.size();
  c->minval.assign(n_schemas, kInf);
  c->null_min.assign(n_schemas, 0);
  c->item.resize(n_schemas);
  for (size_t i = 0; i < n_schemas; ++i) {
    const CSchema& sc = g.schemas[i];
    if (sc.enum_dfa >= 0) {  // the literals include null when nullable
      for (const auto& [l, k] : dist[static_cast<size_t>(sc.enum_dfa)][0])
        c->minval[i] = std::min<int64_t>(c->minval[i], k);
      continue;
    }
    int64_t v = kInf;
    switch (sc.kind) {
      case SK::Any:
      case SK::Number:
      case SK::Integer: v = 1; break;  // 0
      case SK::String:                 // ""
      case SK::Array:                  // []
      case SK::FreeObject: v = 2; break;  // {}
      case SK::Boolean: v = 4; break;  // true
      case SK::Null: break;
      case SK::Object: {
        auto& item = c->item[i];
        item.assign(sc.prop_schema.size(), kInf);
        int64_t sum = 0;
        bool any = false;
        for (size_t p = 0; p < sc.prop_schema.size(); ++p) {
          if (sc.prop_schema[p] < 0) continue;  // a duplicate name
          item[p] = add(add(4, root_dist(sc.key_dfa, p)),  // ,"key":value
                        c->minval[static_cast<size_t>(sc.prop_schema[p])]);
          if (bit(sc.required, p)) sum = add(sum, item[p]), any = true;
        }
        v = any ? add(sum, 1) : 2;  // '{' + required items, the first without ',' + '}'
        break;
      }
    }
    if ((sc.nullable || sc.kind == SK::Null || sc.kind == SK::Any) && v > 4) {
      v = 4;
      c->null_min[i] = 1;
    }
    c->minval[i] = v;
  }
  // What choosing each literal adds besides its own bytes, per automaton role.
  std::vector<std::vector<int64_t>> ext(n_dfas);
  for (size_t i = 0; i < n_schemas; ++i) {
    const CSchema& sc = g.schemas[i];
    if (sc.kind != SK::Object || sc.enum_dfa >= 0) continue;
    // In an open key: '"' ':' value, and the item no longer owed if the key is required
    // (the object's cost counts every unused required item, see Completer::object_cost).
    auto& e = ext[static_cast<size_t>(sc.key_dfa)];
    e.assign(sc.prop_schema.size(), kInf);
    for (size_t p = 0; p < sc.prop_schema.size(); ++p) {
      if (sc.prop_schema[p] < 0) continue;
      const int64_t val = add(2, c->minval[static_cast<size_t>(sc.prop_schema[p])]);
      if (!bit(sc.required, p))
        e[p] = val;
      else if (c->item[i][p] < kInf)
        e[p] = val - c->item[i][p];
    }
  }
  {  // A name: '"' ,"arguments": ARGS '}'
    auto& e = ext[static_cast<size_t>(g.name_dfa)];
    e.assign(g.tool_args.size(), kInf);
    for (size_t t = 0; t < g.tool_args.size(); ++t)
      e[t] = add(1 + kFix2Len + 1, c->minval[static_cast<size_t>(g.tool_args[t])]);
  }
  c->dfas.resize(n_dfas);
  for (size_t i = 0; i < n_dfas; ++i) {
    DfaCompletion& dc = c->dfas[i];
    const auto& e = ext[i];
    dc.off.push_back(0);
    for (const DistList& dl : dist[i]) {
      const size_t from = dc.opts.size();
      for (const auto& [l, k] : dl) {
        const int64_t x = e.empty() ? 0 : e[static_cast<size_t>(l)];
        dc.opts.push_back({add(k, x), l, k});
      }
      std::sort(dc.opts.begin() + static_cast<std::ptrdiff_t>(from), dc.opts.end(),
                [](const LitOpt& a, const LitOpt& b) {
                  return a.cost != b.cost ? a.cost < b.cost : a.lit < b.lit;
                });
      dc.off.push_back(static_cast<uint32_t>(dc.opts.size()));
    }
  }
  const DfaCompletion& names = c->dfas[static_cast<size_t>(g.name_dfa)];
  if (g.n_tools > 0 && names.begin(0) != names.end(0)) c->call = add(1 + kFix1Len, names.begin(0)->cost);
  return c;
}

// Cost (length) and text of the shortest completion of a state.
class Completer {
 public:
  Completer(const Grammar& g, const Completion& c) : g_(g), c_(c) {}

  int64_t cost(const GState& s) const {
    int64_t t = 0;
    for (const Frame& f : s.frames) t = add(t, frame_cost(s, f));
    return t;
  }

  // Empty when complete; meaningful only when cost(s) < kInf.
  std::string text(const GState& s) const {
    std::string out;
    for (size_t i = s.frames.size(); i-- > 0;) frame_text(s, s.frames[i], out);
    return out;
  }

 private:
  const CSchema& schema(int32_t i) const { return g_.schemas[static_cast<size_t>(i)]; }
  const DfaCompletion& dc(int32_t i) const { return c_.dfas[static_cast<size_t>(i)]; }
  int64_t minval(int32_t schema) const { return c_.minval[static_cast<size_t>(schema)]; }
  int32_t prop_schema(const Frame& f) const {
    return schema(f.x).prop_schema[static_cast<size_t>(f.y)];
  }

  // The cheapest literal from `node` not in `used` (null: all allowed), or nullptr.
  const LitOpt* best(int32_t dfa, int32_t node, const uint64_t* used) const {
    const DfaCompletion& d = dc(dfa);
    for (const LitOpt* o = d.begin(node); o != d.end(node); ++o)
      if (!used || !(used[o->lit / 64] >> (o->lit % 64) & 1)) return o->cost < kInf ? o : nullptr;
    return nullptr;
  }
  int64_t best_cost(int32_t dfa, int32_t node, const uint64_t* used) const {
    const LitOpt* o = best(dfa, node, used);
    return o ? o->cost : kInf;
  }

  // Bytes from `node` to the end of literal `lit` (its shortest usable encoding).
  void path(int32_t dfa, int32_t node, int32_t lit, std::string& out) const {
    const LitDfa& d = g_.dfas[static_cast<size_t>(dfa)];
    const DfaCompletion& t = dc(dfa);
    for (int32_t k = t.dist(node, lit); k > 0; --k) {
      const LitDfa::Node& nd = d.nodes[static_cast<size_t>(node)];
      for (uint32_t e = nd.first; e < nd.first + nd.n; ++e) {
        const auto [b, child] = d.edges[e];
        if (c_.avail[b] && t.dist(child, lit) == k - 1) {
          out.push_back(static_cast<char>(b));
          node = child;
          break;
        }
      }
    }
  }

  void value_text(int32_t i, std::string& out) const {
    const CSchema& sc = schema(i);
    if (sc.enum_dfa >= 0) {
      if (const LitOpt* o = best(sc.enum_dfa, 0, nullptr)) path(sc.enum_dfa, 0, o->lit, out);
      return;
    }
    if (c_.null_min[static_cast<size_t>(i)]) {
      out += "null";
      return;
    }
    switch (sc.kind) {
      case SK::Any:
      case SK::Number:
      case SK::Integer: out += '0'; return;
      case SK::String: out += "\"\""; return;
      case SK::Boolean: out += "true"; return;
      case SK::Null: out += "null"; return;
      case SK::Array: out += "[]"; return;
      case SK::FreeObject: out += "{}"; return;
      case SK::Object: {
        out += '{';
        bool first = true;
        for (size_t p = 0; p < sc.prop_schema.size(); ++p) {
          if (sc.prop_schema[p] < 0 || !bit(sc.required, p)) continue;
          if (!first) out += ',';
          first = false;
          item_text(i, static_cast<int32_t>(p), out);
        }
        out += '}';
        return;
      }
    }
  }

  // "key":value for property p of object schema i.
  void item_text(int32_t i, int32_t p, std::string& out) const {
    const CSchema& sc = schema(i);
    out += '"';
    path(sc.key_dfa, 0, p, out);
    out += "\":";
    value_text(sc.prop_schema[static_cast<size_t>(p)], out);
  }

  // Typed object: the required items not written yet, each with its ','.
  int64_t rest_cost(const Frame& f, const uint64_t* used, bool* any) const {
    const CSchema& sc = schema(f.x);
    const auto& item = c_.item[static_cast<size_t>(f.x)];
    int64_t sum = 0;
    *any = false;
    for (size_t w = 0; w < sc.required.size(); ++w)
      for (uint64_t m = sc.required[w] & ~used[w]; m; m &= m - 1) {
        sum = add(sum, item[w * 64 + static_cast<size_t>(__builtin_ctzll(m))]);
        *any = true;
      }
    return sum;
  }
  void rest_text(const Frame& f, const uint64_t* used, int32_t skip, std::string& out) const {
    const CSchema& sc = schema(f.x);
    for (size_t w = 0; w < sc.required.size(); ++w)
      for (uint64_t m = sc.required[w] & ~used[w]; m; m &= m - 1) {
        const auto p = static_cast<int32_t>(w * 64 + static_cast<size_t>(__builtin_ctzll(m)));
        if (p == skip) continue;
        out += ',';
        item_text(f.x, p, out);
      }
  }

  const uint64_t* used_of(const GState& s, const Frame& f) const { return s.used.data() + f.z; }

  int64_t object_cost(const GState& s, const Frame& f) const {
    const uint64_t* used = used_of(s, f);
    bool any = false;
    const int64_t rest = rest_cost(f, used, &any);
    const int32_t keys = schema(f.x).key_dfa;
    // An open key at `node`: its cheapest unused literal (ext counts '":' value and drops
    // its own item from `rest`), then the other required items and '}'.
    auto key = [&](int32_t node) { return add(add(rest, 1), best_cost(keys, node, used)); };
    switch (f.stage) {
      case OInit: return add(1, any ? add(1, key(0)) : 1);
      case OOpen: return any ? add(1, key(0)) : 1;
      case OComma: return add(1, key(0));
      case OKey: return key(f.y);
      case OColon: return add(add(2, minval(prop_schema(f))), rest);
      case OValue: return add(add(1, minval(prop_schema(f))), rest);
      case OAfter: return add(rest, 1);
      default: return kInf;
    }
  }

  void object_text(const GState& s, const Frame& f, std::string& out) const {
    const uint64_t* used = used_of(s, f);
    bool any = false;
    rest_cost(f, used, &any);
    const int32_t keys = schema(f.x).key_dfa;
    auto key = [&](int32_t node) {
      const LitOpt* o = best(keys, node, used);
      if (!o) return;
      path(keys, node, o->lit, out);
      out += "\":";
      value_text(schema(f.x).prop_schema[static_cast<size_t>(o->lit)], out);
      rest_text(f, used, o->lit, out);
      out += '}';
    };
    switch (f.stage) {
      case OInit:
      case OOpen:
        if (f.stage == OInit) out += '{';
        if (!any) {
          out += '}';
          return;
        }
        out += '"';
        return key(0);
      case OComma: out += '"'; return key(0);
      case OKey: return key(f.y);
      case OColon: out += ':'; [[fallthrough]];
      case OValue: value_text(prop_schema(f), out); [[fallthrough]];
      case OAfter: rest_text(f, used, -1, out); out += '}'; return;
      default: return;
    }
  }

  // A String frame: the bytes to its closing quote.
  int64_t string_cost(const Frame& f) const {
    switch (f.stage) {
      case SInit: return 2;
      case SContent: return 1;
      case SUtf8: {
        std::string tail;
        return utf8_tail(f, tail) ? f.a + 1 : kInf;
      }
      case SEsc: return 2;
      case SU0:
      case SU1:
      case SU2:
      case SU3: {
        const int k = SU3 - f.stage + 1;  // hex digits left
        const int32_t v = f.x << (4 * k);  // filled with '0'
        return k + (v >= 0xD800 && v <= 0xDBFF ? 6 : 0) + 1;
      }
      default: return (SL3 - f.stage + 1) + 1;  // the rest of \udc00, then '"'
    }
  }
  // The smallest usable bytes that finish a multi-byte character.
  bool utf8_tail(const Frame& f, std::string& out) const {
    for (int i = 0; i < f.a; ++i) {
      const uint8_t lo = i == 0 ? kUtf8Lo[f.b] : 0x80, hi = i == 0 ? kUtf8Hi[f.b] : 0xBF;
      int b = lo;
      while (b <= hi && !c_.avail[static_cast<size_t>(b)]) ++b;
      if (b > hi) return false;
      out.push_back(static_cast<char>(b));
    }
    return true;
  }
  void string_text(const Frame& f, std::string& out) const {
    switch (f.stage) {
      case SInit: out += '"'; break;
      case SContent: break;
      case SUtf8: utf8_tail(f, out); break;
      case SEsc: out += 'n'; break;
      case SU0:
      case SU1:
      case SU2:
      case SU3: {
        const int k = SU3 - f.stage + 1;
        const int32_t v = f.x << (4 * k);
        out.append(static_cast<size_t>(k), '0');
        if (v >= 0xD800 && v <= 0xDBFF) out += "\\udc00";
        break;
      }
      default: {
        static constexpr std::string_view kLow = "\\udc00";
        out += kLow.substr(static_cast<size_t>(f.stage - SLSlash));
      }
    }
    out += '"';
  }

  int64_t frame_cost(const GState& s, const Frame& f) const {
    switch (f.kind) {
      case FK::Root:
        switch (f.stage) {
          case RStart:
          case RSpace: return 2;
          case ROpen:
          case RAfter: return 1;
          case RNext: return add(c_.call, 1);
          default: return 0;
        }
      case FK::Call: {
        const auto args = [&] {
          return add(minval(g_.tool_args[static_cast<size_t>(f.y)]), 1);
        };
        switch (f.stage) {
          case CFix1: return add(kFix1Len - f.x, best_cost(g_.name_dfa, 0, nullptr));
          case CName: return best_cost(g_.name_dfa, f.x, nullptr);
          case CFix2: return add(kFix2Len - f.x, args());
          case CArgs: return args();
          default: return 1;
        }
      }
      case FK::Object: return object_cost(s, f);
      case FK::FreeObject: {
        // OInit {} | OOpen } | OColon :0} | OValue 0} | OAfter } | OComma "":0}
        static constexpr int64_t k[] = {2, 1, kInf, 3, 2, 1, 5};
        return k[f.stage];
      }
      case FK::Array:
        switch (f.stage) {
          case AInit: return 2;
          case ANext: return add(minval(f.x), 1);
          default: return 1;
        }
      case FK::String: return string_cost(f);
      case FK::Number:
        return f.stage == NZero || f.stage == NInt || f.stage == NFrac || f.stage == NExp ? 0 : 1;
      case FK::Literal: return best_cost(f.x, f.y, nullptr);
    }
    return kInf;
  }

  void call_name_text(int32_t node, std::string& out) const {
    const LitOpt* o = best(g_.name_dfa, node, nullptr);
    if (!o) return;
    path(g_.name_dfa, node, o->lit, out);
    out += '"';
    out += kFix2;
    value_text(g_.tool_args[static_cast<size_t>(o->lit)], out);
    out += '}';
  }

  void frame_text(const GState& s, const Frame& f, std::string& out) const {
    switch (f.kind) {
      case FK::Root:
        switch (f.stage) {
          case RStart:
          case RSpace: out += "[]"; return;
          case ROpen:
          case RAfter: out += ']'; return;
          case RNext:
            out += '{';
            out += kFix1;
            call_name_text(0, out);
            out += ']';
            return;
          default: return;
        }
      case FK::Call:
        switch (f.stage) {
          case CFix1:
            out += kFix1 + f.x;
            return call_name_text(0, out);
          case CName: return call_name_text(f.x, out);
          case CFix2: out += kFix2 + f.x; [[fallthrough]];
          case CArgs: value_text(g_.tool_args[static_cast<size_t>(f.y)], out); [[fallthrough]];
          default: out += '}'; return;
        }
      case FK::Object: return object_text(s, f, out);
      case FK::FreeObject: {
        static constexpr const char* k[] = {"{}", "}", "", ":0}", "0}", "}", "\"\":0}"};
        out += k[f.stage];
        return;
      }
      case FK::Array:
        switch (f.stage) {
          case AInit: out += "[]"; return;
          case ANext: value_text(f.x, out); [[fallthrough]];
          default: out += ']'; return;
        }
      case FK::String: return string_text(f, out);
      case FK::Number:
        if (!(f.stage == NZero || f.stage == NInt || f.stage == NFrac || f.stage == NExp)) out += '0';
        return;
      case FK::Literal: {
        if (const LitOpt* o = best(f.x, f.y, nullptr)) path(f.x, f.y, o->lit, out);
        return;
      }
    }
  }

  const Grammar& g_;
  const Completion& c_;
};

// ---- The constraint ----------------------------------------------------------------------

class SchemaConstraint final : public Constraint {
 public:
  SchemaConstraint(std::shared_ptr<const TokenIndex> index, std::shared_ptr<const Grammar> g,
                   bool cont_ok, std::shared_ptr<const Completion> completion)
      : index_(std::move(index)),
        g_(std::move(g)),
        m_(*g_),
        completion_(std::move(completion)),
        cm_(*g_, *completion_),
        cont_ok_(cont_ok) {
    scratch_.resize(index_->trie().max_depth() + 2);
    reset();
  }

  void reset() override {
    m_.init(state_);
    started_ = false;
    finished_ = false;
    budget_ = -1;
  }

  void set_budget(int remaining_tokens) override {
    budget_ = remaining_tokens < 0 ? -1 : remaining_tokens;
  }

  size_t allowed(std::vector<uint8_t>& mask) override {
    mask.assign(index_->size(), 0);
    count_ = 0;
    mask_ = &mask;
    if (finished_ || m_.complete(state_)) {
      for (int id : index_->eos_ids()) mark(id);
      return count_;
    }
    limited_ = budget_ >= 0;
    ends_.clear();
    const int64_t here = limited_ ? cm_.cost(state_) : 0;
    if (!started_) {
      for (int id : index_->lead_ids()) mark(id);
      if (limited_) ends_.push_back({nullptr, kLeadIds, here});  // text-less: same completion
    }
    const ByteTrie* trie = &index_->trie();
    if (m_.in_plain_string(state_)) {  // every plain token is allowed inside a string
      for (int id : index_->plain_ids()) mark(id);
      if (limited_) ends_.push_back({nullptr, kPlainIds, here});  // string content: same completion
      trie = &index_->special_trie();
    }
    scratch_[0] = state_;
    walk(*trie, 0, 0);
    if (limited_) apply_budget();
    return count_;
  }

  Status advance(int token) override {
    if (token < 0 || static_cast<size_t>(token) >= index_->size())
      return make_error("constraint: token id {} outside the vocabulary ({})", token,
                        index_->size());
    if (finished_) return make_error("constraint: token {} after EOS", token);
    // Under a budget a token must leave a completion that fits, EOS included. When even the
    // shortest completion does not fit any more (budgets below `[]` + EOS), the allowed set
    // (the tokens that get closest) decides.
    int64_t room = -1;  // the longest completion a token may leave, or -1: no budget
    if (budget_ >= 0) {
      if (cm_.cost(state_) + 1 <= budget_) {
        room = budget_ - 2;
      } else {
        std::vector<uint8_t> mask;
        allowed(mask);
        if (!mask[static_cast<size_t>(token)])
          return make_error("constraint: token {} is not allowed here (token budget)", token);
      }
    }
    const auto over_budget = [&](const GState& after) { return room >= 0 && cm_.cost(after) > room; };
    if (index_->is_eos(token)) {
      if (!m_.complete(state_))
        return make_error("constraint: EOS before the call list is complete");
      finished_ = true;
      consume();
      return Status::ok();
    }
    if (index_->is_lead(token)) {
      if (started_) return make_error("constraint: token {} is only allowed first", token);
      if (over_budget(state_))
        return make_error("constraint: token {} leaves no room to complete the output within the "
                          "token budget",
                          token);
      started_ = true;
      consume();
      return Status::ok();
    }
    const std::string& bytes = index_->bytes(token);
    if (bytes.empty()) return make_error("constraint: token {} has no text", token);
    scratch_[0] = state_;
    for (char ch : bytes)
      if (!m_.feed(scratch_[0], static_cast<uint8_t>(ch)))
        return make_error("constraint: token {} is not allowed here", token);
    if (!m_.token_end_ok(scratch_[0], cont_ok_))
      return make_error("constraint: token {} is not allowed here", token);
    if (over_budget(scratch_[0]))
      return make_error("constraint: token {} leaves no room to complete the output within the "
                        "token budget",
                        token);
    std::swap(state_, scratch_[0]);
    started_ = true;
    consume();
    return Status::ok();
  }

  bool done() const override { return m_.complete(state_); }

 private:
  // Allowed tokens ending at one trie node (or a group: lead ids, plain ids) and the length of
  // the shortest completion after them.
  struct End {
    const ByteTrie* trie;  // nullptr: a group
    uint32_t node;
    int64_t after;
  };
  enum : uint32_t { kLeadIds, kPlainIds };

  void consume() {
    if (budget_ > 0) --budget_;
  }

  void mark(int id) {
    auto& m = (*mask_)[static_cast<size_t>(id)];
    if (!m) {
      m = 1;
      ++count_;
    }
  }
  void unmark(int id) {
    auto& m = (*mask_)[static_cast<size_t>(id)];
    if (m) {
      m = 0;
      --count_;
    }
  }

  // Keeps the tokens whose shortest completion still fits: at most budget - 2 bytes (one
  // single-byte token per byte, then EOS). If none does (the budget was below the shortest
  // output from the start), the ones that leave the shortest completion.
  void apply_budget() {
    int64_t least = kInf;
    for (const End& e : ends_) least = std::min(least, e.after);
    const int64_t limit = std::max<int64_t>(static_cast<int64_t>(budget_) - 2, least);
    for (const End& e : ends_) {
      if (e.after <= limit) continue;
      if (!e.trie) {
        for (int id : e.node == kLeadIds ? index_->lead_ids() : index_->plain_ids()) unmark(id);
        continue;
      }
      const auto& nd = e.trie->node(e.node);
      for (uint32_t i = nd.sub_begin; i < nd.sub_begin + nd.n_end; ++i) unmark(e.trie->order()[i]);
    }
  }

  void walk(const ByteTrie& t, uint32_t node, size_t depth) {
    const auto& nd = t.node(node);
    const auto* edges = t.edges(nd);
    for (uint32_t e = 0; e < nd.n_edges; ++e) {
      GState& ns = scratch_[depth + 1];
      ns = scratch_[depth];
      if (!m_.feed(ns, edges[e].label)) continue;
      const auto& child = t.node(edges[e].child);
      if (child.n_end > 0 && m_.token_end_ok(ns, cont_ok_)) {
        for (uint32_t i = child.sub_begin; i < child.sub_begin + child.n_end; ++i)
          mark(t.order()[i]);
        if (limited_) ends_.push_back({&t, edges[e].child, cm_.cost(ns)});
      }
      if (child.n_edges > 0) walk(t, edges[e].child, depth + 1);
    }
  }

  std::shared_ptr<const TokenIndex> index_;
  std::shared_ptr<const Grammar> g_;
  Machine m_;
  std::shared_ptr<const Completion> completion_;
  Completer cm_;
  bool cont_ok_;
  GState state_;
  std::vector<GState> scratch_;
  bool started_ = false, finished_ = false;
  int budget_ = -1;  // tokens that may still be generated (EOS included); -1: no limit
  bool limited_ = false;
  std::vector<End> ends_;
  std::vector<uint8_t>* mask_ = nullptr;
  size_t count_ = 0;
};

}  // namespace

Result<std::unique_ptr<Constraint>> make_schema_constraint(std::shared_ptr<const TokenIndex> index,
                                                           const std::vector<ToolSpec>& tools,
                                                           const SchemaOptions& opt) {
  if (!index) return make_error("schema constraint: no token index");
  if (index->eos_ids().empty()) return make_error("schema constraint: the vocabulary has no EOS id");
  for (int b = 0x20; b < 0x7F; ++b)
    if (!index->byte_available(static_cast<uint8_t>(b)))
      return make_error(
          "schema constraint: the vocabulary has no single-byte token for 0x{:02x}; "
          "it needs every printable ASCII byte (byte fallback provides them)",
          b);
  bool cont_ok = true;
  for (int b = 0x80; b < 0xC0; ++b) cont_ok = cont_ok && index->byte_available(static_cast<uint8_t>(b));
  NEEDLE_ASSIGN(auto g, compile_grammar(tools, opt));
  // Completions under a budget are spelled with single-byte tokens: only those bytes count.
  ByteSet avail;
  bool every_byte = true;
  for (int b = 0; b < 256; ++b) {
    avail[static_cast<size_t>(b)] = index->byte_available(static_cast<uint8_t>(b));
    every_byte = every_byte && avail[static_cast<size_t>(b)];
  }
  auto completion = every_byte ? g->completion : build_completion(*g, avail);
  return std::unique_ptr<Constraint>(
      new SchemaConstraint(std::move(index), std::move(g), cont_ok, std::move(completion)));
}

// ---- SchemaMatcher -------------------------------------------------------------------------

struct SchemaMatcher::State {
  GState s;
};

SchemaMatcher::SchemaMatcher(std::shared_ptr<const Grammar> g)
    : g_(std::move(g)), s_(std::make_unique<State>()) {
  reset();
}
SchemaMatcher::~SchemaMatcher() = default;
SchemaMatcher::SchemaMatcher(const SchemaMatcher& o)
    : g_(o.g_), s_(std::make_unique<State>(*o.s_)) {}
SchemaMatcher& SchemaMatcher::operator=(const SchemaMatcher& o) {
  g_ = o.g_;
  s_ = std::make_unique<State>(*o.s_);
  return *this;
}

void SchemaMatcher::reset() { Machine(*g_).init(s_->s); }

bool SchemaMatcher::feed(std::string_view bytes) {
  Machine m(*g_);
  GState ns = s_->s;
  for (char c : bytes)
    if (!m.feed(ns, static_cast<uint8_t>(c))) return false;
  s_->s = std::move(ns);
  return true;
}

bool SchemaMatcher::complete() const { return Machine(*g_).complete(s_->s); }

std::string SchemaMatcher::shortest_completion() const {
  return Completer(*g_, *g_->completion).text(s_->s);
}

size_t SchemaMatcher::shortest_completion_length() const {
  return static_cast<size_t>(Completer(*g_, *g_->completion).cost(s_->s));
}

std::string SchemaMatcher::state_key() const {
  std::string k;
  auto put = [&](const void* p, size_t n) { k.append(static_cast<const char*>(p), n); };
  for (const Frame& f : s_->s.frames) {
    const uint8_t b[] = {static_cast<uint8_t>(f.kind), f.stage, f.a, f.b};
    put(b, sizeof b);
    put(&f.x, sizeof f.x);
    put(&f.y, sizeof f.y);
    put(&f.z, sizeof f.z);
  }
  k.push_back('|');
  for (uint64_t w : s_->s.used) put(&w, sizeof w);
  return k;
}

std::string SchemaMatcher::allowed_bytes() const {
  Machine m(*g_);
  std::string out;
  for (int b = 0; b < 256; ++b) {
    GState ns = s_->s;
    if (m.feed(ns, static_cast<uint8_t>(b))) out.push_back(static_cast<char>(b));
  }
  return out;
}

}  // namespace needle::decode
