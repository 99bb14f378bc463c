#include "eval/bfcl.h"

#include <algorithm>
#include <functional>

#include "eval/jsonl.h"

namespace needle::eval {
namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

std::string_view strip(std::string_view s) {
  const char* ws = " \t\n\r\f\v";
  size_t b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return {};
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

std::string describe(const json::Value& v) {
  std::string s = json::dump_compact(v);
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

const char* kind_name(const json::Value& v) {
  switch (v.type) {
    case json::Type::Null: return "null";
    case json::Type::Bool: return "boolean";
    case json::Type::Int: return "integer";
    case json::Type::Float: return "float";
    case json::Type::String: return "string";
    case json::Type::Array: return "array";
    case json::Type::Object: return "dict";
  }
  return "?";
}

bool is_empty_string(const json::Value& v) { return v.is_string() && v.text.empty(); }

// The acceptable values of one ground-truth argument (a non-list is one candidate).
std::vector<const json::Value*> alternatives(const json::Value& acceptable) {
  std::vector<const json::Value*> out;
  if (acceptable.is_array()) {
    for (const auto& a : acceptable.array) out.push_back(&a);
  } else {
    out.push_back(&acceptable);
  }
  return out;
}

bool allows_omission(const json::Value& acceptable) {
  for (const auto* a : alternatives(acceptable))
    if (is_empty_string(*a)) return true;
  return false;
}

// Does a value of JSON kind `v` satisfy the declared schema type? (BFCL's type_checker, without
// the variable case which the caller handles.) Unknown or missing types accept anything.
bool type_ok(const json::Value& v, std::string_view t) {
  if (t == "integer" || t == "int") return v.type == json::Type::Int;
  if (t == "float" || t == "number" || t == "double")  // int accepted where float expected
    return v.type == json::Type::Float || v.type == json::Type::Int;
  if (t == "string" || t == "str") return v.is_string();
  if (t == "boolean" || t == "bool") return v.is_bool();
  if (t == "array" || t == "tuple" || t == "list") return v.is_array();
  if (t == "dict" || t == "object") return v.is_object();
  return true;
}

std::string_view declared_type(const json::Value* prop) {
  if (!prop || !prop->is_object()) return {};
  const json::Value* t = prop->find("type");
  return t && t->is_string() ? std::string_view(t->text) : std::string_view();
}

// Type check with BFCL's two allowances: int for float, and a "variable" (a value of the same
// JSON kind as the first non-"" acceptable value). Arrays check their items' type one level deep.
std::string check_type(std::string_view arg, const json::Value& value, const json::Value* prop,
                       const json::Value& acceptable) {
  std::string_view t = declared_type(prop);
  if (t.empty()) return {};
  bool ok = type_ok(value, t);
  if (ok && value.is_array()) {
    const json::Value* items = prop->find("items");
    std::string_view it = declared_type(items);
    if (!it.empty())
      for (const auto& e : value.array)
        if (!type_ok(e, it))
          return fmt::format("argument \"{}\": an element has type {}, expected {}", arg, kind_name(e), it);
  }
  if (ok) return {};
  for (const auto* a : alternatives(acceptable)) {
    if (is_empty_string(*a)) continue;
    if (a->type == value.type) return {};  // the variable case
    break;
  }
  return fmt::format("argument \"{}\": type {}, expected {}", arg, kind_name(value), t);
}

bool numbers_equal(const json::Value& a, const json::Value& b) {
  return json::equal(a, b);  // Python ==: 1 == 1.0, ints exact
}

// Predicted calls as (name, arguments); accepts {"name","arguments"} and BFCL's {"fn":{args}}.
struct PredCall {
  std::string name;
  json::Value arguments;
};

bool to_pred_call(const json::Value& c, PredCall& out) {
  if (!c.is_object()) return false;
  const json::Value* name = c.find("name");
  if (name && name->is_string()) {
    out.name = name->text;
    const json::Value* args = c.find("arguments");
    out.arguments = args && !args->is_null() ? *args : json::Value::make_object();
    return true;
  }
  if (c.object.size() == 1 && c.object[0].second.is_object()) {
    out.name = c.object[0].first;
    out.arguments = c.object[0].second;
    return true;
  }
  return false;
}

const json::Value* find_function(const json::Value& functions, std::string_view name) {
  if (functions.is_object()) {
    const json::Value* n = functions.find("name");
    return n && n->is_string() && n->text == name ? &functions : nullptr;
  }
  if (!functions.is_array()) return nullptr;
  for (const auto& f : functions.array) {
    const json::Value* n = f.find("name");
    if (n && n->is_string() && n->text == name) return &f;
  }
  return nullptr;
}

// Kuhn's augmenting paths: a maximum matching of ground-truth rows to prediction columns.
size_t max_matching(const std::vector<std::vector<bool>>& ok, size_t cols) {
  std::vector<int> match_col(cols, -1);
  size_t found = 0;
  for (size_t r = 0; r < ok.size(); ++r) {
    std::vector<bool> seen(cols, false);
    std::function<bool(size_t)> augment = [&](size_t row) {
      for (size_t c = 0; c < cols; ++c) {
        if (!ok[row][c] || seen[c]) continue;
        seen[c] = true;
        if (match_col[c] < 0 || augment(size_t(match_col[c]))) {
          match_col[c] = int(row);
          return true;
        }
      }
      return false;
    };
    if (augment(r)) ++found;
  }
  return found;
}

}  // namespace

std::string bfcl_category_from_id(std::string_view id) {
  size_t u = id.rfind('_');
  if (u == std::string_view::npos || u + 1 >= id.size() || !is_digit(id[u + 1])) return std::string(id);
  for (size_t i = u + 1; i < id.size(); ++i)
    if (!is_digit(id[i]) && id[i] != '-') return std::string(id);
  return std::string(id.substr(0, u));
}

std::string bfcl_category_from_filename(std::string_view path) {
  size_t slash = path.find_last_of('/');
  std::string_view base = slash == std::string_view::npos ? path : path.substr(slash + 1);
  size_t dot = base.find('.');
  if (dot != std::string_view::npos && dot > 0) base = base.substr(0, dot);
  // "BFCL_v3_" (any version), and the v1 release's "gorilla_openfunctions_v1_test_".
  if (base.substr(0, 6) == "BFCL_v") {
    size_t i = 6;
    while (i < base.size() && is_digit(base[i])) ++i;
    if (i > 6 && i < base.size() && base[i] == '_') base = base.substr(i + 1);
  }
  constexpr std::string_view v1 = "gorilla_openfunctions_v1_test_";
  if (base.substr(0, v1.size()) == v1) base = base.substr(v1.size());
  return std::string(base);
}

bool bfcl_is_irrelevance(std::string_view c) { return c == "irrelevance" || c == "live_irrelevance"; }
bool bfcl_is_relevance(std::string_view c) { return c == "relevance" || c == "live_relevance"; }

Result<BfclQuestion> parse_bfcl_question(const json::Value& line, std::string_view fallback_category) {
  if (!line.is_object()) return make_error("line is not a JSON object");
  BfclQuestion q;
  const json::Value* id = line.find("id");
  if (!id || !id->is_string()) return make_error("missing string field \"id\"");
  q.id = id->text;
  q.category = bfcl_category_from_id(q.id);
  if (q.category == q.id && !fallback_category.empty()) q.category = std::string(fallback_category);

  const json::Value* question = line.find("question");
  if (!question) return make_error("missing field \"question\"");
  if (question->is_string()) {
    q.query = question->text;
  } else if (question->is_array()) {
    // [[messages...]] (one turn) or [messages...]
    const json::Value* turn = question;
    if (!question->array.empty() && question->array[0].is_array()) {
      if (question->array.size() != 1)
        return make_error("\"question\" has {} turns; only single-turn questions are supported",
                          question->array.size());
      turn = &question->array[0];
    }
    bool found = false;
    for (const auto& m : turn->array) {
      const json::Value* role = m.find("role");
      const json::Value* content = m.find("content");
      if (role && role->is_string() && role->text == "user" && content && content->is_string()) {
        q.query = content->text;  // the last user message wins
        found = true;
      }
    }
    if (!found) return make_error("\"question\" has no user message with string content");
  } else {
    return make_error("field \"question\" is neither a string nor a list");
  }

  const json::Value* fns = line.find("function");
  if (!fns) return make_error("missing field \"function\"");
  if (fns->is_object()) {
    q.functions = json::Value::make_array();
    q.functions.array.push_back(*fns);
  } else if (fns->is_array()) {
    q.functions = *fns;
  } else {
    return make_error("field \"function\" is not a list of functions");
  }
  for (const auto& f : q.functions.array) {
    const json::Value* n = f.find("name");
    if (!n || !n->is_string()) return make_error("a function has no string \"name\"");
  }
  return q;
}

json::Value bfcl_functions_to_needle_tools(const json::Value& functions) {
  json::Value tools = json::Value::make_array();
  std::vector<json::Value> fns = functions.is_array() ? functions.array : std::vector<json::Value>{functions};
  for (const auto& f : fns) {
    if (!f.is_object()) continue;
    json::Value t = json::Value::make_object();
    const json::Value* name = f.find("name");
    const json::Value* desc = f.find("description");
    t.set("name", name ? *name : json::Value::from_string(""));
    t.set("description", desc ? *desc : json::Value::from_string(""));
    json::Value params = json::Value::make_object();
    const json::Value* p = f.find("parameters");
    const json::Value* props = p ? p->find("properties") : nullptr;
    const json::Value* req = p ? p->find("required") : nullptr;
    if (props && props->is_object()) {
      for (const auto& [arg, spec] : props->object) {
        json::Value a = json::Value::make_object();
        const json::Value* type = spec.find("type");
        const json::Value* d = spec.find("description");
        a.set("type", type ? *type : json::Value::from_string("any"));
        a.set("description", d ? *d : json::Value::from_string(""));
        bool required = false;
        if (req && req->is_array())
          for (const auto& r : req->array)
            if (r.is_string() && r.text == arg) required = true;
        a.set("required", json::Value::from_bool(required));
        if (spec.is_object())
          for (const auto& [k, v] : spec.object)
            if (k != "type" && k != "description" && k != "required") a.set(k, v);
        params.set(arg, std::move(a));
      }
    }
    t.set("parameters", std::move(params));
    tools.array.push_back(std::move(t));
  }
  return tools;
}

std::string bfcl_standardize(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case ' ': case ',': case '.': case '/': case '-': case '_': case '*': case '^':
        continue;
      case '\'':
        out.push_back('"');
        continue;
      default:
        out.push_back(c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c);
    }
  }
  return out;
}

