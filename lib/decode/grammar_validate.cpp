// validate_output: a small strict JSON parser that keeps duplicate keys (json::parse follows
// Python's dict and would hide them), then a schema walk. Written independently of the
// grammar automaton so tests can use it as an oracle.
#include <map>

#include "decode/grammar.h"

namespace needle::decode {

namespace {

struct JNode {
  // Special members defined after the class (clang 14, C++20: see text/json.h).
  JNode();
  JNode(const JNode&);
  JNode(JNode&&) noexcept;
  JNode& operator=(const JNode&);
  JNode& operator=(JNode&&) noexcept;
  ~JNode();

  enum class T { Null, Bool, Num, Str, Arr, Obj } t = T::Null;
  std::string s;  // Str: decoded UTF-8; Num: text as written; Bool: "true"/"false"
  std::vector<JNode> arr;
  std::vector<std::pair<std::string, JNode>> obj;  // in order, duplicates kept
};
JNode::JNode() = default;
JNode::JNode(const JNode&) = default;
JNode::JNode(JNode&&) noexcept = default;
JNode& JNode::operator=(const JNode&) = default;
JNode& JNode::operator=(JNode&&) noexcept = default;
JNode::~JNode() = default;

class Parser {
 public:
  explicit Parser(std::string_view in) : in_(in) {}

  Result<JNode> document() {
    JNode v;
    NEEDLE_TRY(value(v, 0));
    ws();
    if (i_ != in_.size()) return err("trailing characters");
    return v;
  }

 private:
  Error err(std::string_view what) const { return make_error("{} at byte {}", what, i_); }
  void ws() {
    while (i_ < in_.size() && (in_[i_] == ' ' || in_[i_] == '\t' || in_[i_] == '\n' || in_[i_] == '\r'))
      ++i_;
  }
  bool eat(char c) {
    if (i_ < in_.size() && in_[i_] == c) return ++i_, true;
    return false;
  }
  bool lit(std::string_view w) {
    if (in_.substr(i_, w.size()) == w) return i_ += w.size(), true;
    return false;
  }

  Status value(JNode& v, int depth) {
    if (depth > 256) return err("nesting too deep");
    ws();
    if (i_ >= in_.size()) return err("unexpected end");
    const char c = in_[i_];
    if (c == '{') {
      ++i_;
      v.t = JNode::T::Obj;
      ws();
      if (eat('}')) return Status::ok();
      for (;;) {
        ws();
        if (i_ >= in_.size() || in_[i_] != '"') return err("expected a key");
        std::string key;
        NEEDLE_TRY(string(key));
        ws();
        if (!eat(':')) return err("expected ':'");
        JNode item;
        NEEDLE_TRY(value(item, depth + 1));
        v.obj.emplace_back(std::move(key), std::move(item));
        ws();
        if (eat('}')) return Status::ok();
        if (!eat(',')) return err("expected ',' or '}'");
      }
    }
    if (c == '[') {
      ++i_;
      v.t = JNode::T::Arr;
      ws();
      if (eat(']')) return Status::ok();
      for (;;) {
        JNode item;
        NEEDLE_TRY(value(item, depth + 1));
        v.arr.push_back(std::move(item));
        ws();
        if (eat(']')) return Status::ok();
        if (!eat(',')) return err("expected ',' or ']'");
      }
    }
    if (c == '"') {
      v.t = JNode::T::Str;
      return string(v.s);
    }
    if (lit("true")) return v.t = JNode::T::Bool, v.s = "true", Status::ok();
    if (lit("false")) return v.t = JNode::T::Bool, v.s = "false", Status::ok();
    if (lit("null")) return v.t = JNode::T::Null, Status::ok();
    return number(v);
  }

  static bool digit(char c) { return c >= '0' && c <= '9'; }

