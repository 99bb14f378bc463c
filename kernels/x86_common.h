// Code shared by the x86 ISA files (each compiled with at least -mavx2 -mfma -mf16c): f32 vector
// primitives, the Q8 activation quantizer and the register-tiled integer GEMM driver. Internal
// linkage only, so each ISA file gets its own copy compiled with its own flags.
#pragma once
#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "attention_online.h"
#include "internal.h"

namespace nk::detail {
namespace {

inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float hmax8(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// ---- f32 primitives ----
struct Avx2F32 {
  static float dot(const float* a, const float* b, size_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
      s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
      s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = hsum8(_mm256_add_ps(s0, s1));
    for (; i < n; ++i) s += a[i] * b[i];
    return s;
  }
  static void axpy(float* y, float a, const float* x, size_t n) {
    const __m256 va = _mm256_set1_ps(a);
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
      _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; ++i) y[i] += a * x[i];
  }
  static void scal(float* y, float a, size_t n) {
    const __m256 va = _mm256_set1_ps(a);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_mul_ps(va, _mm256_loadu_ps(y + i)));
    for (; i < n; ++i) y[i] *= a;
  }
};

// e^x for 8 lanes, within 2 ulp for x in [-87.3, 88.3] (larger x clamps to 88.3; attention only
// evaluates x <= 0); e^x = 0 for x < -87.3
// (including -inf), which only drops terms below 2^-126 of the largest.
// Cephes expf: x = n ln2 + r, |r| <= ln2/2, e^r by a degree-6 polynomial, times 2^n.
inline __m256 exp256(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.3f), hi = _mm256_set1_ps(88.3f);
  const __m256 underflow = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(underflow, _mm256_mul_ps(y, _mm256_castsi256_ps(e)));
}

