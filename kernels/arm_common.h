// Code shared by the AArch64 NEON files (arm_neon.cpp, arm_neon_dot.cpp): f32 primitives, the Q8
// activation quantizer and the register-tiled integer GEMM driver. Internal linkage only.
#pragma once
#include <arm_neon.h>

#include <cmath>
#include <cstring>

#include "attention_online.h"
#include "internal.h"

namespace nk::detail {
namespace {

struct NeonF32 {
  static float dot(const float* a, const float* b, size_t n) {
    float32x4_t s0 = vdupq_n_f32(0.0f), s1 = vdupq_n_f32(0.0f);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
      s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(b + i));
      s1 = vfmaq_f32(s1, vld1q_f32(a + i + 4), vld1q_f32(b + i + 4));
    }
    for (; i + 4 <= n; i += 4) s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(b + i));
    float s = vaddvq_f32(vaddq_f32(s0, s1));
    for (; i < n; ++i) s += a[i] * b[i];
    return s;
  }
  static void axpy(float* y, float a, const float* x, size_t n) {
    const float32x4_t va = vdupq_n_f32(a);
    size_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vfmaq_f32(vld1q_f32(y + i), va, vld1q_f32(x + i)));
    for (; i < n; ++i) y[i] += a * x[i];
  }
  static void scal(float* y, float a, size_t n) {
    size_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vmulq_n_f32(vld1q_f32(y + i), a));
    for (; i < n; ++i) y[i] *= a;
  }
};

// e^x for 4 lanes, within 2 ulp for x in [-87.3, 88.3] (larger x clamps; attention only
// evaluates x <= 0); 0 for x < -87.3 (including -inf). Same Cephes scheme as the x86 exp256.
inline float32x4_t exp128(float32x4_t x) {
  const uint32x4_t underflow = vcltq_f32(x, vdupq_n_f32(-87.3f));
  x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-87.3f)), vdupq_n_f32(88.3f));
  const float32x4_t n = vrndnq_f32(vmulq_n_f32(x, 1.44269504088896341f));
  float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(0.693359375f));
  r = vfmsq_f32(r, n, vdupq_n_f32(-2.12194440e-4f));
  float32x4_t y = vdupq_n_f32(1.9875691500e-4f);
  y = vfmaq_f32(vdupq_n_f32(1.3981999507e-3f), y, r);
  y = vfmaq_f32(vdupq_n_f32(8.3334519073e-3f), y, r);
  y = vfmaq_f32(vdupq_n_f32(4.1665795894e-2f), y, r);
  y = vfmaq_f32(vdupq_n_f32(1.6666665459e-1f), y, r);
  y = vfmaq_f32(vdupq_n_f32(5.0000001201e-1f), y, r);
  y = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0f)), y, vmulq_f32(r, r));
  const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
  const float32x4_t res = vmulq_f32(y, vreinterpretq_f32_s32(e));
  return vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(res), underflow));
}

