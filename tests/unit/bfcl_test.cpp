// BFCL-style scoring: each value rule once positive, once negative; parallel calls in any order;
// irrelevance; categories; the answer-file reader.
#include <catch2/catch.hpp>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "eval/bfcl.h"

using namespace needle;
using namespace needle::eval;

namespace {

json::Value J(std::string_view text) {
  auto v = json::parse(text);
  REQUIRE(v.is_ok());
  return std::move(v).value();
}

// One function with typed parameters; `required` lists the required ones.
json::Value fn(std::string_view name, std::string_view properties, std::string_view required = "[]") {
  return J(fmt::format(R"({{"name":"{}","description":"d","parameters":{{"type":"dict","properties":{},"required":{}}}}})",
                       name, properties, required));
}

// Scores `pred` against ground truth `gt` for the functions `fns` (category "simple").
bool ok(const json::Value& fns, std::string_view gt, std::string_view pred) {
  json::Value g = J(gt);
  return bfcl_check(fns, &g, "simple", pred).correct;
}

json::Value arr(const json::Value& f) {
  json::Value a = json::Value::make_array();
  a.array.push_back(f);
  return a;
}

}  // namespace

TEST_CASE("bfcl: category from id and from file name", "[bfcl]") {
  CHECK(bfcl_category_from_id("simple_12") == "simple");
  CHECK(bfcl_category_from_id("parallel_multiple_3") == "parallel_multiple");
  CHECK(bfcl_category_from_id("live_parallel_multiple_3-1-0") == "live_parallel_multiple");
  CHECK(bfcl_category_from_id("irrelevance_0") == "irrelevance");
  CHECK(bfcl_category_from_id("noindex") == "noindex");
  CHECK(bfcl_category_from_id("simple_x1") == "simple_x1");
  CHECK(bfcl_category_from_filename("BFCL_v3_simple.json") == "simple");
  CHECK(bfcl_category_from_filename("/data/BFCL_v2_live_irrelevance.jsonl") == "live_irrelevance");
  CHECK(bfcl_category_from_filename("gorilla_openfunctions_v1_test_parallel_function.json") == "parallel_function");
  CHECK(bfcl_category_from_filename("mine.jsonl") == "mine");
  CHECK(bfcl_is_irrelevance("live_irrelevance"));
  CHECK_FALSE(bfcl_is_relevance("irrelevance"));
  CHECK(bfcl_is_relevance("live_relevance"));
}

TEST_CASE("bfcl: question lines", "[bfcl]") {
  auto q = parse_bfcl_question(J(R"({"id":"simple_3","question":[[{"role":"system","content":"s"},)"
                                 R"({"role":"user","content":"area of a circle r=5"}]],)"
                                 R"("function":[{"name":"area","description":"d","parameters":{"type":"dict",)"
                                 R"("properties":{"r":{"type":"integer","description":"radius"},"unit":{"type":"string",)"
                                 R"("description":"u","default":"m"}},"required":["r"]}}]})"));
  REQUIRE(q.is_ok());
  CHECK(q->id == "simple_3");
  CHECK(q->category == "simple");
  CHECK(q->query == "area of a circle r=5");
  CHECK(json::dump_compact(bfcl_functions_to_needle_tools(q->functions)) ==
        R"([{"name":"area","description":"d","parameters":{"r":{"type":"integer","description":"radius",)"
        R"("required":true},"unit":{"type":"string","description":"u","required":false,"default":"m"}}}])");
  // The file's category is used when the id carries none.
  auto q2 = parse_bfcl_question(J(R"({"id":"x","question":"hi","function":[]})"), "multiple");
  REQUIRE(q2.is_ok());
  CHECK(q2->category == "multiple");
  CHECK_FALSE(parse_bfcl_question(J(R"({"question":"hi","function":[]})")).is_ok());
  CHECK_FALSE(parse_bfcl_question(J(R"({"id":"a_1","function":[]})")).is_ok());
  CHECK_FALSE(parse_bfcl_question(J(R"({"id":"a_1","question":[[{"role":"user","content":"a"}],[]],"function":[]})")).is_ok());
}