// Sums each of 8 vectors: lane j of the result is the sum of the lanes of d[j].
inline __m256 reduce8(const __m256* d) {
  const __m256 a = _mm256_hadd_ps(_mm256_hadd_ps(d[0], d[1]), _mm256_hadd_ps(d[2], d[3]));
  const __m256 b = _mm256_hadd_ps(_mm256_hadd_ps(d[4], d[5]), _mm256_hadd_ps(d[6], d[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
}

// Attention for head dims 8*NV: one query row at a time, keys in blocks of 8. The 8 scores of a
// block come from 8 lane-wise dot products reduced together; e^x is vectorized; the output row
// stays in NV registers across all keys (online softmax, rescaled when the running max grows).
template <int NV>
void attention_rows_avx2(const AttnArgs& a, size_t h0, size_t h1, size_t i0, size_t i1) {
  constexpr size_t hd = 8 * NV;
  const size_t group = a.hq / a.hkv;
  const size_t q_ld = a.q_ld ? a.q_ld : a.hq * hd;
  const size_t k_ld = a.k_ld ? a.k_ld : a.hkv * hd;
  const size_t v_ld = a.v_ld ? a.v_ld : a.hkv * hd;
  const size_t o_ld = a.out_ld ? a.out_ld : a.hq * hd;
  const float scale = a.scale != 0.0f ? a.scale : 1.0f / std::sqrt(static_cast<float>(hd));
  const __m256 vscale = _mm256_set1_ps(scale), ninf = _mm256_set1_ps(-INFINITY);
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  alignas(32) float pb[8];
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
        for (size_t j = 0; j < a.lk; ++j) Avx2F32::axpy(o, p, vh + j * v_ld, hd);
        continue;
      }
      __m256 acc[NV];  // q is read from L1 as memory operands: registers hold acc and scores
      for (int v = 0; v < NV; ++v) acc[v] = _mm256_setzero_ps();
      __m256 lsum = _mm256_setzero_ps();
      float m = -INFINITY;
      for (size_t j0 = 0; j0 < limit; j0 += 8) {
        const size_t nk = limit - j0 < 8 ? limit - j0 : 8;
        __m256 d[8];
        if (nk == 8) {
          for (int jj = 0; jj < 8; ++jj) d[jj] = _mm256_mul_ps(_mm256_loadu_ps(qi), _mm256_loadu_ps(kh + (j0 + jj) * k_ld));
          for (int v = 1; v < NV; ++v)
            for (int jj = 0; jj < 8; ++jj)
              d[jj] = _mm256_fmadd_ps(_mm256_loadu_ps(qi + 8 * v), _mm256_loadu_ps(kh + (j0 + jj) * k_ld + 8 * v), d[jj]);
        } else {
          for (size_t jj = 0; jj < 8; ++jj) {
            d[jj] = _mm256_setzero_ps();
            if (jj < nk) {
              const float* kj = kh + (j0 + jj) * k_ld;
              for (int v = 0; v < NV; ++v) d[jj] = _mm256_fmadd_ps(_mm256_loadu_ps(qi + 8 * v), _mm256_loadu_ps(kj + 8 * v), d[jj]);
            }
          }
        }
        __m256 s = _mm256_mul_ps(reduce8(d), vscale);
        // lanes past the visible prefix, and padded keys, are masked
        __m256 keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(nk)), lane));
        if (a.key_mask) {
          for (size_t jj = 0; jj < nk; ++jj) pb[jj] = a.key_mask[j0 + jj] ? 0.0f : -1.0f;
          for (size_t jj = nk; jj < 8; ++jj) pb[jj] = -1.0f;
          keep = _mm256_and_ps(keep, _mm256_cmp_ps(_mm256_load_ps(pb), _mm256_setzero_ps(), _CMP_EQ_OQ));
        }
        s = _mm256_blendv_ps(ninf, s, keep);
        const float bm = hmax8(s);
        if (bm == -INFINITY) continue;  // the whole block is masked
        if (bm > m) {
          const __m256 c = _mm256_set1_ps(std::exp(m - bm));  // 0 for the first visible block
          for (int v = 0; v < NV; ++v) acc[v] = _mm256_mul_ps(acc[v], c);
          lsum = _mm256_mul_ps(lsum, c);
          m = bm;
        }
        const __m256 p = exp256(_mm256_sub_ps(s, _mm256_set1_ps(m)));
        lsum = _mm256_add_ps(lsum, p);
        _mm256_store_ps(pb, p);
        for (size_t jj = 0; jj < nk; ++jj) {
          const __m256 pj = _mm256_broadcast_ss(&pb[jj]);
          const float* vj = vh + (j0 + jj) * v_ld;
          for (int v = 0; v < NV; ++v) acc[v] = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj + 8 * v), acc[v]);
        }
      }
      const __m256 inv = _mm256_set1_ps(1.0f / hsum8(lsum));
      for (int v = 0; v < NV; ++v) _mm256_storeu_ps(o + 8 * v, _mm256_mul_ps(acc[v], inv));
    }
  }
}

