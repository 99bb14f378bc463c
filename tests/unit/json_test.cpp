#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <string>

#include "text/json.h"

using namespace needle;
using json::Value;

namespace {

Value parse_ok(std::string_view s) {
  auto r = json::parse(s);
  INFO(s << " -> " << r.message());
  REQUIRE(r.is_ok());
  return std::move(r).value();
}

std::string compact(std::string_view s) { return json::dump_compact(parse_ok(s)); }

}  // namespace

TEST_CASE("json: Python-produced vectors round-trip byte for byte", "[json]") {
  // tests/data/json_vectors.jsonl is written by tests/data/make_json_vectors.py: each expected
  // output is Python's json.dumps(json.loads(input), separators=(",", ":")) (and sort_keys).
  std::ifstream f(NEEDLE_TEST_DATA "/json_vectors.jsonl");
  REQUIRE(f.good());
  std::string line;
  size_t n = 0, errors = 0;
  while (std::getline(f, line)) {
    Value vec = parse_ok(line);
    const Value* input = vec.find("input");
    REQUIRE(input);
    REQUIRE(input->is_string());
    auto r = json::parse(input->text);
    INFO("input: " << input->text.substr(0, 300));
    if (vec.find("error")) {
      CHECK_FALSE(r.is_ok());
      ++errors;
    } else {
      REQUIRE(r.is_ok());
      CHECK(json::dump_compact(*r) == vec.find("compact")->text);
      CHECK(json::dump_sorted(*r) == vec.find("sorted")->text);
      // Our own output parses back to the same text (Python's Infinity/NaN are not JSON).
      const std::string& out = vec.find("compact")->text;
      if (out.find("Infinity") == std::string::npos && out.find("NaN") == std::string::npos) {
        auto again = json::parse(out);
        REQUIRE(again.is_ok());
        CHECK(json::dump_compact(*again) == out);
        CHECK(json::equal(*again, *r));
      }
    }
    ++n;
  }
  CHECK(n > 3000);
  CHECK(errors > 100);
}

