// AArch64 NEON with the dot-product extension (SDOT, vdotq_s32). Compiled with
// -march=armv8.2-a+dotprod; used only when getauxval(AT_HWCAP) reports ASIMDDP.
#include "arm_common.h"

namespace nk::detail {
namespace {

// SDOT multiplies signed bytes, so Q4 weights stay as raw nibbles u = q + 8 and the offset is
// removed by starting the accumulator at -8 * (group sums of x), once per activation block.
struct SdotDot {
  struct XQ {
    W2 x;
    int32x4_t c8;
  };
  static XQ prep(const BlockQ8& b) {
    const W2 x = load_q8(b);
    const int8x16_t m8 = vdupq_n_s8(-8);
    return {x, vdotq_s32(vdotq_s32(vdupq_n_s32(0), m8, x.lo), m8, x.hi)};
  }
  static W2 load(const BlockQ4& b) { return load_nibbles(b); }
  static W2 load(const BlockQ8& b) { return load_q8(b); }
  static int32x4_t dot(const BlockQ4*, const W2& u, const XQ& x) {
    return vdotq_s32(vdotq_s32(x.c8, u.lo, x.x.lo), u.hi, x.x.hi);
  }
  static int32x4_t dot(const BlockQ8*, const W2& w, const XQ& x) {
    return vdotq_s32(vdotq_s32(vdupq_n_s32(0), w.lo, x.x.lo), w.hi, x.x.hi);
  }
};
using G = NeonGemm<SdotDot>;

const Kernels kNeonDot = {
    Isa::neondot, "neondot", quantize_q8_neon, G::gemv_q4, G::gemm_q4, G::gemv_q8, G::gemm_q8,
    attention_neon, rmsnorm_neon, rope_neon, gated_residual_neon,
    sgemm_neon, kSgemmNeonMR, kSgemmNeonNR,
    softmax_rows_neon, softmax_rows_backward_neon,
};

}  // namespace

const Kernels& neondot_kernels() { return kNeonDot; }

}  // namespace nk::detail
