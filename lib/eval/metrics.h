// The reference tool-call metrics (needle-reference.md section 6; the original's
// `_quick_tool_eval` in needle/training/finetune.py), computed one example at a time.
//
// Every comparison is string equality of Python's `json.dumps(..., sort_keys=True)`, exactly as
// the original: 1 and 1.0 are different values, key order never matters. Totals are summed over
// the dataset (micro-averaged) as the original does; per-example means are reported too under
// their own names. docs/metrics.md has the definitions and every place we differ.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "text/json.h"

namespace needle::eval {

struct MetricsOptions {
  // The original drops examples whose `answers` text is "" or "[]" before scoring (its n counts
  // only examples that expect a call). Default: keep them (reference section 6: "both empty counts").
  bool skip_empty_references = false;
};

// One scored example: what --out lines are made of.
struct ExampleResult {
  bool counted = true;            // false: skipped by skip_empty_references (not in any total)
  bool parsed = false;            // the prediction parsed as JSON
  std::string parse_error;        // why not, when !parsed
  bool reference_parsed = true;   // false: the reference text did not parse (scored as [])
  std::vector<json::Value> predicted;  // predicted calls (a dict became a one-element list)
  std::vector<json::Value> reference;  // reference calls, likewise
  // Per predicted call: its call key is among the reference call keys.
  std::vector<bool> predicted_correct;
  // Per reference call: some predicted call of that name has equal arguments (per-tool rule).
  std::vector<bool> reference_found;
  bool exact_match = false;
  // Set counts for this example (duplicates collapse: these are sets).
  size_t call_tp = 0, call_fp = 0, call_fn = 0;
  size_t name_tp = 0, name_fp = 0, name_fn = 0;
  // Per-example F1; 1.0 when both sets are empty and the prediction parsed, 0.0 if it did not.
  double call_f1 = 0, name_f1 = 0;
  size_t args_correct = 0, args_total = 0;
};

struct ToolAccuracy {
  std::string name;  // the tool name (a non-string name is shown as its compact JSON)
  size_t correct = 0;
  size_t total = 0;
};

struct MetricsReport {
  size_t n = 0;                      // examples counted
  size_t skipped_empty_reference = 0;
  size_t parsed = 0;
  size_t exact = 0;
  size_t call_tp = 0, call_fp = 0, call_fn = 0;
  size_t name_tp = 0, name_fp = 0, name_fn = 0;
  size_t args_correct = 0, args_total = 0;

  // Micro-averaged over the dataset (summed TP/FP/FN), as the original.
  double call_f1 = 0, call_precision = 0, call_recall = 0;
  double name_f1 = 0, name_precision = 0, name_recall = 0;
  double exact_match = 0;  // exact / n
  double parse_rate = 0;   // parsed / n
  double args_acc = 0;     // args_correct / max(args_total, 1)
  // Per-example means of call_f1 / name_f1 (not in the original; macro-averaged).
  double call_f1_mean = 0, name_f1_mean = 0;
  // In order of first appearance in the references (the original's dict order).
  std::vector<ToolAccuracy> per_tool;
};

// The original's call key: json.dumps({"name": c.get("name"), "arguments": c.get("arguments")},
// sort_keys=True), an absent member being null. Our compact separators do not change equality.
std::string call_key(const json::Value& call);

// A prediction or reference as a call list: a list stays, a dict becomes [dict], anything else [].
std::vector<json::Value> as_call_list(const json::Value& v);

class MetricsAccumulator {
 public:
  explicit MetricsAccumulator(MetricsOptions opt = {}) : opt_(opt) {}

  // Scores one example. `reference_answers` is the example's `answers` field as read: either a
  // JSON string holding the list (as the original files) or the list/dict itself.
  ExampleResult add(std::string_view prediction_text, const json::Value& reference_answers);

  // The report over everything added so far (may be called more than once).
  MetricsReport finalize() const;

 private:
  MetricsOptions opt_;
  MetricsReport sums_;
  double call_f1_sum_ = 0, name_f1_sum_ = 0;
  std::vector<std::string> tool_keys_;  // per_tool entries, by dump_sorted(name)
};

// Python's round(x, digits) (correctly rounded, ties to even on exact binary ties).
double python_round(double x, int digits);

struct ReportJsonOptions {
  int round_digits = -1;  // >= 0: round every ratio like the original's round(x, 4)
};
// {"call_f1","name_f1","exact_match","parse_rate","args_acc","n","per_tool":{name:{correct,total}}}
// (the original's keys, in its order) followed by the extra metrics and raw counts.
json::Value to_json(const MetricsReport& r, const ReportJsonOptions& opt = {});
// {"parsed", "exact_match", "call_f1", "name_f1", "calls":[{"name","arguments","correct"}],
//  "missed":[reference calls not found], and "parse_error" / "counted" when relevant}.
json::Value to_json(const ExampleResult& r);

}  // namespace needle::eval
