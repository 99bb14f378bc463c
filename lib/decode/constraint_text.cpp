#include "decode/constraint_text.h"

#include "text/json.h"

namespace needle::decode {

TokenVocab vocab_from_tokenizer(const text::Tokenizer& tok) {
  TokenVocab v;
  v.bytes = tok.piece_texts();
  v.eos_ids = {text::kEosId};
  const int n = tok.vocab_size();
  if (n > text::kToolCallId && tok.kind(text::kToolCallId) == text::PieceKind::UserDefined)
    v.lead_ids = {text::kToolCallId};
  v.reference_bytes = v.bytes;
  // The original's build_token_strings: only control and unknown ids are empty; user-defined
  // and unused pieces keep their spelling (U+2581 as a space).
  for (int i = 0; i < n; ++i) {
    const auto k = tok.kind(i);
    if (k == text::PieceKind::UserDefined || k == text::PieceKind::Unused)
      v.reference_bytes[static_cast<size_t>(i)] = piece_surface(tok.piece(i), false);
  }
  return v;
}

ArgSchema arg_schema(const text::ArgSchema& s) {
  ArgSchema out;
  switch (s.type) {
    case text::ArgType::Any: out.type = ArgType::Any; break;
    case text::ArgType::String: out.type = ArgType::String; break;
    case text::ArgType::Number: out.type = ArgType::Number; break;
    case text::ArgType::Integer: out.type = ArgType::Integer; break;
    case text::ArgType::Boolean: out.type = ArgType::Boolean; break;
    case text::ArgType::Null: out.type = ArgType::Null; break;
    case text::ArgType::Array: out.type = ArgType::Array; break;
    case text::ArgType::Object: out.type = ArgType::Object; break;
  }
  out.nullable = s.nullable;
  for (const auto& e : s.enum_values) {
    if (e.is_string())
      out.enum_values.push_back({true, e.text});
    else
      out.enum_values.push_back({false, json::dump_compact(e)});
  }
  for (const auto& it : s.items) out.items.push_back(arg_schema(it));
  for (const auto& p : s.properties) out.properties.push_back({p.name, arg_schema(p.schema), p.required});
  return out;
}

std::vector<ToolSpec> tool_specs(const text::ToolSet& tools) {
  std::vector<ToolSpec> out;
  out.reserve(tools.tools.size());
  for (const auto& t : tools.tools) {
    ToolSpec spec;
    spec.name = t.model_name;
    for (const auto& p : t.args) spec.args.push_back({p.name, arg_schema(p.schema), p.required});
    out.push_back(std::move(spec));
  }
  return out;
}

std::vector<RefTool> reference_tools(const text::ToolSet& tools) {
  return reference_tools_from_json(tools.model_json());
}

}  // namespace needle::decode