// Attention for head dims 4*NV: one query row at a time, keys in blocks of 4 whose scores are
// reduced together with pairwise adds, vectorized exp, the output row kept in NV registers.
template <int NV>
void attention_rows_neon(const AttnArgs& a, size_t h0, size_t h1, size_t i0, size_t i1) {
  constexpr size_t hd = 4 * NV;
  const size_t group = a.hq / a.hkv;
  const size_t q_ld = a.q_ld ? a.q_ld : a.hq * hd;
  const size_t k_ld = a.k_ld ? a.k_ld : a.hkv * hd;
  const size_t v_ld = a.v_ld ? a.v_ld : a.hkv * hd;
  const size_t o_ld = a.out_ld ? a.out_ld : a.hq * hd;
  const float scale = a.scale != 0.0f ? a.scale : 1.0f / std::sqrt(static_cast<float>(hd));
  const uint32x4_t lane = {0, 1, 2, 3};
  float pb[4];
  for (size_t h = h0; h < h1; ++h) {
    const float* kh = a.k + (h / group) * hd;
    const float* vh = a.v + (h / group) * hd;
    for (size_t i = i0; i < i1; ++i) {
      const float* qi = a.q + i * q_ld + h * hd;
      float* o = a.out + i * o_ld + h * hd;
      const size_t limit = attn_key_limit(a, i);
      bool any = limit > 0;
      if (any && a.key_mask) {
        any = false;
        for (size_t j = 0; j < limit && !any; ++j) any = a.key_mask[j] != 0;
      }
      if (!any) {  // every key masked: uniform softmax over all Lk keys
        for (size_t t = 0; t < hd; ++t) o[t] = 0.0f;
        if (a.lk == 0) continue;
        const float p = 1.0f / static_cast<float>(a.lk);
        for (size_t j = 0; j < a.lk; ++j) NeonF32::axpy(o, p, vh + j * v_ld, hd);
        continue;
      }
      float32x4_t q[NV], acc[NV];
      for (int v = 0; v < NV; ++v) {
        q[v] = vld1q_f32(qi + 4 * v);
        acc[v] = vdupq_n_f32(0.0f);
      }
      float32x4_t lsum = vdupq_n_f32(0.0f);
      float m = -INFINITY;
      for (size_t j0 = 0; j0 < limit; j0 += 4) {
        const size_t nk = limit - j0 < 4 ? limit - j0 : 4;
        float32x4_t d[4];
        for (size_t jj = 0; jj < 4; ++jj) {
          d[jj] = vdupq_n_f32(0.0f);
          if (jj < nk) {
            const float* kj = kh + (j0 + jj) * k_ld;
            for (int v = 0; v < NV; ++v) d[jj] = vfmaq_f32(d[jj], q[v], vld1q_f32(kj + 4 * v));
          }
        }
        float32x4_t s = vmulq_n_f32(vpaddq_f32(vpaddq_f32(d[0], d[1]), vpaddq_f32(d[2], d[3])), scale);
        uint32x4_t keep = vcltq_u32(lane, vdupq_n_u32(static_cast<uint32_t>(nk)));
        if (a.key_mask) {
          uint32_t km[4];
          for (size_t jj = 0; jj < 4; ++jj) km[jj] = jj < nk && a.key_mask[j0 + jj] ? ~0u : 0u;
          keep = vandq_u32(keep, vld1q_u32(km));
        }
        s = vbslq_f32(keep, s, vdupq_n_f32(-INFINITY));
        const float bm = vmaxvq_f32(s);
        if (bm == -INFINITY) continue;  // the whole block is masked
        if (bm > m) {
          const float c = std::exp(m - bm);  // 0 for the first visible block
          for (int v = 0; v < NV; ++v) acc[v] = vmulq_n_f32(acc[v], c);
          lsum = vmulq_n_f32(lsum, c);
          m = bm;
        }
        const float32x4_t p = exp128(vsubq_f32(s, vdupq_n_f32(m)));
        lsum = vaddq_f32(lsum, p);
        vst1q_f32(pb, p);
        for (size_t jj = 0; jj < nk; ++jj) {
          const float* vj = vh + (j0 + jj) * v_ld;
          for (int v = 0; v < NV; ++v) acc[v] = vfmaq_n_f32(acc[v], vld1q_f32(vj + 4 * v), pb[jj]);
        }
      }
      const float inv = 1.0f / vaddvq_f32(lsum);
      for (int v = 0; v < NV; ++v) vst1q_f32(o + 4 * v, vmulq_n_f32(acc[v], inv));
    }
  }
}

void attention_neon(const AttnArgs& a, size_t h0, size_t h1, size_t i0, size_t i1) {
  switch (a.hd) {
    case 4: return attention_rows_neon<1>(a, h0, h1, i0, i1);
    case 8: return attention_rows_neon<2>(a, h0, h1, i0, i1);
    case 16: return attention_rows_neon<4>(a, h0, h1, i0, i1);
    case 32: return attention_rows_neon<8>(a, h0, h1, i0, i1);
    case 64: return attention_rows_neon<16>(a, h0, h1, i0, i1);
    default: return attention_online<NeonF32>(a, h0, h1, i0, i1);  // any other head size
  }
}

