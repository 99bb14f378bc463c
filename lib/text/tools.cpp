#include "text/tools.h"

#include <algorithm>
#include <regex>
#include <unordered_map>

namespace needle::text {

const char* arg_type_name(ArgType t) {
  switch (t) {
    case ArgType::Any: return "any";
    case ArgType::String: return "string";
    case ArgType::Number: return "number";
    case ArgType::Integer: return "integer";
    case ArgType::Boolean: return "boolean";
    case ArgType::Null: return "null";
    case ArgType::Array: return "array";
    case ArgType::Object: return "object";
  }
  return "any";
}

ArgType parse_arg_type(std::string_view s) {
  struct Name {
    std::string_view name;
    ArgType type;
  };
  static constexpr Name kNames[] = {
      {"string", ArgType::String},   {"str", ArgType::String},      {"number", ArgType::Number},
      {"float", ArgType::Number},    {"double", ArgType::Number},   {"integer", ArgType::Integer},
      {"int", ArgType::Integer},     {"boolean", ArgType::Boolean}, {"bool", ArgType::Boolean},
      {"null", ArgType::Null},       {"array", ArgType::Array},     {"list", ArgType::Array},
      {"tuple", ArgType::Array},     {"object", ArgType::Object},   {"dict", ArgType::Object},
      {"any", ArgType::Any},
  };
  std::string lower(s);
  for (char& c : lower)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  for (const auto& n : kNames)
    if (n.name == lower) return n.type;
  return ArgType::Any;
}

std::string snake_case(std::string_view name) {
  // std::regex (ECMAScript) has the same leftmost, greedy, non-overlapping replacement
  // semantics as Python's re.sub for these patterns. Non-ASCII bytes are all outside
  // [a-zA-Z0-9_], exactly as non-ASCII characters are for Python.
  static const std::regex non_word("[^a-zA-Z0-9_]+");
  static const std::regex lower_upper("([a-z0-9])([A-Z])");
  static const std::regex acronym("([A-Z]+)([A-Z][a-z])");
  static const std::regex underscores("_+");
  std::string s(name);
  s = std::regex_replace(s, non_word, "_");
  s = std::regex_replace(s, lower_upper, "$1_$2");
  s = std::regex_replace(s, acronym, "$1_$2");
  s = std::regex_replace(s, underscores, "_");
  for (char& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  size_t b = s.find_first_not_of('_');
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of('_');
  return s.substr(b, e - b + 1);
}

namespace {

const char* type_word(const json::Value& v) {
  switch (v.type) {
    case json::Type::Null: return "null";
    case json::Type::Bool: return "a boolean";
    case json::Type::Int:
    case json::Type::Float: return "a number";
    case json::Type::String: return "a string";
    case json::Type::Array: return "an array";
    case json::Type::Object: return "an object";
  }
  return "a value";
}

const std::string* get_string(const json::Value& obj, std::string_view key) {
  const json::Value* v = obj.find(key);
  return (v && v->is_string()) ? &v->text : nullptr;
}

// Type of a schema node: "type" as a string or a list (with "null" meaning nullable).
void read_type(const json::Value& node, ArgSchema& s) {
  const json::Value* t = node.find("type");
  if (t && t->is_string()) {
    s.type = parse_arg_type(t->text);
  } else if (t && t->is_array()) {
    std::vector<ArgType> types;
    for (const auto& x : t->array) {
      if (!x.is_string()) continue;
      ArgType a = parse_arg_type(x.text);
      if (a == ArgType::Null) {
        s.nullable = true;
      } else {
        types.push_back(a);
      }
    }
    s.type = types.size() == 1 ? types[0] : (types.empty() && s.nullable ? ArgType::Null : ArgType::Any);
  }
  if (const json::Value* n = node.find("nullable"); n && n->is_bool() && n->boolean) s.nullable = true;
}

Result<ArgSchema> parse_schema(const json::Value& node, const std::string& where);

// "properties" of an object schema. `required_list` is the node's "required" array (JSON
// Schema); a property's own "required": true (v1) also marks it required.
Status parse_properties(const json::Value& props, const json::Value* required_list, const std::string& where,
                        std::vector<ArgProp>& out) {
  if (!props.is_object()) return make_error("{}: properties must be an object, got {}", where, type_word(props));
  std::vector<std::string> required;
  if (required_list && required_list->is_array()) {
    for (const auto& r : required_list->array) {
      if (!r.is_string()) return make_error("{}: \"required\" must list property names", where);
      required.push_back(r.text);
    }
  }
  for (const auto& [name, spec] : props.object) {
    std::string at = fmt::format("{}: parameter '{}'", where, name);
    if (!spec.is_object()) return make_error("{} must be an object, got {}", at, type_word(spec));
    ArgProp p;
    p.name = name;
    NEEDLE_ASSIGN(p.schema, parse_schema(spec, at));
    const json::Value* own = spec.find("required");
    p.required = (own && own->is_bool() && own->boolean) ||
                 std::find(required.begin(), required.end(), name) != required.end();
    out.push_back(std::move(p));
  }
  return {};
}

// One schema node, v1 or JSON Schema spelling (they share "type", "enum", "items",
// "properties", "description").
Result<ArgSchema> parse_schema(const json::Value& node, const std::string& where) {
  ArgSchema s;
  read_type(node, s);
  if (const std::string* d = get_string(node, "description")) s.description = *d;
  for (const char* alt : {"anyOf", "oneOf"}) {
    const json::Value* any = node.find(alt);
    if (!any || !any->is_array() || node.find("type")) continue;
    std::vector<const json::Value*> non_null;
    for (const auto& a : any->array) {
      const std::string* t = a.is_object() ? get_string(a, "type") : nullptr;
      if (t && *t == "null") {
        s.nullable = true;
      } else {
        non_null.push_back(&a);
      }
    }
    if (non_null.size() == 1 && non_null[0]->is_object()) {
      bool nullable = s.nullable;
      std::string desc = s.description;
      NEEDLE_ASSIGN(s, parse_schema(*non_null[0], where));
      s.nullable = s.nullable || nullable;
      if (!desc.empty()) s.description = desc;
    }
  }
  if (const json::Value* e = node.find("enum")) {
    if (!e->is_array()) return make_error("{}: \"enum\" must be an array, got {}", where, type_word(*e));
    s.enum_values = e->array;
  }
  const json::Value* items = node.find("items");
  const json::Value* props = node.find("properties");
  if (s.type == ArgType::Any && !node.find("type")) {
    // No declared type: infer it from what the node describes.
    if (props && props->is_object()) {
      s.type = ArgType::Object;
    } else if (items) {
      s.type = ArgType::Array;
    } else if (!s.enum_values.empty()) {
      auto all = [&](auto pred) { return std::all_of(s.enum_values.begin(), s.enum_values.end(), pred); };
      if (all([](const json::Value& v) { return v.is_string(); })) s.type = ArgType::String;
      else if (all([](const json::Value& v) { return v.type == json::Type::Int; })) s.type = ArgType::Integer;
      else if (all([](const json::Value& v) { return v.is_number(); })) s.type = ArgType::Number;
      else if (all([](const json::Value& v) { return v.is_bool(); })) s.type = ArgType::Boolean;
    }
  }
  if (items && items->is_object() && (s.type == ArgType::Array || s.type == ArgType::Any)) {
    NEEDLE_ASSIGN(ArgSchema item, parse_schema(*items, where + " items"));
    s.items.push_back(std::move(item));
  }
  if (props && (s.type == ArgType::Object || s.type == ArgType::Any)) {
    const json::Value* req = node.find("required");
    NEEDLE_TRY(parse_properties(*props, (req && req->is_array()) ? req : nullptr, where, s.properties));
  }
  return s;
}

// The v1 spelling of a schema node: {"type", ["enum"], ["description"], ["required"], ["items"],
// ["properties"]}. `required` < 0: the node is not a property (an item schema).
json::Value to_v1(const ArgSchema& s, int required, bool top_level) {
  json::Value o = json::Value::make_object();
  o.set("type", json::Value::from_string(arg_type_name(s.type)));
  if (!s.enum_values.empty()) {
    json::Value e = json::Value::make_array();
    e.array = s.enum_values;
    o.set("enum", std::move(e));
  }
  if (top_level || !s.description.empty()) o.set("description", json::Value::from_string(s.description));
  if (required >= 0) o.set("required", json::Value::from_bool(required != 0));
  if (!s.items.empty()) o.set("items", to_v1(s.items[0], -1, false));
  if (!s.properties.empty()) {
    json::Value props = json::Value::make_object();
    for (const auto& p : s.properties) props.set(p.name, to_v1(p.schema, p.required ? 1 : 0, false));
    o.set("properties", std::move(props));
  }
  return o;
}

// Whether a "parameters" object is a JSON Schema (an object schema) rather than v1's flat
// map of argument specs: JSON Schema has "type" as a string (a v1 argument spec is always
// an object), or "properties" with no "type".
bool is_json_schema(const json::Value& params) {
  const json::Value* t = params.find("type");
  if (t) return t->is_string();
  const json::Value* p = params.find("properties");
  return p && p->is_object() && (!p->find("type") || p->find("type")->is_object());
}

}  // namespace

Result<ToolSet> parse_tools(const json::Value& tools) {
  ToolSet set;
  if (tools.is_null()) return set;
  if (!tools.is_array()) return make_error("tools: expected a JSON array of tools, got {}", type_word(tools));
  std::unordered_map<std::string, size_t> seen;
  for (size_t i = 0; i < tools.array.size(); ++i) {
    const json::Value& t = tools.array[i];
    if (!t.is_object()) return make_error("tools[{}]: expected an object, got {}", i, type_word(t));
    // OpenAI wraps the function: {"type":"function","function":{...}}.
    const json::Value* fn = &t;
    if (const json::Value* f = t.find("function"); f && f->is_object()) fn = f;
    const json::Value* name = fn->find("name");
    if (!name) return make_error("tools[{}]: missing \"name\"", i);
    if (!name->is_string()) return make_error("tools[{}]: \"name\" must be a string, got {}", i, type_word(*name));
    Tool tool;
    tool.name = name->text;
    tool.model_name = snake_case(tool.name);
    if (tool.model_name.empty())
      return make_error("tools[{}]: tool name '{}' has no ASCII letters or digits", i, tool.name);
    if (auto it = seen.find(tool.model_name); it != seen.end()) {
      const Tool& other = set.tools[it->second];
      if (other.name == tool.name) return make_error("tools[{}]: duplicate tool name '{}' (also tools[{}])", i, tool.name, it->second);
      return make_error("tools[{}]: tool name '{}' collides with tools[{}] '{}' (both are '{}' in snake_case)", i,
                        tool.name, it->second, other.name, tool.model_name);
    }
    std::string where = fmt::format("tools[{}] '{}'", i, tool.name);
    if (const json::Value* d = fn->find("description")) {
      if (!d->is_string() && !d->is_null()) return make_error("{}: \"description\" must be a string, got {}", where, type_word(*d));
      if (d->is_string()) tool.description = d->text;
    }
    // "parameters" (v1, OpenAI, BFCL); "arguments" (ACEBench distractors); "input_schema" (Anthropic).
    const json::Value* params = nullptr;
    for (const char* key : {"parameters", "arguments", "input_schema"}) {
      if ((params = fn->find(key))) break;
    }
    bool schema_form = false;
    if (params && !params->is_null()) {
      if (!params->is_object())
        return make_error("{}: \"parameters\" must be an object, got {}", where, type_word(*params));
      schema_form = is_json_schema(*params);
      if (schema_form) {
        const json::Value* type = params->find("type");
        if (type && parse_arg_type(type->text) != ArgType::Object)
          return make_error("{}: \"parameters\" must be an object schema, got type '{}'", where, type->text);
        if (const json::Value* props = params->find("properties")) {
          const json::Value* req = params->find("required");
          if (req && !req->is_array() && !req->is_null())
            return make_error("{}: \"required\" must be an array of names, got {}", where, type_word(*req));
          NEEDLE_TRY(parse_properties(*props, req, where, tool.args));
        }
      } else {
        NEEDLE_TRY(parse_properties(*params, nullptr, where, tool.args));
      }
    }
    if (!schema_form && fn == &t) {
      // v1 already: the encoder gets the caller's object as is, name snake_cased (that is
      // what the original pipeline does), extra keys included.
      tool.v1 = t;
      tool.v1.set("name", json::Value::from_string(tool.model_name));
      if (!params) tool.v1.set("parameters", json::Value::make_object());
    } else {
      json::Value v1 = json::Value::make_object();
      v1.set("name", json::Value::from_string(tool.model_name));
      v1.set("description", json::Value::from_string(tool.description));
      json::Value ps = json::Value::make_object();
      for (const auto& a : tool.args) ps.set(a.name, to_v1(a.schema, a.required ? 1 : 0, true));
      v1.set("parameters", std::move(ps));
      tool.v1 = std::move(v1);
    }
    seen.emplace(tool.model_name, set.tools.size());
    set.tools.push_back(std::move(tool));
  }
  return set;
}

Result<ToolSet> parse_tools(std::string_view text) {
  if (text.find_first_not_of(" \t\r\n") == std::string_view::npos) return ToolSet{};
  auto v = json::parse(text);
  if (!v) return make_error("tools: {}", v.message());
  return parse_tools(*v);
}

json::Value ToolSet::model_value() const {
  json::Value a = json::Value::make_array();
  for (const auto& t : tools) a.array.push_back(t.v1);
  return a;
}

std::string ToolSet::model_json() const { return json::dump_compact(model_value()); }

const Tool* ToolSet::find_model_name(std::string_view model_name) const {
  for (const auto& t : tools)
    if (t.model_name == model_name) return &t;
  return nullptr;
}

std::string ToolSet::caller_name(std::string_view model_name) const {
  const Tool* t = find_model_name(model_name);
  return t ? t->name : std::string(model_name);
}

namespace {

template <class F>
json::Value map_call_names(const json::Value& calls, F&& f) {
  auto one = [&](json::Value c) {
    if (json::Value* n = c.find("name"); n && n->is_string()) n->text = f(n->text);
    return c;
  };
  if (calls.is_object()) return one(calls);
  if (!calls.is_array()) return calls;
  json::Value out = json::Value::make_array();
  for (const auto& c : calls.array) out.array.push_back(c.is_object() ? one(c) : c);
  return out;
}

}  // namespace

json::Value restore_names(const json::Value& calls, const ToolSet& tools) {
  return map_call_names(calls, [&](const std::string& n) { return tools.caller_name(n); });
}

json::Value snake_case_names(const json::Value& calls) {
  return map_call_names(calls, [](const std::string& n) { return snake_case(n); });
}

}  // namespace needle::text
