// An order-preserving JSON value with Python-exact compact output.
//
// The model was trained on `json.dumps(json.loads(s), separators=(",", ":"))` (ensure_ascii),
// so prompts must reproduce that byte for byte: key order as in the input, a duplicated key
// keeps its first position and its last value, integers as written, floats in Python's
// shortest round-trip repr, non-ASCII escaped as \uXXXX (lowercase hex, surrogate pairs).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "util/result.h"

namespace needle::json {

enum class Type { Null, Bool, Int, Float, String, Array, Object };

struct Value {
  // Special members defined after the class: clang 14 in C++20 mode otherwise instantiates the
  // containers' constexpr members while Value is still incomplete.
  Value();
  Value(const Value&);
  Value(Value&&) noexcept;
  Value& operator=(const Value&);
  Value& operator=(Value&&) noexcept;
  ~Value();

  Type type = Type::Null;
  bool boolean = false;
  // Int: the digits as written (Python ints are unbounded); Float: value in `number`.
  std::string text;    // String: decoded UTF-8 content; Int: decimal digits with sign
  double number = 0;   // Float and Int (Int: nearest double, for comparisons)
  std::vector<Value> array;
  std::vector<std::pair<std::string, Value>> object;  // insertion order, keys unique

  static Value null() { return {}; }
  static Value from_bool(bool b);
  static Value from_int(int64_t i);
  static Value from_double(double d);
  static Value from_string(std::string s);
  static Value make_array();
  static Value make_object();

  bool is_null() const { return type == Type::Null; }
  bool is_bool() const { return type == Type::Bool; }
  bool is_number() const { return type == Type::Int || type == Type::Float; }
  bool is_string() const { return type == Type::String; }
  bool is_array() const { return type == Type::Array; }
  bool is_object() const { return type == Type::Object; }

  // Object access: nullptr when absent or not an object.
  const Value* find(std::string_view key) const;
  Value* find(std::string_view key);
  // Sets key (keeps the first position if present, like a Python dict).
  void set(std::string key, Value v);
};
inline Value::Value() = default;
inline Value::Value(const Value&) = default;
inline Value::Value(Value&&) noexcept = default;
inline Value& Value::operator=(const Value&) = default;
inline Value& Value::operator=(Value&&) noexcept = default;
inline Value::~Value() = default;

struct ParseOptions {
  size_t max_depth = 512;  // deeper input is an error, never a stack overflow
};

// Strict RFC 8259 parse of untrusted text (invalid UTF-8, trailing garbage, depth over the
// limit are errors naming the byte offset). Duplicate keys follow Python's dict semantics.
Result<Value> parse(std::string_view text, const ParseOptions& opt = {});

// Python `json.dumps(v, separators=(",", ":"))` with ensure_ascii=True.
std::string dump_compact(const Value& v);
// Same, with object keys sorted (Python `sort_keys=True`): the reference's call keys.
std::string dump_sorted(const Value& v);
// Python's `repr(float)`: shortest round-trip ("0.1", "1e-05", "1e+16", "5.0", "inf"...).
std::string python_float_repr(double d);

// Whether `s` is valid UTF-8 (simdjson's validator).
bool valid_utf8(std::string_view s);

// Python `==` on json.loads results: 1 == 1.0, objects compare regardless of key order.
bool equal(const Value& a, const Value& b);

}  // namespace needle::json
