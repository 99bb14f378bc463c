// f32 GEMM for AVX2 + FMA (sgemm.h's driver): a 6 x 16 register tile, 12 ymm accumulators (of
// the 16 registers: 12 + 2 B vectors + 1 broadcast). Compiled with -mavx2 -mfma (this file only).
#include <immintrin.h>

#include "sgemm.h"

namespace nk::detail {
namespace {

struct T4Sse {
  // dst[q * ldd + r] = src[r * ld + q], r, q < 4
  static void run(const float* src, size_t ld, float* dst, size_t ldd) {
    __m128 r0 = _mm_loadu_ps(src), r1 = _mm_loadu_ps(src + ld), r2 = _mm_loadu_ps(src + 2 * ld),
           r3 = _mm_loadu_ps(src + 3 * ld);
    _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
    _mm_storeu_ps(dst, r0);
    _mm_storeu_ps(dst + ldd, r1);
    _mm_storeu_ps(dst + 2 * ldd, r2);
    _mm_storeu_ps(dst + 3 * ldd, r3);
  }
};

struct MkAvx2 {
  static constexpr size_t MR = kSgemmAvx2MR, NR = kSgemmAvx2NR;
  static_assert(MR == 6 && NR == 16, "the tile below is written out for 6 x 16");
  static void tile(size_t kc, const float* a, const float* b, float* c, size_t ldc, bool overwrite) {
#define NK_ZERO(i) __m256 c##i##0 = _mm256_setzero_ps(), c##i##1 = _mm256_setzero_ps();
    NK_ZERO(0) NK_ZERO(1) NK_ZERO(2) NK_ZERO(3) NK_ZERO(4) NK_ZERO(5)
#undef NK_ZERO
    for (size_t k = 0; k < kc; ++k) {
      const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
#define NK_FMA(i)                                  \
  {                                                \
    const __m256 ai = _mm256_broadcast_ss(a + i);  \
    c##i##0 = _mm256_fmadd_ps(ai, b0, c##i##0);    \
    c##i##1 = _mm256_fmadd_ps(ai, b1, c##i##1);    \
  }
      NK_FMA(0) NK_FMA(1) NK_FMA(2) NK_FMA(3) NK_FMA(4) NK_FMA(5)
#undef NK_FMA
      a += MR;
      b += NR;
    }
#define NK_STORE(i)                                                                     \
  {                                                                                     \
    float* ci = c + (i) * ldc;                                                          \
    if (overwrite) {                                                                    \
      _mm256_storeu_ps(ci, c##i##0);                                                    \
      _mm256_storeu_ps(ci + 8, c##i##1);                                                \
    } else {                                                                            \
      _mm256_storeu_ps(ci, _mm256_add_ps(_mm256_loadu_ps(ci), c##i##0));                \
      _mm256_storeu_ps(ci + 8, _mm256_add_ps(_mm256_loadu_ps(ci + 8), c##i##1));       \
    }                                                                                   \
  }
    NK_STORE(0) NK_STORE(1) NK_STORE(2) NK_STORE(3) NK_STORE(4) NK_STORE(5)
#undef NK_STORE
  }
};

}  // namespace

void sgemm_avx2(const SgemmArgs& g, size_t i0, size_t i1, size_t j0, size_t j1) {
  sgemm_blocked<MkAvx2, T4Sse>(g, i0, i1, j0, j1);
}

}  // namespace nk::detail
