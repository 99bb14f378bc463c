// The plain f32 engine against the original JAX model's golden outputs.
//
// Tolerance: relative error (||ours - ref|| / ||ref||) at most 1e-5. Both sides compute in
// f32 from the same f16-exact weights; ours accumulates dot products in f64, so the
// difference is the reference's own f32 rounding: about sqrt(K) * 2^-24 per dot product
// (K <= 512 -> ~1.4e-6), compounded over at most 20 residual layers, well under 1e-5.
#include <catch2/catch.hpp>

#include "fixtures.h"
#include "io/file.h"
#include "io/pickle.h"
#include "model/forward_ref.h"
#include "model/model_io.h"
#include "nk/quant.h"

using namespace needle;
using fixtures::rel_err;

namespace {

// Replaces every kernel by its INT4 fake-quantized value (the `int4_` fixtures' weights).
Params fake_quantize(const Params& p, const Config& c) {
  Params q = p;
  for_each_tensor(q, c, [&](const TensorSpec& s, std::vector<float>& v) {
    if (s.role != Role::Kernel) return;
    const size_t cols = (size_t)s.shape[1], rows = (size_t)s.shape[0];
    std::vector<nk::BlockQ4> blk(nk::blocks_per_row(cols));
    for (size_t r = 0; r < rows; ++r) {
      nk::quantize_row_q4(v.data() + r * cols, blk.data(), cols);
      nk::dequantize_row_q4(blk.data(), v.data() + r * cols, cols);
    }
  });
  return q;
}

void check_model(const Config& c, const Params& p, const fixtures::Arrays& ref, const std::string& pre) {
  const int d = c.d_model, V = c.vocab_size;
  for (std::string cs : {"caseA", "caseB"}) {
    SECTION(pre + cs) {
      auto enc = ref.i32("f32_" + cs + "_enc_tokens");
      auto dec = ref.i32("f32_" + cs + "_dec_tokens");
      auto enc_out = ref::encode(c, p, enc);
      CHECK(rel_err(enc_out, ref.f32(pre + cs + "_enc_out")) <= 1e-5);
      auto logits = ref::decode(c, p, enc_out, (int)enc.size(), dec);
      auto want = ref.f32(pre + cs + "_logits");
      CHECK(rel_err(logits, want) <= 1e-5);
      // The same logits step by step through the KV cache.
      auto cache = ref::start_decoder(c, p, enc_out, (int)enc.size());
      for (size_t t = 0; t < dec.size(); ++t) {
        auto step = ref::decode_step(c, p, cache, dec[t]);
        INFO("step " << t);
        CHECK(rel_err(step.data(), want.data() + t * V, (size_t)V) <= 1e-5);
      }
    }
  }
  SECTION(pre + "caseC padded batch") {
    auto enc = ref.i32("f32_caseC_enc_tokens"), dec = ref.i32("f32_caseC_dec_tokens");
    auto el = ref.i32("f32_caseC_enc_lens"), dl = ref.i32("f32_caseC_dec_lens");
    auto want_enc = ref.f32(pre + "caseC_enc_out"), want = ref.f32(pre + "caseC_logits");
    const int Le = (int)ref.shape("f32_caseC_enc_tokens")[1], Ld = (int)ref.shape("f32_caseC_dec_tokens")[1];
    for (int b = 0; b < 2; ++b) {
      // Padded batch as the original: the full padded row with a key padding mask.
      std::vector<int32_t> row(enc.begin() + b * Le, enc.begin() + (b + 1) * Le);
      std::vector<uint8_t> valid((size_t)Le);
      for (int t = 0; t < Le; ++t) valid[(size_t)t] = t < el[(size_t)b];
      auto enc_out = ref::encode(c, p, row, valid);
      CHECK(rel_err(enc_out.data(), want_enc.data() + (size_t)b * Le * d, (size_t)el[(size_t)b] * d) <= 1e-5);
      std::vector<int32_t> drow(dec.begin() + b * Ld, dec.begin() + b * Ld + dl[(size_t)b]);
      auto logits = ref::decode(c, p, enc_out, el[(size_t)b], drow);
      CHECK(rel_err(logits.data(), want.data() + (size_t)b * Ld * V, (size_t)dl[(size_t)b] * V) <= 1e-5);
    }
  }
  SECTION(pre + "contrastive") {
    auto toks = ref.i32("f32_contrastive_tokens");
    auto want = ref.f32(pre + "contrastive_emb");
    const int L = (int)ref.shape("f32_contrastive_tokens")[1], cd = c.contrastive_dim;
    for (int b = 0; b < 3; ++b) {
      std::vector<int32_t> row(toks.begin() + b * L, toks.begin() + (b + 1) * L);
      auto emb = ref::contrastive_embedding(c, p, row);
      CHECK(rel_err(emb.data(), want.data() + (size_t)b * cd, (size_t)cd) <= 1e-5);
    }
  }
}

}  // namespace

