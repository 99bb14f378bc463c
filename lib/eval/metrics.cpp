#include "eval/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>

namespace needle::eval {
namespace {

// Python's str.strip() for the whitespace a model or a file can produce.
std::string_view strip(std::string_view s) {
  const char* ws = " \t\n\r\f\v";
  size_t b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return {};
  size_t e = s.find_last_not_of(ws);
  return s.substr(b, e - b + 1);
}

const json::Value& null_value() {
  static const json::Value v;
  return v;
}

const json::Value& empty_object() {
  static const json::Value v = json::Value::make_object();
  return v;
}

// c.get(key, fallback)
const json::Value& get_or(const json::Value& obj, std::string_view key, const json::Value& fallback) {
  const json::Value* v = obj.find(key);
  return v ? *v : fallback;
}

bool has_name(const json::Value& c) { return c.is_object() && c.find("name") != nullptr; }

// The identity of a name in Python sets and dicts: its sorted JSON text.
std::string name_key(const json::Value& c) { return json::dump_sorted(*c.find("name")); }

std::string display_name(const json::Value& name) {
  return name.is_string() ? name.text : json::dump_compact(name);
}

double f1_of(size_t tp, size_t fp, size_t fn, bool empty_is_perfect) {
  size_t den = 2 * tp + fp + fn;
  if (den == 0) return empty_is_perfect ? 1.0 : 0.0;
  return 2.0 * double(tp) / double(den);
}

double ratio(size_t num, size_t den) { return double(num) / double(std::max<size_t>(den, 1)); }

// |a & b|, |a - b|, |b - a|
void set_counts(const std::set<std::string>& pred, const std::set<std::string>& ref, size_t& tp,
                size_t& fp, size_t& fn) {
  tp = fp = fn = 0;
  for (const auto& k : pred) (ref.count(k) ? tp : fp)++;
  for (const auto& k : ref)
    if (!pred.count(k)) fn++;
}

}  // namespace

std::string call_key(const json::Value& call) {
  json::Value k = json::Value::make_object();
  k.set("name", get_or(call, "name", null_value()));
  k.set("arguments", get_or(call, "arguments", null_value()));
  return json::dump_sorted(k);
}

std::vector<json::Value> as_call_list(const json::Value& v) {
  if (v.is_array()) return v.array;
  if (v.is_object()) return {v};
  return {};
}

ExampleResult MetricsAccumulator::add(std::string_view prediction_text,
                                      const json::Value& reference_answers) {
  ExampleResult r;

  // Reference: a string is parsed as the original does (strip, json.loads, [] on failure).
  if (reference_answers.is_string()) {
    std::string_view text = strip(reference_answers.text);
    if (opt_.skip_empty_references && (text.empty() || text == "[]")) {
      r.counted = false;
      sums_.skipped_empty_reference++;
      return r;
    }
    auto parsed = json::parse(text);
    if (parsed) {
      r.reference = as_call_list(*parsed);
    } else {
      r.reference_parsed = false;
    }
  } else {
    r.reference = as_call_list(reference_answers);
    if (opt_.skip_empty_references && r.reference.empty()) {
      r.counted = false;
      r.reference.clear();
      sums_.skipped_empty_reference++;
      return r;
    }
  }

  // Prediction: unparseable text is "not parsed" and scores as an empty call list.
  {
    auto parsed = json::parse(strip(prediction_text));
    if (parsed) {
      r.parsed = true;
      r.predicted = as_call_list(*parsed);
    } else {
      r.parse_error = parsed.message();
    }
  }

  // Call keys (non-dict elements have none).
  std::vector<std::string> pred_keys, ref_keys;
  bool pred_all_calls = true, ref_all_calls = true;
  for (const auto& c : r.predicted) {
    if (c.is_object()) pred_keys.push_back(call_key(c));
    else pred_all_calls = false;
  }
  for (const auto& c : r.reference) {
    if (c.is_object()) ref_keys.push_back(call_key(c));
    else ref_all_calls = false;
  }
  std::set<std::string> pred_key_set(pred_keys.begin(), pred_keys.end());
  std::set<std::string> ref_key_set(ref_keys.begin(), ref_keys.end());

  // Exact match: sorted key lists equal (duplicates count), every element a call, and the
  // prediction parsed (the original would also accept unparseable text against an empty reference).
  {
    auto a = pred_keys, b = ref_keys;
    std::sort(a.begin(), a.end());
    std::sort(b.begin(), b.end());
    r.exact_match = r.parsed && pred_all_calls && ref_all_calls && a == b;
  }

  // Call and name sets.
  set_counts(pred_key_set, ref_key_set, r.call_tp, r.call_fp, r.call_fn);
  std::set<std::string> pred_names, ref_names;
  for (const auto& c : r.predicted)
    if (has_name(c)) pred_names.insert(name_key(c));
  for (const auto& c : r.reference)
    if (has_name(c)) ref_names.insert(name_key(c));
  set_counts(pred_names, ref_names, r.name_tp, r.name_fp, r.name_fn);
  r.call_f1 = f1_of(r.call_tp, r.call_fp, r.call_fn, r.parsed);
  r.name_f1 = f1_of(r.name_tp, r.name_fp, r.name_fn, r.parsed);

  // Args accuracy: predicted calls whose name is in the reference; arguments default to {}.
  std::map<std::string, std::vector<std::string>> ref_args_by_name;
  for (const auto& c : r.reference)
    if (has_name(c))
      ref_args_by_name[name_key(c)].push_back(json::dump_sorted(get_or(c, "arguments", empty_object())));
  for (const auto& c : r.predicted) {
    if (!has_name(c)) continue;
    auto it = ref_args_by_name.find(name_key(c));
    if (it == ref_args_by_name.end()) continue;
    r.args_total++;
    std::string pa = json::dump_sorted(get_or(c, "arguments", empty_object()));
    if (std::find(it->second.begin(), it->second.end(), pa) != it->second.end()) r.args_correct++;
  }

  // Per predicted call: correct when its call key is a reference call key.
  r.predicted_correct.reserve(r.predicted.size());
  for (const auto& c : r.predicted)
    r.predicted_correct.push_back(c.is_object() && ref_key_set.count(call_key(c)) > 0);

  // Per reference call (per-tool accuracy): some predicted call of that name, equal arguments.
  r.reference_found.assign(r.reference.size(), false);
  for (size_t i = 0; i < r.reference.size(); ++i) {
    const auto& c = r.reference[i];
    if (!has_name(c)) continue;
    std::string rname = name_key(c);
    std::string rargs = json::dump_sorted(get_or(c, "arguments", empty_object()));
    bool found = false;
    for (const auto& pc : r.predicted) {
      if (!pc.is_object()) continue;
      if (json::dump_sorted(get_or(pc, "name", null_value())) != rname) continue;
      if (json::dump_sorted(get_or(pc, "arguments", empty_object())) == rargs) {
        found = true;
        break;
      }
    }
    r.reference_found[i] = found;
    auto pos = std::find(tool_keys_.begin(), tool_keys_.end(), rname);
    size_t idx = size_t(pos - tool_keys_.begin());
    if (pos == tool_keys_.end()) {
      tool_keys_.push_back(rname);
      sums_.per_tool.push_back({display_name(*c.find("name")), 0, 0});
    }
    sums_.per_tool[idx].total++;
    if (found) sums_.per_tool[idx].correct++;
  }

  // Totals.
  sums_.n++;
  sums_.parsed += r.parsed;
  sums_.exact += r.exact_match;
  sums_.call_tp += r.call_tp;
  sums_.call_fp += r.call_fp;
  sums_.call_fn += r.call_fn;
  sums_.name_tp += r.name_tp;
  sums_.name_fp += r.name_fp;
  sums_.name_fn += r.name_fn;
  sums_.args_correct += r.args_correct;
  sums_.args_total += r.args_total;
  call_f1_sum_ += r.call_f1;
  name_f1_sum_ += r.name_f1;
  return r;
}

MetricsReport MetricsAccumulator::finalize() const {
  MetricsReport r = sums_;
  r.call_f1 = 2.0 * double(r.call_tp) / double(std::max<size_t>(2 * r.call_tp + r.call_fp + r.call_fn, 1));
  r.call_precision = ratio(r.call_tp, r.call_tp + r.call_fp);
  r.call_recall = ratio(r.call_tp, r.call_tp + r.call_fn);
  r.name_f1 = 2.0 * double(r.name_tp) / double(std::max<size_t>(2 * r.name_tp + r.name_fp + r.name_fn, 1));
  r.name_precision = ratio(r.name_tp, r.name_tp + r.name_fp);
  r.name_recall = ratio(r.name_tp, r.name_tp + r.name_fn);
  r.exact_match = ratio(r.exact, r.n);
  r.parse_rate = ratio(r.parsed, r.n);
  r.args_acc = ratio(r.args_correct, r.args_total);
  r.call_f1_mean = r.n ? call_f1_sum_ / double(r.n) : 0.0;
  r.name_f1_mean = r.n ? name_f1_sum_ / double(r.n) : 0.0;
  return r;
}

double python_round(double x, int digits) {
  if (!std::isfinite(x) || digits < 0 || digits > 17) return x;
  // glibc's printf is exact on the binary value, like CPython's round (dtoa mode 3).
  char buf[400];
  std::snprintf(buf, sizeof buf, "%.*f", digits, x);
  return std::strtod(buf, nullptr);
}

namespace {
json::Value count(size_t v) { return json::Value::from_int(int64_t(v)); }
}  // namespace

json::Value to_json(const MetricsReport& r, const ReportJsonOptions& opt) {
  auto num = [&](double v) {
    return json::Value::from_double(opt.round_digits >= 0 ? python_round(v, opt.round_digits) : v);
  };
  json::Value o = json::Value::make_object();
  o.set("call_f1", num(r.call_f1));
  o.set("name_f1", num(r.name_f1));
  o.set("exact_match", num(r.exact_match));
  o.set("parse_rate", num(r.parse_rate));
  o.set("args_acc", num(r.args_acc));
  o.set("n", count(r.n));
  json::Value tools = json::Value::make_object();
  for (const auto& t : r.per_tool) {
    json::Value e = json::Value::make_object();
    e.set("correct", count(t.correct));
    e.set("total", count(t.total));
    tools.set(t.name, std::move(e));
  }
  o.set("per_tool", std::move(tools));
  o.set("call_precision", num(r.call_precision));
  o.set("call_recall", num(r.call_recall));
  o.set("name_precision", num(r.name_precision));
  o.set("name_recall", num(r.name_recall));
  o.set("call_f1_mean", num(r.call_f1_mean));
  o.set("name_f1_mean", num(r.name_f1_mean));
  json::Value c = json::Value::make_object();
  c.set("parsed", count(r.parsed));
  c.set("exact", count(r.exact));
  c.set("call_tp", count(r.call_tp));
  c.set("call_fp", count(r.call_fp));
  c.set("call_fn", count(r.call_fn));
  c.set("name_tp", count(r.name_tp));
  c.set("name_fp", count(r.name_fp));
  c.set("name_fn", count(r.name_fn));
  c.set("args_correct", count(r.args_correct));
  c.set("args_total", count(r.args_total));
  c.set("skipped_empty_reference", count(r.skipped_empty_reference));
  o.set("counts", std::move(c));
  return o;
}

json::Value to_json(const ExampleResult& r) {
  json::Value o = json::Value::make_object();
  if (!r.counted) {
    o.set("counted", json::Value::from_bool(false));
    return o;
  }
  o.set("parsed", json::Value::from_bool(r.parsed));
  if (!r.parsed) o.set("parse_error", json::Value::from_string(r.parse_error));
  if (!r.reference_parsed) o.set("reference_parsed", json::Value::from_bool(false));
  o.set("exact_match", json::Value::from_bool(r.exact_match));
  o.set("call_f1", json::Value::from_double(r.call_f1));
  o.set("name_f1", json::Value::from_double(r.name_f1));
  json::Value calls = json::Value::make_array();
  for (size_t i = 0; i < r.predicted.size(); ++i) {
    const auto& c = r.predicted[i];
    json::Value e = json::Value::make_object();
    if (c.is_object()) {
      e.set("name", get_or(c, "name", null_value()));
      e.set("arguments", get_or(c, "arguments", null_value()));
    } else {
      e.set("value", c);  // not a call object
    }
    e.set("correct", json::Value::from_bool(r.predicted_correct[i]));
    calls.array.push_back(std::move(e));
  }
  o.set("calls", std::move(calls));
  json::Value missed = json::Value::make_array();
  for (size_t i = 0; i < r.reference.size(); ++i)
    if (!r.reference_found[i]) missed.array.push_back(r.reference[i]);
  o.set("missed", std::move(missed));
  return o;
}

}  // namespace needle::eval
