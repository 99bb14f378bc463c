// The reference metrics on hand-built predictions. Every expected number is worked out by hand in
// the comment next to it (TP/FP/FN over sets of call keys; F1 = 2TP / (2TP + FP + FN)).
#include <catch2/catch.hpp>

#include "eval/metrics.h"

using namespace needle;
using namespace needle::eval;

namespace {

json::Value J(std::string_view text) {
  auto v = json::parse(text);
  REQUIRE(v.is_ok());
  return std::move(v).value();
}

json::Value S(std::string s) { return json::Value::from_string(std::move(s)); }

const char* kA = R"([{"name":"a","arguments":{"x":1}}])";

}  // namespace

TEST_CASE("metrics: a perfect single call", "[metrics]") {
  MetricsAccumulator acc;
  ExampleResult r = acc.add(kA, S(kA));
  CHECK(r.parsed);
  CHECK(r.exact_match);
  CHECK(r.call_tp == 1);
  CHECK(r.call_fp == 0);
  CHECK(r.call_fn == 0);
  CHECK(r.call_f1 == 1.0);
  REQUIRE(r.predicted_correct.size() == 1);
  CHECK(r.predicted_correct[0]);
  MetricsReport m = acc.finalize();
  CHECK(m.n == 1);
  CHECK(m.call_f1 == 1.0);  // 2*1 / (2*1 + 0 + 0)
  CHECK(m.name_f1 == 1.0);
  CHECK(m.exact_match == 1.0);
  CHECK(m.parse_rate == 1.0);
  CHECK(m.args_acc == 1.0);  // 1 / 1
  REQUIRE(m.per_tool.size() == 1);
  CHECK(m.per_tool[0].name == "a");
  CHECK(m.per_tool[0].correct == 1);
  CHECK(m.per_tool[0].total == 1);
}

TEST_CASE("metrics: key order never matters", "[metrics]") {
  MetricsAccumulator acc;
  // Same call, members and argument keys written in another order.
  ExampleResult r = acc.add(R"([{"arguments":{"unit":"c","city":"Paris"},"name":"w"}])",
                            S(R"([{"name":"w","arguments":{"city":"Paris","unit":"c"}}])"));
  CHECK(r.exact_match);
  CHECK(r.call_tp == 1);
  CHECK(acc.finalize().args_acc == 1.0);
  CHECK(call_key(J(R"({"arguments":{"b":1,"a":2},"name":"w"})")) ==
        call_key(J(R"({"name":"w","arguments":{"a":2,"b":1}})")));
}

TEST_CASE("metrics: duplicates in predictions collapse in the sets, not in exact match", "[metrics]") {
  MetricsAccumulator acc;
  // ref [A], pred [A, A]: key sets {A} and {A}: TP 1, FP 0, FN 0 -> call F1 1.
  // Exact match compares sorted lists: [A, A] != [A] -> false.
  // Args: both predicted calls are named "a" (in the reference) and both equal -> 2 / 2.
  // Per-tool: the one reference call is found -> a 1/1.
  ExampleResult r = acc.add(R"([{"name":"a","arguments":{"x":1}},{"name":"a","arguments":{"x":1}}])", S(kA));
  CHECK(r.call_tp == 1);
  CHECK(r.call_fp == 0);
  CHECK(r.call_fn == 0);
  CHECK(r.call_f1 == 1.0);
  CHECK_FALSE(r.exact_match);
  CHECK(r.args_total == 2);
  CHECK(r.args_correct == 2);
  MetricsReport m = acc.finalize();
  CHECK(m.call_f1 == 1.0);
  CHECK(m.exact_match == 0.0);
  CHECK(m.args_acc == 1.0);
  CHECK(m.per_tool[0].correct == 1);
  CHECK(m.per_tool[0].total == 1);
}