// Two query heads that share a kv head (GQA), one query row at a time, three passes: scores of
// both heads for all visible keys (each key row loaded once for both heads, 4 keys per block),
// softmax over the score rows (vectorized exp), then the weighted sum of V (each value row loaded
// once for both heads, in two halves of the head dim to keep both outputs in registers). K and V
// stream from L2 once per pair instead of once per head, which is what bounds a decode step.
template <int NV>
void attention_pair_avx2(const AttnArgs& a, size_t h, size_t i0, size_t i1) {
  constexpr size_t hd = 8 * NV;
  constexpr int NH = NV / 2 > 0 ? NV / 2 : 1;  // vectors per half of the head dim
  const size_t g = h / (a.hq / a.hkv);
  const size_t q_ld = a.q_ld ? a.q_ld : a.hq * hd;
  const size_t k_ld = a.k_ld ? a.k_ld : a.hkv * hd;
  const size_t v_ld = a.v_ld ? a.v_ld : a.hkv * hd;
  const size_t o_ld = a.out_ld ? a.out_ld : a.hq * hd;
  const float scale = a.scale != 0.0f ? a.scale : 1.0f / std::sqrt(static_cast<float>(hd));
  const float* kh = a.k + g * hd;
  const float* vh = a.v + g * hd;
  float* sa = scratch_floats(2 * (a.lk + 8), 0);
  float* sb = sa + a.lk + 8;
  for (size_t i = i0; i < i1; ++i) {
    const float* qa = a.q + i * q_ld + h * hd;
    const float* qb = qa + hd;
    float* oa = a.out + i * o_ld + h * hd;
    float* ob = oa + hd;
    const size_t limit = attn_key_limit(a, i);
    bool any = limit > 0;
    if (any && a.key_mask) {
      any = false;
      for (size_t j = 0; j < limit && !any; ++j) any = a.key_mask[j] != 0;
    }
    if (!any) {  // every key masked: uniform softmax over all Lk keys
      for (size_t t = 0; t < 2 * hd; ++t) oa[t] = 0.0f;
      if (a.lk == 0) continue;
      const float p = 1.0f / static_cast<float>(a.lk);
      for (size_t j = 0; j < a.lk; ++j) {
        Avx2F32::axpy(oa, p, vh + j * v_ld, hd);
        Avx2F32::axpy(ob, p, vh + j * v_ld, hd);
      }
      continue;
    }
    // 1. scores, 4 keys at a time: [a0..a3 | b0..b3] after the reduction
    const size_t l4 = limit / 4 * 4;
    for (size_t j0 = 0; j0 < l4; j0 += 4) {
      __m256 da[4], db[4];
      for (int jj = 0; jj < 4; ++jj) {
        da[jj] = _mm256_setzero_ps();
        db[jj] = _mm256_setzero_ps();
      }
      for (int v = 0; v < NV; ++v) {
        const __m256 qav = _mm256_loadu_ps(qa + 8 * v), qbv = _mm256_loadu_ps(qb + 8 * v);
        for (int jj = 0; jj < 4; ++jj) {
          const __m256 kv = _mm256_loadu_ps(kh + (j0 + jj) * k_ld + 8 * v);
          da[jj] = _mm256_fmadd_ps(qav, kv, da[jj]);
          db[jj] = _mm256_fmadd_ps(qbv, kv, db[jj]);
        }
      }
      // hadd twice: lanes [a0 a1 a2 a3 | a0' a1' a2' a3'] (low / high halves of each dot)
      const __m256 ra = _mm256_hadd_ps(_mm256_hadd_ps(da[0], da[1]), _mm256_hadd_ps(da[2], da[3]));
      const __m256 rb = _mm256_hadd_ps(_mm256_hadd_ps(db[0], db[1]), _mm256_hadd_ps(db[2], db[3]));
      const __m128 sa4 = _mm_add_ps(_mm256_castps256_ps128(ra), _mm256_extractf128_ps(ra, 1));
      const __m128 sb4 = _mm_add_ps(_mm256_castps256_ps128(rb), _mm256_extractf128_ps(rb, 1));
      _mm_storeu_ps(sa + j0, _mm_mul_ps(sa4, _mm_set1_ps(scale)));
      _mm_storeu_ps(sb + j0, _mm_mul_ps(sb4, _mm_set1_ps(scale)));
    }
    for (size_t j = l4; j < limit; ++j) {
      sa[j] = Avx2F32::dot(qa, kh + j * k_ld, hd) * scale;
      sb[j] = Avx2F32::dot(qb, kh + j * k_ld, hd) * scale;
    }
    if (a.key_mask)
      for (size_t j = 0; j < limit; ++j)
        if (!a.key_mask[j]) sa[j] = sb[j] = -INFINITY;
    // 2. softmax numerators; pad to a multiple of 8 with -inf (e^-inf = 0)
    const size_t l8 = (limit + 7) / 8 * 8;
    for (size_t j = limit; j < l8; ++j) sa[j] = sb[j] = -INFINITY;
    __m256 ma = _mm256_set1_ps(-INFINITY), mb = ma;
    for (size_t j = 0; j < l8; j += 8) {
      ma = _mm256_max_ps(ma, _mm256_loadu_ps(sa + j));
      mb = _mm256_max_ps(mb, _mm256_loadu_ps(sb + j));
    }
    const __m256 mav = _mm256_set1_ps(hmax8(ma)), mbv = _mm256_set1_ps(hmax8(mb));
    __m256 la = _mm256_setzero_ps(), lb = _mm256_setzero_ps();
    for (size_t j = 0; j < l8; j += 8) {
      const __m256 pa = exp256(_mm256_sub_ps(_mm256_loadu_ps(sa + j), mav));
      const __m256 pb = exp256(_mm256_sub_ps(_mm256_loadu_ps(sb + j), mbv));
      _mm256_storeu_ps(sa + j, pa);
      _mm256_storeu_ps(sb + j, pb);
      la = _mm256_add_ps(la, pa);
      lb = _mm256_add_ps(lb, pb);
    }
    const __m256 ia = _mm256_set1_ps(1.0f / hsum8(la)), ib = _mm256_set1_ps(1.0f / hsum8(lb));
    // 3. weighted sum of V, each half of the head dim in registers for both heads
    for (int half = 0; half < (NV + NH - 1) / NH; ++half) {
      const int v0 = half * NH, nv = NV - v0 < NH ? NV - v0 : NH;
      __m256 acc_a[NH], acc_b[NH];
      for (int v = 0; v < NH; ++v) {
        acc_a[v] = _mm256_setzero_ps();
        acc_b[v] = _mm256_setzero_ps();
      }
      for (size_t j = 0; j < limit; ++j) {
        if (sa[j] == 0.0f && sb[j] == 0.0f) continue;  // masked (or negligible) for both heads
        const __m256 pa = _mm256_broadcast_ss(sa + j), pb = _mm256_broadcast_ss(sb + j);
        const float* vj = vh + j * v_ld + 8 * v0;
        for (int v = 0; v < nv; ++v) {
          const __m256 vv = _mm256_loadu_ps(vj + 8 * v);
          acc_a[v] = _mm256_fmadd_ps(pa, vv, acc_a[v]);
          acc_b[v] = _mm256_fmadd_ps(pb, vv, acc_b[v]);
        }
      }
      for (int v = 0; v < nv; ++v) {
        _mm256_storeu_ps(oa + 8 * (v0 + v), _mm256_mul_ps(acc_a[v], ia));
        _mm256_storeu_ps(ob + 8 * (v0 + v), _mm256_mul_ps(acc_b[v], ib));
      }
    }
  }
}