void rmsnorm_neon(const float* x, const float* scale, float* y, size_t rows, size_t dim, float eps) {
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* yr = y + r * dim;
    const float ss = NeonF32::dot(xr, xr, dim);
    const float inv = 1.0f / std::sqrt(ss / static_cast<float>(dim) + eps);
    const float32x4_t one = vdupq_n_f32(1.0f);
    size_t t = 0;
    for (; t + 4 <= dim; t += 4)
      vst1q_f32(yr + t, vmulq_f32(vmulq_n_f32(vld1q_f32(xr + t), inv), vaddq_f32(one, vld1q_f32(scale + t))));
    for (; t < dim; ++t) yr[t] = xr[t] * inv * (1.0f + scale[t]);
  }
}

void rope_neon(float* x, size_t rows, size_t ld, size_t heads, size_t hd, size_t pos0, float theta) {
  const size_t half = hd / 2;
  float* buf = rope_scratch(hd, theta);
  const float* cs = buf + half;
  const float* sn = buf + 2 * half;
  for (size_t r = 0; r < rows; ++r) {
    rope_angles(pos0 + r, half, buf);
    for (size_t h = 0; h < heads; ++h) {
      float* x1p = x + r * ld + h * hd;
      float* x2p = x1p + half;
      size_t i = 0;
      for (; i + 4 <= half; i += 4) {
        const float32x4_t x1 = vld1q_f32(x1p + i), x2 = vld1q_f32(x2p + i);
        const float32x4_t c = vld1q_f32(cs + i), s = vld1q_f32(sn + i);
        vst1q_f32(x1p + i, vfmsq_f32(vmulq_f32(x1, c), x2, s));
        vst1q_f32(x2p + i, vfmaq_f32(vmulq_f32(x2, c), x1, s));
      }
      for (; i < half; ++i) {
        const float x1 = x1p[i], x2 = x2p[i];
        x1p[i] = x1 * cs[i] - x2 * sn[i];
        x2p[i] = x2 * cs[i] + x1 * sn[i];
      }
    }
  }
}

void gated_residual_neon(float* x, const float* y, float gate, size_t n) {
  NeonF32::axpy(x, sigmoid(gate), y, n);
}

// Bit-identical to the reference: vcvtnq rounds half to even like nearbyint.
inline void quantize_block_q8(const float* xb, BlockQ8& out) {
  float32x4_t v[8];
  float32x4_t mx = vdupq_n_f32(0.0f);
  for (int i = 0; i < 8; ++i) {
    v[i] = vld1q_f32(xb + 4 * i);
    mx = vmaxq_f32(mx, vabsq_f32(v[i]));
  }
  const float amax = vmaxvq_f32(mx);
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  out.d = d;
  for (int i = 0; i < 8; i += 2) {
    const int32x4_t a = vcvtnq_s32_f32(vmulq_n_f32(v[i], id));
    const int32x4_t b = vcvtnq_s32_f32(vmulq_n_f32(v[i + 1], id));
    const int16x8_t h = vcombine_s16(vqmovn_s32(a), vqmovn_s32(b));
    vst1_s8(out.qs + 4 * i, vqmovn_s16(h));
  }
}

void quantize_q8_neon(const float* x, size_t ldx, BlockQ8* y, size_t rows, size_t k) {
  const size_t nb = blocks_per_row(k), full = k / kBlock;
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * ldx;
    BlockQ8* yr = y + r * nb;
    for (size_t b = 0; b < full; ++b) quantize_block_q8(xr + b * kBlock, yr[b]);
    if (full < nb) {
      float tmp[kBlock] = {};
      std::memcpy(tmp, xr + full * kBlock, (k - full * kBlock) * sizeof(float));
      quantize_block_q8(tmp, yr[full]);
    }
  }
}

// A block's 32 int8 values as two int8x16 halves (elements 0..15, 16..31).
struct W2 {
  int8x16_t lo, hi;
};
// Raw Q4 nibbles u = q + 8 in [0, 15]; the dot policies remove the offset.
inline W2 load_nibbles(const BlockQ4& b) {
  const uint8x16_t q = vld1q_u8(b.qs);
  return {vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0F))), vreinterpretq_s8_u8(vshrq_n_u8(q, 4))};
}
inline W2 load_q8(const BlockQ8& b) { return {vld1q_s8(b.qs), vld1q_s8(b.qs + 16)}; }

