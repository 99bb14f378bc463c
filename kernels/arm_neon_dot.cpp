// AArch64 NEON with the dot-product extension (SDOT, vdotq_s32). Compiled with
// -march=armv8.2-a+dotprod; used only when getauxval(AT_HWCAP) reports ASIMDDP.
#include "arm_common.h"

namespace nk::detail {
namespace {

struct SdotDot {
  static int32x4_t dot(const W2& w, const W2& x) {
    return vdotq_s32(vdotq_s32(vdupq_n_s32(0), w.lo, x.lo), w.hi, x.hi);
  }
};
using G = NeonGemm<SdotDot>;

const Kernels kNeonDot = {
    Isa::neondot, "neondot", quantize_q8_neon, G::gemv_q4, G::gemm_q4, G::gemv_q8, G::gemm_q8,
    attention_neon, rmsnorm_neon, rope_neon, gated_residual_neon,
};

}  // namespace

const Kernels& neondot_kernels() { return kNeonDot; }

}  // namespace nk::detail
