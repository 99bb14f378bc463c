// f32 GEMM for AVX-512 (sgemm.h's driver): a 12 x 32 register tile, 24 zmm accumulators.
// Compiled with -mavx512f (this file only). Unlike the integer kernels of x86_avx512.cpp, which
// stay on 256-bit registers, this uses 512-bit FMAs: on cores with full-width AVX-512 units
// (Zen 5, Intel server cores) they double the f32 rate, and on double-pumped ones (Zen 4) they
// match 256-bit at half the instructions (docs/kernels.md has the measured peaks).
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

struct MkAvx512 {
  static constexpr size_t MR = kSgemmAvx512MR, NR = kSgemmAvx512NR;
  static_assert(MR == 12 && NR == 32, "the tile below is written out for 12 x 32");
  static void tile(size_t kc, const float* a, const float* b, float* c, size_t ldc, bool overwrite) {
#define NK_ZERO(i) __m512 c##i##0 = _mm512_setzero_ps(), c##i##1 = _mm512_setzero_ps();
    NK_ZERO(0) NK_ZERO(1) NK_ZERO(2) NK_ZERO(3) NK_ZERO(4) NK_ZERO(5)
    NK_ZERO(6) NK_ZERO(7) NK_ZERO(8) NK_ZERO(9) NK_ZERO(10) NK_ZERO(11)
#undef NK_ZERO
    for (size_t k = 0; k < kc; ++k) {
      const __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
#define NK_FMA(i)                                  \
  {                                                \
    const __m512 ai = _mm512_set1_ps(a[i]);        \
    c##i##0 = _mm512_fmadd_ps(ai, b0, c##i##0);    \
    c##i##1 = _mm512_fmadd_ps(ai, b1, c##i##1);    \
  }
      NK_FMA(0) NK_FMA(1) NK_FMA(2) NK_FMA(3) NK_FMA(4) NK_FMA(5)
      NK_FMA(6) NK_FMA(7) NK_FMA(8) NK_FMA(9) NK_FMA(10) NK_FMA(11)
#undef NK_FMA
      a += MR;
      b += NR;
    }
#define NK_STORE(i)                                                                     \
  {                                                                                     \
    float* ci = c + (i) * ldc;                                                          \
    if (overwrite) {                                                                    \
      _mm512_storeu_ps(ci, c##i##0);                                                    \
      _mm512_storeu_ps(ci + 16, c##i##1);                                               \
    } else {                                                                            \
      _mm512_storeu_ps(ci, _mm512_add_ps(_mm512_loadu_ps(ci), c##i##0));                \
      _mm512_storeu_ps(ci + 16, _mm512_add_ps(_mm512_loadu_ps(ci + 16), c##i##1));      \
    }                                                                                   \
  }
    NK_STORE(0) NK_STORE(1) NK_STORE(2) NK_STORE(3) NK_STORE(4) NK_STORE(5)
    NK_STORE(6) NK_STORE(7) NK_STORE(8) NK_STORE(9) NK_STORE(10) NK_STORE(11)
#undef NK_STORE
  }
};

}  // namespace

void sgemm_avx512(const SgemmArgs& g, size_t i0, size_t i1, size_t j0, size_t j1) {
  sgemm_blocked<MkAvx512, T4Sse>(g, i0, i1, j0, j1);
}

}  // namespace nk::detail
