// JSON parsing (simdjson on-demand for validation and structure; our own scalar decoding so
// integers keep their digits and strings keep Python's lone-surrogate semantics) and
// Python-exact serialization.
#include "text/json.h"

#include <simdjson.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>

namespace needle::json {

namespace od = simdjson::ondemand;

// ---------------------------------------------------------------------------------------------
// Value helpers

Value Value::from_bool(bool b) {
  Value v;
  v.type = Type::Bool;
  v.boolean = b;
  v.number = b ? 1 : 0;
  return v;
}

Value Value::from_int(int64_t i) {
  Value v;
  v.type = Type::Int;
  v.text = std::to_string(i);
  v.number = static_cast<double>(i);
  return v;
}

Value Value::from_double(double d) {
  Value v;
  v.type = Type::Float;
  v.number = d;
  return v;
}

Value Value::from_string(std::string s) {
  Value v;
  v.type = Type::String;
  v.text = std::move(s);
  return v;
}

Value Value::make_array() {
  Value v;
  v.type = Type::Array;
  return v;
}

Value Value::make_object() {
  Value v;
  v.type = Type::Object;
  return v;
}

const Value* Value::find(std::string_view key) const {
  if (type != Type::Object) return nullptr;
  for (const auto& [k, v] : object)
    if (k == key) return &v;
  return nullptr;
}

Value* Value::find(std::string_view key) {
  if (type != Type::Object) return nullptr;
  for (auto& [k, v] : object)
    if (k == key) return &v;
  return nullptr;
}

void Value::set(std::string key, Value v) {
  if (type != Type::Object) {
    *this = make_object();
  }
  if (Value* old = find(key)) {
    *old = std::move(v);
    return;
  }
  object.emplace_back(std::move(key), std::move(v));
}

// ---------------------------------------------------------------------------------------------
// Parsing

namespace {

// Python 3.11 refuses to convert integers with more digits than this (sys.int_info.default_max_str_digits).
constexpr size_t kMaxIntDigits = 4300;

void append_utf8(std::string& out, uint32_t cp) {
  // Surrogate code points (only from lone \uD8xx escapes) are written as 3 bytes (WTF-8), so
  // dump_compact can reproduce Python's "\ud800".
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool read_hex4(const char* p, const char* end, uint32_t& out) {
  if (end - p < 4) return false;
  out = 0;
  for (int i = 0; i < 4; ++i) {
    int d = hex_digit(p[i]);
    if (d < 0) return false;
    out = out * 16 + static_cast<uint32_t>(d);
  }
  return true;
}

class Parser {
 public:
  Parser(const char* base, size_t size, size_t max_depth) : base_(base), size_(size), max_depth_(max_depth) {}

  // Every scalar is consumed through simdjson's typed getters: an unconsumed value would be
  // skipped leniently (e.g. `["a": 1]` would pass). `closer` is the bracket that ends the
  // enclosing container.
  Status value(od::value v, Value& out, size_t depth, char closer) {
    od::json_type t;
    if (auto e = v.type().get(t)) return sj_error(e, v);
    switch (t) {
      case od::json_type::object: return object(v, out, depth + 1);
      case od::json_type::array: return array(v, out, depth + 1);
      case od::json_type::string: {
        od::raw_json_string raw;
        if (auto e = v.get_raw_json_string().get(raw)) return sj_error(e, v);
        const char* b = raw.raw() - 1;
        return unescape_to_value(b, string_end(raw.raw()), out);
      }
      case od::json_type::number: {
        std::string_view tok = v.raw_json_token();
        NEEDLE_TRY(number_token(tok, out));
        double ignored = 0;
        if (v.get_double().get(ignored)) {
          // simdjson refuses numbers that overflow a double (Python reads them as inf); we have
          // validated the token, so check what follows it ourselves before simdjson skips it.
          const char* q = trim_end(tok.data(), tok.data() + tok.size());
          q = skip_ws(q);
          if (*q != ',' && *q != closer) return error_at(q, "expected ',' or closing bracket");
        }
        return {};
      }
      case od::json_type::boolean: {
        std::string_view tok = v.raw_json_token();
        NEEDLE_TRY(literal_token(tok, out));
        bool b = false;
        if (auto e = v.get_bool().get(b)) return sj_error(e, v);
        return {};
      }
      case od::json_type::null: {
        std::string_view tok = v.raw_json_token();
        NEEDLE_TRY(literal_token(tok, out));
        bool n = false;
        if (auto e = v.is_null().get(n)) return sj_error(e, v);
        if (!n) return error_at(tok.data(), "invalid literal");
        return {};
      }
    }
    return error_at(v.raw_json_token().data(), "unexpected token");
  }

  const char* skip_ws(const char* q) const {
    while (q < base_ + size_ && (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r')) ++q;
    return q;
  }

  Status document(od::document& doc, Value& out) {
    od::json_type t;
    if (auto e = doc.type().get(t)) return sj_doc_error(e, doc);
    if (t == od::json_type::object || t == od::json_type::array) {
      od::value v;
      if (auto e = doc.get_value().get(v)) return sj_doc_error(e, doc);
      if (t == od::json_type::object) {
        NEEDLE_TRY(object(v, out, 1));
      } else {
        NEEDLE_TRY(array(v, out, 1));
      }
    } else {
      std::string_view tok;
      if (auto e = doc.raw_json_token().get(tok)) return sj_doc_error(e, doc);
      root_scalar_end_ = trim_end(tok.data(), tok.data() + tok.size());
      switch (t) {
        case od::json_type::string: NEEDLE_TRY(string_token(tok, out)); break;
        case od::json_type::number: NEEDLE_TRY(number_token(tok, out)); break;
        case od::json_type::boolean:
        case od::json_type::null: NEEDLE_TRY(literal_token(tok, out)); break;
        default: return error_at(tok.data(), "unexpected token");
      }
    }
    if (root_scalar_end_ != nullptr) {
      // A scalar document: only whitespace may follow it.
      for (const char* q = root_scalar_end_; q < base_ + size_; ++q)
        if (*q != ' ' && *q != '\t' && *q != '\n' && *q != '\r') return error_at(q, "extra data after the JSON value");
    } else {
      // After a fully walked root container the iterator is at the end, or at extra data.
      const char* loc = nullptr;
      if (!doc.current_location().get(loc) && loc < base_ + size_) return error_at(loc, "extra data after the JSON value");
    }
    return {};
  }

 private:
  Status object(od::value v, Value& out, size_t depth) {
    if (depth > max_depth_)
      return error_at(v.raw_json_token().data(), fmt::format("nesting deeper than {}", max_depth_));
    const char* start = v.raw_json_token().data();
    od::object obj;
    if (auto e = v.get_object().get(obj)) return sj_error_at(e, start);
    out = Value::make_object();
    for (auto field_r : obj) {
      od::field field;
      if (auto e = std::move(field_r).get(field)) return sj_obj_error(e, obj, start);
      // The raw key points into the input, just past its opening quote.
      const char* kp = field.key().raw();
      std::string key;
      NEEDLE_TRY(unescape(kp - 1, string_end(kp), key));
      Value child;
      NEEDLE_TRY(value(field.value(), child, depth, '}'));
      out.set(std::move(key), std::move(child));
    }
    return {};
  }

  Status array(od::value v, Value& out, size_t depth) {
    if (depth > max_depth_)
      return error_at(v.raw_json_token().data(), fmt::format("nesting deeper than {}", max_depth_));
    const char* start = v.raw_json_token().data();
    od::array arr;
    if (auto e = v.get_array().get(arr)) return sj_error_at(e, start);
    out = Value::make_array();
    for (auto elem_r : arr) {
      od::value elem;
      if (auto e = std::move(elem_r).get(elem)) return sj_arr_error(e, arr, start);
      Value child;
      NEEDLE_TRY(value(elem, child, depth, ']'));
      out.array.push_back(std::move(child));
    }
    return {};
  }

  // Just past the closing quote of a string whose content starts at p (simdjson has already checked that
  // the string is terminated; the input is padded).
  static const char* string_end(const char* p) {
    while (*p != '"') p += (*p == '\\') ? 2 : 1;
    return p + 1;
  }

  Status string_token(std::string_view tok, Value& out) {
    const char* b = tok.data();
    return unescape_to_value(b, trim_end(b, b + tok.size()), out);
  }

  Status unescape_to_value(const char* b, const char* e, Value& out) {
    std::string s;
    NEEDLE_TRY(unescape(b, e, s));
    out = Value::from_string(std::move(s));
    return {};
  }

  // [b, e) is a whole string token, quotes included. Python json semantics: control characters
  // are errors, \uXXXX pairs combine, lone surrogates survive (as WTF-8).
  Status unescape(const char* b, const char* e, std::string& out) {
    if (e - b < 2 || *b != '"' || e[-1] != '"') return error_at(b, "invalid string");
    const char* p = b + 1;
    const char* end = e - 1;
    out.clear();
    out.reserve(static_cast<size_t>(end - p));
    while (p < end) {
      unsigned char c = static_cast<unsigned char>(*p);
      if (c < 0x20) return error_at(p, "invalid control character in string");
      if (c != '\\') {
        out += static_cast<char>(c);
        ++p;
        continue;
      }
      if (p + 1 >= end) return error_at(p, "invalid escape");
      char x = p[1];
      p += 2;
      switch (x) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = 0;
          if (!read_hex4(p, end, cp)) return error_at(p - 2, "invalid \\u escape");
          p += 4;
          if (cp >= 0xD800 && cp <= 0xDBFF && end - p >= 6 && p[0] == '\\' && p[1] == 'u') {
            uint32_t lo = 0;
            if (read_hex4(p + 2, end, lo) && lo >= 0xDC00 && lo <= 0xDFFF) {
              cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
              p += 6;
            }
          }
          append_utf8(out, cp);
          break;
        }
        default: return error_at(p - 2, "invalid escape");
      }
    }
    return {};
  }

  Status literal_token(std::string_view tok, Value& out) {
    std::string_view t(tok.data(), static_cast<size_t>(trim_end(tok.data(), tok.data() + tok.size()) - tok.data()));
    if (t == "true") {
      out = Value::from_bool(true);
    } else if (t == "false") {
      out = Value::from_bool(false);
    } else if (t == "null") {
      out = Value::null();
    } else {
      return error_at(tok.data(), "invalid literal");
    }
    return {};
  }

  Status number_token(std::string_view tok, Value& out) {
    const char* b = tok.data();
    const char* e = trim_end(b, b + tok.size());
    // RFC 8259 grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
    const char* p = b;
    bool neg = false;
    if (p < e && *p == '-') {
      neg = true;
      ++p;
    }
    const char* int_start = p;
    if (p < e && *p == '0') {
      ++p;
    } else if (p < e && *p >= '1' && *p <= '9') {
      while (p < e && *p >= '0' && *p <= '9') ++p;
    } else {
      return error_at(b, "invalid number");
    }
    const char* int_end = p;
    bool is_float = false;
    if (p < e && *p == '.') {
      is_float = true;
      ++p;
      const char* d = p;
      while (p < e && *p >= '0' && *p <= '9') ++p;
      if (p == d) return error_at(b, "invalid number");
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
      is_float = true;
      ++p;
      if (p < e && (*p == '+' || *p == '-')) ++p;
      const char* d = p;
      while (p < e && *p >= '0' && *p <= '9') ++p;
      if (p == d) return error_at(b, "invalid number");
    }
    if (p != e) return error_at(b, "invalid number");

    if (!is_float) {
      size_t ndig = static_cast<size_t>(int_end - int_start);
      if (ndig > kMaxIntDigits)
        return error_at(b, fmt::format("integer with more than {} digits", kMaxIntDigits));
      Value v;
      v.type = Type::Int;
      bool zero = (ndig == 1 && *int_start == '0');
      v.text = (neg && !zero) ? std::string(b, e) : std::string(int_start, int_end);
      v.number = parse_double(b, e);
      out = std::move(v);
      return {};
    }
    out = Value::from_double(parse_double(b, e));
    return {};
  }

  // Correctly rounded (like Python's float()); overflow gives +-inf, underflow +-0.
  static double parse_double(const char* b, const char* e) {
    double d = 0;
    auto r = std::from_chars(b, e, d);
    if (r.ec == std::errc::result_out_of_range) {
      // Decide between overflow and underflow from the decimal exponent of the first
      // significant digit.
      const char* p = b;
      bool neg = *p == '-';
      if (neg) ++p;
      long long pos = 0;  // exponent of the leading significant digit
      bool seen = false, after_dot = false;
      long long int_digits = 0, lead_frac_zeros = 0;
      for (; p < e && *p != 'e' && *p != 'E'; ++p) {
        if (*p == '.') {
          after_dot = true;
          continue;
        }
        if (!after_dot) {
          if (seen || *p != '0') {
            seen = true;
            ++int_digits;
          }
        } else if (!seen) {
          if (*p == '0') {
            ++lead_frac_zeros;
          } else {
            seen = true;
          }
        }
      }
      long long exp = 0;
      if (p < e) {
        ++p;
        bool eneg = false;
        if (*p == '+' || *p == '-') eneg = *p++ == '-';
        for (; p < e; ++p) exp = std::min<long long>(exp * 10 + (*p - '0'), 1000000000LL);
        if (eneg) exp = -exp;
      }
      pos = int_digits > 0 ? int_digits - 1 + exp : -(lead_frac_zeros + 1) + exp;
      double mag = pos > 0 ? HUGE_VAL : 0.0;
      return neg ? -mag : mag;
    }
    return d;
  }

  Status error_at(const char* p, std::string_view what) const {
    return make_error("json: {} at byte {}", what, static_cast<long long>(p - base_));
  }

  Status sj_error_at(simdjson::error_code e, const char* p) const {
    return error_at(p, simdjson::error_message(e));
  }
  Status sj_error(simdjson::error_code e, od::value& v) const {
    const char* loc = nullptr;
    if (v.current_location().get(loc)) return make_error("json: {}", simdjson::error_message(e));
    return error_at(loc, simdjson::error_message(e));
  }
  Status sj_obj_error(simdjson::error_code e, od::object&, const char* start) const {
    return error_at(start, fmt::format("{} (in this object)", simdjson::error_message(e)));
  }
  Status sj_arr_error(simdjson::error_code e, od::array&, const char* start) const {
    return error_at(start, fmt::format("{} (in this array)", simdjson::error_message(e)));
  }
  Status sj_doc_error(simdjson::error_code e, od::document& doc) const {
    const char* loc = nullptr;
    if (doc.current_location().get(loc)) return make_error("json: {}", simdjson::error_message(e));
    return error_at(loc, simdjson::error_message(e));
  }

  static const char* trim_end(const char* b, const char* e) {
    while (e > b && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r')) --e;
    return e;
  }

  const char* base_;
  size_t size_;
  size_t max_depth_;
  const char* root_scalar_end_ = nullptr;
};

}  // namespace

Result<Value> parse(std::string_view text, const ParseOptions& opt) {
  simdjson::padded_string padded(text);
  // simdjson keeps its own depth limit; ours (checked while walking) is the one that reports.
  od::parser parser(std::max<size_t>(padded.size(), 64));
  if (auto e = parser.allocate(std::max<size_t>(padded.size(), 64), opt.max_depth + 2))
    return make_error("json: {}", simdjson::error_message(e));
  od::document doc;
  if (auto e = parser.iterate(padded).get(doc)) return make_error("json: {}", simdjson::error_message(e));
  Parser p(padded.data(), padded.size(), opt.max_depth);
  Value out;
  NEEDLE_TRY(p.document(doc, out));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Serialization

std::string python_float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
  if (d == 0) return std::signbit(d) ? "-0.0" : "0.0";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string_view s(buf, static_cast<size_t>(r.ptr - buf));
  // s = "-d.ddde[+-]XX": split into sign, significant digits and exponent.
  bool neg = false;
  if (!s.empty() && s[0] == '-') {
    neg = true;
    s.remove_prefix(1);
  }
  size_t epos = s.find('e');
  std::string digits;
  for (char c : s.substr(0, epos))
    if (c != '.') digits += c;
  int exp = 0;
  std::string_view es = s.substr(epos + 1);
  bool eneg = es[0] == '-';
  std::from_chars(es.data() + 1, es.data() + es.size(), exp);
  if (eneg) exp = -exp;
  // Python (format_float_short, repr mode): decpt = exp + 1; scientific if decpt <= -4 or > 16.
  int decpt = exp + 1;
  std::string out = neg ? "-" : "";
  const int n = static_cast<int>(digits.size());
  if (decpt <= -4 || decpt > 16) {
    out += digits[0];
    if (n > 1) {
      out += '.';
      out.append(digits, 1, std::string::npos);
    }
    out += 'e';
    out += exp < 0 ? '-' : '+';
    int ae = exp < 0 ? -exp : exp;
    if (ae < 10) out += '0';
    out += std::to_string(ae);
  } else if (decpt <= 0) {
    out += "0.";
    out.append(static_cast<size_t>(-decpt), '0');
    out += digits;
  } else if (decpt >= n) {
    out += digits;
    out.append(static_cast<size_t>(decpt - n), '0');
    out += ".0";
  } else {
    out.append(digits, 0, static_cast<size_t>(decpt));
    out += '.';
    out.append(digits, static_cast<size_t>(decpt), std::string::npos);
  }
  return out;
}

namespace {

// Decodes one UTF-8 (or WTF-8) sequence starting at s[i]; advances i. Invalid bytes (which a
// parsed Value never holds) come out as U+FFFD, one byte at a time.
uint32_t next_code_point(std::string_view s, size_t& i) {
  unsigned char c = static_cast<unsigned char>(s[i]);
  auto cont = [&](size_t k) -> int {
    if (i + k >= s.size()) return -1;
    unsigned char x = static_cast<unsigned char>(s[i + k]);
    return (x & 0xC0) == 0x80 ? (x & 0x3F) : -1;
  };
  if (c < 0x80) {
    ++i;
    return c;
  }
  if (c >= 0xC2 && c <= 0xDF) {
    int c1 = cont(1);
    if (c1 >= 0) {
      i += 2;
      return ((c & 0x1Fu) << 6) | static_cast<uint32_t>(c1);
    }
  } else if (c >= 0xE0 && c <= 0xEF) {
    int c1 = cont(1), c2 = cont(2);
    if (c1 >= 0 && c2 >= 0) {
      uint32_t cp = ((c & 0x0Fu) << 12) | (static_cast<uint32_t>(c1) << 6) | static_cast<uint32_t>(c2);
      if (cp >= 0x800) {
        i += 3;
        return cp;
      }
    }
  } else if (c >= 0xF0 && c <= 0xF4) {
    int c1 = cont(1), c2 = cont(2), c3 = cont(3);
    if (c1 >= 0 && c2 >= 0 && c3 >= 0) {
      uint32_t cp = ((c & 0x07u) << 18) | (static_cast<uint32_t>(c1) << 12) |
                    (static_cast<uint32_t>(c2) << 6) | static_cast<uint32_t>(c3);
      if (cp >= 0x10000 && cp <= 0x10FFFF) {
        i += 4;
        return cp;
      }
    }
  }
  ++i;
  return 0xFFFD;
}

void dump_string(std::string_view s, std::string& out) {
  static const char* hex = "0123456789abcdef";
  auto u4 = [&](uint32_t v) {
    out += "\\u";
    out += hex[(v >> 12) & 0xF];
    out += hex[(v >> 8) & 0xF];
    out += hex[(v >> 4) & 0xF];
    out += hex[v & 0xF];
  };
  out += '"';
  size_t i = 0;
  while (i < s.size()) {
    uint32_t cp = next_code_point(s, i);
    switch (cp) {
      case '"': out += "\\\""; continue;
      case '\\': out += "\\\\"; continue;
      case '\n': out += "\\n"; continue;
      case '\r': out += "\\r"; continue;
      case '\t': out += "\\t"; continue;
      case '\b': out += "\\b"; continue;
      case '\f': out += "\\f"; continue;
      default: break;
    }
    if (cp >= 0x20 && cp <= 0x7E) {
      out += static_cast<char>(cp);
    } else if (cp >= 0x10000) {
      uint32_t v = cp - 0x10000;
      u4(0xD800 | (v >> 10));
      u4(0xDC00 | (v & 0x3FF));
    } else {
      u4(cp);
    }
  }
  out += '"';
}

void dump(const Value& v, bool sorted, std::string& out) {
  switch (v.type) {
    case Type::Null: out += "null"; return;
    case Type::Bool: out += v.boolean ? "true" : "false"; return;
    case Type::Int: out += v.text; return;
    case Type::Float:
      if (std::isnan(v.number)) {
        out += "NaN";
      } else if (std::isinf(v.number)) {
        out += v.number < 0 ? "-Infinity" : "Infinity";
      } else {
        out += python_float_repr(v.number);
      }
      return;
    case Type::String: dump_string(v.text, out); return;
    case Type::Array:
      out += '[';
      for (size_t i = 0; i < v.array.size(); ++i) {
        if (i) out += ',';
        dump(v.array[i], sorted, out);
      }
      out += ']';
      return;
    case Type::Object: {
      out += '{';
      std::vector<const std::pair<std::string, Value>*> items;
      items.reserve(v.object.size());
      for (const auto& kv : v.object) items.push_back(&kv);
      // UTF-8 byte order is code point order, which is how Python sorts str keys.
      if (sorted)
        std::stable_sort(items.begin(), items.end(),
                         [](const auto* a, const auto* b) { return a->first < b->first; });
      for (size_t i = 0; i < items.size(); ++i) {
        if (i) out += ',';
        dump_string(items[i]->first, out);
        out += ':';
        dump(items[i]->second, sorted, out);
      }
      out += '}';
      return;
    }
  }
}

// Exact decimal digits of an integral finite double (no sign).
std::string integral_digits(double d) {
  char buf[400];
  auto r = std::to_chars(buf, buf + sizeof buf, std::fabs(d), std::chars_format::fixed, 0);
  return std::string(buf, r.ptr);
}

// Python int (bool included) vs int.
bool int_text_equal(const Value& a, const Value& b) {
  auto text = [](const Value& v) -> std::string {
    if (v.type == Type::Bool) return v.boolean ? "1" : "0";
    return v.text;
  };
  return text(a) == text(b);
}

// Python int (bool included) vs float: exact comparison.
bool int_float_equal(const Value& i, double f) {
  if (!std::isfinite(f) || std::trunc(f) != f) return false;
  std::string t = i.type == Type::Bool ? (i.boolean ? "1" : "0") : i.text;
  if (f == 0) return t == "0";
  bool neg = !t.empty() && t[0] == '-';
  if (neg != (f < 0)) return false;
  return (neg ? t.substr(1) : t) == integral_digits(f);
}

bool is_intlike(const Value& v) { return v.type == Type::Int || v.type == Type::Bool; }

}  // namespace

std::string dump_compact(const Value& v) {
  std::string out;
  dump(v, false, out);
  return out;
}

std::string dump_sorted(const Value& v) {
  std::string out;
  dump(v, true, out);
  return out;
}

bool equal(const Value& a, const Value& b) {
  // Numbers (bool counts as int in Python: True == 1 == 1.0).
  bool an = is_intlike(a) || a.type == Type::Float;
  bool bn = is_intlike(b) || b.type == Type::Float;
  if (an || bn) {
    if (!(an && bn)) return false;
    if (is_intlike(a) && is_intlike(b)) return int_text_equal(a, b);
    if (a.type == Type::Float && b.type == Type::Float) return a.number == b.number;
    return is_intlike(a) ? int_float_equal(a, b.number) : int_float_equal(b, a.number);
  }
  if (a.type != b.type) return false;
  switch (a.type) {
    case Type::Null: return true;
    case Type::String: return a.text == b.text;
    case Type::Array:
      if (a.array.size() != b.array.size()) return false;
      for (size_t i = 0; i < a.array.size(); ++i)
        if (!equal(a.array[i], b.array[i])) return false;
      return true;
    case Type::Object:
      if (a.object.size() != b.object.size()) return false;
      for (const auto& [k, v] : a.object) {
        const Value* o = b.find(k);
        if (!o || !equal(v, *o)) return false;
      }
      return true;
    default: return false;
  }
}

bool valid_utf8(std::string_view s) { return simdjson::validate_utf8(s.data(), s.size()); }

}  // namespace needle::json
