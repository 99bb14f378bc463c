// AVX512-VNNI kernels for CPUs with AVX-512 VNNI (Cascade Lake, Ice Lake, Zen 4...). Compiled with
// -mavx2 -mfma -mf16c -mavx512f -mavx512bw -mavx512vl -mavx512vnni.
// The dot products use the EVEX-encoded 256-bit vpdpbusd (AVX512VL), so CPUs without the VEX
// AVX-VNNI encoding (Ice Lake, Cascade Lake) get VNNI too; the 32 vector registers of AVX-512
// allow a larger GEMM register tile (4 weight rows x 4 activation rows) than AVX2's 16.
#include "x86_common.h"

namespace nk::detail {
namespace {

struct Avx512VnniInt {
  struct XQ {
    __m256i q;
    __m256i c8;
    __m256i c128;
  };
  struct XP {
    __m256i lo, hi, c;  // [x0..15 | x0..15], [x16..31 | x16..31], -8 * group sums of both
  };
  static void prep_pair(const BlockQ8& x, XP* out) {
    const __m256i lo = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x.qs)));
    const __m256i hi = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x.qs + 16)));
    const __m256i e = _mm256_set1_epi8(8), z = _mm256_setzero_si256();
    const __m256i s = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(z, e, lo), e, hi);
    _mm256_storeu_si256(&out->lo, lo);
    _mm256_storeu_si256(&out->hi, hi);
    _mm256_storeu_si256(&out->c, _mm256_sub_epi32(z, s));
  }
  static __m256i dot_pair(__m256i ulo, __m256i uhi, const XP& x) {
    return _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(_mm256_loadu_si256(&x.c), ulo, _mm256_loadu_si256(&x.lo)), uhi, _mm256_loadu_si256(&x.hi));
  }
  static XQ prep(const BlockQ8& x) {
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.qs));
    const __m256i z = _mm256_setzero_si256();
    const __m256i s8 = _mm256_dpbusd_epi32(z, _mm256_set1_epi8(8), q);
    return {q, _mm256_sub_epi32(z, s8), _mm256_sub_epi32(z, _mm256_slli_epi32(s8, 4))};
  }
  static __m256i load(const BlockQ4& b) { return unpack_q4(b); }
  static __m256i load(const BlockQ8& b) {
    return _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs)),
                            _mm256_set1_epi8(static_cast<char>(0x80)));
  }
  static __m256i dot(const BlockQ4*, __m256i u, const XQ& x) { return _mm256_dpbusd_epi32(x.c8, u, x.q); }
  static __m256i dot(const BlockQ8*, __m256i u, const XQ& x) { return _mm256_dpbusd_epi32(x.c128, u, x.q); }
};

void gemv_q4(const BlockQ4* w, const BlockQ8* x, float* y, size_t k, size_t n0, size_t n1) {
  gemm_q4_tiled<Avx512VnniInt, 1>(w, x, y, 0, 1, k, n0, n1);
}
void gemm_q4(const BlockQ4* w, const BlockQ8* x, float* y, size_t ldy, size_t m, size_t k, size_t n0,
             size_t n1) {
  gemm_q4_tiled<Avx512VnniInt, 4>(w, x, y, ldy, m, k, n0, n1);
}
void gemv_q8(const BlockQ8* w, const BlockQ8* x, float* y, size_t k, size_t n0, size_t n1) {
  gemm_driver<Avx512VnniInt, BlockQ8, 4, 1>(w, x, y, 0, 1, k, n0, n1);
}
void gemm_q8(const BlockQ8* w, const BlockQ8* x, float* y, size_t ldy, size_t m, size_t k, size_t n0,
             size_t n1) {
  gemm_driver<Avx512VnniInt, BlockQ8, 4, 4>(w, x, y, ldy, m, k, n0, n1);
}

const Kernels kAvx512 = {
    Isa::avx512, "avx512", quantize_q8_avx2, gemv_q4, gemm_q4, gemv_q8, gemm_q8,
    attention_avx2, rmsnorm_avx2, rope_avx2, gated_residual_avx2,
    sgemm_avx512, kSgemmAvx512MR, kSgemmAvx512NR,
    softmax_rows_avx2, softmax_rows_backward_avx2,
};

}  // namespace

const Kernels& avx512_kernels() { return kAvx512; }

}  // namespace nk::detail