TEST_CASE("metrics: empty lists on both sides", "[metrics]") {
  MetricsAccumulator acc;
  // pred [] and ref []: exact (both empty counts); no TP/FP/FN.
  ExampleResult r = acc.add("[]", S("[]"));
  CHECK(r.parsed);
  CHECK(r.exact_match);
  CHECK(r.call_tp + r.call_fp + r.call_fn == 0);
  CHECK(r.call_f1 == 1.0);  // per-example: nothing expected, nothing predicted
  MetricsReport m = acc.finalize();
  CHECK(m.n == 1);
  CHECK(m.exact_match == 1.0);
  CHECK(m.parse_rate == 1.0);
  CHECK(m.call_f1 == 0.0);       // micro: 2*0 / max(0, 1), as the original
  CHECK(m.call_f1_mean == 1.0);  // mean of per-example F1: 1 / 1
  CHECK(m.args_acc == 0.0);      // 0 / max(0, 1)
  CHECK(m.per_tool.empty());
}

TEST_CASE("metrics: a dict instead of a list is a one-element list", "[metrics]") {
  MetricsAccumulator acc;
  ExampleResult r = acc.add(R"({"name":"a","arguments":{"x":1}})", S(kA));
  CHECK(r.parsed);
  REQUIRE(r.predicted.size() == 1);
  CHECK(r.exact_match);
  CHECK(r.call_tp == 1);
  // The reference may be a dict too, and may be given as a JSON value rather than text.
  ExampleResult r2 = acc.add(kA, J(R"({"name":"a","arguments":{"x":1}})"));
  CHECK(r2.exact_match);
  CHECK(acc.finalize().exact_match == 1.0);
}

TEST_CASE("metrics: unparseable text is not parsed and scores as no calls", "[metrics]") {
  MetricsAccumulator acc;
  // pred unparseable -> []: call TP 0, FP 0, FN 1 -> F1 0; name FN 1; args 0/0; per-tool a 0/1.
  ExampleResult r = acc.add(R"([{"name":"a",)", S(kA));
  CHECK_FALSE(r.parsed);
  CHECK_FALSE(r.parse_error.empty());
  CHECK(r.predicted.empty());
  CHECK(r.call_fn == 1);
  CHECK(r.name_fn == 1);
  CHECK(r.call_f1 == 0.0);
  CHECK_FALSE(r.exact_match);
  // Against an empty reference it is still not an exact match (the original would count it).
  ExampleResult r2 = acc.add("not json", S("[]"));
  CHECK_FALSE(r2.exact_match);
  CHECK(r2.call_f1 == 0.0);
  // n 2, parsed 0 -> parse rate 0; exact 0 / 2.
  MetricsReport m = acc.finalize();
  CHECK(m.n == 2);
  CHECK(m.parse_rate == 0.0);
  CHECK(m.exact_match == 0.0);
  CHECK(m.call_fn == 1);
  CHECK(m.args_total == 0);
  REQUIRE(m.per_tool.size() == 1);
  CHECK(m.per_tool[0].correct == 0);
  CHECK(m.per_tool[0].total == 1);
}

TEST_CASE("metrics: a partial argument match is a wrong call with a right name", "[metrics]") {
  MetricsAccumulator acc;
  // ref a(x=1, y=2), pred a(x=1, y=3): call keys differ -> TP 0, FP 1, FN 1 -> call F1 0.
  // names {a} vs {a}: TP 1 -> name F1 1. Args: 1 predicted "a", arguments differ -> 0 / 1.
  ExampleResult r = acc.add(R"([{"name":"a","arguments":{"x":1,"y":3}}])",
                            S(R"([{"name":"a","arguments":{"x":1,"y":2}}])"));
  CHECK(r.call_tp == 0);
  CHECK(r.call_fp == 1);
  CHECK(r.call_fn == 1);
  CHECK(r.name_tp == 1);
  CHECK(r.name_f1 == 1.0);
  CHECK(r.args_total == 1);
  CHECK(r.args_correct == 0);
  CHECK_FALSE(r.predicted_correct[0]);
  CHECK_FALSE(r.reference_found[0]);
  MetricsReport m = acc.finalize();
  CHECK(m.call_f1 == 0.0);
  CHECK(m.name_f1 == 1.0);
  CHECK(m.args_acc == 0.0);
  CHECK(m.per_tool[0].correct == 0);
}

