// Plain AArch64 NEON kernels (no dot-product extension): widening multiplies and pairwise adds.
#include "arm_common.h"

namespace nk::detail {
namespace {

struct NeonDot {
  using XQ = W2;
  static XQ prep(const BlockQ8& x) { return load_q8(x); }
  static W2 load(const BlockQ4& b) {
    const W2 u = load_nibbles(b);
    const int8x16_t eight = vdupq_n_s8(8);
    return {vsubq_s8(u.lo, eight), vsubq_s8(u.hi, eight)};
  }
  static W2 load(const BlockQ8& b) { return load_q8(b); }
  // |w| <= 128, |x| <= 127: two products fit in int16 (2 * 128 * 127 < 2^15).
  static int32x4_t dot(const void*, const W2& w, const W2& x) {
    int16x8_t p0 = vmull_s8(vget_low_s8(w.lo), vget_low_s8(x.lo));
    p0 = vmlal_high_s8(p0, w.lo, x.lo);
    int16x8_t p1 = vmull_s8(vget_low_s8(w.hi), vget_low_s8(x.hi));
    p1 = vmlal_high_s8(p1, w.hi, x.hi);
    return vpadalq_s16(vpaddlq_s16(p0), p1);
  }
};
using G = NeonGemm<NeonDot>;

const Kernels kNeon = {
    Isa::neon, "neon", quantize_q8_neon, G::gemv_q4, G::gemm_q4, G::gemv_q8, G::gemm_q8,
    attention_neon, rmsnorm_neon, rope_neon, gated_residual_neon,
    sgemm_neon, kSgemmNeonMR, kSgemmNeonNR,
    softmax_rows_neon, softmax_rows_backward_neon,
};

}  // namespace

const Kernels& neon_kernels() { return kNeon; }

void exp_neon_for_test(const float* x, float* y, size_t n) {
  for (size_t i = 0; i < n; i += 4) {
    float in[4] = {}, out[4];
    for (size_t j = 0; j < 4 && i + j < n; ++j) in[j] = x[i + j];
    vst1q_f32(out, exp128(vld1q_f32(in)));
    for (size_t j = 0; j < 4 && i + j < n; ++j) y[i + j] = out[j];
  }
}

}  // namespace nk::detail