  Status number(JNode& v) {
    const size_t start = i_;
    eat('-');
    if (eat('0')) {
    } else if (i_ < in_.size() && digit(in_[i_]) ) {
      while (i_ < in_.size() && digit(in_[i_])) ++i_;
    } else {
      return err("invalid value");
    }
    if (eat('.')) {
      if (i_ >= in_.size() || !digit(in_[i_])) return err("digit expected after '.'");
      while (i_ < in_.size() && digit(in_[i_])) ++i_;
    }
    if (i_ < in_.size() && (in_[i_] == 'e' || in_[i_] == 'E')) {
      ++i_;
      if (!eat('+')) eat('-');
      if (i_ >= in_.size() || !digit(in_[i_])) return err("digit expected in exponent");
      while (i_ < in_.size() && digit(in_[i_])) ++i_;
    }
    v.t = JNode::T::Num;
    v.s = std::string(in_.substr(start, i_ - start));
    return Status::ok();
  }

  Status hex4(uint32_t& out) {
    if (i_ + 4 > in_.size()) return err("truncated \\u escape");
    out = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = in_[i_++];
      int h = (c >= '0' && c <= '9') ? c - '0'
              : (c >= 'a' && c <= 'f') ? c - 'a' + 10
              : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                                       : -1;
      if (h < 0) return err("bad hex digit in \\u escape");
      out = out * 16 + static_cast<uint32_t>(h);
    }
    return Status::ok();
  }

  static void put(std::string& out, uint32_t cp) {
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

  Status string(std::string& out) {
    ++i_;  // opening quote
    for (;;) {
      if (i_ >= in_.size()) return err("unterminated string");
      const auto c = static_cast<unsigned char>(in_[i_]);
      if (c == '"') {
        ++i_;
        return Status::ok();
      }
      if (c < 0x20) return err("control character in string");
      if (c == '\\') {
        ++i_;
        if (i_ >= in_.size()) return err("unterminated escape");
        const char e = in_[i_++];
        switch (e) {
          case '"': out.push_back('"'); break;
          case '\\': out.push_back('\\'); break;
          case '/': out.push_back('/'); break;
          case 'b': out.push_back('\b'); break;
          case 'f': out.push_back('\f'); break;
          case 'n': out.push_back('\n'); break;
          case 'r': out.push_back('\r'); break;
          case 't': out.push_back('\t'); break;
          case 'u': {
            uint32_t cp;
            NEEDLE_TRY(hex4(cp));
            if (cp >= 0xDC00 && cp <= 0xDFFF) return err("lone low surrogate");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
              if (!lit("\\u")) return err("high surrogate without a low one");
              uint32_t lo;
              NEEDLE_TRY(hex4(lo));
              if (lo < 0xDC00 || lo > 0xDFFF) return err("high surrogate without a low one");
              cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            put(out, cp);
            break;
          }
          default: return err("bad escape");
        }
        continue;
      }
      if (c < 0x80) {
        out.push_back(static_cast<char>(c));
        ++i_;
        continue;
      }
      // UTF-8 (RFC 3629).
      size_t n;
      unsigned char lo = 0x80, hi = 0xBF;
      if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
      } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
      } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
      } else {
        return err("invalid UTF-8");
      }
      if (i_ + n > in_.size()) return err("truncated UTF-8");
      for (size_t k = 1; k < n; ++k) {
        const auto b = static_cast<unsigned char>(in_[i_ + k]);
        if (b < lo || b > hi) return err("invalid UTF-8");
        lo = 0x80;
        hi = 0xBF;
      }
      out.append(in_.substr(i_, n));
      i_ += n;
    }
  }

  std::string_view in_;
  size_t i_ = 0;
};

bool same(const JNode& a, const JNode& b) {
  if (a.t != b.t || a.s != b.s || a.arr.size() != b.arr.size() || a.obj.size() != b.obj.size())
    return false;
  for (size_t i = 0; i < a.arr.size(); ++i)
    if (!same(a.arr[i], b.arr[i])) return false;
  for (size_t i = 0; i < a.obj.size(); ++i)
    if (a.obj[i].first != b.obj[i].first || !same(a.obj[i].second, b.obj[i].second)) return false;
  return true;
}

Status check_object(const JNode& v, const std::vector<ArgProp>& props, const std::string& path);

