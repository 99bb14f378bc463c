// AVX2 + FMA (+F16C) kernels. Compiled with -mavx2 -mfma -mf16c; called only when the CPU has them.
#include "x86_common.h"

namespace nk::detail {
namespace {

// Integer dot products with maddubs (u8 x s8 -> pairs of s16, then pairs of s16 -> s32).
struct Avx2Int {
  struct XQ {
    __m256i q;       // the 32 activations
    __m256i corr16;  // maddubs(8, q): subtracting it turns unsigned nibbles u into u - 8
  };
  struct XP {
    __m256i lo, hi, c;  // [x0..15 | x0..15], [x16..31 | x16..31], maddubs(8, lo) + maddubs(8, hi)
  };
  static void prep_pair(const BlockQ8& x, XP* out) {
    const __m256i lo = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x.qs)));
    const __m256i hi = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x.qs + 16)));
    const __m256i e = _mm256_set1_epi8(8);
    _mm256_storeu_si256(&out->lo, lo);
    _mm256_storeu_si256(&out->hi, hi);
    _mm256_storeu_si256(&out->c, _mm256_add_epi16(_mm256_maddubs_epi16(e, lo), _mm256_maddubs_epi16(e, hi)));
  }
  // int16 lanes: two maddubs of u <= 15 (<= 2 * 3810) minus c (<= 2 * 2032): no overflow.
  static __m256i dot_pair(__m256i ulo, __m256i uhi, const XP& x) {
    const __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(ulo, _mm256_loadu_si256(&x.lo)),
                                       _mm256_maddubs_epi16(uhi, _mm256_loadu_si256(&x.hi)));
    return _mm256_madd_epi16(_mm256_sub_epi16(p, _mm256_loadu_si256(&x.c)), _mm256_set1_epi16(1));
  }
  static XQ prep(const BlockQ8& x) {
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.qs));
    return {q, _mm256_maddubs_epi16(_mm256_set1_epi8(8), q)};
  }
  static __m256i load(const BlockQ4& b) { return unpack_q4(b); }
  static __m256i load(const BlockQ8& b) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs)); }
  // u in [0,15], q in [-127,127]: each s16 pair sum is at most 2*15*127, no saturation.
  static __m256i dot(const BlockQ4*, __m256i u, const XQ& x) {
    const __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(u, x.q), x.corr16);
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
  }
  // |w| <= 128 and |q| <= 127: pair sums stay below 2^15.
  static __m256i dot(const BlockQ8*, __m256i w, const XQ& x) {
    const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x.q, w));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
  }
};

void gemv_q4(const BlockQ4* w, const BlockQ8* x, float* y, size_t k, size_t n0, size_t n1) {
  gemm_q4_tiled<Avx2Int, 1>(w, x, y, 0, 1, k, n0, n1);
}
void gemm_q4(const BlockQ4* w, const BlockQ8* x, float* y, size_t ldy, size_t m, size_t k, size_t n0,
             size_t n1) {
  gemm_q4_tiled<Avx2Int, 4>(w, x, y, ldy, m, k, n0, n1);
}
void gemv_q8(const BlockQ8* w, const BlockQ8* x, float* y, size_t k, size_t n0, size_t n1) {
  gemm_driver<Avx2Int, BlockQ8, 4, 1>(w, x, y, 0, 1, k, n0, n1);
}
void gemm_q8(const BlockQ8* w, const BlockQ8* x, float* y, size_t ldy, size_t m, size_t k, size_t n0,
             size_t n1) {
  gemm_driver<Avx2Int, BlockQ8, 4, 2>(w, x, y, ldy, m, k, n0, n1);
}

const Kernels kAvx2 = {
    Isa::avx2, "avx2", quantize_q8_avx2, gemv_q4, gemm_q4, gemv_q8, gemm_q8,
    attention_avx2, rmsnorm_avx2, rope_avx2, gated_residual_avx2,
    sgemm_avx2, kSgemmAvx2MR, kSgemmAvx2NR,
    softmax_rows_avx2, softmax_rows_backward_avx2,
};

}  // namespace

const Kernels& avx2_kernels() { return kAvx2; }

void exp_avx2_for_test(const float* x, float* y, size_t n) {
  for (size_t i = 0; i < n; i += 8) {
    alignas(32) float in[8] = {}, out[8];
    for (size_t j = 0; j < 8 && i + j < n; ++j) in[j] = x[i + j];
    _mm256_store_ps(out, exp256(_mm256_load_ps(in)));
    for (size_t j = 0; j < 8 && i + j < n; ++j) y[i + j] = out[j];
  }
}

}  // namespace nk::detail
