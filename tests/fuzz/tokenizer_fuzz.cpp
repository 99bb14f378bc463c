// The tokenizer over arbitrary bytes. First byte even: encode the rest with the test model
// (tests/data/tiny_tok.model): spans lie inside the text and do not go backwards, every id is
// in range, and decode of the ids succeeds. First byte odd: Tokenizer::from_bytes on the
// rest (an untrusted embedded tokenizer); a model that loads must encode a short text.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string_view>

#include "text/tokenizer.h"

using namespace needle;

namespace {
void check_one_line(const std::string& m) {
  if (m.empty() || m.find('\n') != std::string::npos) {
    std::fprintf(stderr, "error message is not one line: '%s'\n", m.c_str());
    std::abort();
  }
}

const text::Tokenizer& test_tokenizer() {
  static const text::Tokenizer tok = [] {
    auto t = text::Tokenizer::from_file(NEEDLE_TEST_DATA "/tiny_tok.model");
    if (!t) {
      std::fprintf(stderr, "tokenizer_fuzz: %s\n", t.message().c_str());
      std::abort();
    }
    return std::move(*t);
  }();
  return tok;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  if ((data[0] & 1) == 0) {
    const text::Tokenizer& tok = test_tokenizer();
    const std::vector<int> ids = tok.encode(rest);
    const std::vector<text::TokenSpan> spans = tok.encode_with_spans(rest);
    if (spans.size() != ids.size()) std::abort();
    for (size_t i = 0; i < spans.size(); ++i) {
      if (spans[i].id != ids[i] || ids[i] < 0 || ids[i] >= tok.vocab_size()) std::abort();
      if (spans[i].begin > spans[i].end || spans[i].end > rest.size()) std::abort();
      (void)tok.piece(ids[i]);
      (void)tok.piece_text(ids[i]);
    }
    auto back = tok.decode(ids);
    if (!back) std::abort();
    return 0;
  }
  auto t = text::Tokenizer::from_bytes(std::span<const uint8_t>(data + 1, size - 1));
  if (!t) {
    check_one_line(t.message());
    return 0;
  }
  const std::vector<int> ids = t->encode("hello world <tool_call> 12");
  for (int id : ids)
    if (id < 0 || id >= t->vocab_size()) std::abort();
  if (!t->decode(ids)) std::abort();
  return 0;
}