template <int NV>
void attention_heads_avx2(const AttnArgs& a, size_t h0, size_t h1, size_t i0, size_t i1) {
  const size_t group = a.hq / a.hkv;
  size_t h = h0;
  while (h < h1) {
    // a pair of heads on the same kv head shares the K/V passes
    if (group >= 2 && h + 1 < h1 && h / group == (h + 1) / group) {
      attention_pair_avx2<NV>(a, h, i0, i1);
      h += 2;
    } else {
      attention_rows_avx2<NV>(a, h, h + 1, i0, i1);
      h += 1;
    }
  }
}

void attention_avx2(const AttnArgs& a, size_t h0, size_t h1, size_t i0, size_t i1) {
  switch (a.hd) {
    case 8: return attention_heads_avx2<1>(a, h0, h1, i0, i1);
    case 16: return attention_heads_avx2<2>(a, h0, h1, i0, i1);
    case 32: return attention_heads_avx2<4>(a, h0, h1, i0, i1);
    case 64: return attention_heads_avx2<8>(a, h0, h1, i0, i1);
    default: return attention_online<Avx2F32>(a, h0, h1, i0, i1);  // any other head size
  }
}

void rmsnorm_avx2(const float* x, const float* scale, float* y, size_t rows, size_t dim, float eps) {
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* yr = y + r * dim;
    const float ss = Avx2F32::dot(xr, xr, dim);
    const float inv = 1.0f / std::sqrt(ss / static_cast<float>(dim) + eps);
    const __m256 vinv = _mm256_set1_ps(inv), one = _mm256_set1_ps(1.0f);
    size_t t = 0;
    for (; t + 8 <= dim; t += 8) {
      const __m256 s1 = _mm256_add_ps(one, _mm256_loadu_ps(scale + t));
      _mm256_storeu_ps(yr + t, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(xr + t), vinv), s1));
    }
    for (; t < dim; ++t) yr[t] = xr[t] * inv * (1.0f + scale[t]);
  }
}

