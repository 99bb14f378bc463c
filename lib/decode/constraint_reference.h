// `--constrain reference`: the original Needle constrained decoder (needle/model/constrained.py),
// for parity: a character trie over tool names and, per tool, over its parameter keys, driven by
// a character-level JSON state machine. Only names and keys are constrained; values are free.
// Every interpretation of the original is written down in docs/decoding.md.
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "decode/constraint.h"

namespace needle::decode {

// What the original extracts from one tool: its name and the keys of its parameter trie.
struct RefTool {
  std::string name;               // UTF-8
  bool has_params = true;         // false: the original builds no key trie for this tool
  std::vector<std::string> keys;  // UTF-8
};

// From our tool description: name and argument names in order.
std::vector<RefTool> reference_tools(const std::vector<ToolSpec>& tools);

// From the tools JSON text, exactly as the original's ToolConstraints reads it: unparsable or
// non-list input gives no tools; non-object tools and empty/non-string names are skipped;
// keys come from `parameters.get("properties", parameters)` (object keys, list strings, or the
// characters of a string), non-empty strings only.
std::vector<RefTool> reference_tools_from_json(std::string_view tools_json);

Result<std::unique_ptr<Constraint>> make_reference_constraint(
    std::shared_ptr<const TokenIndex> index, const std::vector<RefTool>& tools);

}  // namespace needle::decode
