// BFCL-style (Berkeley Function Calling Leaderboard, AST category) single-turn scoring.
//
// Question lines: {"id", "question":[[{"role":"user","content":...}]], "function":[{name,
// description, parameters:{type:"dict", properties, required}}]}; answer lines: {"id",
// "ground_truth":[{"fn_name":{"arg":[acceptable values...]}}]}. A prediction is the model's text
// (`[{"name":..,"arguments":{..}}]`). docs/metrics.md lists every rule and where it differs from
// BFCL's own checker.
#pragma once
#include <cstddef>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "text/json.h"
#include "util/result.h"

namespace needle::eval {

// "simple_12" -> "simple", "live_parallel_multiple_3-1-0" -> "live_parallel_multiple":
// the id without its trailing "_<digits...>" part. An id without one is its own category.
std::string bfcl_category_from_id(std::string_view id);
// "BFCL_v3_simple.json" -> "simple", "dir/BFCL_v2_live_irrelevance.jsonl" -> "live_irrelevance":
// the base name without extension and without a leading "BFCL_v<N>_".
std::string bfcl_category_from_filename(std::string_view path);
// Categories scored without answers: "irrelevance" (correct iff no call) and "relevance"
// (correct iff at least one call), with or without the "live_" prefix.
bool bfcl_is_irrelevance(std::string_view category);
bool bfcl_is_relevance(std::string_view category);

struct BfclQuestion {
  std::string id;
  std::string category;  // from the id; `fallback_category` when the id has no "_<n>" suffix
  std::string query;     // the last user message of the (single) turn
  json::Value functions; // the "function" array as given
};

// One parsed question line. Errors name the missing or ill-typed field.
Result<BfclQuestion> parse_bfcl_question(const json::Value& line, std::string_view fallback_category = {});

// BFCL functions -> Needle v1 tool schema: [{"name","description","parameters":{"arg":
// {"type","description","required":bool}}}] (extra property members such as enum, items and
// default are kept after these three).
json::Value bfcl_functions_to_needle_tools(const json::Value& functions);

// BFCL's standardize_string: drop " ,./-_*^", lowercase ASCII, and ' -> ".
std::string bfcl_standardize(std::string_view s);

// Does `value` equal one acceptable `candidate` under the value rules (strings standardized,
// Python == on numbers, lists element by element, dicts key by key with alternatives)?
bool bfcl_value_matches(const json::Value& value, const json::Value& candidate);

struct BfclVerdict {
  bool correct = false;
  std::string reason;  // empty when correct
};

// Checks one predicted call's arguments against one ground-truth call {"arg":[acceptable...]}.
// `function` is the schema of the called function (nullptr: no schema known; type and
// undeclared-argument checks are then skipped).
BfclVerdict bfcl_check_call(const json::Value* function, std::string_view name,
                            const json::Value& arguments, std::string_view gt_name,
                            const json::Value& gt_arguments);

// Scores one prediction. `ground_truth` is the answer's "ground_truth" array, or nullptr for a
// category without answers (irrelevance/relevance). Predicted calls and ground-truth calls are
// matched one-to-one regardless of order (a maximum bipartite matching; the counts must be equal).
BfclVerdict bfcl_check(const json::Value& functions, const json::Value* ground_truth,
                       std::string_view category, std::string_view prediction_text);

// Loads an answers file ({"id","ground_truth"} per line) into id -> ground_truth. Malformed
// lines are errors naming their line number, reported through `line_errors` and skipped.
struct BfclLineError {
  size_t line_no = 0;
  std::string message;
};
Result<std::map<std::string, json::Value>> load_bfcl_answers(const std::string& path,
                                                             std::vector<BfclLineError>* line_errors = nullptr);

struct BfclCategoryScore {
  std::string category;
  size_t correct = 0;
  size_t total = 0;
  double accuracy() const { return total ? double(correct) / double(total) : 0.0; }
};

// Accuracy per category (in order of first appearance) and overall (micro: all examples).
class BfclScorer {
 public:
  void add(std::string_view category, const BfclVerdict& v);
  const std::vector<BfclCategoryScore>& categories() const { return cats_; }
  size_t correct() const { return correct_; }
  size_t total() const { return total_; }
  // {"overall":{"accuracy","correct","total"},"categories":{cat:{"accuracy","correct","total"}}}
  json::Value to_json() const;

 private:
  std::vector<BfclCategoryScore> cats_;
  size_t correct_ = 0, total_ = 0;
};

}  // namespace needle::eval
