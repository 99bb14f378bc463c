#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <string>

#include "text/json.h"
#include "text/tools.h"

using namespace needle;
using namespace needle::text;

namespace {

ToolSet tools_ok(std::string_view s) {
  auto r = parse_tools(s);
  INFO(s << " -> " << r.message());
  REQUIRE(r.is_ok());
  return std::move(r).value();
}

std::string tools_err(std::string_view s) {
  auto r = parse_tools(s);
  REQUIRE_FALSE(r.is_ok());
  return r.message();
}

}  // namespace

TEST_CASE("tools: snake_case matches Python's re on every dataset tool name", "[tools]") {
  // Vectors written by tests/data/make_snake_case_vectors.py with Python's re module.
  std::ifstream f(NEEDLE_TEST_DATA "/snake_case_vectors.jsonl");
  REQUIRE(f.good());
  std::string line;
  size_t n = 0;
  while (std::getline(f, line)) {
    auto v = json::parse(line);
    REQUIRE(v.is_ok());
    INFO(v->find("name")->text);
    CHECK(snake_case(v->find("name")->text) == v->find("snake")->text);
    ++n;
  }
  CHECK(n > 1000);
}

TEST_CASE("tools: snake_case cases", "[tools]") {
  CHECK(snake_case("getWeather") == "get_weather");
  CHECK(snake_case("music.play") == "music_play");
  CHECK(snake_case("HTTPServer") == "http_server");
  CHECK(snake_case("getHTTPResponse") == "get_http_response");
  CHECK(snake_case("userIDs") == "user_i_ds");
  CHECK(snake_case("AAAa") == "aa_aa");
  CHECK(snake_case("__init__") == "init");
  CHECK(snake_case("caf\xc3\xa9.menu") == "caf_menu");
  CHECK(snake_case("already_snake") == "already_snake");
  CHECK(snake_case("!!!").empty());
}

TEST_CASE("tools: v1 passes through with snake_cased names", "[tools]") {
  std::string in =
      R"([{"name":"getWeather","description":"Get weather.","parameters":{"location":{"type":"string","description":"City.","required":true},)"
      R"("unit":{"type":"string","enum":["celsius","fahrenheit"],"description":"Unit.","required":false}},"extra":1},)"
      R"({"name":"music.play","description":"Play.","parameters":{"artist":{"type":"string","description":"Artist name.","required":true}}}])";
  ToolSet ts = tools_ok(in);
  REQUIRE(ts.tools.size() == 2);
  CHECK(ts.tools[0].name == "getWeather");
  CHECK(ts.tools[0].model_name == "get_weather");
  CHECK(ts.tools[1].model_name == "music_play");
  // Exactly what the original pipeline gives the encoder: the objects as written, name replaced.
  std::string expect = in;
  expect.replace(expect.find("getWeather"), 10, "get_weather");
  expect.replace(expect.find("music.play"), 10, "music_play");
  CHECK(ts.model_json() == expect);
  const auto& args = ts.tools[0].args;
  REQUIRE(args.size() == 2);
  CHECK(args[0].name == "location");
  CHECK(args[0].required);
  CHECK(args[0].schema.type == ArgType::String);
  CHECK(args[0].schema.description == "City.");
  CHECK_FALSE(args[1].required);
  REQUIRE(args[1].schema.enum_values.size() == 2);
  CHECK(args[1].schema.enum_values[1].text == "fahrenheit");
  CHECK(ts.caller_name("music_play") == "music.play");
  CHECK(ts.caller_name("unknown_tool") == "unknown_tool");
  REQUIRE(ts.find_model_name("get_weather"));
  CHECK(ts.find_model_name("getWeather") == nullptr);
}

