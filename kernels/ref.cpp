// Scalar reference for every kernel: always built, the tests' oracle and the fallback path.
// Written for clarity; accumulation orders here define what "the reference" means.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "attention_online.h"
#include "internal.h"
#include "nk/quant.h"

namespace nk {
namespace detail {

float* scratch_floats(size_t n, int slot) {
  thread_local std::vector<float> bufs[6];
  std::vector<float>& b = bufs[slot];
  if (b.size() < n) b.resize(n);
  return b.data();
}

namespace {

void quantize_q8_ref(const float* x, size_t ldx, BlockQ8* y, size_t rows, size_t k) {
  const size_t nb = blocks_per_row(k);
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * ldx;
    for (size_t b = 0; b < nb; ++b) {
      const size_t n = min_sz(kBlock, k - b * kBlock);
      const float* xb = xr + b * kBlock;
      float amax = 0.0f;
      for (size_t j = 0; j < n; ++j) amax = std::max(amax, std::fabs(xb[j]));
      const float d = amax / 127.0f;
      const float id = d != 0.0f ? 1.0f / d : 0.0f;
      BlockQ8& out = y[r * nb + b];
      out.d = d;
      for (size_t j = 0; j < kBlock; ++j)
        out.qs[j] = j < n ? static_cast<int8_t>(std::nearbyint(xb[j] * id)) : 0;
    }
  }
}

float dot_q4q8(const BlockQ4* w, const BlockQ8* x, size_t nb) {
  float sum = 0.0f;
  for (size_t b = 0; b < nb; ++b) {
    int isum = 0;
    for (int j = 0; j < kBlock; ++j) isum += q4_get(w[b], j) * x[b].qs[j];
    sum += (w[b].d * x[b].d) * static_cast<float>(isum);
  }
  return sum;
}

float dot_q8q8(const BlockQ8* w, const BlockQ8* x, size_t nb) {
  float sum = 0.0f;
  for (size_t b = 0; b < nb; ++b) {
    int isum = 0;
    for (int j = 0; j < kBlock; ++j) isum += w[b].qs[j] * x[b].qs[j];
    sum += (w[b].d * x[b].d) * static_cast<float>(isum);
  }
  return sum;
}

void gemv_q4_ref(const BlockQ4* w, const BlockQ8* x, float* y, size_t k, size_t n0, size_t n1) {
  const size_t nb = blocks_per_row(k);
  for (size_t n = n0; n < n1; ++n) y[n] = dot_q4q8(w + n * nb, x, nb);
}

void gemm_q4_ref(const BlockQ4* w, const BlockQ8* x, float* y, size_t ldy, size_t m, size_t k,
                 size_t n0, size_t n1) {
  const size_t nb = blocks_per_row(k);
  for (size_t i = 0; i < m; ++i) gemv_q4_ref(w, x + i * nb, y + i * ldy, k, n0, n1);
}

void gemv_q8_ref(const BlockQ8* w, const BlockQ8* x, float* y, size_t k, size_t n0, size_t n1) {
  const size_t nb = blocks_per_row(k);
  for (size_t n = n0; n < n1; ++n) y[n] = dot_q8q8(w + n * nb, x, nb);
}

void gemm_q8_ref(const BlockQ8* w, const BlockQ8* x, float* y, size_t ldy, size_t m, size_t k,
                 size_t n0, size_t n1) {
  const size_t nb = blocks_per_row(k);
  for (size_t i = 0; i < m; ++i) gemv_q8_ref(w, x + i * nb, y + i * ldy, k, n0, n1);
}

// One-shot softmax over all Lk keys, masked scores = -FLT_MAX, exactly as the model describes it.
void attention_ref(const AttnArgs& a, size_t h0, size_t h1, size_t i0, size_t i1) {
  const size_t hd = a.hd, group = a.hq / a.hkv;
  const size_t q_ld = a.q_ld ? a.q_ld : a.hq * hd;
  const size_t k_ld = a.k_ld ? a.k_ld : a.hkv * hd;
  const size_t v_ld = a.v_ld ? a.v_ld : a.hkv * hd;
  const size_t o_ld = a.out_ld ? a.out_ld : a.hq * hd;
  const float scale = a.scale != 0.0f ? a.scale : 1.0f / std::sqrt(static_cast<float>(hd));
  float* s = scratch_floats(a.lk, 1);
  for (size_t h = h0; h < h1; ++h) {
    const size_t g = h / group;
    for (size_t i = i0; i < i1; ++i) {
      const float* qi = a.q + i * q_ld + h * hd;
      const size_t limit = attn_key_limit(a, i);
      float mx = -FLT_MAX;
      for (size_t j = 0; j < a.lk; ++j) {
        const bool visible = j < limit && (!a.key_mask || a.key_mask[j]);
        float sj = -FLT_MAX;
        if (visible) {
          const float* kj = a.k + j * k_ld + g * hd;
          float dot = 0.0f;
          for (size_t t = 0; t < hd; ++t) dot += qi[t] * kj[t];
          sj = dot * scale;
        }
        s[j] = sj;
        mx = std::max(mx, sj);
      }
      float sum = 0.0f;
      for (size_t j = 0; j < a.lk; ++j) {
        s[j] = std::exp(s[j] - mx);
        sum += s[j];
      }
      float* o = a.out + i * o_ld + h * hd;
      for (size_t t = 0; t < hd; ++t) o[t] = 0.0f;
      for (size_t j = 0; j < a.lk; ++j) {
        const float p = s[j] / sum;
        const float* vj = a.v + j * v_ld + g * hd;
        for (size_t t = 0; t < hd; ++t) o[t] += p * vj[t];
      }
    }
  }
}

void rmsnorm_ref(const float* x, const float* scale, float* y, size_t rows, size_t dim, float eps) {
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* yr = y + r * dim;
    double ss = 0.0;
    for (size_t t = 0; t < dim; ++t) ss += static_cast<double>(xr[t]) * xr[t];
    const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(dim) + eps));
    for (size_t t = 0; t < dim; ++t) yr[t] = xr[t] * inv * (1.0f + scale[t]);
  }
}

