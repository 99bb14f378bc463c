// Tool lists: parse the three accepted forms, normalize them to the flat v1 form the model was
// trained on, and keep a typed schema per argument for constrained decoding.
//
// Accepted forms (see docs/tools.md for the full mapping):
//   v1 (Needle):  [{"name","description","parameters":{"arg":{"type","description","required":bool}}}]
//   OpenAI / JSON Schema: [{"type":"function","function":{"name","description",
//                  "parameters":{"type":"object","properties":{...},"required":[...]}}}]
//   BFCL:         JSON Schema with "type":"dict", "float", "tuple", "any" (and Python names
//                  str/int/bool/list are understood too).
// The model sees tool names in snake_case; ToolSet maps them back to the caller's names.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "text/json.h"
#include "util/result.h"

namespace needle::text {

enum class ArgType : uint8_t { Any, String, Number, Integer, Boolean, Null, Array, Object };

// The v1 spelling: "any", "string", "number", "integer", "boolean", "null", "array", "object".
const char* arg_type_name(ArgType t);
// Any spelling we accept (JSON Schema, BFCL, Python): "dict" -> Object, "float" -> Number,
// "tuple"/"list" -> Array, "str" -> String, "int" -> Integer, "bool" -> Boolean. Unknown -> Any.
ArgType parse_arg_type(std::string_view s);

struct ArgProp;

// A value's schema. Array with no items = array of anything; Object with no properties =
// free-form object. A non-empty `enum_values` restricts the value to one of those JSON values.
struct ArgSchema {
  ArgType type = ArgType::Any;
  bool nullable = false;                // null allowed besides `type`
  std::vector<json::Value> enum_values;
  std::vector<ArgSchema> items;         // Array: 0 or 1 element (the item schema)
  std::vector<ArgProp> properties;      // Object: declared properties, in order
  std::string description;
};

struct ArgProp {
  std::string name;  // decoded UTF-8, as written (argument names are never snake_cased)
  ArgSchema schema;
  bool required = false;
};

struct Tool {
  std::string name;        // as the caller wrote it
  std::string model_name;  // snake_case(name): what the encoder sees and the model writes
  std::string description;
  std::vector<ArgProp> args;  // the "arguments" object's properties, in order
  json::Value v1;             // the normalized v1 object (name = model_name) given to the encoder
};

struct ToolSet {
  std::vector<Tool> tools;

  // Compact JSON of the v1 list (Python json.dumps(..., separators=(",", ":"))): the text the
  // encoder gets after <tools>.
  std::string model_json() const;
  json::Value model_value() const;
  // By model (snake_case) name; nullptr when absent.
  const Tool* find_model_name(std::string_view model_name) const;
  // The caller's name for a model name; the model name itself when it is not in the set.
  std::string caller_name(std::string_view model_name) const;
};

// Parses a tools list (JSON text or value). Errors are one line naming the tool, e.g.
// "tools[2]: duplicate tool name 'get_weather' (tools[0] 'getWeather' has the same snake_case name)".
// An empty text or "null" is an empty list.
Result<ToolSet> parse_tools(std::string_view text);
Result<ToolSet> parse_tools(const json::Value& tools);

// Needle's snake_case, exactly the reference regexes in this order:
//   [^a-zA-Z0-9_]+ -> _ ; ([a-z0-9])([A-Z]) -> \1_\2 ; ([A-Z]+)([A-Z][a-z]) -> \1_\2 ;
//   _+ -> _ ; lowercase ; strip leading/trailing _.
std::string snake_case(std::string_view name);

// Rewrites the "name" of every call in a parsed call list (a list of {"name","arguments"}
// objects, or one such object) from model names to caller names. Other values are unchanged.
json::Value restore_names(const json::Value& calls, const ToolSet& tools);
// The other way, for training targets: every call's "name" becomes snake_case(name).
json::Value snake_case_names(const json::Value& calls);

}  // namespace needle::text