TEST_CASE("metrics: 1 and 1.0 are different values, as json.dumps writes them", "[metrics]") {
  MetricsAccumulator acc;
  // json.dumps(1) == "1", json.dumps(1.0) == "1.0": the keys differ -> TP 0, FP 1, FN 1.
  ExampleResult r = acc.add(R"([{"name":"a","arguments":{"x":1.0}}])", S(kA));
  CHECK_FALSE(r.exact_match);
  CHECK(r.call_tp == 0);
  CHECK(r.args_correct == 0);
  CHECK(r.args_total == 1);
  // 1.0 and 1.00 are the same float -> same key.
  ExampleResult r2 = acc.add(R"([{"name":"a","arguments":{"x":1.00}}])",
                             S(R"([{"name":"a","arguments":{"x":1.0}}])"));
  CHECK(r2.exact_match);
  // true is not 1 either.
  ExampleResult r3 = acc.add(R"([{"name":"a","arguments":{"x":true}}])", S(kA));
  CHECK_FALSE(r3.exact_match);
}

TEST_CASE("metrics: a missing arguments member is null in the key but {} for args accuracy", "[metrics]") {
  MetricsAccumulator acc;
  // Call keys: {"arguments":null,"name":"a"} vs {"arguments":{},"name":"a"} -> TP 0, FP 1, FN 1.
  // Args accuracy and per-tool use c.get("arguments", {}) -> {} == {} -> 1 / 1, a 1/1.
  ExampleResult r = acc.add(R"([{"name":"a","arguments":{}}])", S(R"([{"name":"a"}])"));
  CHECK(r.call_tp == 0);
  CHECK(r.call_fp == 1);
  CHECK(r.args_correct == 1);
  CHECK(r.reference_found[0]);
  MetricsReport m = acc.finalize();
  CHECK(m.args_acc == 1.0);
  CHECK(m.per_tool[0].correct == 1);
}

TEST_CASE("metrics: a non-call element spoils exact match but not the sets", "[metrics]") {
  MetricsAccumulator acc;
  ExampleResult r = acc.add(R"([1,{"name":"a","arguments":{"x":1}}])", S(kA));
  CHECK(r.call_tp == 1);
  CHECK(r.call_fp == 0);
  CHECK_FALSE(r.exact_match);
  REQUIRE(r.predicted_correct.size() == 2);
  CHECK_FALSE(r.predicted_correct[0]);
  CHECK(r.predicted_correct[1]);
}