TEST_CASE("tools: OpenAI / JSON Schema form normalizes to v1", "[tools]") {
  ToolSet ts = tools_ok(R"([{"type":"function","function":{"name":"searchFlights","description":"Find flights.",
    "parameters":{"type":"object","properties":{
      "origin":{"type":"string","description":"From."},
      "passengers":{"type":"integer"},
      "cabin":{"type":["string","null"],"enum":["economy","business",null]},
      "stops":{"type":"array","items":{"type":"string"},"description":"Via."},
      "filters":{"type":"object","properties":{"max_price":{"type":"number"},"airline":{"type":"string"}},"required":["max_price"]}},
    "required":["origin","passengers"]}}}])");
  REQUIRE(ts.tools.size() == 1);
  CHECK(ts.model_json() ==
        R"([{"name":"search_flights","description":"Find flights.","parameters":{)"
        R"("origin":{"type":"string","description":"From.","required":true},)"
        R"("passengers":{"type":"integer","description":"","required":true},)"
        R"("cabin":{"type":"string","enum":["economy","business",null],"description":"","required":false},)"
        R"("stops":{"type":"array","description":"Via.","required":false,"items":{"type":"string"}},)"
        R"("filters":{"type":"object","description":"","required":false,"properties":{)"
        R"("max_price":{"type":"number","required":true},"airline":{"type":"string","required":false}}}}}])");
  const auto& a = ts.tools[0].args;
  REQUIRE(a.size() == 5);
  CHECK(a[2].schema.type == ArgType::String);
  CHECK(a[2].schema.nullable);
  REQUIRE(a[3].schema.items.size() == 1);
  CHECK(a[3].schema.items[0].type == ArgType::String);
  REQUIRE(a[4].schema.properties.size() == 2);
  CHECK(a[4].schema.properties[0].required);
  CHECK_FALSE(a[4].schema.properties[1].required);
  CHECK(a[4].schema.properties[0].schema.type == ArgType::Number);
  // Responses-style flat form and Anthropic's input_schema are read the same way.
  ToolSet flat = tools_ok(R"([{"type":"function","name":"f","parameters":{"type":"object","properties":{"x":{"type":"boolean"}}}},
                              {"name":"g","input_schema":{"type":"object","properties":{"y":{"type":"string"}},"required":["y"]}}])");
  CHECK(flat.model_json() ==
        R"([{"name":"f","description":"","parameters":{"x":{"type":"boolean","description":"","required":false}}},)"
        R"({"name":"g","description":"","parameters":{"y":{"type":"string","description":"","required":true}}}])");
}

TEST_CASE("tools: BFCL types map to v1 types", "[tools]") {
  ToolSet ts = tools_ok(R"([{"name":"math.triangle_area","description":"Area.","parameters":{"type":"dict","properties":{
      "base":{"type":"float","description":"Base."},"dims":{"type":"tuple","items":{"type":"integer"}},
      "meta":{"type":"any"},"opts":{"type":"dict","properties":{"round":{"type":"boolean"}}}},"required":["base"]}}])");
  CHECK(ts.tools[0].model_name == "math_triangle_area");
  CHECK(ts.model_json() ==
        R"([{"name":"math_triangle_area","description":"Area.","parameters":{)"
        R"("base":{"type":"number","description":"Base.","required":true},)"
        R"("dims":{"type":"array","description":"","required":false,"items":{"type":"integer"}},)"
        R"("meta":{"type":"any","description":"","required":false},)"
        R"("opts":{"type":"object","description":"","required":false,"properties":{"round":{"type":"boolean","required":false}}}}}])");
  const auto& a = ts.tools[0].args;
  CHECK(a[0].schema.type == ArgType::Number);
  CHECK(a[1].schema.type == ArgType::Array);
  CHECK(a[2].schema.type == ArgType::Any);
  CHECK(a[3].schema.type == ArgType::Object);
  CHECK(parse_arg_type("str") == ArgType::String);
  CHECK(parse_arg_type("Int") == ArgType::Integer);
  CHECK(parse_arg_type("bool") == ArgType::Boolean);
  CHECK(parse_arg_type("list") == ArgType::Array);
  CHECK(parse_arg_type("whatever") == ArgType::Any);
  CHECK(std::string(arg_type_name(ArgType::Boolean)) == "boolean");
}

