// nk: the compute kernels. They take pointers, sizes and block formats and know nothing of any
// model. One function table per instruction set; nk::kernels() returns the one chosen at start-up
// from the CPU's features (or forced by NEEDLE_ISA). docs/kernels.md describes every operation,
// the data layouts and the accuracy each SIMD path guarantees relative to the scalar reference.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "nk/blocks.h"

namespace nk {

enum class Isa : int { scalar = 0, avx2, avxvnni, avx512, neon, neondot };

const char* isa_name(Isa isa);
// Parses "scalar", "avx2", "avxvnni", "avx512", "neon", "neondot". Returns false when unknown.
bool parse_isa(std::string_view name, Isa* out);

// One attention call: Lq query rows against Lk key/value rows, for query heads [h0, h1) and
// query rows [i0, i1) (so callers can split heads or rows across threads). GQA: query head h
// reads kv head h / (hq / hkv). Element (row i, head h, dim t) of q is q[i*q_ld + h*hd + t];
// the same for k, v (with kv heads) and out. Masked scores are set to -FLT_MAX before the
// softmax, exactly as the reference model does; a query whose keys are all masked therefore
// gets the plain average of all Lk value rows.
struct AttnArgs {
  const float* q = nullptr;
  const float* k = nullptr;
  const float* v = nullptr;
  float* out = nullptr;
  size_t q_ld = 0, k_ld = 0, v_ld = 0, out_ld = 0;  // row strides in floats; 0 = packed (heads*hd)
  size_t lq = 0, lk = 0;                             // query rows, key rows
  size_t hq = 0, hkv = 0, hd = 0;                    // query heads, kv heads (divides hq), head dim
  float scale = 0.0f;                                // score scale; 0 = 1/sqrt(hd)
  bool causal = false;       // query i sees key j only if j <= q_pos0 + i
  size_t q_pos0 = 0;         // position of query row 0 relative to key row 0 (KV-cache decode)
  size_t k_valid = SIZE_MAX; // keys j >= k_valid are masked (key length)
  const uint8_t* key_mask = nullptr;  // optional, lk bytes: 0 = masked key (padding)
  size_t kv_block = 0;       // keys per block of the generic online softmax (head sizes without a
                             // specialised SIMD kernel, see docs/kernels.md); 0 = 64
};

// One f32 matrix product (row-major C, any strides for A and B), for sgemm below:
//   C(i, j) = [C(i, j) +] sum_k A(i, k) B(k, j)        i < m, j < n, k < k
//   A(i, k) = a[i * a_rs + k * a_cs]    A [m, k] row-major: a_rs = lda, a_cs = 1;
//                                       A^T of a stored [k, m] matrix: a_rs = 1, a_cs = ld
//   B(k, j) = b[k * b_rs + j * b_cs]    B [k, n] row-major: b_rs = ldb, b_cs = 1;
//                                       W^T of a weight W [n, k] (x W^T): b_rs = 1, b_cs = ldw
//   C(i, j) = c[i * ldc + j]; accumulate: add to C, otherwise overwrite it (C need not be set).
struct SgemmArgs {
  size_t m = 0, n = 0, k = 0;
  const float* a = nullptr;
  size_t a_rs = 0, a_cs = 1;
  const float* b = nullptr;
  size_t b_rs = 0, b_cs = 1;
  float* c = nullptr;
  size_t ldc = 0;
  bool accumulate = false;
};

struct Kernels {
  Isa isa;
  const char* name;

  // f32 activations -> Q8 blocks. x: rows of k floats, row stride ldx floats; y: rows of
  // blocks_per_row(k) blocks, contiguous. d = max|x| / 127, q = round-half-even(x * (1/d)),
  // the tail of the last block is zero. Bit-identical on every path.
  void (*quantize_q8)(const float* x, size_t ldx, BlockQ8* y, size_t rows, size_t k);

