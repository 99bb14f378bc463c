// The SentencePiece tokenizer (BPE, byte fallback, identity normalization), loaded from the
// model bytes (a needle.model file, or the copy embedded in a .needle file).
//
// Fixed ids, as the model was trained: PAD 0, EOS 1, BOS 2 (unused), UNK 3, <tool_call> 4,
// <tools> 5. Query and tools text are encoded separately (text/prompt.h builds the sequences).
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "util/result.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace needle::text {

inline constexpr int kPadId = 0;
inline constexpr int kEosId = 1;
inline constexpr int kBosId = 2;
inline constexpr int kUnkId = 3;
inline constexpr int kToolCallId = 4;  // "<tool_call>": first token of every answer
inline constexpr int kToolsId = 5;     // "<tools>": separates query and tools in the encoder input

enum class PieceKind : uint8_t {
  Normal,       // text piece (U+2581 = space)
  Byte,         // byte fallback "<0xAB>": one raw byte
  Control,      // <pad>, </s>, <s>: no text
  Unknown,      // <unk>: no text
  UserDefined,  // <tool_call>, <tools>: no text for the decoder (their literal spelling is
                // what encode() matches in input text)
  Unused,
};

// One encoded token with the byte span [begin, end) of the input text it covers. SentencePiece
// gives the byte pieces of one character empty spans at the character's start, except the
// last, which spans the whole character; the dummy-prefix space covers no input bytes.
struct TokenSpan {
  int id = 0;
  uint32_t begin = 0;
  uint32_t end = 0;
};

class Tokenizer {
 public:
  Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Loads a serialized SentencePiece ModelProto. Checks the fixed ids above (PAD 0, EOS 1,
  // UNK 3; <tool_call> 4 and <tools> 5 when the vocabulary has them).
  static Result<Tokenizer> from_bytes(std::span<const uint8_t> model_bytes);
  static Result<Tokenizer> from_bytes(std::string_view model_bytes);
  static Result<Tokenizer> from_file(const std::string& path);

  int vocab_size() const { return static_cast<int>(pieces_.size()); }

  // Text -> ids (no BOS/EOS added). Identical to Python's sp.encode(text).
  std::vector<int> encode(std::string_view text) const;
  // Ids with the input byte span each covers (for per-character loss classes).
  std::vector<TokenSpan> encode_with_spans(std::string_view text) const;
  // Ids -> text (sp.decode): control ids vanish, byte pieces are merged into UTF-8, the
  // leading dummy-prefix space is removed. Out-of-range ids are an error.
  Result<std::string> decode(std::span<const int> ids) const;

  // The piece as stored in the model ("▁Paris", "<0x0A>", "<tool_call>").
  const std::string& piece(int id) const { return pieces_[static_cast<size_t>(id)]; }
  PieceKind kind(int id) const { return kinds_[static_cast<size_t>(id)]; }
  // Surface bytes the token adds to the text: U+2581 -> ' ', "<0xAB>" -> that one raw byte,
  // "" for control, unknown, unused and user-defined ids. What the constrained decoder matches.
  const std::string& piece_text(int id) const { return texts_[static_cast<size_t>(id)]; }
  // piece_text for every id (index = id).
  const std::vector<std::string>& piece_texts() const { return texts_; }

  // The serialized model this tokenizer was loaded from (to embed it in a .needle file).
  const std::string& model_bytes() const { return model_; }

 private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::string model_;
  std::vector<std::string> pieces_;
  std::vector<std::string> texts_;
  std::vector<PieceKind> kinds_;
};

// "<0xAB>" -> 0xAB; -1 when `piece` is not a byte piece spelling.
int byte_piece_value(std::string_view piece);

}  // namespace needle::text
