// Small random training inputs shared by the gradient and LoRA tests: a 2+2-layer d16 config,
// parameters where every tensor matters, and a 3-example batch with padding patterns.
#pragma once
#include <catch2/catch.hpp>

#include <random>

#include "model/config.h"
#include "model/weights.h"
#include "train/grad.h"
#include "train/trainer.h"

namespace train_fixtures {

using namespace needle;
using namespace needle::train;

inline Config small_config(int heads, int kv_heads) {
  Config c;
  c.vocab_size = 30;
  c.d_model = 16;
  c.num_heads = heads;
  c.num_kv_heads = kv_heads;
  c.num_encoder_layers = 2;
  c.num_decoder_layers = 2;
  c.contrastive_dim = 6;
  REQUIRE(c.validate().is_ok());
  return c;
}

// Random parameters where every tensor matters (non-zero norm scales, gates, biases).
inline Params small_params(const Config& c, uint64_t seed) {
  Params p = init_params(c, seed);
  std::mt19937 rng((unsigned)seed);
  std::normal_distribution<float> nd(0.0f, 0.3f);
  for_each_tensor(p, c, [&](const TensorSpec& s, std::vector<float>& v) {
    if (s.role == Role::Norm || s.role == Role::Gate || s.role == Role::Bias)
      for (float& x : v) x = nd(rng);
    if (s.role == Role::Embedding)
      for (float& x : v) x *= 10.0f;  // sizeable logits
  });
  return p;
}

// Three examples: full, padded, and a single real token on each side.
inline TextBatch small_batch(const Config& c, uint64_t seed) {
  std::mt19937 rng((unsigned)seed);
  std::uniform_int_distribution<int> tok(1, c.vocab_size - 1), cls(0, 3);
  TextBatch b;
  b.batch = 3;
  b.enc_len = 7;
  b.dec_len = 6;
  const int enc_n[3] = {7, 4, 1}, dec_n[3] = {6, 3, 1};
  for (int i = 0; i < 3; ++i) {
    for (int t = 0; t < b.enc_len; ++t) {
      b.src.push_back(t < enc_n[i] ? tok(rng) : 0);
      b.enc_seg.push_back(t < enc_n[i]);
    }
    for (int t = 0; t < b.dec_len; ++t) {
      const bool real = t < dec_n[i];
      b.tgt_in.push_back(real ? tok(rng) : 0);
      b.tgt_out.push_back(real ? tok(rng) : 0);
      b.dec_seg.push_back(real);
      b.loss_class.push_back(real ? cls(rng) : 0);
    }
  }
  return b;
}

}  // namespace train_fixtures