void rope_avx2(float* x, size_t rows, size_t ld, size_t heads, size_t hd, size_t pos0, float theta) {
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
      for (; i + 8 <= half; i += 8) {
        const __m256 x1 = _mm256_loadu_ps(x1p + i), x2 = _mm256_loadu_ps(x2p + i);
        const __m256 c = _mm256_loadu_ps(cs + i), s = _mm256_loadu_ps(sn + i);
        _mm256_storeu_ps(x1p + i, _mm256_fmsub_ps(x1, c, _mm256_mul_ps(x2, s)));
        _mm256_storeu_ps(x2p + i, _mm256_fmadd_ps(x2, c, _mm256_mul_ps(x1, s)));
      }
      for (; i < half; ++i) {
        const float x1 = x1p[i], x2 = x2p[i];
        x1p[i] = x1 * cs[i] - x2 * sn[i];
        x2p[i] = x2 * cs[i] + x1 * sn[i];
      }
    }
  }
}

void gated_residual_avx2(float* x, const float* y, float gate, size_t n) {
  Avx2F32::axpy(x, sigmoid(gate), y, n);
}

// ---- activations -> Q8 (bit-identical to the reference: same max, same x * (1/d), and
// cvtps rounds half to even like nearbyint) ----
inline void quantize_block_q8(const float* xb, BlockQ8& out) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 v[4];
  for (int i = 0; i < 4; ++i) v[i] = _mm256_loadu_ps(xb + 8 * i);
  __m256 mx = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
                            _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));
  const float amax = hmax8(mx);
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  out.d = d;
  const __m256 vid = _mm256_set1_ps(id);
  __m256i q[4];
  for (int i = 0; i < 4; ++i) q[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], vid));
  // packs interleave 128-bit lanes; the permute restores element order.
  const __m256i p16a = _mm256_packs_epi32(q[0], q[1]), p16b = _mm256_packs_epi32(q[2], q[3]);
  const __m256i p8 = _mm256_packs_epi16(p16a, p16b);
  const __m256i fixed = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out.qs), fixed);
}

void quantize_q8_avx2(const float* x, size_t ldx, BlockQ8* y, size_t rows, size_t k) {
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

// ---- integer GEMM driver ----
// P (the ISA policy) provides:
//   struct XQ;                               activation block prepared once per tile
//   static XQ prep(const BlockQ8&);
//   static __m256i load(const BlockQ4&) / load(const BlockQ8&);  weight block in a register
//   static __m256i dot(const BlockQ4*, __m256i w, const XQ&);   8 int32 partial sums
//   static __m256i dot(const BlockQ8*, __m256i w, const XQ&);
// A tile computes RW weight rows x RM activation rows; y[m*ldy + r].
inline __m256i unpack_q4(const BlockQ4& b) {
  const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs));
  const __m256i u = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);  // low lane: j, high lane: j+16
  return _mm256_and_si256(u, _mm256_set1_epi8(0x0F));
}