bool bfcl_value_matches(const json::Value& value, const json::Value& candidate) {
  switch (candidate.type) {
    case json::Type::String:
      return value.is_string() && bfcl_standardize(value.text) == bfcl_standardize(candidate.text);
    case json::Type::Int:
    case json::Type::Float:
      return value.is_number() && numbers_equal(value, candidate);
    case json::Type::Bool:
      return value.is_bool() && value.boolean == candidate.boolean;
    case json::Type::Null:
      return value.is_null();
    case json::Type::Array:
      if (!value.is_array() || value.array.size() != candidate.array.size()) return false;
      for (size_t i = 0; i < value.array.size(); ++i)
        if (!bfcl_value_matches(value.array[i], candidate.array[i])) return false;
      return true;
    case json::Type::Object: {
      // BFCL's dict_checker: each key of the candidate maps to its acceptable values; every key
      // given must be there and match one; a key not given must accept "".
      if (!value.is_object()) return false;
      for (const auto& [k, v] : value.object) {
        const json::Value* acc = candidate.find(k);
        if (!acc) return false;
        bool any = false;
        for (const auto* a : alternatives(*acc))
          if (bfcl_value_matches(v, *a)) any = true;
        if (!any && acc->is_array() && bfcl_value_matches(v, *acc)) any = true;  // a literal list
        if (!any) return false;
      }
      for (const auto& [k, acc] : candidate.object)
        if (!value.find(k) && !allows_omission(acc)) return false;
      return true;
    }
  }
  return false;
}

