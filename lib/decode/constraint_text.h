// Adapters from lib/text to the constraint engines' plain inputs: the tokenizer's surface
// bytes, the parsed tool set's typed schemas (model names), and the original's view of the
// tools (their v1 JSON, read like needle/model/constrained.py does).
#pragma once
#include <vector>

#include "decode/constraint.h"
#include "decode/constraint_reference.h"
#include "text/tokenizer.h"
#include "text/tools.h"

namespace needle::decode {

// bytes = piece_text (U+2581 -> ' ', byte pieces -> one byte, "" for control/unknown/
// user-defined); EOS = 1; <tool_call> (4) is the lead id when the vocabulary has it; the
// reference engine sees user-defined symbols as their spelling, like the original.
TokenVocab vocab_from_tokenizer(const text::Tokenizer& tok);

// One ToolSpec per tool, named by its model (snake_case) name: what the model writes.
std::vector<ToolSpec> tool_specs(const text::ToolSet& tools);
ArgSchema arg_schema(const text::ArgSchema& s);

// The original's ToolConstraints over the v1 JSON the encoder sees (model_json()).
std::vector<RefTool> reference_tools(const text::ToolSet& tools);

}  // namespace needle::decode