template <class P, class WB, int RW, int RM>
inline void tile(const WB* w, const BlockQ8* x, size_t nb, float* y, size_t ldy) {
  __m256 acc[RM][RW];
  for (int m = 0; m < RM; ++m)
    for (int r = 0; r < RW; ++r) acc[m][r] = _mm256_setzero_ps();
  for (size_t b = 0; b < nb; ++b) {
    typename P::XQ xq[RM];
    __m256 xd[RM];
    for (int m = 0; m < RM; ++m) {
      xq[m] = P::prep(x[m * nb + b]);
      xd[m] = _mm256_set1_ps(x[m * nb + b].d);
    }
    for (int r = 0; r < RW; ++r) {
      const WB& wb = w[r * nb + b];
      const __m256i wv = P::load(wb);
      const __m256 wd = _mm256_broadcast_ss(&wb.d);  // a load, no shuffle
      for (int m = 0; m < RM; ++m) {
        const __m256i v = P::dot(&wb, wv, xq[m]);
        acc[m][r] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(v), xd[m]), wd, acc[m][r]);
      }
    }
  }
  for (int m = 0; m < RM; ++m)
    for (int r = 0; r < RW; ++r) y[m * ldy + r] = hsum8(acc[m][r]);
}

template <class P, class WB, int RW, int RM>
void gemm_driver(const WB* w, const BlockQ8* x, float* y, size_t ldy, size_t M, size_t k, size_t n0,
                 size_t n1) {
  const size_t nb = blocks_per_row(k);
  size_t n = n0;
  for (; n + RW <= n1; n += RW) {
    size_t m = 0;
    for (; m + RM <= M; m += RM) tile<P, WB, RW, RM>(w + n * nb, x + m * nb, nb, y + m * ldy + n, ldy);
    for (; m < M; ++m) tile<P, WB, RW, 1>(w + n * nb, x + m * nb, nb, y + m * ldy + n, ldy);
  }
  for (; n < n1; ++n) {
    size_t m = 0;
    for (; m + RM <= M; m += RM) tile<P, WB, 1, RM>(w + n * nb, x + m * nb, nb, y + m * ldy + n, ldy);
    for (; m < M; ++m) tile<P, WB, 1, 1>(w + n * nb, x + m * nb, nb, y + m * ldy + n, ldy);
  }
}

// ---- 8-row tiles: the main GEMV/GEMM path ----
// Q4: two rows' 16-byte nibble arrays are loaded into one register ([row a | row b]); the low
// and high nibbles then hold elements 0..15 and 16..31 of both rows, dotted against activations
// broadcast to both lanes (XP.lo = [x0..15 | x0..15], XP.hi = [x16..31 | x16..31]). Each pair
// gives [row a: 4 int32 | row b: 4 int32]; three hadds reduce 4 pairs to one vector of the 8 row
// sums (order 0,2,4,6,1,3,5,7), converted and scaled with one FMA per block. The weight scales of
// the 8 rows come from one gather. P provides:
//   struct XP { __m256i lo, hi, c; };  static void prep_pair(const BlockQ8&, XP*);
//   static __m256i dot_pair(__m256i ulo, __m256i uhi, const XP&);
// (The same reduction for Q8 weights, one register per row, measured slower than gemm_driver's
// 4-row tiles on Zen 4: hadds cost 3 uops each and Q8 has no unpack to share.)

constexpr int kTileRows = 8;

// Thread-local scratch for prepared activations, 32-byte aligned.
template <class T>
inline T* scratch_aligned(size_t n) {
  float* f = scratch_floats((n * sizeof(T) + 64) / sizeof(float), 3);
  return reinterpret_cast<T*>((reinterpret_cast<uintptr_t>(f) + 31) & ~uintptr_t{31});
}