TEST_CASE("metrics: aggregation is micro over the dataset, with per-example means beside it", "[metrics]") {
  MetricsAccumulator acc;
  const char* A = R"({"name":"a","arguments":{"x":1}})";
  const char* B = R"({"name":"b","arguments":{"y":2}})";
  const char* C = R"({"name":"c","arguments":{"z":3}})";
  auto list = [](std::initializer_list<const char*> calls) {
    std::string s = "[";
    for (const char* c : calls) {
      if (s.size() > 1) s += ',';
      s += c;
    }
    s += ']';
    return s;
  };
  // Ex1: ref [A,B], pred [A,C]: calls TP 1 FP 1 FN 1 -> F1 2/4 = 0.5; names {a,c} vs {a,b} same.
  //      args: a is in the reference and equal (1/1); c is not counted. per-tool a 1/1, b 0/1.
  ExampleResult r1 = acc.add(list({A, C}), S(list({A, B})));
  CHECK(r1.call_f1 == 0.5);
  CHECK(r1.name_f1 == 0.5);
  // Ex2: ref [A], pred [A]: TP 1 -> F1 1; exact. args 1/1. per-tool a 2/2.
  ExampleResult r2 = acc.add(list({A}), S(list({A})));
  CHECK(r2.exact_match);
  // Ex3: ref [B], pred []: FN 1 -> F1 0. per-tool b 0/2.
  ExampleResult r3 = acc.add("[]", S(list({B})));
  CHECK(r3.call_f1 == 0.0);

  MetricsReport m = acc.finalize();
  // Sums: TP 1+1+0 = 2, FP 1+0+0 = 1, FN 1+0+1 = 2.
  CHECK(m.call_tp == 2);
  CHECK(m.call_fp == 1);
  CHECK(m.call_fn == 2);
  CHECK(m.call_f1 == Approx(4.0 / 7.0));     // 2*2 / (2*2 + 1 + 2)
  CHECK(m.call_precision == Approx(2.0 / 3.0));  // 2 / (2 + 1)
  CHECK(m.call_recall == Approx(0.5));       // 2 / (2 + 2)
  CHECK(m.call_f1_mean == Approx(0.5));      // (0.5 + 1 + 0) / 3
  CHECK(m.name_f1 == Approx(4.0 / 7.0));     // names: same counts as the calls here
  CHECK(m.name_f1_mean == Approx(0.5));
  CHECK(m.exact_match == Approx(1.0 / 3.0)); // only Ex2
  CHECK(m.parse_rate == 1.0);
  CHECK(m.args_correct == 2);                // Ex1 a, Ex2 a
  CHECK(m.args_total == 2);
  CHECK(m.args_acc == 1.0);
  REQUIRE(m.per_tool.size() == 2);           // in order of first appearance: a, then b
  CHECK(m.per_tool[0].name == "a");
  CHECK(m.per_tool[0].correct == 2);
  CHECK(m.per_tool[0].total == 2);
  CHECK(m.per_tool[1].name == "b");
  CHECK(m.per_tool[1].correct == 0);
  CHECK(m.per_tool[1].total == 2);

  // The report in the original's shape, rounded like round(x, 4).
  json::Value j = to_json(m, {4});
  CHECK(j.object[0].first == "call_f1");
  CHECK(j.find("call_f1")->number == 0.5714);
  CHECK(j.find("exact_match")->number == 0.3333);
  CHECK(j.find("n")->text == "3");
  CHECK(json::dump_compact(*j.find("per_tool")) ==
        R"({"a":{"correct":2,"total":2},"b":{"correct":0,"total":2}})");
}

TEST_CASE("metrics: skip_empty_references drops no-call examples like the original", "[metrics]") {
  MetricsAccumulator acc({.skip_empty_references = true});
  CHECK_FALSE(acc.add("[]", S("[]")).counted);
  CHECK_FALSE(acc.add("[]", S("  ")).counted);
  CHECK_FALSE(acc.add("[]", J("[]")).counted);
  CHECK(acc.add(kA, S(kA)).counted);
  MetricsReport m = acc.finalize();
  CHECK(m.n == 1);
  CHECK(m.skipped_empty_reference == 3);
  CHECK(m.exact_match == 1.0);
}

TEST_CASE("metrics: an unparseable reference text scores as an empty list", "[metrics]") {
  MetricsAccumulator acc;
  ExampleResult r = acc.add("[]", S("[{oops"));
  CHECK_FALSE(r.reference_parsed);
  CHECK(r.reference.empty());
  CHECK(r.exact_match);  // [] vs [] after the original's fallback
}

TEST_CASE("metrics: per-example JSON for --out lines", "[metrics]") {
  MetricsAccumulator acc;
  ExampleResult r = acc.add(R"([{"name":"a","arguments":{"x":1}},{"name":"c","arguments":{}}])",
                            S(R"([{"name":"a","arguments":{"x":1}},{"name":"b","arguments":{}}])"));
  CHECK(json::dump_compact(to_json(r)) ==
        R"({"parsed":true,"exact_match":false,"call_f1":0.5,"name_f1":0.5,)"
        R"("calls":[{"name":"a","arguments":{"x":1},"correct":true},{"name":"c","arguments":{},"correct":false}],)"
        R"("missed":[{"name":"b","arguments":{}}]})");
}

TEST_CASE("metrics: python_round matches Python's round()", "[metrics]") {
  // Values printed by CPython 3: round(0.12345, 4), round(2.675, 2), round(5e-05, 4), round(0.5).
  CHECK(python_round(0.12345, 4) == 0.1235);
  CHECK(python_round(2.675, 2) == 2.67);
  CHECK(python_round(0.00005, 4) == 0.0001);
  CHECK(python_round(0.5, 0) == 0.0);
  CHECK(python_round(2.5, 0) == 2.0);
  CHECK(python_round(4.0 / 7.0, 4) == 0.5714);
}