void rope_ref(float* x, size_t rows, size_t ld, size_t heads, size_t hd, size_t pos0, float theta) {
  const size_t half = hd / 2;
  float* buf = rope_scratch(hd, theta);
  const float* cs = buf + half;
  const float* sn = buf + 2 * half;
  for (size_t r = 0; r < rows; ++r) {
    rope_angles(pos0 + r, half, buf);
    for (size_t h = 0; h < heads; ++h) {
      float* xh = x + r * ld + h * hd;
      for (size_t i = 0; i < half; ++i) {
        const float x1 = xh[i], x2 = xh[i + half];
        xh[i] = x1 * cs[i] - x2 * sn[i];
        xh[i + half] = x2 * cs[i] + x1 * sn[i];
      }
    }
  }
}

void gated_residual_ref(float* x, const float* y, float gate, size_t n) {
  const float sg = sigmoid(gate);
  for (size_t i = 0; i < n; ++i) x[i] += sg * y[i];
}

// The training attention's softmax as the model defines it: one row at a time, the sum in f32 in
// key order, std::exp; the backward's dot product in double.
void softmax_rows_ref(float* x, size_t ld, size_t rows, size_t n, float scale, const uint8_t* key_mask, bool causal,
                      size_t pos0) {
  for (size_t r = 0; r < rows; ++r) {
    float* xr = x + r * ld;
    const size_t lim = causal ? min_sz(n, pos0 + r + 1) : n;
    float m = -FLT_MAX;
    for (size_t j = 0; j < n; ++j) {
      xr[j] = j < lim && (!key_mask || key_mask[j]) ? xr[j] * scale : -FLT_MAX;
      m = std::max(m, xr[j]);
    }
    float sum = 0.0f;
    for (size_t j = 0; j < n; ++j) sum += (xr[j] = std::exp(xr[j] - m));
    const float inv = 1.0f / sum;
    for (size_t j = 0; j < n; ++j) xr[j] *= inv;
  }
}

void softmax_rows_backward_ref(const float* p, size_t ldp, float* g, size_t ldg, size_t rows, size_t n, float scale,
                               const uint8_t* key_mask, bool causal, size_t pos0) {
  for (size_t r = 0; r < rows; ++r) {
    const float* pr = p + r * ldp;
    float* gr = g + r * ldg;
    const size_t lim = causal ? min_sz(n, pos0 + r + 1) : n;
    double D = 0;
    for (size_t j = 0; j < n; ++j) D += static_cast<double>(pr[j]) * gr[j];
    for (size_t j = 0; j < n; ++j)
      gr[j] = j < lim && (!key_mask || key_mask[j]) ? pr[j] * (gr[j] - static_cast<float>(D)) * scale : 0.0f;
  }
}