// Register tile: RW weight rows x RM activation rows, y[m*ldy + r]. D provides
//   struct XQ; static XQ prep(const BlockQ8&);            activation block, prepared once
//   static W2 load(const BlockQ4&) / load(const BlockQ8&);
//   static int32x4_t dot(const BlockQ4*, const W2&, const XQ&) / dot(const BlockQ8*, ...)
// (4 int32 partial sums of the 32 products).
template <class D, class WB, int RW, int RM>
inline void tile(const WB* w, const BlockQ8* x, size_t nb, float* y, size_t ldy) {
  float32x4_t acc[RM][RW];
  for (int m = 0; m < RM; ++m)
    for (int r = 0; r < RW; ++r) acc[m][r] = vdupq_n_f32(0.0f);
  for (size_t b = 0; b < nb; ++b) {
    typename D::XQ xq[RM];
    float xd[RM];
    for (int m = 0; m < RM; ++m) {
      xq[m] = D::prep(x[m * nb + b]);
      xd[m] = x[m * nb + b].d;
    }
    for (int r = 0; r < RW; ++r) {
      const WB& wb = w[r * nb + b];
      const W2 wv = D::load(wb);
      for (int m = 0; m < RM; ++m)
        acc[m][r] = vfmaq_n_f32(acc[m][r], vcvtq_f32_s32(D::dot(&wb, wv, xq[m])), wb.d * xd[m]);
    }
  }
  for (int m = 0; m < RM; ++m)
    for (int r = 0; r < RW; ++r) y[m * ldy + r] = vaddvq_f32(acc[m][r]);
}

template <class D, class WB, int RW, int RM>
void gemm_driver(const WB* w, const BlockQ8* x, float* y, size_t ldy, size_t M, size_t k, size_t n0,
                 size_t n1) {
  const size_t nb = blocks_per_row(k);
  size_t n = n0;
  for (; n + RW <= n1; n += RW) {
    size_t m = 0;
    for (; m + RM <= M; m += RM) tile<D, WB, RW, RM>(w + n * nb, x + m * nb, nb, y + m * ldy + n, ldy);
    for (; m < M; ++m) tile<D, WB, RW, 1>(w + n * nb, x + m * nb, nb, y + m * ldy + n, ldy);
  }
  for (; n < n1; ++n) {
    size_t m = 0;
    for (; m + RM <= M; m += RM) tile<D, WB, 1, RM>(w + n * nb, x + m * nb, nb, y + m * ldy + n, ldy);
    for (; m < M; ++m) tile<D, WB, 1, 1>(w + n * nb, x + m * nb, nb, y + m * ldy + n, ldy);
  }
}

// Builds a table from the f32 kernels above and the integer dot D.
template <class D>
struct NeonGemm {
  static void gemv_q4(const BlockQ4* w, const BlockQ8* x, float* y, size_t k, size_t n0, size_t n1) {
    gemm_driver<D, BlockQ4, 4, 1>(w, x, y, 0, 1, k, n0, n1);
  }
  static void gemm_q4(const BlockQ4* w, const BlockQ8* x, float* y, size_t ldy, size_t m, size_t k,
                      size_t n0, size_t n1) {
    gemm_driver<D, BlockQ4, 4, 4>(w, x, y, ldy, m, k, n0, n1);
  }
  static void gemv_q8(const BlockQ8* w, const BlockQ8* x, float* y, size_t k, size_t n0, size_t n1) {
    gemm_driver<D, BlockQ8, 4, 1>(w, x, y, 0, 1, k, n0, n1);
  }
  static void gemm_q8(const BlockQ8* w, const BlockQ8* x, float* y, size_t ldy, size_t m, size_t k,
                      size_t n0, size_t n1) {
    gemm_driver<D, BlockQ8, 4, 4>(w, x, y, ldy, m, k, n0, n1);
  }
};