  // INT4 weights x INT8 activations. W: N rows of blocks_per_row(k) BlockQ4 (row n starts at
  // w + n*blocks_per_row(k)). Computes output columns n in [n0, n1) only:
  //   gemv: y[n] = sum_b W[n][b].d * x[b].d * dot(q4, q8)
  //   gemm: y[m*ldy + n] for m < M; x holds M rows of blocks_per_row(k) blocks, contiguous.
  void (*gemv_q4)(const BlockQ4* w, const BlockQ8* x, float* y, size_t k, size_t n0, size_t n1);
  void (*gemm_q4)(const BlockQ4* w, const BlockQ8* x, float* y, size_t ldy, size_t m, size_t k,
                  size_t n0, size_t n1);
  // INT8 weights (BlockQ8 rows) x INT8 activations, same conventions.
  void (*gemv_q8)(const BlockQ8* w, const BlockQ8* x, float* y, size_t k, size_t n0, size_t n1);
  void (*gemm_q8)(const BlockQ8* w, const BlockQ8* x, float* y, size_t ldy, size_t m, size_t k,
                  size_t n0, size_t n1);

  // Scaled-dot-product attention (see AttnArgs).
  void (*attention)(const AttnArgs& a, size_t h0, size_t h1, size_t i0, size_t i1);

  // y = (1 + scale) * x / sqrt(mean(x^2) + eps) over each row of dim floats (rows contiguous;
  // y may alias x).
  void (*rmsnorm)(const float* x, const float* scale, float* y, size_t rows, size_t dim, float eps);

  // Half-split RoPE in place on x[r*ld + h*hd + t], r < rows, h < heads: row r has position
  // pos0 + r, freq_i = 1 / theta^(2i/hd), x1 = x[:hd/2], x2 = x[hd/2:] ->
  // [x1*cos - x2*sin, x2*cos + x1*sin].
  void (*rope)(float* x, size_t rows, size_t ld, size_t heads, size_t hd, size_t pos0, float theta);

  // x[i] += sigmoid(gate) * y[i].
  void (*gated_residual)(float* x, const float* y, float gate, size_t n);

  // f32 GEMM (SgemmArgs) on the block of C with rows [i0, i1) and columns [j0, j1) only, so
  // callers can split C across threads. Deterministic: every element is summed in one fixed
  // order that depends only on k (never on the block, the split or the thread), so a product
  // computed in pieces equals the whole one bit for bit on a given path. Blocked paths sum k in
  // chunks of at most 256 (fused multiply-adds in k order), adding each chunk's sum to C; the
  // scalar reference sums all of k in one accumulator. docs/kernels.md has the error bound.
  void (*sgemm)(const SgemmArgs& g, size_t i0, size_t i1, size_t j0, size_t j1);
  // The register tile of sgemm (rows x columns of C): splits of C aligned to it waste nothing.
  size_t sgemm_mr, sgemm_nr;

  // Masked softmax over rows, in place: attention probabilities of a training pass, where the
  // scores come from an sgemm. Row r of x (row stride ld) holds n scores; key j is visible when
  // j < lim(r) and (!key_mask || key_mask[j]), lim(r) = causal ? min(n, pos0 + r + 1) : n.
  // s_j = x_j * scale if visible, else -FLT_MAX (the reference model's masking: a row without a
  // visible key becomes uniform); x_j = exp(s_j - max s) / sum_k exp(s_k - max s).
  void (*softmax_rows)(float* x, size_t ld, size_t rows, size_t n, float scale, const uint8_t* key_mask,
                       bool causal, size_t pos0);
  // Its backward, in place on g (the gradient of the probabilities p on entry, of the scaled
  // scores' inputs on return): g_j = visible ? p_j (g_j - sum_k p_k g_k) scale : 0.
  void (*softmax_rows_backward)(const float* p, size_t ldp, float* g, size_t ldg, size_t rows, size_t n,
                                float scale, const uint8_t* key_mask, bool causal, size_t pos0);
};

// The table chosen once (thread-safe) from CPU features and NEEDLE_ISA.
const Kernels& kernels();
// The table for one instruction set, or nullptr when this CPU/build cannot run it.
const Kernels* kernels_for(Isa isa);
// Every instruction set this CPU and build support, scalar first, best last.
std::vector<Isa> supported_isas();

// How the choice was made: requested is NEEDLE_ISA's value ("" when unset); message is empty
// unless the request was unknown or unsupported, in which case it says what was chosen instead.
struct DispatchInfo {
  Isa chosen;
  std::string requested;
  std::string message;
};
const DispatchInfo& dispatch_info();

}  // namespace nk
