#include "decode/constraint.h"

#include <algorithm>
#include <limits>

#include "decode/constraint_reference.h"
#include "decode/grammar.h"

namespace needle::decode {

namespace {

// Length of the well-formed UTF-8 sequence starting at s[i] (RFC 3629: no overlongs, no
// surrogates, <= U+10FFFF), or 0.
size_t utf8_len(std::string_view s, size_t i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) return 1;
  size_t n;
  unsigned char lo = 0x80, hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    n = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    n = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    n = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if (b < lo || b > hi) return 0;
    lo = 0x80;
    hi = 0xBF;
  }
  return n;
}

bool is_plain_string_text(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x20 || b == '"' || b == '\\') return false;
    const size_t n = utf8_len(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

// Python's view of a token string (constrained.py build_token_strings): the piece's
// characters, or chr(byte) for a byte piece.
std::u32string python_chars(std::string_view s) {
  std::u32string out;
  for (size_t i = 0; i < s.size();) {
    const size_t n = utf8_len(s, i);
    const auto b0 = static_cast<unsigned char>(s[i]);
    if (n == 0) {  // a raw byte (byte-fallback token): chr(byte)
      out.push_back(b0);
      ++i;
      continue;
    }
    char32_t cp = n == 1 ? b0 : (b0 & (0x7F >> n));
    for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    out.push_back(cp);
    i += n;
  }
  return out;
}

class OffConstraint final : public Constraint {
 public:
  explicit OffConstraint(std::shared_ptr<const TokenIndex> index) : index_(std::move(index)) {}
  void reset() override {}
  size_t allowed(std::vector<uint8_t>& mask) override {
    mask.assign(index_->size(), 1);
    return mask.size();
  }
  Status advance(int token) override {
    if (token < 0 || static_cast<size_t>(token) >= index_->size())
      return make_error("constraint: token id {} outside the vocabulary ({})", token,
                        index_->size());
    return Status::ok();
  }
  bool done() const override { return true; }

 private:
  std::shared_ptr<const TokenIndex> index_;
};

}  // namespace

std::string piece_surface(std::string_view piece, bool is_byte_piece) {
  if (is_byte_piece && piece.size() == 6 && piece.substr(0, 3) == "<0x" && piece[5] == '>') {
    auto hex = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      return -1;
    };
    const int h = hex(piece[3]), l = hex(piece[4]);
    if (h >= 0 && l >= 0) return std::string(1, static_cast<char>(h * 16 + l));
  }
  static constexpr std::string_view kMark = "\xE2\x96\x81";  // U+2581
  std::string out;
  out.reserve(piece.size());
  for (size_t i = 0; i < piece.size();) {
    if (piece.substr(i, 3) == kMark) {
      out.push_back(' ');
      i += 3;
    } else {
      out.push_back(piece[i++]);
    }
  }
  return out;
}

Result<std::shared_ptr<const TokenIndex>> TokenIndex::build(TokenVocab vocab) {
  auto idx = std::make_shared<TokenIndex>();
  const size_t n = vocab.bytes.size();
  if (n == 0) return make_error("constraint: empty vocabulary");
  if (n > static_cast<size_t>(std::numeric_limits<int>::max()))
    return make_error("constraint: vocabulary too large ({})", n);
  if (!vocab.reference_bytes.empty() && vocab.reference_bytes.size() != n)
    return make_error("constraint: {} reference texts for {} ids", vocab.reference_bytes.size(), n);
  idx->flags_.assign(n, 0);
  for (int id : vocab.eos_ids) {
    if (id < 0 || static_cast<size_t>(id) >= n)
      return make_error("constraint: EOS id {} outside the vocabulary ({})", id, n);
    idx->flags_[static_cast<size_t>(id)] |= kEos;
  }
  for (int id : vocab.lead_ids) {
    if (id < 0 || static_cast<size_t>(id) >= n)
      return make_error("constraint: lead id {} outside the vocabulary ({})", id, n);
    idx->flags_[static_cast<size_t>(id)] |= kLead;
  }
  std::vector<std::basic_string<unsigned char>> useqs(n), special;
  std::vector<int> ids(n), special_ids;
  idx->chars_.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const std::string& s = vocab.bytes[i];
    ids[i] = static_cast<int>(i);
    // The reference engine sees every id's text as given (the original feeds user-defined
    // symbols such as "<tool_call>" as their piece text); EOS never has text.
    if (!(idx->flags_[i] & kEos))
      idx->chars_[i] = python_chars(vocab.reference_bytes.empty() ? s : vocab.reference_bytes[i]);
    // The schema engine: EOS and lead ids have no text, whatever the table says.
    if (idx->flags_[i] != 0) continue;
    useqs[i].assign(reinterpret_cast<const unsigned char*>(s.data()), s.size());
    if (s.size() == 1) idx->single_[static_cast<unsigned char>(s[0])] = true;
    if (s.empty()) continue;
    if (is_plain_string_text(s)) {
      idx->plain_ids_.push_back(static_cast<int>(i));
    } else {
      special.push_back(useqs[i]);
      special_ids.push_back(static_cast<int>(i));
    }
  }
  idx->trie_.build(useqs, ids);
  idx->special_trie_.build(special, special_ids);
  idx->char_trie_.build(idx->chars_, ids);
  idx->vocab_ = std::move(vocab);
  return std::shared_ptr<const TokenIndex>(std::move(idx));
}

void Constraint::apply(float* logits, size_t n) {
  const size_t k = allowed(scratch_);
  if (k == scratch_.size()) return;
  const size_t m = std::min(n, scratch_.size());
  const float ninf = -std::numeric_limits<float>::infinity();
  for (size_t i = 0; i < m; ++i)
    if (!scratch_[i]) logits[i] = ninf;
  for (size_t i = m; i < n; ++i) logits[i] = ninf;  // ids past the constraint's vocab
}

Result<ConstrainMode> parse_constrain_mode(std::string_view s) {
  if (s == "off") return ConstrainMode::Off;
  if (s == "reference") return ConstrainMode::Reference;
  if (s == "schema") return ConstrainMode::Schema;
  return make_error("unknown --constrain mode '{}' (expected off, reference or schema)", s);
}

const char* constrain_mode_name(ConstrainMode m) {
  switch (m) {
    case ConstrainMode::Off: return "off";
    case ConstrainMode::Reference: return "reference";
    case ConstrainMode::Schema: return "schema";
  }
  return "?";
}

std::unique_ptr<Constraint> make_off_constraint(std::shared_ptr<const TokenIndex> index) {
  return std::make_unique<OffConstraint>(std::move(index));
}

Result<std::unique_ptr<Constraint>> make_constraint(ConstrainMode mode,
                                                    std::shared_ptr<const TokenIndex> index,
                                                    const std::vector<ToolSpec>& tools,
                                                    const SchemaOptions& opt) {
  if (!index) return make_error("constraint: no token index");
  switch (mode) {
    case ConstrainMode::Off: return make_off_constraint(std::move(index));
    case ConstrainMode::Reference:
      return make_reference_constraint(std::move(index), reference_tools(tools));
    case ConstrainMode::Schema: return make_schema_constraint(std::move(index), tools, opt);
  }
  return make_error("constraint: bad mode");
}

}  // namespace needle::decode
