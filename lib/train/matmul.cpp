#include "train/matmul.h"

#include <algorithm>
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

// One MR x NR tile of C over depth K, sizes known at compile time.
template <int MR, int NR>
inline __attribute__((always_inline)) void tile_full(int K, const float* a, size_t a_row, size_t a_col,
                                                     const float* b, size_t ldb, float* c, size_t ldc) {
  float acc[MR][NR] = {};
  for (int k = 0; k < K; ++k) {
    const float* bk = b + (size_t)k * ldb;
    for (int r = 0; r < MR; ++r) {
      const float av = a[(size_t)r * a_row + (size_t)k * a_col];
      for (int j = 0; j < NR; ++j) acc[r][j] += av * bk[j];
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < NR; ++j) c[(size_t)r * ldc + j] += acc[r][j];
}

// A partial tile at the edges (mr <= MR, nr <= NR).
inline void tile_edge(int mr, int nr, int K, const float* a, size_t a_row, size_t a_col, const float* b, size_t ldb,
                      float* c, size_t ldc) {
  float acc[kMR][kNR] = {};
  for (int k = 0; k < K; ++k) {
    const float* bk = b + (size_t)k * ldb;
    for (int r = 0; r < mr; ++r) {
      const float av = a[(size_t)r * a_row + (size_t)k * a_col];
      for (int j = 0; j < nr; ++j) acc[r][j] += av * bk[j];
    }
  }
  for (int r = 0; r < mr; ++r)
    for (int j = 0; j < nr; ++j) c[(size_t)r * ldc + j] += acc[r][j];
}

}  // namespace

NEEDLE_TRAIN_CLONES
void gemm_acc(int M, int N, int K, const float* a, size_t a_row, size_t a_col, const float* b, size_t ldb, float* c,
              size_t ldc) {
  for (int k0 = 0; k0 < K; k0 += kKB) {
    const int kb = std::min(kKB, K - k0);
    const float* ak = a + (size_t)k0 * a_col;
    const float* bk = b + (size_t)k0 * ldb;
    for (int j = 0; j < N; j += kNR) {
      const int nr = std::min(kNR, N - j);
      for (int i = 0; i < M; i += kMR) {
        const int mr = std::min(kMR, M - i);
        const float* ai = ak + (size_t)i * a_row;
        float* cij = c + (size_t)i * ldc + j;
        if (mr == kMR && nr == kNR)
          tile_full<kMR, kNR>(kb, ai, a_row, a_col, bk + j, ldb, cij, ldc);
        else
          tile_edge(mr, nr, kb, ai, a_row, a_col, bk + j, ldb, cij, ldc);
      }
    }
  }
}

void gemm_acc_threaded(int M, int N, int K, const float* a, size_t a_row, size_t a_col, const float* b, size_t ldb,
                       float* c, size_t ldc, nk::ThreadPool* pool) {
  const double work = (double)M * N * K;
  if (!pool || pool->size() < 2 || work < 1 << 18) {
    gemm_acc(M, N, K, a, a_row, a_col, b, ldb, c, ldc);
    return;
  }
  if (M >= N) {  // split rows of C
    pool->parallel_range((size_t)M, kMR, [&](size_t i0, size_t i1, unsigned) {
      gemm_acc((int)(i1 - i0), N, K, a + i0 * a_row, a_row, a_col, b, ldb, c + i0 * ldc, ldc);
    }, kMR);
  } else {  // split columns of C
    pool->parallel_range((size_t)N, kNR, [&](size_t j0, size_t j1, unsigned) {
      gemm_acc(M, (int)(j1 - j0), K, a, a_row, a_col, b + j0, ldb, c + j0, ldc);
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
  std::vector<float> wt((size_t)K * N);
  transpose(wt.data(), w, N, K);
  std::fill(out, out + (size_t)M * N, 0.0f);
  gemm_acc_threaded(M, N, K, x, (size_t)K, 1, wt.data(), (size_t)N, out, (size_t)N, pool);
}

void matmul_backward(float* dx, float* dw, const float* dout, const float* x, const float* w, int M, int K, int N,
                     nk::ThreadPool* pool) {
  // dx [M, K] += dout [M, N] . W [N, K]
  if (dx) gemm_acc_threaded(M, K, N, dout, (size_t)N, 1, w, (size_t)K, dx, (size_t)K, pool);
  // dw [N, K] += dout^T [N, M] . x [M, K]   (A = dout transposed: a_row = 1, a_col = N)
  if (dw) gemm_acc_threaded(N, K, M, dout, 1, (size_t)N, x, (size_t)K, dw, (size_t)K, pool);
}

}  // namespace needle::train
