#include "text/tokenizer.h"

#include <sentencepiece_processor.h>

#include "io/file.h"

namespace needle::text {

Tokenizer::Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

int byte_piece_value(std::string_view piece) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return -1;
  int v = 0;
  for (char c : piece.substr(3, 2)) {
    int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
}

namespace {

std::string surface_of(std::string_view piece) {
  static constexpr std::string_view kSpace = "\xe2\x96\x81";  // U+2581
  std::string out;
  out.reserve(piece.size());
  for (size_t i = 0; i < piece.size();) {
    if (piece.substr(i, 3) == kSpace) {
      out += ' ';
      i += 3;
    } else {
      out += piece[i++];
    }
  }
  return out;
}

}  // namespace

Result<Tokenizer> Tokenizer::from_bytes(std::string_view bytes) {
  Tokenizer t;
  t.sp_ = std::make_unique<sentencepiece::SentencePieceProcessor>();
  t.model_.assign(bytes.data(), bytes.size());
  auto st = t.sp_->LoadFromSerializedProto(t.model_);
  if (!st.ok()) return make_error("tokenizer: cannot load the SentencePiece model: {}", st.ToString());
  const int n = t.sp_->GetPieceSize();
  if (n < 4) return make_error("tokenizer: vocabulary of {} pieces is too small", n);
  t.pieces_.resize(static_cast<size_t>(n));
  t.texts_.resize(static_cast<size_t>(n));
  t.kinds_.resize(static_cast<size_t>(n));
  for (int id = 0; id < n; ++id) {
    const std::string& p = t.sp_->IdToPiece(id);
    t.pieces_[static_cast<size_t>(id)] = p;
    PieceKind k = PieceKind::Normal;
    std::string text;
    if (t.sp_->IsControl(id)) {
      k = PieceKind::Control;
    } else if (t.sp_->IsUnknown(id)) {
      k = PieceKind::Unknown;
    } else if (t.sp_->IsUnused(id)) {
      k = PieceKind::Unused;
    } else if (t.sp_->IsByte(id)) {
      k = PieceKind::Byte;
      int b = byte_piece_value(p);
      if (b < 0) return make_error("tokenizer: byte piece {} has an unexpected spelling '{}'", id, p);
      text.assign(1, static_cast<char>(b));
    } else if (p == "<tool_call>" || p == "<tools>") {
      k = PieceKind::UserDefined;
    } else {
      text = surface_of(p);
    }
    t.kinds_[static_cast<size_t>(id)] = k;
    t.texts_[static_cast<size_t>(id)] = std::move(text);
  }
  if (t.sp_->pad_id() != kPadId || t.sp_->eos_id() != kEosId || t.sp_->unk_id() != kUnkId)
    return make_error("tokenizer: special ids are pad {} eos {} unk {}, expected pad 0 eos 1 unk 3",
                      t.sp_->pad_id(), t.sp_->eos_id(), t.sp_->unk_id());
  if (n > kToolsId && (t.pieces_[kToolCallId] != "<tool_call>" || t.pieces_[kToolsId] != "<tools>"))
    return make_error("tokenizer: ids 4 and 5 are '{}' and '{}', expected <tool_call> and <tools>",
                      t.pieces_[kToolCallId], t.pieces_[kToolsId]);
  return t;
}

Result<Tokenizer> Tokenizer::from_bytes(std::span<const uint8_t> bytes) {
  return from_bytes(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

Result<Tokenizer> Tokenizer::from_file(const std::string& path) {
  // read_file rejects directories and other non-files by name (an ifstream "opens" a
  // directory and reads nothing) and bounds the size: SentencePiece models are a few MB.
  auto bytes = read_file(path, size_t(64) << 20);
  if (!bytes) return make_error("tokenizer: {}", bytes.message());
  auto r = from_bytes(std::span<const uint8_t>(*bytes));
  if (!r) return make_error("{} ({})", r.message(), path);
  return r;
}

std::vector<int> Tokenizer::encode(std::string_view text) const {
  std::vector<int> ids;
  // Encoding cannot fail on a loaded model (any bytes are valid input: unknown characters
  // become byte pieces or <unk>).
  if (!sp_->Encode(absl::string_view(text.data(), text.size()), &ids).ok()) ids.clear();
  return ids;
}

std::vector<TokenSpan> Tokenizer::encode_with_spans(std::string_view text) const {
  auto spt = sp_->EncodeAsImmutableProto(absl::string_view(text.data(), text.size()));
  std::vector<TokenSpan> out;
  out.reserve(spt.pieces_size());
  for (size_t i = 0; i < spt.pieces_size(); ++i) {
    auto p = spt.pieces(static_cast<int>(i));
    out.push_back({static_cast<int>(p.id()), p.begin(), p.end()});
  }
  return out;
}

Result<std::string> Tokenizer::decode(std::span<const int> ids) const {
  std::vector<int> v(ids.begin(), ids.end());
  for (int id : v)
    if (id < 0 || id >= vocab_size()) return make_error("tokenizer: id {} is outside the vocabulary of {}", id, vocab_size());
  std::string out;
  auto st = sp_->Decode(v, &out);
  if (!st.ok()) return make_error("tokenizer: decode failed: {}", st.ToString());
  return out;
}

}  // namespace needle::text
