// The plain f32 forward pass: the reference every fast path is checked against.
// Reads top to bottom like the architecture (docs/needle-reference.md section 1).
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "model/config.h"
#include "model/weights.h"

namespace needle::ref {

// x [rows, d_model] -> y [rows, out]: y = x W^T with W stored [out, in].
void dense(std::span<const float> x, int rows, std::span<const float> w, int out, int in, std::span<float> y);
// ZCRMSNorm over the last axis of width n: y = (1 + scale) * x / sqrt(mean(x^2) + 1e-6).
void zc_rms_norm(std::span<float> x, int rows, int n, std::span<const float> scale);
// RoPE (half-split) on [len, heads, hd] at positions pos0..pos0+len-1.
void rope(std::span<float> x, int len, int heads, int hd, int pos0, double theta);

// Encoder: token ids -> final-normed output [len, d]. `key_valid` (optional, len entries)
// masks padded keys; positions run 0..len-1 regardless.
std::vector<float> encode(const Config& c, const Params& p, std::span<const int32_t> tokens,
                          std::span<const uint8_t> key_valid = {});

// Decoder, teacher-forced with a causal mask over `tokens`; cross-attends to the first
// `enc_len` rows of enc_out. Returns logits [tokens.size(), vocab].
std::vector<float> decode(const Config& c, const Params& p, std::span<const float> enc_out, int enc_len,
                          std::span<const int32_t> tokens);

// Incremental decoding: self-attention K/V cache; cross-attention K/V computed once.
struct DecoderCache {
  int enc_len = 0;
  int pos = 0;
  std::vector<std::vector<float>> self_k, self_v;    // per layer [pos, kv_dim]
  std::vector<std::vector<float>> cross_k, cross_v;  // per layer [enc_len, kv_dim]
};
DecoderCache start_decoder(const Config& c, const Params& p, std::span<const float> enc_out, int enc_len);
// Feeds one token; returns its logits [vocab].
std::vector<float> decode_step(const Config& c, const Params& p, DecoderCache& cache, int32_t token);

// Contrastive embedding of a (right- or otherwise) padded sequence: mean-pool the encoder
// output over non-pad positions -> Dense+bias -> ReLU -> Dense -> L2 normalize.
std::vector<float> contrastive_embedding(const Config& c, const Params& p, std::span<const int32_t> tokens);

}  // namespace needle::ref