TEST_CASE("bfcl: function name must match", "[bfcl]") {
  json::Value f = arr(fn("area", R"({"r":{"type":"integer"}})", R"(["r"])"));
  CHECK(ok(f, R"([{"area":{"r":[5]}}])", R"([{"name":"area","arguments":{"r":5}}])"));
  CHECK_FALSE(ok(f, R"([{"area":{"r":[5]}}])", R"([{"name":"Area","arguments":{"r":5}}])"));
  // BFCL's own output form {"fn":{args}} is accepted too.
  CHECK(ok(f, R"([{"area":{"r":[5]}}])", R"([{"area":{"r":5}}])"));
}

TEST_CASE("bfcl: every required argument present", "[bfcl]") {
  json::Value f = arr(fn("area", R"({"r":{"type":"integer"},"u":{"type":"string"}})", R"(["r"])"));
  CHECK(ok(f, R"([{"area":{"r":[5],"u":["m",""]}}])", R"([{"name":"area","arguments":{"r":5}}])"));
  BfclVerdict v = bfcl_check(f, nullptr, "simple", "");  // no answer for a scored category
  CHECK_FALSE(v.correct);
  json::Value gt = J(R"([{"area":{"r":[5,""]}}])");
  v = bfcl_check(f, &gt, "simple", R"([{"name":"area","arguments":{}}])");
  CHECK_FALSE(v.correct);  // required by the schema even though the answer lists ""
  CHECK(v.reason.find("missing required argument \"r\"") != std::string::npos);
}

TEST_CASE("bfcl: no undeclared argument", "[bfcl]") {
  json::Value f = arr(fn("area", R"({"r":{"type":"integer"},"u":{"type":"string"}})", R"(["r"])"));
  json::Value gt = J(R"([{"area":{"r":[5]}}])");
  BfclVerdict v = bfcl_check(f, &gt, "simple", R"([{"name":"area","arguments":{"r":5,"zzz":1}}])");
  CHECK_FALSE(v.correct);
  CHECK(v.reason.find("undeclared argument \"zzz\"") != std::string::npos);
  // Declared but absent from the ground truth: unexpected.
  v = bfcl_check(f, &gt, "simple", R"([{"name":"area","arguments":{"r":5,"u":"m"}}])");
  CHECK_FALSE(v.correct);
  CHECK(v.reason.find("unexpected argument \"u\"") != std::string::npos);
}

TEST_CASE("bfcl: an argument whose acceptable values include \"\" may be omitted", "[bfcl]") {
  json::Value f = arr(fn("area", R"({"r":{"type":"integer"},"u":{"type":"string"}})", R"(["r"])"));
  CHECK(ok(f, R"([{"area":{"r":[5],"u":["","m"]}}])", R"([{"name":"area","arguments":{"r":5}}])"));
  CHECK(ok(f, R"([{"area":{"r":[5],"u":["","m"]}}])", R"([{"name":"area","arguments":{"r":5,"u":"M"}}])"));
  CHECK_FALSE(ok(f, R"([{"area":{"r":[5],"u":["m"]}}])", R"([{"name":"area","arguments":{"r":5}}])"));
}