template <class P, int RM>
inline void tile8_q4(const BlockQ4* w, size_t nb, const typename P::XP* xp, const BlockQ8* x,
                     float* y, size_t ldy) {
  // row order of the reduced vector, as indices of d in floats from &w[b].d (a block is 5 floats)
  const int rs = static_cast<int>(nb * 5);
  const __m256i gidx = _mm256_setr_epi32(0, 2 * rs, 4 * rs, 6 * rs, rs, 3 * rs, 5 * rs, 7 * rs);
  const __m256i mask = _mm256_set1_epi8(0x0F);
  __m256 acc[RM];
  for (int m = 0; m < RM; ++m) acc[m] = _mm256_setzero_ps();
  for (size_t b = 0; b < nb; ++b) {
    const __m256 wd = _mm256_i32gather_ps(&w[b].d, gidx, 4);
    __m256i ulo[4], uhi[4];
    for (int p = 0; p < 4; ++p) {
      const __m256i q = _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(w[(2 * p + 1) * nb + b].qs),
                                            reinterpret_cast<const __m128i*>(w[2 * p * nb + b].qs));
      ulo[p] = _mm256_and_si256(q, mask);
      uhi[p] = _mm256_and_si256(_mm256_srli_epi16(q, 4), mask);
    }
    for (int m = 0; m < RM; ++m) {
      const typename P::XP& xq = xp[m * nb + b];
      __m256i v[4];
      for (int p = 0; p < 4; ++p) v[p] = P::dot_pair(ulo[p], uhi[p], xq);
      const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
      acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(h), _mm256_mul_ps(wd, _mm256_set1_ps(x[m * nb + b].d)), acc[m]);
    }
  }
  const __m256i unperm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int m = 0; m < RM; ++m)
    _mm256_storeu_ps(y + m * ldy, _mm256_permutevar8x32_ps(acc[m], unperm));
}

// Rows [n0, n1): 8-row tiles, the remainder with the small tiles of gemm_driver.
// Activations are prepared in chunks of kMChunk rows (kept in L1/L2 while all weight tiles pass).
template <class P, int RM>
void gemm_q4_tiled(const BlockQ4* w, const BlockQ8* x, float* y, size_t ldy, size_t M, size_t k,
                   size_t n0, size_t n1) {
  constexpr size_t kMChunk = 16;
  const size_t nb = blocks_per_row(k);
  const size_t n8 = n0 + (n1 - n0) / kTileRows * kTileRows;
  if (n8 > n0) {
    typename P::XP* xp = scratch_aligned<typename P::XP>((M < kMChunk ? M : kMChunk) * nb);
    for (size_t m0 = 0; m0 < M; m0 += kMChunk) {
      const size_t mn = M - m0 < kMChunk ? M - m0 : kMChunk;
      const BlockQ8* xc = x + m0 * nb;
      for (size_t i = 0; i < mn * nb; ++i) P::prep_pair(xc[i], &xp[i]);
      for (size_t n = n0; n < n8; n += kTileRows) {
        size_t m = 0;
        for (; m + RM <= mn; m += RM)
          tile8_q4<P, RM>(w + n * nb, nb, xp + m * nb, xc + m * nb, y + (m0 + m) * ldy + n, ldy);
        for (; m < mn; ++m) tile8_q4<P, 1>(w + n * nb, nb, xp + m * nb, xc + m * nb, y + (m0 + m) * ldy + n, ldy);
      }
    }
  }
  if (n8 < n1) gemm_driver<P, BlockQ4, 4, 1>(w, x, y, ldy, M, k, n8, n1);
}

// ---- masked row softmax and its backward (Kernels::softmax_rows*), 8 keys per step ----
// Visible lanes j..j+7 (j + 8 <= n): j < lim and key_mask[j] != 0.
inline __m256 softmax_visible8(const uint8_t* key_mask, size_t j, size_t lim) {
  const __m256i idx = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(j)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  __m256 vis = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(lim)), idx));
  if (key_mask) {
    const __m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(key_mask + j)));
    vis = _mm256_and_ps(vis, _mm256_castsi256_ps(_mm256_cmpgt_epi32(b, _mm256_setzero_si256())));
  }
  return vis;
}