// ---- masked row softmax and its backward (Kernels::softmax_rows*), 4 keys per step ----
inline uint32x4_t softmax_visible4(const uint8_t* key_mask, size_t j, size_t lim) {
  const uint32_t idx0[4] = {0, 1, 2, 3};
  const uint32x4_t idx = vaddq_u32(vdupq_n_u32(static_cast<uint32_t>(j)), vld1q_u32(idx0));
  uint32x4_t vis = vcltq_u32(idx, vdupq_n_u32(static_cast<uint32_t>(lim)));
  if (key_mask) {
    uint32_t b4;
    std::memcpy(&b4, key_mask + j, 4);
    const uint32x4_t w = vmovl_u16(vget_low_u16(vmovl_u8(vreinterpret_u8_u32(vdup_n_u32(b4)))));
    vis = vandq_u32(vis, vcgtq_u32(w, vdupq_n_u32(0)));
  }
  return vis;
}

void softmax_rows_neon(float* x, size_t ld, size_t rows, size_t n, float scale, const uint8_t* key_mask, bool causal,
                       size_t pos0) {
  const float32x4_t vlow = vdupq_n_f32(-FLT_MAX);
  for (size_t r = 0; r < rows; ++r) {
    float* xr = x + r * ld;
    const size_t lim = causal ? min_sz(n, pos0 + r + 1) : n;
    float32x4_t vmax = vlow;
    size_t j = 0;
    for (; j + 4 <= n; j += 4) {
      const float32x4_t v = vbslq_f32(softmax_visible4(key_mask, j, lim), vmulq_n_f32(vld1q_f32(xr + j), scale), vlow);
      vst1q_f32(xr + j, v);
      vmax = vmaxq_f32(vmax, v);
    }
    float m = vmaxvq_f32(vmax);
    for (size_t t = j; t < n; ++t) {
      xr[t] = t < lim && (!key_mask || key_mask[t]) ? xr[t] * scale : -FLT_MAX;
      m = xr[t] > m ? xr[t] : m;
    }
    const float32x4_t vm = vdupq_n_f32(m);
    float32x4_t vsum = vdupq_n_f32(0.0f);
    for (j = 0; j + 4 <= n; j += 4) {
      const float32x4_t e = exp128(vsubq_f32(vld1q_f32(xr + j), vm));
      vst1q_f32(xr + j, e);
      vsum = vaddq_f32(vsum, e);
    }
    if (j < n) {
      float buf[4];
      for (size_t t = 0; t < 4; ++t) buf[t] = j + t < n ? xr[j + t] : -INFINITY;
      const float32x4_t e = exp128(vsubq_f32(vld1q_f32(buf), vm));
      vst1q_f32(buf, e);
      vsum = vaddq_f32(vsum, e);
      for (size_t t = 0; j + t < n; ++t) xr[j + t] = buf[t];
    }
    const float inv = 1.0f / vaddvq_f32(vsum);
    for (j = 0; j + 4 <= n; j += 4) vst1q_f32(xr + j, vmulq_n_f32(vld1q_f32(xr + j), inv));
    for (; j < n; ++j) xr[j] *= inv;
  }
}

void softmax_rows_backward_neon(const float* p, size_t ldp, float* g, size_t ldg, size_t rows, size_t n, float scale,
                                const uint8_t* key_mask, bool causal, size_t pos0) {
  for (size_t r = 0; r < rows; ++r) {
    const float* pr = p + r * ldp;
    float* gr = g + r * ldg;
    const size_t lim = causal ? min_sz(n, pos0 + r + 1) : n;
    const float D = NeonF32::dot(pr, gr, n);
    const float32x4_t vd = vdupq_n_f32(D);
    size_t j = 0;
    for (; j + 4 <= n; j += 4) {
      const float32x4_t v = vmulq_n_f32(vmulq_f32(vld1q_f32(pr + j), vsubq_f32(vld1q_f32(gr + j), vd)), scale);
      vst1q_f32(gr + j, vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(v), softmax_visible4(key_mask, j, lim))));
    }
    for (; j < n; ++j) gr[j] = j < lim && (!key_mask || key_mask[j]) ? pr[j] * (gr[j] - D) * scale : 0.0f;
  }
}

}  // namespace
}  // namespace nk::detail
