#include "train/matmul.h"

#include <algorithm>
#include <numeric>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "nk/kernels.h"
#include "nk/threadpool.h"

// Every product goes through the kernels' f32 GEMM (nk::Kernels::sgemm: packed, cache-blocked,
// register-tiled, one path per instruction set; docs/kernels.md). It takes any strides for A and
// B, so transposed operands (x W^T, dout^T x, X X^T) are read in place, never copied. Its
// per-element summation order depends only on K, so splitting C across threads cannot change a
// result: that is what keeps training bit-identical across thread counts and resumes.

namespace needle::train {
namespace {

nk::SgemmArgs args(int M, int N, int K, const float* a, size_t a_row, size_t a_col, const float* b, size_t b_row,
                   size_t b_col, float* c, size_t ldc, bool accumulate) {
  nk::SgemmArgs g;
  g.m = (size_t)M;
  g.n = (size_t)N;
  g.k = (size_t)K;
  g.a = a;
  g.a_rs = a_row;
  g.a_cs = a_col;
  g.b = b;
  g.b_rs = b_row;
  g.b_cs = b_col;
  g.c = c;
  g.ldc = ldc;
  g.accumulate = accumulate;
  return g;
}

size_t ceil_div(size_t a, size_t b) { return (a + b - 1) / b; }

// Below this many multiply-adds a product runs on the calling thread: waking the pool costs a
// few microseconds, and each task packs its own copy of B (docs/kernels.md, "f32 GEMM").
constexpr double kMinParallelMacs = double(1 << 20);
constexpr double kMinTaskMacs = double(1 << 19);

// C split into about 2 tasks per thread, blocks a multiple of the register tile. Each task packs
// its own copy of the operand it shares with the others (B for a row block, A for a column
// block), so the split runs along the longer side of C: with M >= N row blocks re-pack B (K x N,
// the smaller), otherwise column blocks re-pack A. Tasks are taken dynamically, so a descheduled
// thread delays only its current task. Which thread computes an element changes nothing in it.
void run(const nk::SgemmArgs& g, nk::ThreadPool* pool) {
  const nk::Kernels& k = nk::kernels();
  const double macs = (double)g.m * (double)g.n * (double)g.k;
  if (!pool || pool->size() < 2 || macs < kMinParallelMacs) {
    k.sgemm(g, 0, g.m, 0, g.n);
    return;
  }
  const size_t want = std::min<size_t>(2 * pool->size(), (size_t)std::max(1.0, macs / kMinTaskMacs));
  const size_t row_tiles = ceil_div(g.m, k.sgemm_mr), col_tiles = ceil_div(g.n, k.sgemm_nr);
  size_t rt, ct;  // row blocks, column blocks
  if (g.m >= g.n) {
    rt = std::min(want, row_tiles);
    ct = std::min(col_tiles, ceil_div(want, rt));
  } else {
    ct = std::min(want, col_tiles);
    rt = std::min(row_tiles, ceil_div(want, ct));
  }
  const size_t rb = ceil_div(row_tiles, rt) * k.sgemm_mr, cb = ceil_div(col_tiles, ct) * k.sgemm_nr;
  const size_t nr = ceil_div(g.m, rb), nc = ceil_div(g.n, cb);
  pool->parallel_for(nr * nc, [&](size_t t, unsigned) {
    const size_t i0 = (t / nc) * rb, j0 = (t % nc) * cb;
    k.sgemm(g, i0, std::min(g.m, i0 + rb), j0, std::min(g.n, j0 + cb));
  });
}

}  // namespace

void gemm(int M, int N, int K, const float* a, size_t a_row, size_t a_col, const float* b, size_t ldb, float* c,
          size_t ldc, bool accumulate) {
  if (M <= 0 || N <= 0) return;
  const nk::SgemmArgs g = args(M, N, K, a, a_row, a_col, b, ldb, 1, c, ldc, accumulate);
  nk::kernels().sgemm(g, 0, g.m, 0, g.n);
}

void gemm_threaded(int M, int N, int K, const float* a, size_t a_row, size_t a_col, const float* b, size_t ldb,
                   float* c, size_t ldc, bool accumulate, nk::ThreadPool* pool) {
  if (M <= 0 || N <= 0) return;
  run(args(M, N, K, a, a_row, a_col, b, ldb, 1, c, ldc, accumulate), pool);
}

void gemm_strided(int M, int N, int K, const float* a, size_t a_row, size_t a_col, const float* b, size_t b_row,
                  size_t b_col, float* c, size_t ldc, bool accumulate, nk::ThreadPool* pool) {
  if (M <= 0 || N <= 0) return;
  run(args(M, N, K, a, a_row, a_col, b, b_row, b_col, c, ldc, accumulate), pool);
}

void gram(int r, int n, const float* x, size_t x_row, size_t x_col, float* c, size_t ldc, nk::ThreadPool* pool) {
  if (r <= 0) return;
  const nk::Kernels& k = nk::kernels();
  // C(i, j) = sum_k X(i, k) X(j, k): A = X, B = X^T (B(k, j) = X(j, k)).
  const nk::SgemmArgs g = args(r, r, n, x, x_row, x_col, x, x_col, x_row, c, ldc, false);
  // Row strips [i0, i0 + h) x columns [i0, r): the diagonal blocks and everything right of them.
  // Strips are a multiple of both tile sides, about 96 rows (less waste below the diagonal than
  // wider strips, still whole register tiles).
  const size_t unit = std::lcm(k.sgemm_mr, k.sgemm_nr);
  const size_t h = std::max<size_t>(1, 96 / unit) * unit;
  const size_t strips = ceil_div((size_t)r, h);
  auto strip = [&](size_t s, unsigned) {
    const size_t i0 = s * h;
    k.sgemm(g, i0, std::min((size_t)r, i0 + h), i0, (size_t)r);
  };
  const double macs = 0.5 * (double)r * (double)r * (double)n;
  if (pool && pool->size() > 1 && strips > 1 && macs >= kMinParallelMacs) pool->parallel_for(strips, strip);
  else for (size_t s = 0; s < strips; ++s) strip(s, 0);
  // Mirror what was not computed: C(i, j) for j left of row i's strip. C(j, i) is the same sum
  // of the same products in the same order (X(j,k) X(i,k), factors swapped: the same rounding),
  // so this equals computing it.
  // In 32 x 32 tiles so that the column-wise reads stay in cache.
  constexpr size_t T = 32;
  for (size_t i0 = 0; i0 < (size_t)r; i0 += T)
    for (size_t j0 = 0; j0 < (i0 / h) * h + T; j0 += T)
      for (size_t i = i0; i < std::min((size_t)r, i0 + T); ++i) {
        const size_t lo = std::min((i / h) * h, j0 + T);
        for (size_t j = j0; j < lo; ++j) c[i * ldc + j] = c[j * ldc + i];
      }
}

void transpose(float* dst, const float* src, int rows, int cols) {
  // 32 x 32 tiles (both sides stay in L1), 4 x 4 blocks inside through SSE registers on x86-64
  // (baseline there), plain element copies for the rest and elsewhere.
  constexpr int T = 32;
  const size_t R = (size_t)rows, C = (size_t)cols;
  for (int r0 = 0; r0 < rows; r0 += T)
    for (int c0 = 0; c0 < cols; c0 += T) {
      const int r1 = std::min(rows, r0 + T), c1 = std::min(cols, c0 + T);
      int r = r0;
#if defined(__SSE2__)
      for (; r + 4 <= r1; r += 4) {
        int cc = c0;
        for (; cc + 4 <= c1; cc += 4) {
          const float* s = src + (size_t)r * C + cc;
          __m128 x0 = _mm_loadu_ps(s), x1 = _mm_loadu_ps(s + C), x2 = _mm_loadu_ps(s + 2 * C), x3 = _mm_loadu_ps(s + 3 * C);
          _MM_TRANSPOSE4_PS(x0, x1, x2, x3);
          float* d = dst + (size_t)cc * R + r;
          _mm_storeu_ps(d, x0);
          _mm_storeu_ps(d + R, x1);
          _mm_storeu_ps(d + 2 * R, x2);
          _mm_storeu_ps(d + 3 * R, x3);
        }
        for (; cc < c1; ++cc)
          for (int q = 0; q < 4; ++q) dst[(size_t)cc * R + r + q] = src[(size_t)(r + q) * C + cc];
      }
#endif
      for (; r < r1; ++r)
        for (int cc = c0; cc < c1; ++cc) dst[(size_t)cc * R + r] = src[(size_t)r * C + cc];
    }
}

void matmul_forward(float* out, const float* x, const float* w, int M, int K, int N, nk::ThreadPool* pool) {
  // out = x W^T: B(k, j) = W[j, k], read in place (b_row = 1, b_col = K).
  gemm_strided(M, N, K, x, (size_t)K, 1, w, 1, (size_t)K, out, (size_t)N, /*accumulate=*/false, pool);
}

void matmul_backward(float* dx, float* dw, const float* dout, const float* x, const float* w, int M, int K, int N,
                     nk::ThreadPool* pool) {
  // dx [M, K] += dout [M, N] . W [N, K]
  if (dx) gemm_threaded(M, K, N, dout, (size_t)N, 1, w, (size_t)K, dx, (size_t)K, true, pool);
  // dw [N, K] += dout^T [N, M] . x [M, K]   (A = dout transposed: a_row = 1, a_col = N)
  if (dw) gemm_threaded(N, K, M, dout, 1, (size_t)N, x, (size_t)K, dw, (size_t)K, true, pool);
}

}  // namespace needle::train
