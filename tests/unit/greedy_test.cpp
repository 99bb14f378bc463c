// The generator with --constrain off emits exactly the tokens of a plain greedy loop over the
// f32 reference path (fixture weights, a tokenizer trained by scripts/train-tokenizer).
#include <catch2/catch.hpp>

#include <algorithm>

#include "decode/greedy.h"
#include "fixtures.h"
#include "io/pickle.h"
#include "model/forward_ref.h"
#include "text/prompt.h"

using namespace needle;

TEST_CASE("constrain off equals a direct greedy loop over the f32 reference", "[greedy]") {
  auto pm = fixtures::load_pickle(fixtures::test_data("tiny_np1_f16.pkl"));
  const Config* cfg = &pm.cfg;
  const Params* p = &pm.params;
  auto tok = text::Tokenizer::from_file(fixtures::test_data("tiny_tok.model"));
  REQUIRE(tok.is_ok());
  WriteOptions o;
  o.type = WeightType::F32;
  auto mm = memory_model(*p, *cfg, o);
  REQUIRE(mm.is_ok());
  auto ew = &(*mm)->weights;
  auto gen = Generator::create(*ew, *tok, 1);
  REQUIRE(gen.is_ok());

  auto tools = text::parse_tools(std::string_view(
      R"([{"name":"getWeather","description":"Weather","parameters":{"city":{"type":"string","description":"City","required":true}}}])"));
  REQUIRE(tools.is_ok());
  for (const char* query : {"What's the weather in Paris?", "set a timer", "Zürich café ☕"}) {
    GenerateOptions go;
    go.constrain = decode::ConstrainMode::Off;
    go.max_tokens = 30;
    go.ignore_eos = true;  // random weights predict EOS first; compare 30 real steps
    auto g = (*gen)->run(query, *tools, go);
    REQUIRE(g.is_ok());

    // The same by hand: prompt, f32 reference encoder, greedy loop from EOS.
    auto enc = text::build_encoder_input(*tok, query, *tools);
    std::vector<int32_t> ids(enc.ids.begin(), enc.ids.end());
    auto enc_out = ref::encode(*cfg, *p, ids);
    auto cache = ref::start_decoder(*cfg, *p, enc_out, (int)ids.size());
    std::vector<int> want;
    int32_t t = text::kEosId;
    for (int step = 0; step < 30; ++step) {
      auto logits = ref::decode_step(*cfg, *p, cache, t);
      logits[text::kEosId] = -1e30f;
      t = (int32_t)(std::max_element(logits.begin(), logits.end()) - logits.begin());
      want.push_back(t);
    }
    INFO(query);
    CHECK(g->ids == want);
    CHECK(want.size() == 30);
  }
}