void softmax_rows_avx2(float* x, size_t ld, size_t rows, size_t n, float scale, const uint8_t* key_mask, bool causal,
                       size_t pos0) {
  const __m256 vs = _mm256_set1_ps(scale), vlow = _mm256_set1_ps(-FLT_MAX);
  for (size_t r = 0; r < rows; ++r) {
    float* xr = x + r * ld;
    const size_t lim = causal ? min_sz(n, pos0 + r + 1) : n;
    // scaled and masked scores, their max
    __m256 vmax = vlow;
    size_t j = 0;
    for (; j + 8 <= n; j += 8) {
      const __m256 v = _mm256_blendv_ps(vlow, _mm256_mul_ps(_mm256_loadu_ps(xr + j), vs), softmax_visible8(key_mask, j, lim));
      _mm256_storeu_ps(xr + j, v);
      vmax = _mm256_max_ps(vmax, v);
    }
    float m = hmax8(vmax);
    for (size_t t = j; t < n; ++t) {
      xr[t] = t < lim && (!key_mask || key_mask[t]) ? xr[t] * scale : -FLT_MAX;
      m = xr[t] > m ? xr[t] : m;
    }
    // exp(s - m) and the sum; masked lanes give exp(-FLT_MAX - m) = 0 unless every key is masked
    const __m256 vm = _mm256_set1_ps(m);
    __m256 vsum = _mm256_setzero_ps();
    for (j = 0; j + 8 <= n; j += 8) {
      const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(xr + j), vm));
      _mm256_storeu_ps(xr + j, e);
      vsum = _mm256_add_ps(vsum, e);
    }
    if (j < n) {  // the tail through the same exp, padded with -inf (exp = 0)
      alignas(32) float buf[8];
      for (size_t t = 0; t < 8; ++t) buf[t] = j + t < n ? xr[j + t] : -INFINITY;
      const __m256 e = exp256(_mm256_sub_ps(_mm256_load_ps(buf), vm));
      _mm256_store_ps(buf, e);
      vsum = _mm256_add_ps(vsum, e);
      for (size_t t = 0; j + t < n; ++t) xr[j + t] = buf[t];
    }
    const __m256 inv = _mm256_set1_ps(1.0f / hsum8(vsum));
    for (j = 0; j + 8 <= n; j += 8) _mm256_storeu_ps(xr + j, _mm256_mul_ps(_mm256_loadu_ps(xr + j), inv));
    for (; j < n; ++j) xr[j] *= _mm256_cvtss_f32(inv);
  }
}

void softmax_rows_backward_avx2(const float* p, size_t ldp, float* g, size_t ldg, size_t rows, size_t n, float scale,
                                const uint8_t* key_mask, bool causal, size_t pos0) {
  const __m256 vs = _mm256_set1_ps(scale);
  for (size_t r = 0; r < rows; ++r) {
    const float* pr = p + r * ldp;
    float* gr = g + r * ldg;
    const size_t lim = causal ? min_sz(n, pos0 + r + 1) : n;
    const float D = Avx2F32::dot(pr, gr, n);
    const __m256 vd = _mm256_set1_ps(D);
    size_t j = 0;
    for (; j + 8 <= n; j += 8) {
      const __m256 v = _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(pr + j), _mm256_sub_ps(_mm256_loadu_ps(gr + j), vd)), vs);
      _mm256_storeu_ps(gr + j, _mm256_and_ps(v, softmax_visible8(key_mask, j, lim)));
    }
    for (; j < n; ++j) gr[j] = j < lim && (!key_mask || key_mask[j]) ? pr[j] * (gr[j] - D) * scale : 0.0f;
  }
}

}  // namespace
}  // namespace nk::detail
