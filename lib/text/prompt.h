// Model input and training sequences, exactly as the original pipeline builds them.
//
//   encoder:  query[:max-2] + [<tools>] + tools[:max - len(query kept) - 1]   (no BOS/EOS)
//   decoder (generation): starts from [EOS]
//   decoder (training):   input [EOS, <tool_call>] + answer, target [<tool_call>] + answer + [EOS]
//
// Query and tools are encoded separately; the tools text is ToolSet::model_json() (compact,
// snake_cased names); the answer text is the compact JSON of the calls with snake_cased names.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "text/json.h"
#include "text/tokenizer.h"
#include "text/tools.h"
#include "util/result.h"

namespace needle::text {

inline constexpr size_t kMaxEncLen = 1024;
inline constexpr size_t kMaxDecLen = 512;  // training drops answers with len + 3 > this; generation stops after kMaxDecLen - 1 steps

struct EncoderInput {
  std::vector<int> ids;
  size_t query_kept = 0, query_total = 0;  // query tokens used / produced by the tokenizer
  size_t tools_kept = 0, tools_total = 0;  // tools tokens used / produced
  bool truncated() const { return query_kept < query_total || tools_kept < tools_total; }
};

// The layout from already-encoded parts. max_enc_len must be >= 2.
EncoderInput build_encoder_input(std::span<const int> query_ids, std::span<const int> tools_ids,
                                 size_t max_enc_len = kMaxEncLen);
// Encodes query and tools text (already in model form: ToolSet::model_json()) separately.
EncoderInput build_encoder_input(const Tokenizer& tok, std::string_view query, std::string_view tools_text,
                                 size_t max_enc_len = kMaxEncLen);
inline EncoderInput build_encoder_input(const Tokenizer& tok, std::string_view query, const ToolSet& tools,
                                        size_t max_enc_len = kMaxEncLen) {
  return build_encoder_input(tok, query, tools.model_json(), max_enc_len);
}

// Generation starts from [EOS].
inline std::vector<int> decoder_start() { return {kEosId}; }

// The answer as the model writes it: compact JSON with every call's name snake_cased. A blank
// text (or "null") is the empty answer "[]". Errors when the text is not JSON.
Result<std::string> answer_model_text(std::string_view answers_json);
std::string answer_model_text(const json::Value& answers);

// Loss classes (reference section 5), weights 1.0 / 2.0 / 4.0 / 1.5.
enum class TokenClass : uint8_t { Base = 0, Name = 1, Value = 2, Key = 3 };
inline constexpr float kClassWeights[4] = {1.0f, 2.0f, 4.0f, 1.5f};

// Class of every byte of an answer text (all bytes of a character share its class):
//   Name  - the characters inside the quotes of each call's "name" string value;
//   Key   - the characters inside the quotes of each key of a call's "arguments" object;
//   Value - each argument value: a string's characters inside its quotes; a number, true,
//           false or null: its whole token; an array or object: its whole text, brackets,
//           nested keys and quotes included;
//   Base  - everything else (structure, quotes around names/keys/string values, "name",
//           "arguments"). A call list may also be a single call object. Text that is not
//           JSON is all Base.
std::vector<uint8_t> answer_char_classes(std::string_view answer_text);
// Per token: the max class over the bytes of its span. A token with an empty span (SentencePiece
// gives the byte pieces of one character empty spans except the last, which spans the whole
// character; the dummy-prefix space alone is empty too) takes the class of the byte at its
// begin (the previous token's class at the end of the text).
std::vector<uint8_t> answer_token_classes(std::string_view answer_text, std::span<const TokenSpan> spans);
// Same, from each token's surface text (Tokenizer::piece_text): tokens are aligned to the
// text in order; a leading space the text lacks (SentencePiece's dummy prefix) is skipped.
std::vector<uint8_t> answer_token_classes(std::string_view answer_text, std::span<const std::string> pieces);

struct DecoderExample {
  std::vector<int> input;            // [EOS, <tool_call>] + answer
  std::vector<int> target;           // [<tool_call>] + answer + [EOS]
  std::vector<uint8_t> target_class; // TokenClass per target token (<tool_call>, EOS: Base)
};

// From the answer in model form (answer_model_text). Error when len(answer) + 3 > max_dec_len:
// the reference drops such examples.
Result<DecoderExample> build_decoder_example(const Tokenizer& tok, std::string_view answer_text,
                                             size_t max_dec_len = kMaxDecLen);

}  // namespace needle::text
