// The schema grammar (lib/decode/grammar.h) driven by random token choices. The first bytes
// choose a tool list from a small generator (types, nullability, enums, nested arrays and
// objects, required flags); the rest choose tokens of the test tokenizer's vocabulary
// (tests/data/tiny_tok.model). Properties:
// - the allowed set is never empty before EOS, and EOS is allowed exactly when done();
// - advancing with an allowed token succeeds; with a disallowed token fails and leaves the
//   allowed set unchanged;
// - an output finished with EOS passes validate_output (the grammar's independent oracle).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "decode/constraint_text.h"
#include "decode/grammar.h"
#include "text/tokenizer.h"

using namespace needle;
using namespace needle::decode;

namespace {

struct Bytes {
  const uint8_t* p;
  size_t n;
  uint8_t next() {
    if (n == 0) return 0;
    --n;
    return *p++;
  }
};

const char* const kNames[] = {"a", "loc", "x y", "\xc3\xbc", "unit", "q\"", "b"};
const char* const kTools[] = {"get_weather", "f", "send_email", "a1", "get_weather2"};
const EnumValue kEnums[] = {{true, "a"},     {true, "b c"}, {true, "\xc3\xa9"}, {true, "\"q\\"},
                            {false, "1"},    {false, "-2"}, {false, "3.5"},     {false, "true"},
                            {false, "null"}, {true, ""}};

ArgSchema gen_schema(Bytes& in, int depth) {
  ArgSchema s;
  const uint8_t b = in.next();
  s.type = static_cast<ArgType>(b % 8);
  s.nullable = b & 0x08;
  if (b & 0x10) {
    const int n = 1 + in.next() % 3;
    for (int i = 0; i < n; ++i) s.enum_values.push_back(kEnums[in.next() % std::size(kEnums)]);
  }
  if (s.type == ArgType::Array && depth < 2 && (b & 0x20)) s.items.push_back(gen_schema(in, depth + 1));
  if (s.type == ArgType::Object && depth < 2) {
    const int n = in.next() % 3;
    for (int i = 0; i < n; ++i) {
      const uint8_t pb = in.next();
      s.properties.push_back({kNames[pb % std::size(kNames)], gen_schema(in, depth + 1), (pb & 0x80) != 0});
    }
  }
  return s;
}

std::vector<ToolSpec> gen_tools(Bytes& in) {
  std::vector<ToolSpec> tools;
  const int nt = 1 + in.next() % 3;
  for (int t = 0; t < nt; ++t) {
    ToolSpec spec;
    spec.name = kTools[in.next() % std::size(kTools)];
    const int na = in.next() % 4;
    for (int a = 0; a < na; ++a) {
      const uint8_t pb = in.next();
      spec.args.push_back({kNames[pb % std::size(kNames)], gen_schema(in, 1), (pb & 0x80) != 0});
    }
    tools.push_back(std::move(spec));
  }
  return tools;
}

std::shared_ptr<const TokenIndex> load_index() {
  auto tok = text::Tokenizer::from_file(NEEDLE_TEST_DATA "/tiny_tok.model");
  if (!tok) {
    std::fprintf(stderr, "grammar_fuzz: %s\n", tok.message().c_str());
    std::abort();
  }
  auto idx = TokenIndex::build(vocab_from_tokenizer(*tok));
  if (!idx) {
    std::fprintf(stderr, "grammar_fuzz: %s\n", idx.message().c_str());
    std::abort();
  }
  return *idx;
}

[[noreturn]] void fail(const char* what, const std::string& text) {
  std::fprintf(stderr, "grammar_fuzz: %s after output '%s'\n", what, text.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::shared_ptr<const TokenIndex> index = load_index();
  Bytes in{data, size};
  const std::vector<ToolSpec> tools = gen_tools(in);
  auto c = make_schema_constraint(index, tools);
  if (!c) return 0;  // a tool list the grammar rejects (duplicate names, ...)
  Constraint& con = **c;

  std::vector<uint8_t> mask, mask2;
  std::string text;
  for (int step = 0; step < 400 && in.n > 0; ++step) {
    const size_t n = con.allowed(mask);
    if (n == 0) fail("empty allowed set", text);
    bool eos_allowed = false;
    for (int e : index->eos_ids()) eos_allowed |= mask[static_cast<size_t>(e)] != 0;
    if (eos_allowed != con.done()) fail("EOS allowed differs from done()", text);

    const uint8_t b = in.next();
    if (b == 0xFF) {  // try a disallowed token
      const size_t id = (size_t(in.next()) << 8 | in.next()) % index->size();
      if (mask[id]) continue;
      if (con.advance(static_cast<int>(id))) fail("a disallowed token was accepted", text);
      con.allowed(mask2);
      if (mask2 != mask) fail("a rejected token changed the state", text);
      continue;
    }
    int pick = -1;
    if (b < 8 && eos_allowed) {
      pick = index->eos_ids().front();
    } else {
      size_t k = (size_t(b) << 8 | in.next()) % n;
      for (size_t i = 0; i < mask.size(); ++i)
        if (mask[i] && k-- == 0) {
          pick = static_cast<int>(i);
          break;
        }
    }
    if (pick < 0) fail("allowed() count does not match the mask", text);
    if (!con.advance(pick)) fail("an allowed token was rejected", text);
    if (index->is_eos(pick)) {
      if (auto st = validate_output(text, tools); !st) {
        std::fprintf(stderr, "grammar_fuzz: validate_output: %s\n", st.message().c_str());
        fail("the grammar accepted an output validate_output rejects", text);
      }
      return 0;
    }
    text += index->bytes(pick);
  }
  return 0;
}
