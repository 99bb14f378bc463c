// f32 matrix products for training: the dense layer's forward and backward and a plain
// accumulate-GEMM used by attention and Muon. Row-major, f32 accumulation. Each output element
// is computed by exactly one thread in a fixed order, so results do not depend on the thread
// count or on scheduling (bit-identical resume needs that).
#pragma once
#include <cstddef>

namespace nk {
class ThreadPool;
}

namespace needle::train {

// C[i, j] (+)= sum_k A(i, k) * B[k, j]   for i < M, j < N, k < K, where
//   A(i, k) = a[i * a_row + k * a_col]  (so a transposed A is a_row = 1, a_col = lda),
//   B[k, j] = b[k * ldb + j],  C[i, j] = c[i * ldc + j].
// accumulate: add to C; otherwise overwrite it (C need not be initialized).
// Single-threaded; callers split work themselves (gemm_threaded splits rows of C).
void gemm(int M, int N, int K, const float* a, size_t a_row, size_t a_col, const float* b, size_t ldb, float* c,
          size_t ldc, bool accumulate);
// The same, with the rows (or, for few rows, columns) of C split across the pool (nullable).
void gemm_threaded(int M, int N, int K, const float* a, size_t a_row, size_t a_col, const float* b, size_t ldb,
                   float* c, size_t ldc, bool accumulate, nk::ThreadPool* pool);

// The same with any strides for B too: B[k, j] = b[k * b_row + j * b_col] (W^T of a weight W
// [N, K] is b_row = 1, b_col = K), threaded like gemm_threaded (pool nullable).
void gemm_strided(int M, int N, int K, const float* a, size_t a_row, size_t a_col, const float* b, size_t b_row,
                  size_t b_col, float* c, size_t ldc, bool accumulate, nk::ThreadPool* pool);

// C[r, r] = X X^T for X(i, k) = x[i * x_row + k * x_col], i < r, k < n (overwrites C). Computes
// the blocks on and above the diagonal and mirrors the rest, about 60% of the work at r = 512;
// the result equals the full product bit for bit (C(j, i) is the same sum with the factors of
// every product swapped). Pool nullable.
void gram(int r, int n, const float* x, size_t x_row, size_t x_col, float* c, size_t ldc, nk::ThreadPool* pool);

// out[M, N] = x[M, K] W^T (a Dense layer; W stored [N, K], i.e. [out, in]).
void matmul_forward(float* out, const float* x, const float* w, int M, int K, int N, nk::ThreadPool* pool);
// dx[M, K] += dout W;  dw[N, K] += dout^T x. Either of dx, dw may be null.
void matmul_backward(float* dx, float* dw, const float* dout, const float* x, const float* w, int M, int K, int N,
                     nk::ThreadPool* pool);

// dst[cols, rows] = src[rows, cols]^T.
void transpose(float* dst, const float* src, int rows, int cols);

}  // namespace needle::train
