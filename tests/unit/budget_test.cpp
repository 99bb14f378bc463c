// Schema decoding under the token budget, end to end through Generator::run: whatever
// max_tokens, the output is complete and valid within it, and the tokens are those of the
// unlimited loop until the budget has to step in.
#include <catch2/catch.hpp>

#include <algorithm>

#include "decode/constraint_text.h"
#include "decode/grammar.h"
#include "decode/greedy.h"
#include "eval/jsonl.h"
#include "fixtures.h"
#include "io/file.h"
#include "io/pickle.h"
#include "model/model_io.h"
#include "text/prompt.h"

using namespace needle;

namespace {

// The greedy loop of Generator::run with a schema constraint and no budget.
std::vector<int> unlimited_schema_loop(Generator& gen, const text::Tokenizer& tok,
                                       std::string_view query, const text::ToolSet& tools,
                                       int max_steps, bool* eos) {
  auto enc = text::build_encoder_input(tok, query, tools, 1024);
  std::vector<int32_t> enc_ids(enc.ids.begin(), enc.ids.end());
  std::vector<float> enc_out;
  gen.engine().encode(enc_ids, enc_out);
  auto index = decode::TokenIndex::build(decode::vocab_from_tokenizer(tok));
  REQUIRE(index);
  auto c = decode::make_constraint(decode::ConstrainMode::Schema, *index, decode::tool_specs(tools));
  REQUIRE(c);
  Engine::DecodeState st;
  gen.engine().start(enc_out, (int)enc_ids.size(), std::min(max_steps + 1, 64), st);
  std::vector<float> logits((size_t)gen.engine().config().vocab_size);
  std::vector<int> out;
  int32_t t = text::kEosId;
  *eos = false;
  for (int step = 0; step < max_steps; ++step) {
    auto l = gen.engine().step(st, t);
    std::copy(l.begin(), l.end(), logits.begin());
    (*c)->apply(logits.data(), logits.size());
    const int next = (int)(std::max_element(logits.begin(), logits.end()) - logits.begin());
    if (next == text::kEosId) {
      *eos = true;
      break;
    }
    REQUIRE((*c)->advance(next));
    out.push_back(next);
    t = next;
  }
  return out;
}

}  // namespace

TEST_CASE("generator: schema output is complete within max_tokens", "[greedy][budget]") {
  if (!fixtures::exists(fixtures::shared("e2e/e2e_model.pkl"))) {
    WARN("SKIPPED: shared e2e fixtures not present");
    return;
  }
  // The e2e model (trained by the original code) writes whole calls: small budgets cut them.
  auto tok_bytes = read_file(fixtures::shared("e2e/e2e_tok.model"));
  REQUIRE(tok_bytes.is_ok());
  auto mm = fixtures::memory_model(fixtures::shared("e2e/e2e_model.pkl"), WeightType::F32, *tok_bytes);
  auto tok = text::Tokenizer::from_bytes(std::span<const uint8_t>(mm->model.tokenizer));
  REQUIRE(tok.is_ok());
  auto gen = Generator::create(mm->weights, *tok, 1);
  REQUIRE(gen.is_ok());
  auto index = decode::TokenIndex::build(decode::vocab_from_tokenizer(*tok));
  REQUIRE(index);
  auto reader = eval::JsonlReader::open(fixtures::shared("e2e/goldens.jsonl"));
  REQUIRE(reader.is_ok());
  eval::JsonlLine line;
  size_t forced = 0, runs = 0;
  for (int example = 0; example < 6 && reader->next(line); ++example) {
    auto tools = text::parse_tools(line.value.find("tools")->text);
    REQUIRE(tools.is_ok());
    const std::string query = line.value.find("query")->text;
    const auto specs = decode::tool_specs(*tools);
    bool free_eos = false;
    const std::vector<int> free = unlimited_schema_loop(**gen, *tok, query, *tools, 511, &free_eos);
    REQUIRE(free_eos);
    for (int max_tokens : {3, 4, 7, 12, 20, 30, 45, 511}) {
      GenerateOptions go;
      go.max_tokens = max_tokens;
      auto g = (*gen)->run(query, *tools, go);
      REQUIRE(g.is_ok());
      ++runs;
      INFO("example " << example << " max_tokens " << max_tokens << ": " << g->text);
      CHECK(g->parsed);
      CHECK((int)g->ids.size() + 1 <= max_tokens);  // room was left for EOS
      auto ok = decode::validate_output(g->text, specs);
      INFO(ok.message());
      CHECK(ok);
      // Same tokens as the unlimited loop up to its first choice whose shortest completion
      // (+ EOS) no longer fits; all of them when that never happens.
      auto grammar = decode::compile_grammar(specs);
      REQUIRE(grammar);
      decode::SchemaMatcher m(*grammar);
      size_t same = 0;
      while (same < free.size() && same < g->ids.size()) {
        REQUIRE(m.feed((*index)->bytes(free[same])));
        if ((int)m.shortest_completion_length() > max_tokens - (int)same - 2) break;
        ++same;
      }
      CHECK(std::equal(free.begin(), free.begin() + (std::ptrdiff_t)same, g->ids.begin()));
      if (same == free.size()) {
        CHECK(g->ids == free);
      } else {
        ++forced;
        CHECK(g->ids != free);
      }
    }
  }
  std::printf("generator budget: %zu runs, %zu cut short\n", runs, forced);
  CHECK(forced * 2 > runs);
}