TEST_CASE("tools: bad tool lists are one-line errors", "[tools]") {
  CHECK(tools_err(R"({"name":"x"})").find("expected a JSON array") != std::string::npos);
  CHECK(tools_err(R"([1])").find("tools[0]: expected an object") != std::string::npos);
  CHECK(tools_err(R"([{"description":"no name"}])").find("tools[0]: missing \"name\"") != std::string::npos);
  CHECK(tools_err(R"([{"name":5}])").find("\"name\" must be a string") != std::string::npos);
  CHECK(tools_err(R"([{"name":"a"},{"name":"a"}])").find("tools[1]: duplicate tool name 'a'") != std::string::npos);
  CHECK(tools_err(R"([{"name":"getWeather"},{"name":"get_weather"}])").find("both are 'get_weather'") != std::string::npos);
  CHECK(tools_err(R"([{"name":"f","parameters":[1]}])").find("\"parameters\" must be an object") != std::string::npos);
  CHECK(tools_err(R"([{"name":"f","parameters":{"x":"string"}}])").find("parameter 'x' must be an object") != std::string::npos);
  CHECK(tools_err(R"([{"name":"f","parameters":{"type":"object","properties":{"x":{}},"required":"x"}}])")
            .find("\"required\" must be an array") != std::string::npos);
  CHECK(tools_err(R"([{"name":"f","parameters":{"type":"string"}}])").find("object schema") != std::string::npos);
  CHECK(tools_err(R"([{"name":"???"}])").find("no ASCII letters") != std::string::npos);
  CHECK(tools_err("[{").find("tools: json:") == 0);
  for (std::string e : {tools_err("5"), tools_err(R"([{"name":"a"},{"name":"a"}])")})
    CHECK(e.find('\n') == std::string::npos);
  // Empty inputs are an empty list; a tool without parameters gets {}.
  CHECK(tools_ok("").tools.empty());
  CHECK(tools_ok("null").tools.empty());
  CHECK(tools_ok("[]").model_json() == "[]");
  CHECK(tools_ok(R"([{"name":"ping"}])").model_json() == R"([{"name":"ping","parameters":{}}])");
}

TEST_CASE("tools: names map back in parsed calls", "[tools]") {
  ToolSet ts = tools_ok(R"([{"name":"getWeather","parameters":{}},{"name":"music.play","parameters":{}}])");
  auto calls = json::parse(R"([{"name":"get_weather","arguments":{"name":"x"}},{"name":"music_play","arguments":{}},{"name":"other","arguments":{}},7])");
  REQUIRE(calls.is_ok());
  CHECK(json::dump_compact(restore_names(*calls, ts)) ==
        R"([{"name":"getWeather","arguments":{"name":"x"}},{"name":"music.play","arguments":{}},{"name":"other","arguments":{}},7])");
  auto one = json::parse(R"({"name":"music_play","arguments":{}})");
  CHECK(json::dump_compact(restore_names(*one, ts)) == R"({"name":"music.play","arguments":{}})");
  auto orig = json::parse(R"([{"name":"getWeather","arguments":{"city":"Paris"}}])");
  CHECK(json::dump_compact(snake_case_names(*orig)) == R"([{"name":"get_weather","arguments":{"city":"Paris"}}])");
}

TEST_CASE("tools: every e2e example's tools parse and keep their text", "[tools]") {
  const std::string path = NEEDLE_SHARED_FIXTURES "/e2e/test.jsonl";
  if (!std::filesystem::exists(path)) {
    WARN("shared e2e fixtures absent: skipped");
    return;
  }
  std::ifstream f(path);
  std::string line;
  size_t n = 0;
  while (std::getline(f, line)) {
    auto ex = json::parse(line);
    REQUIRE(ex.is_ok());
    const std::string& tools = ex->find("tools")->text;
    ToolSet ts = tools_ok(tools);
    // The fixture's tools are v1 already: only the names change.
    std::string expect = tools;
    for (const auto& t : ts.tools) {
      std::string from = "\"name\":\"" + t.name + "\"", to = "\"name\":\"" + t.model_name + "\"";
      expect.replace(expect.find(from), from.size(), to);
    }
    CHECK(ts.model_json() == expect);
    ++n;
  }
  CHECK(n == 300);
}
