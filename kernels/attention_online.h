// Attention with an online softmax over blocks of keys, written once over a small set of vector
// primitives (Ops) that each ISA file supplies. Included by ISA files only; internal linkage.
//
// Masked keys: the reference sets their scores to -FLT_MAX before the softmax. When at least one
// key of a query is visible, exp(-FLT_MAX - max) is exactly 0 in f32, so masked keys contribute
// nothing and are skipped here. When none is visible every score is -FLT_MAX, the softmax is
// uniform and the output is the mean of all Lk value rows; that case is handled explicitly.
#pragma once
#include <cmath>

#include "internal.h"

namespace nk::detail {
namespace {

// Ops must provide:
//   static float dot(const float* a, const float* b, size_t n);
//   static void axpy(float* y, float a, const float* x, size_t n);   // y += a * x
//   static void scal(float* y, float a, size_t n);                   // y *= a
template <class Ops>
void attention_online(const AttnArgs& a, size_t h0, size_t h1, size_t i0, size_t i1) {
  const size_t hd = a.hd;
  const size_t group = a.hq / a.hkv;
  const size_t q_ld = a.q_ld ? a.q_ld : a.hq * hd;
  const size_t k_ld = a.k_ld ? a.k_ld : a.hkv * hd;
  const size_t v_ld = a.v_ld ? a.v_ld : a.hkv * hd;
  const size_t o_ld = a.out_ld ? a.out_ld : a.hq * hd;
  const float scale = a.scale != 0.0f ? a.scale : 1.0f / std::sqrt(static_cast<float>(hd));
  const size_t blk = a.kv_block ? a.kv_block : 64;
  float* s = scratch_floats(blk, 0);

  for (size_t h = h0; h < h1; ++h) {
    const size_t g = h / group;
    for (size_t i = i0; i < i1; ++i) {
      const float* qi = a.q + i * q_ld + h * hd;
      float* o = a.out + i * o_ld + h * hd;
      for (size_t t = 0; t < hd; ++t) o[t] = 0.0f;
      const size_t limit = attn_key_limit(a, i);
      bool any = limit > 0;
      if (any && a.key_mask) {
        any = false;
        for (size_t j = 0; j < limit && !any; ++j) any = a.key_mask[j] != 0;
      }
      if (!any) {  // every key masked: uniform softmax over all Lk keys
        if (a.lk == 0) continue;
        const float p = 1.0f / static_cast<float>(a.lk);
        for (size_t j = 0; j < a.lk; ++j) Ops::axpy(o, p, a.v + j * v_ld + g * hd, hd);
        continue;
      }
      float m = -INFINITY, l = 0.0f;
      for (size_t j0 = 0; j0 < limit; j0 += blk) {
        const size_t jn = min_sz(limit, j0 + blk);
        float bm = -INFINITY;
        for (size_t j = j0; j < jn; ++j) {
          if (a.key_mask && !a.key_mask[j]) {
            s[j - j0] = -INFINITY;
            continue;
          }
          const float sj = Ops::dot(qi, a.k + j * k_ld + g * hd, hd) * scale;
          s[j - j0] = sj;
          bm = sj > bm ? sj : bm;
        }
        if (bm == -INFINITY) continue;  // the whole block is masked
        if (bm > m) {
          const float c = std::exp(m - bm);  // 0 for the first visible block
          Ops::scal(o, c, hd);
          l *= c;
          m = bm;
        }
        for (size_t j = j0; j < jn; ++j) {
          if (s[j - j0] == -INFINITY) continue;
          const float p = std::exp(s[j - j0] - m);
          l += p;
          Ops::axpy(o, p, a.v + j * v_ld + g * hd, hd);
        }
      }
      Ops::scal(o, 1.0f / l, hd);
    }
  }
}

}  // namespace
}  // namespace nk::detail