TEST_CASE("bfcl: int accepted where float is declared, not the reverse", "[bfcl]") {
  json::Value ff = arr(fn("f", R"({"x":{"type":"float"}})", R"(["x"])"));
  CHECK(ok(ff, R"([{"f":{"x":[5.0]}}])", R"([{"name":"f","arguments":{"x":5}}])"));
  CHECK(ok(ff, R"([{"f":{"x":[5.0]}}])", R"([{"name":"f","arguments":{"x":5.0}}])"));
  CHECK_FALSE(ok(ff, R"([{"f":{"x":[5.5]}}])", R"([{"name":"f","arguments":{"x":5}}])"));
  CHECK_FALSE(ok(ff, R"([{"f":{"x":[5.0]}}])", R"([{"name":"f","arguments":{"x":"5"}}])"));
  json::Value fi = arr(fn("f", R"({"x":{"type":"integer"}})", R"(["x"])"));
  CHECK(ok(fi, R"([{"f":{"x":[5]}}])", R"([{"name":"f","arguments":{"x":5}}])"));
  CHECK_FALSE(ok(fi, R"([{"f":{"x":[5]}}])", R"([{"name":"f","arguments":{"x":5.0}}])"));  // type error
  json::Value fb = arr(fn("f", R"({"x":{"type":"boolean"}})", R"(["x"])"));
  CHECK(ok(fb, R"([{"f":{"x":[true]}}])", R"([{"name":"f","arguments":{"x":true}}])"));
  CHECK_FALSE(ok(fb, R"([{"f":{"x":[true]}}])", R"([{"name":"f","arguments":{"x":1}}])"));
}

TEST_CASE("bfcl: a variable name where the schema wants another type", "[bfcl]") {
  // BFCL: when the acceptable values are strings (a variable), a string value passes the type check.
  json::Value fi = arr(fn("f", R"({"x":{"type":"integer"}})", R"(["x"])"));
  CHECK(ok(fi, R"([{"f":{"x":["n"]}}])", R"([{"name":"f","arguments":{"x":"n"}}])"));
  CHECK_FALSE(ok(fi, R"([{"f":{"x":[3]}}])", R"([{"name":"f","arguments":{"x":"n"}}])"));
}

TEST_CASE("bfcl: strings ignore case, spaces and ,./-_*^", "[bfcl]") {
  CHECK(bfcl_standardize("New York, NY") == "newyorkny");
  CHECK(bfcl_standardize("a.b/c-d_e*f^g") == "abcdefg");
  CHECK(bfcl_standardize("it's") == "it\"s");
  json::Value f = arr(fn("f", R"({"city":{"type":"string"}})", R"(["city"])"));
  CHECK(ok(f, R"([{"f":{"city":["New York, NY"]}}])", R"([{"name":"f","arguments":{"city":"new-york ny"}}])"));
  CHECK(ok(f, R"([{"f":{"city":["x^2*y"]}}])", R"([{"name":"f","arguments":{"city":"X2Y"}}])"));
  CHECK_FALSE(ok(f, R"([{"f":{"city":["New York"]}}])", R"([{"name":"f","arguments":{"city":"New Jersey"}}])"));
  CHECK_FALSE(ok(f, R"([{"f":{"city":["New York"]}}])", R"([{"name":"f","arguments":{"city":"New York!"}}])"));
}

TEST_CASE("bfcl: lists compare element by element under the same rules", "[bfcl]") {
  json::Value f = arr(fn("f", R"({"xs":{"type":"array","items":{"type":"string"}}})", R"(["xs"])"));
  CHECK(ok(f, R"([{"f":{"xs":[["New York","LA"]]}}])", R"([{"name":"f","arguments":{"xs":["new york","l.a."]}}])"));
  CHECK_FALSE(ok(f, R"([{"f":{"xs":[["New York","LA"]]}}])", R"([{"name":"f","arguments":{"xs":["LA","New York"]}}])"));
  CHECK_FALSE(ok(f, R"([{"f":{"xs":[["New York","LA"]]}}])", R"([{"name":"f","arguments":{"xs":["New York"]}}])"));
  // Element types follow "items": a number among strings is a type error.
  CHECK_FALSE(ok(f, R"([{"f":{"xs":[["1"]]}}])", R"([{"name":"f","arguments":{"xs":[1]}}])"));
  json::Value g = arr(fn("g", R"({"xs":{"type":"array","items":{"type":"float"}}})", R"(["xs"])"));
  CHECK(ok(g, R"([{"g":{"xs":[[1.0,2.5]]}}])", R"([{"name":"g","arguments":{"xs":[1,2.5]}}])"));
  CHECK_FALSE(ok(g, R"([{"g":{"xs":[[1.0,2.5]]}}])", R"([{"name":"g","arguments":{"xs":[1,2.6]}}])"));
}

