// The training ops, each as a *_forward / *_backward pair (llm.c style). docs/training.md
// writes out the math of every backward.
//
// Conventions: activations are row-major f32, a batch of B padded sequences of length L
// flattened to B*L rows. A forward writes its outputs (and whatever its backward needs).
// A backward ACCUMULATES (+=) into the gradients of its inputs and parameters, so branches that
// share an input (the tied embedding, the residual stream, the encoder output read by every
// cross-attention) simply add up; the exception is rope_backward, which maps dy to dx in place.
// A parameter gradient pointer (dscale, dgate, dbias) may be null: that parameter is frozen.
// A `pool` (nullable) splits the work into fixed blocks of rows; reductions over rows (dscale,
// dgate) add per-block partial sums in block order, so no result depends on the thread count.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace nk {
class ThreadPool;
}

namespace needle::train {

// ---- Embedding (tied with the output head): out[t] = E[token[t]] * sqrt(d).
void embedding_forward(float* out, const int32_t* tokens, int T, const float* E, int d);
void embedding_backward(float* dE, const float* dout, const int32_t* tokens, int T, int d);

// ---- ZCRMSNorm over rows of width n: out = (1 + scale) * x * rstd, rstd = 1/sqrt(mean(x^2) + 1e-6).
// Also applied per head (rows = T * heads, n = head_dim) for q_norm / k_norm.
void rmsnorm_forward(float* out, float* rstd, const float* x, const float* scale, int rows, int n,
                     nk::ThreadPool* pool = nullptr);
void rmsnorm_backward(float* dx, float* dscale, const float* dout, const float* x, const float* rstd,
                      const float* scale, int rows, int n, nk::ThreadPool* pool = nullptr);
// The same with dx written over dout (d: dout on entry, dx on return), for a gradient buffer
// that is dead after the norm; equals rmsnorm_backward into a zeroed dx.
void rmsnorm_backward_inplace(float* d, float* dscale, const float* x, const float* rstd, const float* scale, int rows,
                              int n, nk::ThreadPool* pool = nullptr);

// ---- RoPE, half-split, in place on x [B*L, heads, hd]; row (b, t) has position t.
void rope_forward(float* x, int B, int L, int heads, int hd, double theta, nk::ThreadPool* pool = nullptr);
// dy -> dx in place (the inverse rotation).
void rope_backward(float* dx, int B, int L, int heads, int hd, double theta, nk::ThreadPool* pool = nullptr);

// ---- Scaled dot-product attention with GQA and masks.
// q, out: [B*Lq, H*hd]; k, v: [B*Lk, Hkv*hd]. Query head h reads kv head h / (H / Hkv).
// Key j is visible to query i when key_valid[b*Lk + j] != 0 (if key_valid is given) and, if
// causal, j <= i. Masked scores are set to the lowest finite float before the softmax, as the
// original does: a query with every key masked averages all values (its gradient to q, k is 0).
struct AttnShape {
  int B = 0, Lq = 0, Lk = 0, H = 0, Hkv = 0, hd = 0;
  bool causal = false;
};
void attention_forward(float* out, const float* q, const float* k, const float* v, const uint8_t* key_valid,
                       const AttnShape& s, nk::ThreadPool* pool);
// Recomputes the probabilities (nothing but q, k, v is kept from the forward).
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const uint8_t* key_valid, const AttnShape& s, nk::ThreadPool* pool);

// ---- Dropout on a residual branch: keep element i with probability 1 - p, scaled 1/(1 - p).
// The mask is a pure function of (key, i), so the backward recomputes it and nothing is stored.
struct Dropout {
  float p = 0.0f;
  uint64_t key = 0;
  bool active() const { return p > 0.0f; }
  float factor(size_t i) const;  // 0 or 1/(1-p)
};

// ---- Gated residual, in place: x += sigmoid(gate) * dropout(y).
void residual_forward(float* x, const float* y, float gate, const Dropout& drop, size_t n,
                      nk::ThreadPool* pool = nullptr);
// dx is the identity (the caller's stream gradient passes through unchanged); dy += sigmoid(g) *
// dropout(dout); dgate += sigmoid'(g) * sum(dout * dropout(y)).
void residual_backward(float* dy, float* dgate, const float* dout, const float* y, float gate, const Dropout& drop,
                       size_t n, nk::ThreadPool* pool = nullptr);

// ---- INT4 fake quantization of a Dense kernel [rows = out, cols = in], in place: groups of 32
// along each row (the original's input axis), nk::quantize_row_q4 then dequantize_row_q4.
void fake_quantize_rows(float* w, size_t rows, size_t cols);

// ---- Contrastive head pieces.
// Mean over the valid rows of x [B*L, d] per sequence: out [B, d]. No valid row -> zeros.
void mean_pool_forward(float* out, const float* x, const uint8_t* valid, int B, int L, int d);
void mean_pool_backward(float* dx, const float* dout, const uint8_t* valid, int B, int L, int d);
// out = x + bias per row, then ReLU, in place on x [rows, n].
void bias_relu_forward(float* x, const float* bias, int rows, int n);
// dx (in place on dout) and dbias: dout *= (out > 0); dbias += sum over rows.
void bias_relu_backward(float* dout, float* dbias, const float* out, int rows, int n);
// out = x / sqrt(sum(x^2) + 1e-12) per row; keeps inv = 1/sqrt(...).
void l2norm_forward(float* out, float* inv, const float* x, int rows, int n);
void l2norm_backward(float* dx, const float* dout, const float* out, const float* inv, int rows, int n);

}  // namespace needle::train
