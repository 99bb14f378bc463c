#include "train/matmul.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "nk/threadpool.h"

// The GEMM below is plain C++ that the compiler vectorizes. On x86-64 it is compiled twice
// (baseline and x86-64-v3, i.e. AVX2+FMA) and the loader picks one from the CPU's features
// (GCC function multi-versioning): runtime dispatch without -march=native. Training numbers are
// therefore reproducible per machine, not across machines with different ISAs.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define NEEDLE_TRAIN_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define NEEDLE_TRAIN_CLONES
#endif

namespace needle::train {
namespace {

constexpr int kMR = 4;    // rows of C per register tile
constexpr int kNR = 16;   // columns of C per register tile
constexpr int kKB = 256;  // depth per pass, so a B panel (kKB x kNR) stays in L1

// GCC/Clang vector extension: 8 floats. In the x86-64-v3 clone this is one ymm register; in the
// baseline clone two xmm registers. Loads/stores go through memcpy (unaligned), and no function
// takes or returns a v8 (that would make the ABI depend on the clone).
typedef float v8 __attribute__((vector_size(32)));

// C[0..4, 0..16] (+)= sum_k A(r, k) B[k, 0..16], with the 4 x 16 accumulators in registers.
// a[r] points at row r of A (column stride a_col).
inline __attribute__((always_inline)) void kernel_4x16(int K, const float* const a[kMR], size_t a_col, const float* b,
                                                       size_t ldb, float* c, size_t ldc, bool accumulate) {
  v8 c00 = {}, c01 = {}, c10 = {}, c11 = {}, c20 = {}, c21 = {}, c30 = {}, c31 = {};
  for (int k = 0; k < K; ++k) {
    v8 b0, b1;
    std::memcpy(&b0, b + (size_t)k * ldb, sizeof b0);
    std::memcpy(&b1, b + (size_t)k * ldb + 8, sizeof b1);
    const size_t ak = (size_t)k * a_col;
    const v8 a0 = (v8){} + a[0][ak], a1 = (v8){} + a[1][ak], a2 = (v8){} + a[2][ak], a3 = (v8){} + a[3][ak];
    c00 += a0 * b0;
    c01 += a0 * b1;
    c10 += a1 * b0;
    c11 += a1 * b1;
    c20 += a2 * b0;
    c21 += a2 * b1;
    c30 += a3 * b0;
    c31 += a3 * b1;
  }
  const v8 acc[kMR * 2] = {c00, c01, c10, c11, c20, c21, c30, c31};
  for (int t = 0; t < kMR * 2; ++t) {
    float* cr = c + (size_t)(t / 2) * ldc + (t % 2) * 8;
    v8 out = acc[t];
    if (accumulate) {
      v8 old;
      std::memcpy(&old, cr, sizeof old);
      out += old;
    }
    std::memcpy(cr, &out, sizeof out);
  }
}

}  // namespace

NEEDLE_TRAIN_CLONES
void gemm(int M, int N, int K, const float* a, size_t a_row, size_t a_col, const float* b, size_t ldb, float* c,
          size_t ldc, bool accumulate) {
  // Edge tiles run the same kernel on padded copies: B columns past N read zeros from `pad`,
  // A rows past M repeat row 0, and the tile is accumulated in `tmp`, then added where valid.
  float pad[kKB * kNR];
  float tmp[kMR * kNR];
  if (K == 0 && !accumulate) {
    for (int i = 0; i < M; ++i) std::fill(c + (size_t)i * ldc, c + (size_t)i * ldc + N, 0.0f);
    return;
  }
  for (int k0 = 0; k0 < K; k0 += kKB) {
    const int kb = std::min(kKB, K - k0);
    const bool acc = accumulate || k0 > 0;  // later depth passes add to the first
    const float* ak = a + (size_t)k0 * a_col;
    const float* bk = b + (size_t)k0 * ldb;
    for (int j = 0; j < N; j += kNR) {
      const int nr = std::min(kNR, N - j);
      const float* bp = bk + j;
      size_t ldbp = ldb;
      if (nr < kNR) {
        std::fill(pad, pad + (size_t)kb * kNR, 0.0f);
        for (int k = 0; k < kb; ++k) std::copy_n(bk + (size_t)k * ldb + j, nr, pad + (size_t)k * kNR);
        bp = pad;
        ldbp = kNR;
      }
      for (int i = 0; i < M; i += kMR) {
        const int mr = std::min(kMR, M - i);
        const float* rows[kMR];
        for (int r = 0; r < kMR; ++r) rows[r] = ak + (size_t)(i + (r < mr ? r : 0)) * a_row;
        float* cij = c + (size_t)i * ldc + j;
        if (mr == kMR && nr == kNR) {
          kernel_4x16(kb, rows, a_col, bp, ldbp, cij, ldc, acc);
        } else {
          kernel_4x16(kb, rows, a_col, bp, ldbp, tmp, kNR, false);
          for (int r = 0; r < mr; ++r)
            for (int jj = 0; jj < nr; ++jj) {
              float& dst = cij[(size_t)r * ldc + jj];
              dst = acc ? dst + tmp[r * kNR + jj] : tmp[r * kNR + jj];
            }
        }
      }
    }
  }
}

void gemm_threaded(int M, int N, int K, const float* a, size_t a_row, size_t a_col, const float* b, size_t ldb,
                   float* c, size_t ldc, bool accumulate, nk::ThreadPool* pool) {
  const double work = (double)M * N * K;
  if (!pool || pool->size() < 2 || work < 1 << 18) {
    gemm(M, N, K, a, a_row, a_col, b, ldb, c, ldc, accumulate);
    return;
  }
  if (M >= N) {  // split rows of C
    pool->parallel_range((size_t)M, kMR, [&](size_t i0, size_t i1, unsigned) {
      gemm((int)(i1 - i0), N, K, a + i0 * a_row, a_row, a_col, b, ldb, c + i0 * ldc, ldc, accumulate);
    }, kMR);
  } else {  // split columns of C
    pool->parallel_range((size_t)N, kNR, [&](size_t j0, size_t j1, unsigned) {
      gemm(M, (int)(j1 - j0), K, a, a_row, a_col, b + j0, ldb, c + j0, ldc, accumulate);
    }, kNR);
  }
}

void transpose(float* dst, const float* src, int rows, int cols) {
  constexpr int T = 32;
  for (int r0 = 0; r0 < rows; r0 += T)
    for (int c0 = 0; c0 < cols; c0 += T)
      for (int r = r0; r < std::min(rows, r0 + T); ++r)
        for (int cc = c0; cc < std::min(cols, c0 + T); ++cc) dst[(size_t)cc * rows + r] = src[(size_t)r * cols + cc];
}

void matmul_forward(float* out, const float* x, const float* w, int M, int K, int N, nk::ThreadPool* pool) {
  // out = x W^T: B = W^T [K, N], made contiguous once (weights are small next to activations).
  thread_local std::vector<float> wt;  // reused: no allocation per call
  wt.resize((size_t)K * N);
  transpose(wt.data(), w, N, K);
  gemm_threaded(M, N, K, x, (size_t)K, 1, wt.data(), (size_t)N, out, (size_t)N, /*accumulate=*/false, pool);
}

void matmul_backward(float* dx, float* dw, const float* dout, const float* x, const float* w, int M, int K, int N,
                     nk::ThreadPool* pool) {
  // dx [M, K] += dout [M, N] . W [N, K]
  if (dx) gemm_threaded(M, K, N, dout, (size_t)N, 1, w, (size_t)K, dx, (size_t)K, true, pool);
  // dw [N, K] += dout^T [N, M] . x [M, K]   (A = dout transposed: a_row = 1, a_col = N)
  if (dw) gemm_threaded(N, K, M, dout, 1, (size_t)N, x, (size_t)K, dw, (size_t)K, true, pool);
}

}  // namespace needle::train