TEST_CASE("bfcl: dicts compare key by key with alternatives", "[bfcl]") {
  json::Value f = arr(fn("f", R"({"d":{"type":"dict"}})", R"(["d"])"));
  const char* gt = R"([{"f":{"d":[{"city":["New York","NYC"],"days":[3],"unit":["","c"]}]}}])";
  CHECK(ok(f, gt, R"([{"name":"f","arguments":{"d":{"city":"nyc","days":3}}}])"));
  CHECK(ok(f, gt, R"([{"name":"f","arguments":{"d":{"days":3.0,"city":"new york","unit":"C"}}}])"));
  CHECK_FALSE(ok(f, gt, R"([{"name":"f","arguments":{"d":{"city":"Boston","days":3}}}])"));   // value
  CHECK_FALSE(ok(f, gt, R"([{"name":"f","arguments":{"d":{"city":"nyc"}}}])"));               // missing key
  CHECK_FALSE(ok(f, gt, R"([{"name":"f","arguments":{"d":{"city":"nyc","days":3,"x":1}}}])"));  // extra key
  CHECK_FALSE(ok(f, gt, R"([{"name":"f","arguments":{"d":"nyc"}}])"));                       // not a dict
}

TEST_CASE("bfcl: value rules directly", "[bfcl]") {
  CHECK(bfcl_value_matches(J("1"), J("1.0")));
  CHECK_FALSE(bfcl_value_matches(J("true"), J("1")));
  CHECK_FALSE(bfcl_value_matches(J(R"("1")"), J("1")));
  CHECK(bfcl_value_matches(J("null"), J("null")));
  CHECK(bfcl_value_matches(J(R"([["A b"]])"), J(R"([["ab"]])")));
  CHECK_FALSE(bfcl_value_matches(J(R"([["A b"]])"), J(R"([["ab","c"]])")));
}

TEST_CASE("bfcl: parallel calls match in any order, one-to-one", "[bfcl]") {
  json::Value fns = J(R"([{"name":"f","parameters":{"type":"dict","properties":{"x":{"type":"integer"}},"required":["x"]}},)"
                      R"({"name":"g","parameters":{"type":"dict","properties":{"y":{"type":"string"}},"required":["y"]}}])");
  const char* gt = R"([{"f":{"x":[1]}},{"f":{"x":[2]}},{"g":{"y":["a"]}}])";
  CHECK(ok(fns, gt, R"([{"name":"g","arguments":{"y":"A"}},{"name":"f","arguments":{"x":2}},{"name":"f","arguments":{"x":1}}])"));
  // Counts must be equal.
  CHECK_FALSE(ok(fns, gt, R"([{"name":"f","arguments":{"x":2}},{"name":"f","arguments":{"x":1}}])"));
  CHECK_FALSE(ok(fns, gt, R"([{"name":"g","arguments":{"y":"a"}},{"name":"f","arguments":{"x":2}},)"
                          R"({"name":"f","arguments":{"x":1}},{"name":"f","arguments":{"x":1}}])"));
  // One prediction cannot serve two ground-truth calls.
  CHECK_FALSE(ok(fns, gt, R"([{"name":"g","arguments":{"y":"a"}},{"name":"f","arguments":{"x":1}},{"name":"f","arguments":{"x":1}}])"));
  // A first-fit (greedy) matcher would give f(x=1) to the first ground truth and then fail;
  // the bipartite matching finds f(x=2) -> first, f(x=1) -> second.
  CHECK(ok(fns, R"([{"f":{"x":[1,2]}},{"f":{"x":[1]}}])",
           R"([{"name":"f","arguments":{"x":1}},{"name":"f","arguments":{"x":2}}])"));
  // The reason names the ground-truth call that found no match.
  json::Value g = J(gt);
  BfclVerdict v = bfcl_check(fns, &g, "parallel",
                             R"([{"name":"g","arguments":{"y":"b"}},{"name":"f","arguments":{"x":2}},{"name":"f","arguments":{"x":1}}])");
  CHECK_FALSE(v.correct);
  CHECK(v.reason.find("\"g\"") != std::string::npos);
  CHECK(v.reason.find("argument \"y\"") != std::string::npos);
}