TEST_CASE("f32 engine reproduces the tiny fixtures", "[model]") {
  auto m = fixtures::load_pickle(fixtures::test_data("tiny_np1_f16.pkl"));
  fixtures::Arrays ref(fixtures::test_data("ref_tiny"));
  check_model(m.cfg, m.params, ref, "f32_");
}

TEST_CASE("f32 engine on fake-quantized weights reproduces the tiny int4 fixtures", "[model]") {
  auto m = fixtures::load_pickle(fixtures::test_data("tiny_np1_f16.pkl"));
  fixtures::Arrays ref(fixtures::test_data("ref_tiny"));
  check_model(m.cfg, fake_quantize(m.params, m.cfg), ref, "int4_");
}

TEST_CASE("f32 engine reproduces the full fixtures", "[model][full]") {
  const auto path = fixtures::shared("checkpoints/full_np1_f16.pkl");
  if (!fixtures::exists(path)) {
    WARN("SKIPPED: " << path << " not present");
    return;
  }
  auto m = fixtures::load_pickle(path);
  fixtures::Arrays ref(fixtures::shared("reference/ref_full"));
  check_model(m.cfg, m.params, ref, "f32_");
  check_model(m.cfg, fake_quantize(m.params, m.cfg), ref, "int4_");
}

TEST_CASE("INT4 quantizer equals the training-time fake quantization bit for bit", "[model][quant]") {
  auto check = [](const std::string& pkl, const std::string& refbase) {
    auto m = fixtures::load_pickle(pkl);
    fixtures::Arrays ref(refbase);
    Params q = fake_quantize(m.params, m.cfg);
    auto orig = params_to_pickle(q, m.cfg);  // back to the pickle's (layers, in, out) layout
    int compared = 0;
    for (auto& name : ref.names()) {
      if (name.rfind("fakequant/", 0) != 0) continue;
      const std::string path = name.substr(10);
      auto want = ref.f32(name);
      const HostTensor* t = nullptr;
      for (auto& [p, ht] : orig.params)
        if (p == path) t = &ht;
      REQUIRE(t != nullptr);
      auto got = t->to_f32();
      REQUIRE(got.is_ok());
      // The full fixture stores only layer 0 of stacked kernels.
      REQUIRE(got->size() >= want.size());
      INFO(name);
      CHECK(std::memcmp(got->data(), want.data(), want.size() * 4) == 0);
      ++compared;
    }
    CHECK(compared > 0);
  };
  check(fixtures::test_data("tiny_np1_f16.pkl"), fixtures::test_data("ref_tiny"));
  if (fixtures::exists(fixtures::shared("checkpoints/full_np1_f16.pkl")))
    check(fixtures::shared("checkpoints/full_np1_f16.pkl"), fixtures::shared("reference/ref_full"));
}

TEST_CASE("parameter counts match the reference", "[model]") {
  Config full;
  full.d_model = 512;
  full.num_heads = 8;
  full.num_kv_heads = 4;
  full.num_encoder_layers = 12;
  full.num_decoder_layers = 8;
  CHECK(param_count(full) == 26315421);
}