Status check(const JNode& v, const ArgSchema& s, const std::string& path) {
  using T = JNode::T;
  if (!s.enum_values.empty()) {
    if (v.t == T::Null && s.nullable) return Status::ok();
    for (const auto& e : s.enum_values) {
      if (e.is_string) {
        if (v.t == T::Str && v.s == e.text) return Status::ok();
      } else {
        auto ev = Parser(e.text).document();
        if (ev && same(*ev, v)) return Status::ok();
      }
    }
    return make_error("{}: value is not one of the enum values", path);
  }
  if (v.t == T::Null) {
    if (s.nullable || s.type == ArgType::Null || s.type == ArgType::Any) return Status::ok();
    return make_error("{}: null is not allowed", path);
  }
  switch (s.type) {
    case ArgType::Any: return Status::ok();
    case ArgType::String:
      if (v.t != T::Str) return make_error("{}: expected a string", path);
      return Status::ok();
    case ArgType::Number:
      if (v.t != T::Num) return make_error("{}: expected a number", path);
      return Status::ok();
    case ArgType::Integer:
      if (v.t != T::Num || v.s.find_first_of(".eE") != std::string::npos)
        return make_error("{}: expected an integer", path);
      return Status::ok();
    case ArgType::Boolean:
      if (v.t != T::Bool) return make_error("{}: expected a boolean", path);
      return Status::ok();
    case ArgType::Null: return make_error("{}: expected null", path);
    case ArgType::Array:
      if (v.t != T::Arr) return make_error("{}: expected an array", path);
      if (!s.items.empty())
        for (size_t i = 0; i < v.arr.size(); ++i)
          NEEDLE_TRY(check(v.arr[i], s.items[0], fmt::format("{}[{}]", path, i)));
      return Status::ok();
    case ArgType::Object:
      if (v.t != T::Obj) return make_error("{}: expected an object", path);
      if (s.properties.empty()) return Status::ok();  // free-form
      return check_object(v, s.properties, path);
  }
  return Status::ok();
}

Status check_object(const JNode& v, const std::vector<ArgProp>& props, const std::string& path) {
  std::map<std::string_view, const ArgProp*> by_name;
  for (const auto& p : props) by_name.emplace(p.name, &p);  // the first declaration wins
  std::map<std::string_view, bool> seen;
  for (const auto& [k, val] : v.obj) {
    auto it = by_name.find(k);
    if (it == by_name.end()) return make_error("{}: unknown key \"{}\"", path, k);
    if (!seen.emplace(k, true).second) return make_error("{}: duplicate key \"{}\"", path, k);
    NEEDLE_TRY(check(val, it->second->schema, fmt::format("{}.{}", path, k)));
  }
  for (const auto& p : props)
    if (p.required && !seen.count(p.name))
      return make_error("{}: missing required key \"{}\"", path, p.name);
  return Status::ok();
}

}  // namespace

Status validate_output(std::string_view text, const std::vector<ToolSpec>& tools) {
  auto parsed = Parser(text).document();
  if (!parsed) return make_error("output is not JSON: {}", parsed.message());
  const JNode& root = *parsed;
  if (root.t != JNode::T::Arr) return make_error("output is not a JSON list");
  std::map<std::string_view, const ToolSpec*> by_name;
  for (const auto& t : tools)
    if (!t.name.empty()) by_name.emplace(t.name, &t);
  for (size_t i = 0; i < root.arr.size(); ++i) {
    const JNode& call = root.arr[i];
    const std::string path = fmt::format("[{}]", i);
    if (call.t != JNode::T::Obj) return make_error("{}: a call is not an object", path);
    const JNode* name = nullptr;
    const JNode* args = nullptr;
    for (const auto& [k, val] : call.obj) {
      const JNode** slot = k == "name" ? &name : k == "arguments" ? &args : nullptr;
      if (!slot) return make_error("{}: unexpected key \"{}\" in a call", path, k);
      if (*slot) return make_error("{}: duplicate key \"{}\" in a call", path, k);
      *slot = &val;
    }
    if (!name || name->t != JNode::T::Str) return make_error("{}: call without a string name", path);
    if (!args || args->t != JNode::T::Obj) return make_error("{}: call without an arguments object", path);
    auto it = by_name.find(name->s);
    if (it == by_name.end()) return make_error("{}: unknown tool \"{}\"", path, name->s);
    NEEDLE_TRY(check_object(*args, it->second->args, fmt::format("{}.{}", path, name->s)));
  }
  return Status::ok();
}

}  // namespace needle::decode
