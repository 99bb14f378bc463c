#include "decode/constraint_reference.h"

#include <algorithm>
#include <map>

#include "text/json.h"

namespace needle::decode {

namespace {

std::u32string to_chars(std::string_view s) {
  // Tool names and keys are valid UTF-8 (they come from parsed JSON): decode code points.
  std::u32string out;
  for (size_t i = 0; i < s.size();) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    size_t n = b0 < 0x80 ? 1 : b0 < 0xE0 ? 2 : b0 < 0xF0 ? 3 : 4;
    if (i + n > s.size()) n = 1;
    char32_t cp = n == 1 ? b0 : (b0 & (0x7F >> n));
    for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    out.push_back(cp);
    i += n;
  }
  return out;
}

// The original's Trie: character children and a terminal flag.
class CharTrie {
 public:
  CharTrie() : nodes_(1) {}
  void insert(const std::u32string& w) {
    int n = 0;
    for (char32_t c : w) {
      auto it = nodes_[n].children.find(c);
      if (it == nodes_[n].children.end()) {
        const int m = static_cast<int>(nodes_.size());
        nodes_[n].children.emplace(c, m);
        nodes_.emplace_back();
        n = m;
      } else {
        n = it->second;
      }
    }
    nodes_[n].terminal = true;
  }
  int child(int n, char32_t c) const {
    auto it = nodes_[n].children.find(c);
    return it == nodes_[n].children.end() ? -1 : it->second;
  }
  bool terminal(int n) const { return nodes_[n].terminal; }
  int get_node(const std::u32string& prefix) const {
    int n = 0;
    for (char32_t c : prefix)
      if ((n = child(n, c)) < 0) return -1;
    return n;
  }

 private:
  struct Node {
    std::map<char32_t, int> children;
    bool terminal = false;
  };
  std::vector<Node> nodes_;
};

enum class RefState { Free, InName, InArgKey };

class ReferenceConstraint final : public Constraint {
 public:
  ReferenceConstraint(std::shared_ptr<const TokenIndex> index, const std::vector<RefTool>& tools)
      : index_(std::move(index)) {
    for (const auto& t : tools) {
      if (t.name.empty()) continue;
      const std::u32string name = to_chars(t.name);
      name_trie_.insert(name);
      if (!t.has_params) continue;
      CharTrie keys;
      for (const auto& k : t.keys)
        if (!k.empty()) keys.insert(to_chars(k));
      param_tries_[name] = std::move(keys);  // a later tool of the same name replaces it
    }
    reset();
  }

  void reset() override {
    state_ = RefState::Free;
    tail_.clear();
    constrained_buf_.clear();
    current_function_.clear();
    in_arguments_ = false;
    arguments_depth_ = 0;
    nesting_depth_ = 0;
    in_string_ = false;
    prev_char_escape_ = false;
    last_nonws_ = 0;
    mask_valid_ = false;
  }

  size_t allowed(std::vector<uint8_t>& mask) override {
    compute();
    mask = mask_;
    return count_;
  }

  Status advance(int token) override {
    if (token < 0 || static_cast<size_t>(token) >= index_->size())
      return make_error("constraint: token id {} outside the vocabulary ({})", token,
                        index_->size());
    compute();
    if (!mask_[static_cast<size_t>(token)])
      return make_error("constraint: token {} is not allowed here", token);
    for (char32_t c : index_->chars(token)) feed_char(c);
    mask_valid_ = false;
    return Status::ok();
  }

  // The original has no notion of completion: EOS (no text) is masked only inside a
  // constrained span.
  bool done() const override { return state_ == RefState::Free; }

 private:
  void append(char32_t c) {
    tail_.push_back(c);
    if (tail_.size() > 32) tail_.erase(0, tail_.size() - 16);
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r') last_nonws_ = c;
  }
  bool ends_with(std::u32string_view s) const {
    return tail_.size() >= s.size() &&
           std::u32string_view(tail_).substr(tail_.size() - s.size()) == s;
  }

  // JsonStateMachine._feed_char, line by line.
  void feed_char(char32_t ch) {
    if (state_ != RefState::Free) {
      if (ch == U'"') {
        if (state_ == RefState::InName) current_function_ = constrained_buf_;
        constrained_buf_.clear();
        state_ = RefState::Free;
      } else {
        constrained_buf_.push_back(ch);
      }
      append(ch);
      return;
    }
    const char32_t prev_nonws = last_nonws_;  // _is_value_quote looks before this char
    append(ch);
    if (in_string_) {
      if (prev_char_escape_) {
        prev_char_escape_ = false;
        return;
      }
      if (ch == U'\\') {
        prev_char_escape_ = true;
        return;
      }
      if (ch == U'"') in_string_ = false;
      return;
    }
    if (ch == U'{' || ch == U'[') {
      ++nesting_depth_;
    } else if (ch == U'}' || ch == U']') {
      nesting_depth_ = std::max(0, nesting_depth_ - 1);
      if (ch == U'}' && in_arguments_ && nesting_depth_ < arguments_depth_) in_arguments_ = false;
      return;
    }
    if (ends_with(U"\"name\":\"") && !in_arguments_) {
      state_ = RefState::InName;
      constrained_buf_.clear();
      return;
    }
    if (ends_with(U"\"arguments\":{")) {
      in_arguments_ = true;
      arguments_depth_ = nesting_depth_;
      return;
    }
    if (in_arguments_ && nesting_depth_ == arguments_depth_ &&
        (ends_with(U"{\"") || ends_with(U",\""))) {
      state_ = RefState::InArgKey;
      constrained_buf_.clear();
      return;
    }
    if (ch == U'"' && prev_nonws == U':') in_string_ = true;
  }