BfclVerdict bfcl_check_call(const json::Value* function, std::string_view name, const json::Value& arguments,
                            std::string_view gt_name, const json::Value& gt_arguments) {
  auto fail = [](std::string why) { return BfclVerdict{false, std::move(why)}; };
  if (name != gt_name) return fail(fmt::format("function \"{}\", expected \"{}\"", name, gt_name));
  if (!arguments.is_object()) return fail(fmt::format("arguments of \"{}\" are not a dict", name));
  if (!gt_arguments.is_object()) return fail(fmt::format("ground truth for \"{}\" is not a dict", gt_name));

  const json::Value* params = function ? function->find("parameters") : nullptr;
  const json::Value* props = params ? params->find("properties") : nullptr;
  const json::Value* required = params ? params->find("required") : nullptr;
  if (props && !props->is_object()) props = nullptr;

  if (required && required->is_array())
    for (const auto& r : required->array)
      if (r.is_string() && !arguments.find(r.text))
        return fail(fmt::format("missing required argument \"{}\"", r.text));

  for (const auto& [arg, value] : arguments.object) {
    const json::Value* prop = props ? props->find(arg) : nullptr;
    if (props && !prop) return fail(fmt::format("undeclared argument \"{}\"", arg));
    const json::Value* acceptable = gt_arguments.find(arg);
    if (!acceptable) return fail(fmt::format("unexpected argument \"{}\"", arg));
    std::string type_error = check_type(arg, value, prop, *acceptable);
    if (!type_error.empty()) return fail(type_error);
    bool any = false;
    for (const auto* a : alternatives(*acceptable))
      if (bfcl_value_matches(value, *a)) {
        any = true;
        break;
      }
    if (!any)
      return fail(fmt::format("argument \"{}\": {} is not among {}", arg, describe(value), describe(*acceptable)));
  }

  for (const auto& [arg, acceptable] : gt_arguments.object)
    if (!arguments.find(arg) && !allows_omission(acceptable))
      return fail(fmt::format("missing argument \"{}\"", arg));
  return {true, {}};
}

