// LoRA: low-rank adapters on the frozen base model's attention projections.
//
//   W_eff = W + s * B A,   s = alpha / rank,   A [rank, in] ~ N(0, 1/in) (seeded),   B [out, rank] = 0
//
// so a fresh set of adapters leaves the model exactly as it was. Adapted kernels: q/k/v/out
// projections of every attention (encoder self-attention, decoder self- and cross-attention);
// docs/training.md says why those and not the embedding or the contrastive head. The forward
// and backward through an adapter live in train/grad.cpp (PassOptions::lora); this file holds
// the adapters themselves, their initialization and the merge used by the export and by QAT.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/weights.h"
#include "util/result.h"

namespace needle::train {

// One adapted kernel W [out, in]: A [rank, in], B [out, rank], row-major.
struct LoraPair {
  std::vector<float> a, b;
};

struct LoraAttn {
  LoraPair q, k, v, o;
};

// Adapters of a whole model (also the shape of their gradients and AdamW moments).
struct Lora {
  int rank = 0;
  float alpha = 0;
  std::vector<LoraAttn> encoder;    // encoder/layers/i/self_attn
  std::vector<LoraAttn> dec_self;   // decoder/layers/i/self_attn
  std::vector<LoraAttn> dec_cross;  // decoder/layers/i/cross_attn

  float scale() const { return rank > 0 ? alpha / (float)rank : 0.0f; }
  bool empty() const { return rank <= 0; }
};

// What a LoraPair adapts: the kernel's name in the .needle file and its [out, in] shape.
struct LoraSpec {
  std::string kernel;  // e.g. "decoder/layers/2/cross_attn/k_proj/kernel"
  int out = 0, in = 0;
};

// Calls f(const LoraSpec&, LoraPair&) for every adapter, in the order of for_each_tensor.
template <class F>
void for_each_adapter(Lora& l, const Config& c, F&& f) {
  const int d = c.d_model, kv = c.kv_dim();
  auto attn = [&](const std::string& base, LoraAttn& a) {
    f(LoraSpec{base + "/q_proj/kernel", d, d}, a.q);
    f(LoraSpec{base + "/k_proj/kernel", kv, d}, a.k);
    f(LoraSpec{base + "/v_proj/kernel", kv, d}, a.v);
    f(LoraSpec{base + "/out_proj/kernel", d, d}, a.o);
  };
  for (size_t i = 0; i < l.encoder.size(); ++i) attn("encoder/layers/" + std::to_string(i) + "/self_attn", l.encoder[i]);
  for (size_t i = 0; i < l.dec_self.size(); ++i) {
    attn("decoder/layers/" + std::to_string(i) + "/self_attn", l.dec_self[i]);
    attn("decoder/layers/" + std::to_string(i) + "/cross_attn", l.dec_cross[i]);
  }
}

// Fresh adapters: A ~ N(0, 1/in) from `seed`, B = 0.
Lora init_lora(const Config& c, int rank, float alpha, uint64_t seed);
// Same rank, alpha and shapes, every value 0 (gradients, moments).
Lora zero_lora(const Config& c, int rank, float alpha);
// Every A and B has the size its spec asks for.
Status check_lora(const Lora& l, const Config& c);
int64_t lora_param_count(const Lora& l);

// dst[out, in] = W + s * (B A): B A as one f32 GEMM, then one multiply and one add per element.
// The export merge and the QAT forward both use this, so they agree bit for bit.
void merged_kernel(float* dst, const float* w, const LoraPair& p, int out, int in, int rank, float s);
// W += s B A for every adapted kernel of p (in place).
void merge_lora(Params& p, const Lora& l, const Config& c);

// The adapters as bytes (magic, rank, alpha, every A and B; for keeping a best snapshot) and back.
std::vector<uint8_t> lora_to_bytes(const Lora& l, const Config& c);
Result<Lora> lora_from_bytes(std::span<const uint8_t> bytes, const Config& c);

// A 64-bit fingerprint of every parameter's bits (a LoRA checkpoint records its base's).
uint64_t params_fingerprint(const Params& p, const Config& c);

}  // namespace needle::train