const Kernels kRef = {
    Isa::scalar, "scalar", quantize_q8_ref, gemv_q4_ref, gemm_q4_ref, gemv_q8_ref, gemm_q8_ref,
    attention_ref, rmsnorm_ref, rope_ref, gated_residual_ref, sgemm_ref, kSgemmRefMR, kSgemmRefNR,
    softmax_rows_ref, softmax_rows_backward_ref,
};

}  // namespace

const Kernels& ref_kernels() { return kRef; }

// The online-softmax attention over plain scalar loops: lets tests compare block sizes against
// the one-shot reference on any machine.
struct ScalarOps {
  static float dot(const float* a, const float* b, size_t n) {
    float s = 0.0f;
    for (size_t i = 0; i < n; ++i) s += a[i] * b[i];
    return s;
  }
  static void axpy(float* y, float a, const float* x, size_t n) {
    for (size_t i = 0; i < n; ++i) y[i] += a * x[i];
  }
  static void scal(float* y, float a, size_t n) {
    for (size_t i = 0; i < n; ++i) y[i] *= a;
  }
};

void attention_online_scalar(const AttnArgs& a, size_t h0, size_t h1, size_t i0, size_t i1) {
  attention_online<ScalarOps>(a, h0, h1, i0, i1);
}

}  // namespace detail

// ---- weight quantizers (not hot: converter / loader) ----

namespace {
template <class Block, int QMIN, int QMAX>
void quantize_row(const float* w, Block* out, size_t k, float inv_qmax, void (*store)(Block&, int, int)) {
  const size_t nb = blocks_per_row(k);
  for (size_t b = 0; b < nb; ++b) {
    const size_t n = detail::min_sz(kBlock, k - b * kBlock);
    const float* wb = w + b * kBlock;
    float amax = 0.0f;
    for (size_t j = 0; j < n; ++j) amax = std::max(amax, std::fabs(wb[j]));
    float d = amax * inv_qmax;
    if (d < 1e-8f) d = 1e-8f;
    const float id = 1.0f / d;
    Block& o = out[b];
    std::memset(&o, 0, sizeof(o));
    o.d = d;
    for (size_t j = 0; j < kBlock; ++j) {
      int q = 0;
      if (j < n) {
        // nearbyint rounds half to even in the default rounding mode, like jnp.round.
        q = static_cast<int>(std::nearbyint(wb[j] * id));
        q = std::clamp(q, QMIN, QMAX);
      }
      store(o, static_cast<int>(j), q);
    }
  }
}

void store_q4(BlockQ4& b, int j, int q) {
  const uint8_t u = static_cast<uint8_t>(q + 8);
  if (j < kBlock / 2)
    b.qs[j] = static_cast<uint8_t>((b.qs[j] & 0xF0) | u);
  else
    b.qs[j - kBlock / 2] = static_cast<uint8_t>((b.qs[j - kBlock / 2] & 0x0F) | (u << 4));
}
void store_q8(BlockQ8& b, int j, int q) { b.qs[j] = static_cast<int8_t>(q); }
}  // namespace

void quantize_row_q4(const float* w, BlockQ4* out, size_t k) {
  quantize_row<BlockQ4, -8, 7>(w, out, k, 1.0f / 7.0f, store_q4);
}
void quantize_row_q8(const float* w, BlockQ8* out, size_t k) {
  quantize_row<BlockQ8, -127, 127>(w, out, k, 1.0f / 127.0f, store_q8);
}
void dequantize_row_q4(const BlockQ4* in, float* w, size_t k) {
  for (size_t i = 0; i < k; ++i) {
    const BlockQ4& b = in[i / kBlock];
    w[i] = static_cast<float>(q4_get(b, static_cast<int>(i % kBlock))) * b.d;
  }
}
void dequantize_row_q8(const BlockQ8* in, float* w, size_t k) {
  for (size_t i = 0; i < k; ++i) {
    const BlockQ8& b = in[i / kBlock];
    w[i] = static_cast<float>(b.qs[i % kBlock]) * b.d;
  }
}

}  // namespace nk