BfclVerdict bfcl_check(const json::Value& functions, const json::Value* ground_truth, std::string_view category,
                       std::string_view prediction_text) {
  auto fail = [](std::string why) { return BfclVerdict{false, std::move(why)}; };

  // The prediction's calls; `parsed` false when the text is not JSON.
  auto parsed = json::parse(strip(prediction_text));
  std::vector<json::Value> elems;
  std::string not_calls;  // why the parsed prediction is not a list of calls
  if (parsed) {
    if (parsed->is_array()) elems = parsed->array;
    else if (parsed->is_object()) elems.push_back(*parsed);
    else if (!parsed->is_null()) not_calls = "prediction is not a list of calls";
  }
  std::vector<PredCall> calls;
  for (const auto& e : elems) {
    PredCall c;
    if (to_pred_call(e, c)) calls.push_back(std::move(c));
    else if (not_calls.empty()) not_calls = fmt::format("prediction element {} is not a call", describe(e));
  }

  if (!ground_truth) {
    // No call expected: empty, undecodable or call-less output is right (BFCL's irrelevance).
    if (bfcl_is_irrelevance(category))
      return calls.empty() ? BfclVerdict{true, {}} : fail(fmt::format("made {} call(s) where none is expected", calls.size()));
    if (bfcl_is_relevance(category))
      return calls.empty() ? fail("made no call where one is expected") : BfclVerdict{true, {}};
    return fail(fmt::format("no ground truth for category \"{}\"", category));
  }
  if (!parsed) return fail(fmt::format("prediction is not JSON: {}", parsed.message()));
  if (!not_calls.empty()) return fail(not_calls);
  if (!ground_truth->is_array()) return fail("ground truth is not a list");

  // Ground-truth calls: {"fn": {"arg": [acceptable...]}}.
  struct GtCall {
    std::string name;
    const json::Value* args;
  };
  std::vector<GtCall> gts;
  for (const auto& g : ground_truth->array) {
    if (!g.is_object() || g.object.size() != 1) return fail("a ground-truth call is not a one-key dict");
    gts.push_back({g.object[0].first, &g.object[0].second});
  }
  if (calls.size() != gts.size())
    return fail(fmt::format("{} call(s), expected {}", calls.size(), gts.size()));

  std::vector<std::vector<bool>> ok(gts.size(), std::vector<bool>(calls.size(), false));
  std::vector<std::string> first_reason(gts.size());
  std::vector<bool> reason_same(gts.size(), false);
  for (size_t i = 0; i < gts.size(); ++i) {
    const json::Value* fn = find_function(functions, gts[i].name);
    for (size_t j = 0; j < calls.size(); ++j) {
      BfclVerdict v = bfcl_check_call(fn, calls[j].name, calls[j].arguments, gts[i].name, *gts[i].args);
      ok[i][j] = v.correct;
      // Keep one reason per ground-truth call, preferring a same-named call's (it says what is
      // wrong with the arguments).
      bool same = calls[j].name == gts[i].name;
      if (!v.correct && (first_reason[i].empty() || (same && !reason_same[i]))) {
        first_reason[i] = v.reason;
        reason_same[i] = same;
      }
    }
  }
  if (max_matching(ok, calls.size()) == gts.size()) return {true, {}};
  for (size_t i = 0; i < gts.size(); ++i) {
    bool any = std::any_of(ok[i].begin(), ok[i].end(), [](bool b) { return b; });
    if (!any) return fail(fmt::format("call {} (\"{}\"): {}", i, gts[i].name, first_reason[i]));
  }
  return fail("no one-to-one assignment of predicted calls to ground-truth calls");
}