TEST_CASE("bfcl: an unparseable prediction is wrong where a call is expected", "[bfcl]") {
  json::Value f = arr(fn("f", R"({"x":{"type":"integer"}})", R"(["x"])"));
  CHECK_FALSE(ok(f, R"([{"f":{"x":[1]}}])", R"([{"name":"f","arguments":{"x":1})"));
  CHECK_FALSE(ok(f, R"([{"f":{"x":[1]}}])", "[]"));
  CHECK_FALSE(ok(f, R"([{"f":{"x":[1]}}])", R"([{"name":"f","arguments":{"x":1}},7])"));
}

TEST_CASE("bfcl: irrelevance is correct when no call is made; relevance when one is", "[bfcl]") {
  json::Value f = arr(fn("f", R"({"x":{"type":"integer"}})"));
  CHECK(bfcl_check(f, nullptr, "irrelevance", "[]").correct);
  CHECK(bfcl_check(f, nullptr, "live_irrelevance", "").correct);
  CHECK(bfcl_check(f, nullptr, "irrelevance", "I cannot help with that").correct);
  CHECK_FALSE(bfcl_check(f, nullptr, "irrelevance", R"([{"name":"f","arguments":{"x":1}}])").correct);
  CHECK(bfcl_check(f, nullptr, "live_relevance", R"([{"name":"f","arguments":{"x":1}}])").correct);
  CHECK_FALSE(bfcl_check(f, nullptr, "live_relevance", "[]").correct);
}

TEST_CASE("bfcl: accuracy per category and overall", "[bfcl]") {
  BfclScorer s;
  s.add("simple", {true, {}});
  s.add("simple", {false, "x"});
  s.add("irrelevance", {true, {}});
  s.add("simple", {true, {}});
  REQUIRE(s.categories().size() == 2);
  CHECK(s.categories()[0].category == "simple");
  CHECK(s.categories()[0].correct == 2);
  CHECK(s.categories()[0].total == 3);
  CHECK(s.categories()[1].accuracy() == 1.0);
  CHECK(s.correct() == 3);
  CHECK(s.total() == 4);
  CHECK(json::dump_compact(s.to_json()) ==
        R"({"overall":{"accuracy":0.75,"correct":3,"total":4},"categories":{"simple":)"
        R"({"accuracy":0.6666666666666666,"correct":2,"total":3},"irrelevance":{"accuracy":1.0,"correct":1,"total":1}}})");
}

TEST_CASE("bfcl: answers file with a bad line", "[bfcl]") {
  auto dir = std::filesystem::temp_directory_path() / ("needle_bfcl_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto path = (dir / "answers.jsonl").string();
  {
    std::ofstream o(path);
    o << R"({"id":"simple_0","ground_truth":[{"f":{"x":[1]}}]})" << "\n"
      << R"({"id":"simple_1"})" << "\n"
      << "{broken\n"
      << R"({"id":"simple_2","ground_truth":[]})" << "\n"
      << R"({"id":"simple_0","ground_truth":[]})" << "\n";
  }
  std::vector<BfclLineError> errs;
  auto a = load_bfcl_answers(path, &errs);
  REQUIRE(a.is_ok());
  CHECK(a->size() == 2);
  CHECK(a->count("simple_0") == 1);
  CHECK(a->at("simple_0").array.size() == 1);  // the first of a duplicated id is kept
  REQUIRE(errs.size() == 3);
  CHECK(errs[0].line_no == 2);
  CHECK(errs[1].line_no == 3);
  CHECK(errs[2].line_no == 5);
  CHECK_FALSE(load_bfcl_answers((dir / "missing.jsonl").string()).is_ok());
  std::filesystem::remove_all(dir);
}