  void compute() {
    if (mask_valid_) return;
    mask_valid_ = true;
    const size_t n = index_->size();
    const CharTrie* trie = nullptr;
    if (state_ == RefState::InName) {
      trie = &name_trie_;
    } else if (state_ == RefState::InArgKey) {
      auto it = param_tries_.find(current_function_);
      if (it != param_tries_.end()) trie = &it->second;
    }
    int node = trie ? trie->get_node(constrained_buf_) : -1;
    if (!trie || node < 0) {  // free, unknown function, or off-trie: unconstrained
      mask_.assign(n, 1);
      count_ = n;
      return;
    }
    mask_.assign(n, 0);
    count_ = 0;
    walk(*trie, 0, node);
    if (count_ == 0) {  // nothing valid: fall back to unconstrained
      mask_.assign(n, 1);
      count_ = n;
    }
  }

  void mark(uint32_t begin, uint32_t end) {
    const auto& order = index_->char_trie().order();
    for (uint32_t i = begin; i < end; ++i) {
      auto& m = mask_[static_cast<size_t>(order[i])];
      if (!m) {
        m = 1;
        ++count_;
      }
    }
  }

  // _check_token_valid for every token at once: walk the token trie and the name/key trie
  // together. A token is valid if all its characters walk the trie, or if it reaches a '"'
  // at a terminal node (what follows the quote is not checked).
  void walk(const CharTrie& trie, uint32_t tnode, int rnode) {
    const auto& tt = index_->char_trie();
    const auto& tn = tt.node(tnode);
    const auto* edges = tt.edges(tn);
    for (uint32_t e = 0; e < tn.n_edges; ++e) {
      const auto& child = tt.node(edges[e].child);
      if (edges[e].label == U'"') {
        if (trie.terminal(rnode)) mark(child.sub_begin, child.sub_end);
        continue;
      }
      const int rc = trie.child(rnode, edges[e].label);
      if (rc < 0) continue;
      mark(child.sub_begin, child.sub_begin + child.n_end);
      walk(trie, edges[e].child, rc);
    }
  }

  std::shared_ptr<const TokenIndex> index_;
  CharTrie name_trie_;
  std::map<std::u32string, CharTrie> param_tries_;

  RefState state_ = RefState::Free;
  std::u32string tail_;  // the end of the original's `buffer` (all that its checks look at)
  std::u32string constrained_buf_, current_function_;
  bool in_arguments_ = false;
  int arguments_depth_ = 0, nesting_depth_ = 0;
  bool in_string_ = false, prev_char_escape_ = false;
  char32_t last_nonws_ = 0;

  bool mask_valid_ = false;
  std::vector<uint8_t> mask_;
  size_t count_ = 0;
};

}  // namespace

std::vector<RefTool> reference_tools(const std::vector<ToolSpec>& tools) {
  std::vector<RefTool> out;
  out.reserve(tools.size());
  for (const auto& t : tools) {
    RefTool r;
    r.name = t.name;
    for (const auto& a : t.args) r.keys.push_back(a.name);
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<RefTool> reference_tools_from_json(std::string_view tools_json) {
  std::vector<RefTool> out;
  auto parsed = json::parse(tools_json);
  if (!parsed || !parsed->is_array()) return out;
  for (const auto& tool : parsed->array) {
    if (!tool.is_object()) continue;
    const json::Value* name = tool.find("name");
    if (!name || !name->is_string() || name->text.empty()) continue;
    RefTool r;
    r.name = name->text;
    const json::Value* params = tool.find("parameters");
    json::Value empty = json::Value::make_object();
    if (!params) params = &empty;  // tool.get("parameters", {})
    r.has_params = params->is_object();
    if (r.has_params) {
      const json::Value* props = params->find("properties");
      if (!props) props = params;
      if (props->is_object()) {
        for (const auto& kv : props->object) r.keys.push_back(kv.first);
      } else if (props->is_array()) {
        for (const auto& v : props->array)
          if (v.is_string()) r.keys.push_back(v.text);
      } else if (props->is_string()) {  // iterating a str yields its characters
        const std::u32string cs = to_chars(props->text);
        for (char32_t c : cs) {
          std::string u;
          if (c < 0x80) {
            u.push_back(static_cast<char>(c));
          } else if (c < 0x800) {
            u.push_back(static_cast<char>(0xC0 | (c >> 6)));
            u.push_back(static_cast<char>(0x80 | (c & 0x3F)));
          } else if (c < 0x10000) {
            u.push_back(static_cast<char>(0xE0 | (c >> 12)));
            u.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
            u.push_back(static_cast<char>(0x80 | (c & 0x3F)));
          } else {
            u.push_back(static_cast<char>(0xF0 | (c >> 18)));
            u.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
            u.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
            u.push_back(static_cast<char>(0x80 | (c & 0x3F)));
          }
          r.keys.push_back(std::move(u));
        }
      }
      // Other types (numbers, booleans, null) make the original raise; we take no keys.
    }
    out.push_back(std::move(r));
  }
  return out;
}

Result<std::unique_ptr<Constraint>> make_reference_constraint(
    std::shared_ptr<const TokenIndex> index, const std::vector<RefTool>& tools) {
  if (!index) return make_error("constraint: no token index");
  return std::unique_ptr<Constraint>(new ReferenceConstraint(std::move(index), tools));
}

}  // namespace needle::decode