Result<std::map<std::string, json::Value>> load_bfcl_answers(const std::string& path,
                                                             std::vector<BfclLineError>* line_errors) {
  NEEDLE_ASSIGN(JsonlReader reader, JsonlReader::open(path));
  std::map<std::string, json::Value> answers;
  JsonlLine l;
  while (reader.next(l)) {
    const json::Value* id = l.value.find("id");
    const json::Value* gt = l.value.find("ground_truth");
    if (!id || !id->is_string()) {
      reader.add_error(l.line_no, "missing string field \"id\"");
      continue;
    }
    if (!gt || !gt->is_array()) {
      reader.add_error(l.line_no, "missing list field \"ground_truth\"");
      continue;
    }
    if (!answers.emplace(id->text, *gt).second)
      reader.add_error(l.line_no, fmt::format("duplicate id \"{}\" (the first is kept)", id->text));
  }
  if (line_errors)
    for (auto& e : reader.take_errors()) line_errors->push_back({e.line_no, std::move(e.message)});
  return answers;
}

void BfclScorer::add(std::string_view category, const BfclVerdict& v) {
  auto it = std::find_if(cats_.begin(), cats_.end(), [&](const auto& c) { return c.category == category; });
  if (it == cats_.end()) {
    cats_.push_back({std::string(category), 0, 0});
    it = cats_.end() - 1;
  }
  it->total++;
  total_++;
  if (v.correct) {
    it->correct++;
    correct_++;
  }
}

json::Value BfclScorer::to_json() const {
  auto score = [](size_t correct, size_t total) {
    json::Value o = json::Value::make_object();
    o.set("accuracy", json::Value::from_double(total ? double(correct) / double(total) : 0.0));
    o.set("correct", json::Value::from_int(int64_t(correct)));
    o.set("total", json::Value::from_int(int64_t(total)));
    return o;
  };
  json::Value o = json::Value::make_object();
  o.set("overall", score(correct_, total_));
  json::Value cats = json::Value::make_object();
  for (const auto& c : cats_) cats.set(c.category, score(c.correct, c.total));
  o.set("categories", std::move(cats));
  return o;
}

}  // namespace needle::eval