TEST_CASE("json: compact output matches Python on hand-picked cases", "[json]") {
  CHECK(compact(R"({"a" : 1 , "b":[1, 2.50, -0, 1E400, "x"]})") == R"({"a":1,"b":[1,2.5,0,Infinity,"x"]})");
  CHECK(compact(R"({"a":1,"b":2,"a":3})") == R"({"a":3,"b":2})");
  CHECK(compact("\"caf\xc3\xa9 \xf0\x9f\x98\x80 /\"") == R"("caf\u00e9 \ud83d\ude00 /")");
  CHECK(compact(R"("\ud83d\ude00\ud83d")") == R"("\ud83d\ude00\ud83d")");
  CHECK(compact(R"("\u0000\u001f\u007f\b\f\n\r\t\"\\\/")") == R"("\u0000\u001f\u007f\b\f\n\r\t\"\\/")");
  CHECK(compact("123456789012345678901234567890") == "123456789012345678901234567890");
  CHECK(compact("-18446744073709551617") == "-18446744073709551617");
  CHECK(compact("[1e16, 1e-5, 0.1, 5.0, 1E2, -0.0]") == "[1e+16,1e-05,0.1,5.0,100.0,-0.0]");
  CHECK(json::dump_sorted(parse_ok(R"({"b":{"z":1,"a":2},"B":0,"\u00e9":1,"a":[{"y":1,"x":2}]})")) ==
        R"({"B":0,"a":[{"x":2,"y":1}],"b":{"a":2,"z":1},"\u00e9":1})");
}

TEST_CASE("json: python_float_repr", "[json]") {
  CHECK(json::python_float_repr(0.1) == "0.1");
  CHECK(json::python_float_repr(1e-5) == "1e-05");
  CHECK(json::python_float_repr(1e-4) == "0.0001");
  CHECK(json::python_float_repr(1e16) == "1e+16");
  CHECK(json::python_float_repr(1e15) == "1000000000000000.0");
  CHECK(json::python_float_repr(123456789012345678.0) == "1.2345678901234568e+17");
  CHECK(json::python_float_repr(5.0) == "5.0");
  CHECK(json::python_float_repr(-0.0) == "-0.0");
  CHECK(json::python_float_repr(0.0) == "0.0");
  CHECK(json::python_float_repr(1.5e300) == "1.5e+300");
  CHECK(json::python_float_repr(5e-324) == "5e-324");
  CHECK(json::python_float_repr(0.1 + 0.2) == "0.30000000000000004");
  CHECK(json::python_float_repr(HUGE_VAL) == "inf");
  CHECK(json::python_float_repr(-HUGE_VAL) == "-inf");
  CHECK(json::python_float_repr(std::nan("")) == "nan");
  CHECK(json::dump_compact(Value::from_double(std::nan(""))) == "NaN");
  CHECK(json::dump_compact(Value::from_double(-HUGE_VAL)) == "-Infinity");
}

TEST_CASE("json: strict parse rejects bad input with the byte offset", "[json]") {
  for (const char* bad : {"", "[1,]", "{\"a\":1,}", "[1 2]", "01", "1.", "NaN", "Infinity", "[\"a\": 1]",
                          "{\"a\" 1}", "\"a\tb\"", "\"\\x\"", "\"\\ud83\"", "[1]]", "tru", "falsey", "1 2",
                          "[1e400 2]", "{\"a\":1e400]", "\xef\xbb\xbf[]"}) {
    INFO(bad);
    CHECK_FALSE(json::parse(bad).is_ok());
  }
  auto r = json::parse("[1, 2, 03]");
  REQUIRE_FALSE(r.is_ok());
  CHECK(r.message().find("json:") == 0);
  // Invalid UTF-8: a lone continuation byte, an overlong encoding, an encoded surrogate, truncation.
  for (std::string bad : {std::string("\"\x80\""), std::string("\"\xc0\xaf\""), std::string("\"\xed\xa0\x80\""),
                          std::string("\"\xe4\xb8\""), std::string("[\"\xff\"]")}) {
    CHECK_FALSE(json::parse(bad).is_ok());
  }
  // 1e400 is inf for Python (and for us) where the structure is right.
  CHECK(compact("[1e400,-1e400,1e-400]") == "[Infinity,-Infinity,0.0]");
  // Integers with more digits than Python 3.11 converts are refused, like json.loads does.
  CHECK(json::parse(std::string(4300, '7')).is_ok());
  CHECK_FALSE(json::parse(std::string(4301, '7')).is_ok());
}

TEST_CASE("json: depth limit is an error, never a stack overflow", "[json]") {
  auto nest = [](size_t n) { return std::string(n, '[') + std::string(n, ']'); };
  CHECK(json::parse(nest(512)).is_ok());
  CHECK_FALSE(json::parse(nest(513)).is_ok());
  CHECK_FALSE(json::parse(nest(200000)).is_ok());
  std::string objs;
  for (int i = 0; i < 100000; ++i) objs += "{\"a\":";
  CHECK_FALSE(json::parse(objs).is_ok());
  json::ParseOptions opt;
  opt.max_depth = 3;
  CHECK(json::parse("[[[1]]]", opt).is_ok());
  CHECK_FALSE(json::parse("[[[[1]]]]", opt).is_ok());
}

TEST_CASE("json: values keep integers as written and Python dict semantics", "[json]") {
  Value v = parse_ok(R"({"n":12345678901234567890123,"f":2.5,"i":-7,"z":-0})");
  CHECK(v.find("n")->type == json::Type::Int);
  CHECK(v.find("n")->text == "12345678901234567890123");
  CHECK(v.find("n")->number == Approx(1.2345678901234568e22));
  CHECK(v.find("f")->type == json::Type::Float);
  CHECK(v.find("i")->text == "-7");
  CHECK(v.find("z")->text == "0");
  CHECK(v.find("missing") == nullptr);
  v.set("f", Value::from_string("x"));
  v.set("new", Value::from_int(-3));
  CHECK(json::dump_compact(v) == R"({"n":12345678901234567890123,"f":"x","i":-7,"z":0,"new":-3})");
  Value a = Value::make_array();
  a.array.push_back(Value::from_bool(true));
  a.array.push_back(Value::null());
  CHECK(json::dump_compact(a) == "[true,null]");
}

TEST_CASE("json: equal follows Python == on json.loads results", "[json]") {
  auto eq = [](std::string_view a, std::string_view b) { return json::equal(parse_ok(a), parse_ok(b)); };
  CHECK(eq("1", "1.0"));
  CHECK(eq("true", "1"));  // Python: True == 1
  CHECK(eq("false", "0.0"));
  CHECK_FALSE(eq("true", "2"));
  CHECK_FALSE(eq("1", "\"1\""));
  CHECK_FALSE(eq("null", "0"));
  CHECK(eq(R"({"a":1,"b":[1,2]})", R"({"b":[1.0,2],"a":1})"));
  CHECK_FALSE(eq(R"({"a":1})", R"({"a":1,"b":2})"));
  CHECK_FALSE(eq("[1,2]", "[2,1]"));
  CHECK(eq("100000000000000000000", "1e20"));
  CHECK_FALSE(eq("9007199254740993", "9007199254740992.0"));  // exact, like Python
  CHECK(eq("9007199254740992", "9007199254740992.0"));
  CHECK(eq("-0", "0.0"));
  CHECK(eq("-0.0", "0"));
  CHECK_FALSE(eq("1.5", "1"));
  CHECK(eq(R"("\u00e9")", "\"\xc3\xa9\""));
}
