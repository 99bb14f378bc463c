#include "train/ops.h"

#include <algorithm>
#include <cmath>

#include "nk/kernels.h"
#include "nk/quant.h"
#include "nk/threadpool.h"
#include "train/matmul.h"

namespace needle::train {

// ---------------------------------------------------------------------------------------------
// Embedding

void embedding_forward(float* out, const int32_t* tokens, int T, const float* E, int d) {
  const float s = std::sqrt((float)d);
  for (int t = 0; t < T; ++t) {
    const float* e = E + (size_t)tokens[t] * d;
    float* o = out + (size_t)t * d;
    for (int i = 0; i < d; ++i) o[i] = e[i] * s;
  }
}

void embedding_backward(float* dE, const float* dout, const int32_t* tokens, int T, int d) {
  const float s = std::sqrt((float)d);
  for (int t = 0; t < T; ++t) {
    float* g = dE + (size_t)tokens[t] * d;
    const float* dy = dout + (size_t)t * d;
    for (int i = 0; i < d; ++i) g[i] += dy[i] * s;
  }
}

// ---------------------------------------------------------------------------------------------
// Row blocks for the element-wise passes

namespace {

// About this many floats per block: large enough that waking the pool pays, small enough for
// ~2 blocks per thread at the 26M shape. The block size depends on the row width only, never on
// the thread count.
constexpr size_t kBlockElems = size_t(1) << 16;

size_t block_rows(size_t n) { return std::max<size_t>(1, kBlockElems / std::max<size_t>(1, n)); }

// fn(r0, r1, block) for consecutive blocks [r0, r1) of `per` rows covering [0, rows).
template <class F>
void for_blocks(nk::ThreadPool* pool, size_t rows, size_t per, F&& fn) {
  const size_t blocks = (rows + per - 1) / per;
  auto task = [&](size_t b, unsigned) { fn(b * per, std::min(rows, (b + 1) * per), b); };
  if (pool && pool->size() > 1 && blocks > 1) pool->parallel_for(blocks, task);
  else for (size_t b = 0; b < blocks; ++b) task(b, 0);
}

// dscale [n] += the per-block partials [blocks, n], in block order.
void add_partials(float* dscale, const std::vector<float>& part, size_t blocks, size_t n) {
  for (size_t b = 0; b < blocks; ++b)
    for (size_t i = 0; i < n; ++i) dscale[i] += part[b * n + i];
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// ZCRMSNorm

void rmsnorm_forward(float* out, float* rstd, const float* x, const float* scale, int rows, int n,
                     nk::ThreadPool* pool) {
  for_blocks(pool, (size_t)rows, block_rows((size_t)n), [&](size_t r0, size_t r1, size_t) {
    for (size_t r = r0; r < r1; ++r) {
      const float* xr = x + r * n;
      float* o = out + r * n;
      double ss = 0;
      for (int i = 0; i < n; ++i) ss += (double)xr[i] * xr[i];
      const float inv = (float)(1.0 / std::sqrt(ss / n + 1e-6));
      rstd[r] = inv;
      for (int i = 0; i < n; ++i) o[i] = (1.0f + scale[i]) * (xr[i] * inv);
    }
  });
}

namespace {

// Both backward forms: dx += (dout in) or d = (in place) the input gradient; dscale partials.
template <bool kInPlace>
void rmsnorm_backward_impl(float* dx, float* dscale, const float* dout, const float* x, const float* rstd,
                           const float* scale, int rows, int n, nk::ThreadPool* pool) {
  const size_t per = block_rows((size_t)n), blocks = ((size_t)rows + per - 1) / per;
  std::vector<float> part(dscale ? blocks * (size_t)n : 0, 0.0f);
  for_blocks(pool, (size_t)rows, per, [&](size_t r0, size_t r1, size_t b) {
    float* ds = dscale ? part.data() + b * n : nullptr;
    for (size_t r = r0; r < r1; ++r) {
      const float* xr = x + r * n;
      const float* dy = dout + r * n;
      float* dxr = dx + r * n;
      const float inv = rstd[r];
      // g = dy * (1 + scale);  dx = inv * (g - x * inv^2 * mean(g * x))
      double gx = 0;
      for (int i = 0; i < n; ++i) gx += (double)dy[i] * (1.0f + scale[i]) * xr[i];
      const float c = (float)(gx / n) * inv * inv;
      if (ds)
        for (int i = 0; i < n; ++i) ds[i] += dy[i] * xr[i] * inv;
      for (int i = 0; i < n; ++i) {
        const float v = inv * (dy[i] * (1.0f + scale[i]) - xr[i] * c);
        if constexpr (kInPlace) dxr[i] = v;
        else dxr[i] += v;
      }
    }
  });
  if (dscale) add_partials(dscale, part, blocks, (size_t)n);
}

}  // namespace

void rmsnorm_backward(float* dx, float* dscale, const float* dout, const float* x, const float* rstd,
                      const float* scale, int rows, int n, nk::ThreadPool* pool) {
  rmsnorm_backward_impl<false>(dx, dscale, dout, x, rstd, scale, rows, n, pool);
}

void rmsnorm_backward_inplace(float* d, float* dscale, const float* x, const float* rstd, const float* scale, int rows,
                              int n, nk::ThreadPool* pool) {
  rmsnorm_backward_impl<true>(d, dscale, d, x, rstd, scale, rows, n, pool);
}

// ---------------------------------------------------------------------------------------------
// RoPE

namespace {

// cos/sin of angle = pos * freq_i, computed in f32 as the original (and ref::rope) does.
void rope_table(int L, int hd, double theta, std::vector<float>& cs, std::vector<float>& sn) {
  const int half = hd / 2;
  cs.resize((size_t)L * half);
  sn.resize((size_t)L * half);
  for (int i = 0; i < half; ++i) {
    const float freq = (float)(1.0 / std::pow(theta, (2.0 * i) / hd));
    for (int t = 0; t < L; ++t) {
      const float ang = (float)t * freq;
      cs[(size_t)t * half + i] = std::cos(ang);
      sn[(size_t)t * half + i] = std::sin(ang);
    }
  }
}

// Rotates [x1, x2] by +angle (forward) or -angle (backward: the transpose of the rotation).
void rope_apply(float* x, int B, int L, int heads, int hd, double theta, float sign, nk::ThreadPool* pool) {
  std::vector<float> cs, sn;
  rope_table(L, hd, theta, cs, sn);
  const int half = hd / 2;
  const size_t width = (size_t)heads * hd;
  for_blocks(pool, (size_t)B * L, block_rows(width), [&](size_t r0, size_t r1, size_t) {
    for (size_t r = r0; r < r1; ++r) {
      const size_t t = r % (size_t)L;
      const float* c = cs.data() + t * half;
      const float* s = sn.data() + t * half;
      for (int h = 0; h < heads; ++h) {
        float* v = x + r * width + (size_t)h * hd;
        for (int i = 0; i < half; ++i) {
          const float x1 = v[i], x2 = v[i + half], si = sign * s[i];
          v[i] = x1 * c[i] - x2 * si;
          v[i + half] = x2 * c[i] + x1 * si;
        }
      }
    }
  });
}

}  // namespace

void rope_forward(float* x, int B, int L, int heads, int hd, double theta, nk::ThreadPool* pool) {
  rope_apply(x, B, L, heads, hd, theta, 1.0f, pool);
}
void rope_backward(float* dx, int B, int L, int heads, int hd, double theta, nk::ThreadPool* pool) {
  rope_apply(dx, B, L, heads, hd, theta, -1.0f, pool);
}

// ---------------------------------------------------------------------------------------------
// Attention. One task per (sequence, kv head); it runs the query heads that share the kv head,
// so dk / dv of that kv head are written by one thread only (deterministic). Each head is three
// small GEMMs: S = Q K^T, P = softmax(mask(S * scale)), O = P V.

namespace {

struct HeadView {  // strided views of one head of one sequence
  const float *q, *k, *v;
  size_t ldq, ldk;
};

// P [Lq, Lk] = softmax(mask(Q K^T * scale)); K [Lk, hd] read in place with row stride ldk. The
// masked softmax is the kernels' (nk::Kernels::softmax_rows: the same definition as the scalar
// reference, vectorized exp; tests/kernels compare the two).
void head_probs(float* P, const float* q, size_t ldq, const float* kb, size_t ldk, const uint8_t* key_valid,
                const AttnShape& s) {
  const int Lq = s.Lq, Lk = s.Lk;
  const float scale = 1.0f / std::sqrt((float)s.hd);
  gemm_strided(Lq, Lk, s.hd, q, ldq, 1, kb, 1, ldk, P, (size_t)Lk, /*accumulate=*/false, nullptr);
  nk::kernels().softmax_rows(P, (size_t)Lk, (size_t)Lq, (size_t)Lk, scale, key_valid, s.causal, 0);
}

}  // namespace

void attention_forward(float* out, const float* q, const float* k, const float* v, const uint8_t* key_valid,
                       const AttnShape& s, nk::ThreadPool* pool) {
  const int group = s.H / s.Hkv;
  const size_t ldq = (size_t)s.H * s.hd, ldk = (size_t)s.Hkv * s.hd;
  auto task = [&](size_t t, unsigned) {
    const int b = (int)(t / s.Hkv), kh = (int)(t % s.Hkv);
    thread_local std::vector<float> P;  // per-thread scratch, reused across calls
    P.resize((size_t)s.Lq * s.Lk);
    const float* kb = k + (size_t)b * s.Lk * ldk + (size_t)kh * s.hd;
    const float* vb = v + (size_t)b * s.Lk * ldk + (size_t)kh * s.hd;
    const uint8_t* kv_mask = key_valid ? key_valid + (size_t)b * s.Lk : nullptr;
    for (int h = kh * group; h < (kh + 1) * group; ++h) {
      const float* qh = q + (size_t)b * s.Lq * ldq + (size_t)h * s.hd;
      float* oh = out + (size_t)b * s.Lq * ldq + (size_t)h * s.hd;
      head_probs(P.data(), qh, ldq, kb, ldk, kv_mask, s);
      gemm(s.Lq, s.hd, s.Lk, P.data(), (size_t)s.Lk, 1, vb, ldk, oh, ldq, false);  // O = P V
    }
  };
  const size_t tasks = (size_t)s.B * s.Hkv;
  if (pool && pool->size() > 1 && tasks > 1) pool->parallel_for(tasks, task);
  else for (size_t t = 0; t < tasks; ++t) task(t, 0);
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const uint8_t* key_valid, const AttnShape& s, nk::ThreadPool* pool) {
  const int group = s.H / s.Hkv, Lq = s.Lq, Lk = s.Lk, hd = s.hd;
  const size_t ldq = (size_t)s.H * hd, ldk = (size_t)s.Hkv * hd;
  const float scale = 1.0f / std::sqrt((float)hd);
  auto task = [&](size_t t, unsigned) {
    const int b = (int)(t / s.Hkv), kh = (int)(t % s.Hkv);
    thread_local std::vector<float> P, dP;  // per-thread scratch, reused across calls
    P.resize((size_t)Lq * Lk);
    dP.resize((size_t)Lq * Lk);
    const size_t kv_off = (size_t)b * Lk * ldk + (size_t)kh * hd;
    const float *kb = k + kv_off, *vb = v + kv_off;
    float *dkb = dk + kv_off, *dvb = dv + kv_off;
    const uint8_t* kv_mask = key_valid ? key_valid + (size_t)b * Lk : nullptr;
    for (int h = kh * group; h < (kh + 1) * group; ++h) {
      const size_t q_off = (size_t)b * Lq * ldq + (size_t)h * hd;
      const float *qh = q + q_off, *doh = dout + q_off;
      float* dqh = dq + q_off;
      head_probs(P.data(), qh, ldq, kb, ldk, kv_mask, s);
      // dP = dO V^T (V read in place)
      gemm_strided(Lq, Lk, hd, doh, ldq, 1, vb, 1, ldk, dP.data(), (size_t)Lk, false, nullptr);
      // dS = P * (dP - sum_j P dP) (softmax backward), times the score scale; 0 where masked.
      nk::kernels().softmax_rows_backward(P.data(), (size_t)Lk, dP.data(), (size_t)Lk, (size_t)Lq, (size_t)Lk, scale,
                                          kv_mask, s.causal, 0);
      gemm(Lk, hd, Lq, P.data(), 1, (size_t)Lk, doh, ldq, dvb, ldk, true);   // dV += P^T dO
      gemm(Lq, hd, Lk, dP.data(), (size_t)Lk, 1, kb, ldk, dqh, ldq, true);   // dQ += dS K
      gemm(Lk, hd, Lq, dP.data(), 1, (size_t)Lk, qh, ldq, dkb, ldk, true);   // dK += dS^T Q
    }
  };
  const size_t tasks = (size_t)s.B * s.Hkv;
  if (pool && pool->size() > 1 && tasks > 1) pool->parallel_for(tasks, task);
  else for (size_t t = 0; t < tasks; ++t) task(t, 0);
}

// ---------------------------------------------------------------------------------------------
// Dropout and the gated residual

namespace {
uint64_t mix64(uint64_t z) {  // splitmix64's finalizer
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
float sigmoid(float g) { return 1.0f / (1.0f + std::exp(-g)); }
}  // namespace

float Dropout::factor(size_t i) const {
  if (p <= 0.0f) return 1.0f;
  const double u = (double)(mix64(key ^ mix64(i)) >> 11) * 0x1.0p-53;  // uniform in [0, 1)
  return u < p ? 0.0f : 1.0f / (1.0f - p);
}

void fake_quantize_rows(float* w, size_t rows, size_t cols) {
  thread_local std::vector<nk::BlockQ4> blk;
  blk.resize(nk::blocks_per_row(cols));
  for (size_t r = 0; r < rows; ++r) {
    nk::quantize_row_q4(w + r * cols, blk.data(), cols);
    nk::dequantize_row_q4(blk.data(), w + r * cols, cols);
  }
}

void residual_forward(float* x, const float* y, float gate, const Dropout& drop, size_t n, nk::ThreadPool* pool) {
  const float g = sigmoid(gate);
  for_blocks(pool, n, kBlockElems, [&](size_t i0, size_t i1, size_t) {
    if (!drop.active()) {
      for (size_t i = i0; i < i1; ++i) x[i] += g * y[i];
    } else {
      for (size_t i = i0; i < i1; ++i) x[i] += g * (y[i] * drop.factor(i));
    }
  });
}

void residual_backward(float* dy, float* dgate, const float* dout, const float* y, float gate, const Dropout& drop,
                       size_t n, nk::ThreadPool* pool) {
  const float g = sigmoid(gate);
  const size_t blocks = (n + kBlockElems - 1) / kBlockElems;
  std::vector<double> part(dgate ? blocks : 0, 0.0);  // sum(dout * dropout(y)) per block
  for_blocks(pool, n, kBlockElems, [&](size_t i0, size_t i1, size_t b) {
    if (!dgate) {  // frozen gate: only the branch's gradient
      for (size_t i = i0; i < i1; ++i) dy[i] += g * (dout[i] * (drop.active() ? drop.factor(i) : 1.0f));
      return;
    }
    double dg = 0;
    for (size_t i = i0; i < i1; ++i) {
      const float f = drop.active() ? drop.factor(i) : 1.0f;
      dy[i] += g * (dout[i] * f);
      dg += (double)dout[i] * (y[i] * f);
    }
    part[b] = dg;
  });
  if (!dgate) return;
  double dg = 0;
  for (double v : part) dg += v;
  *dgate += (float)(dg * g * (1.0f - g));
}

// ---------------------------------------------------------------------------------------------
// Contrastive head pieces

void mean_pool_forward(float* out, const float* x, const uint8_t* valid, int B, int L, int d) {
  for (int b = 0; b < B; ++b) {
    float* o = out + (size_t)b * d;
    std::vector<double> acc((size_t)d, 0.0);
    int n = 0;
    for (int t = 0; t < L; ++t) {
      if (!valid[(size_t)b * L + t]) continue;
      ++n;
      const float* xr = x + ((size_t)b * L + t) * d;
      for (int i = 0; i < d; ++i) acc[(size_t)i] += xr[i];
    }
    for (int i = 0; i < d; ++i) o[i] = n ? (float)(acc[(size_t)i] / n) : 0.0f;
  }
}

void mean_pool_backward(float* dx, const float* dout, const uint8_t* valid, int B, int L, int d) {
  for (int b = 0; b < B; ++b) {
    int n = 0;
    for (int t = 0; t < L; ++t) n += valid[(size_t)b * L + t] ? 1 : 0;
    if (!n) continue;
    const float inv = 1.0f / (float)n;
    const float* g = dout + (size_t)b * d;
    for (int t = 0; t < L; ++t) {
      if (!valid[(size_t)b * L + t]) continue;
      float* dxr = dx + ((size_t)b * L + t) * d;
      for (int i = 0; i < d; ++i) dxr[i] += g[i] * inv;
    }
  }
}

void bias_relu_forward(float* x, const float* bias, int rows, int n) {
  for (int r = 0; r < rows; ++r)
    for (int i = 0; i < n; ++i) {
      float& v = x[(size_t)r * n + i];
      v = std::max(0.0f, v + bias[i]);
    }
}

void bias_relu_backward(float* dout, float* dbias, const float* out, int rows, int n) {
  for (int r = 0; r < rows; ++r)
    for (int i = 0; i < n; ++i) {
      float& g = dout[(size_t)r * n + i];
      if (out[(size_t)r * n + i] <= 0.0f) g = 0.0f;
      if (dbias) dbias[i] += g;
    }
}

void l2norm_forward(float* out, float* inv, const float* x, int rows, int n) {
  for (int r = 0; r < rows; ++r) {
    const float* xr = x + (size_t)r * n;
    double ss = 0;
    for (int i = 0; i < n; ++i) ss += (double)xr[i] * xr[i];
    inv[r] = (float)(1.0 / std::sqrt(ss + 1e-12));
    for (int i = 0; i < n; ++i) out[(size_t)r * n + i] = xr[i] * inv[r];
  }
}

void l2norm_backward(float* dx, const float* dout, const float* out, const float* inv, int rows, int n) {
  // y = x * inv  ->  dx = inv * (dy - y * (dy . y))
  for (int r = 0; r < rows; ++r) {
    const float* y = out + (size_t)r * n;
    const float* dy = dout + (size_t)r * n;
    double dot = 0;
    for (int i = 0; i < n; ++i) dot += (double)dy[i] * y[i];
    for (int i = 0; i < n; ++i) dx[(size_t)r * n + i] += inv[r] * (dy[i] - y[i] * (float)dot);
  }
}

}  // namespace needle::train
