// f32 GEMM for AArch64 NEON (sgemm.h's driver): an 8 x 12 register tile, 24 q-register
// accumulators, fused multiply-adds by lane (vfmaq_laneq_f32) from two vectors of A.
#include <arm_neon.h>

#include "sgemm.h"

namespace nk::detail {
namespace {

struct T4Neon {
  // dst[q * ldd + r] = src[r * ld + q], r, q < 4
  static void run(const float* src, size_t ld, float* dst, size_t ldd) {
    const float32x4_t r0 = vld1q_f32(src), r1 = vld1q_f32(src + ld), r2 = vld1q_f32(src + 2 * ld),
                      r3 = vld1q_f32(src + 3 * ld);
    const float32x4x2_t t01 = vtrnq_f32(r0, r1), t23 = vtrnq_f32(r2, r3);
    vst1q_f32(dst, vcombine_f32(vget_low_f32(t01.val[0]), vget_low_f32(t23.val[0])));
    vst1q_f32(dst + ldd, vcombine_f32(vget_low_f32(t01.val[1]), vget_low_f32(t23.val[1])));
    vst1q_f32(dst + 2 * ldd, vcombine_f32(vget_high_f32(t01.val[0]), vget_high_f32(t23.val[0])));
    vst1q_f32(dst + 3 * ldd, vcombine_f32(vget_high_f32(t01.val[1]), vget_high_f32(t23.val[1])));
  }
};

struct MkNeon {
  static constexpr size_t MR = kSgemmNeonMR, NR = kSgemmNeonNR;
  static_assert(MR == 8 && NR == 12, "the tile below is written out for 8 x 12");
  static void tile(size_t kc, const float* a, const float* b, float* c, size_t ldc, bool overwrite) {
#define NK_ZERO(i) float32x4_t c##i##0 = vdupq_n_f32(0.0f), c##i##1 = c##i##0, c##i##2 = c##i##0;
    NK_ZERO(0) NK_ZERO(1) NK_ZERO(2) NK_ZERO(3) NK_ZERO(4) NK_ZERO(5) NK_ZERO(6) NK_ZERO(7)
#undef NK_ZERO
    for (size_t k = 0; k < kc; ++k) {
      const float32x4_t b0 = vld1q_f32(b), b1 = vld1q_f32(b + 4), b2 = vld1q_f32(b + 8);
      const float32x4_t a0 = vld1q_f32(a), a1 = vld1q_f32(a + 4);
#define NK_FMA(i, av, lane)                           \
  c##i##0 = vfmaq_laneq_f32(c##i##0, b0, av, lane);   \
  c##i##1 = vfmaq_laneq_f32(c##i##1, b1, av, lane);   \
  c##i##2 = vfmaq_laneq_f32(c##i##2, b2, av, lane);
      NK_FMA(0, a0, 0) NK_FMA(1, a0, 1) NK_FMA(2, a0, 2) NK_FMA(3, a0, 3)
      NK_FMA(4, a1, 0) NK_FMA(5, a1, 1) NK_FMA(6, a1, 2) NK_FMA(7, a1, 3)
#undef NK_FMA
      a += MR;
      b += NR;
    }
#define NK_STORE(i)                                                 \
  {                                                                 \
    float* ci = c + (i) * ldc;                                      \
    if (overwrite) {                                                \
      vst1q_f32(ci, c##i##0);                                       \
      vst1q_f32(ci + 4, c##i##1);                                   \
      vst1q_f32(ci + 8, c##i##2);                                   \
    } else {                                                        \
      vst1q_f32(ci, vaddq_f32(vld1q_f32(ci), c##i##0));             \
      vst1q_f32(ci + 4, vaddq_f32(vld1q_f32(ci + 4), c##i##1));     \
      vst1q_f32(ci + 8, vaddq_f32(vld1q_f32(ci + 8), c##i##2));     \
    }                                                               \
  }
    NK_STORE(0) NK_STORE(1) NK_STORE(2) NK_STORE(3) NK_STORE(4) NK_STORE(5) NK_STORE(6) NK_STORE(7)
#undef NK_STORE
  }
};

}  // namespace

void sgemm_neon(const SgemmArgs& g, size_t i0, size_t i1, size_t j0, size_t j1) {
  sgemm_blocked<MkNeon, T4Neon>(g, i0, i1, j0, j1);
}

}  // namespace nk::detail
