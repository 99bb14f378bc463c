#include "model/forward_ref.h"

#include <cmath>
#include <limits>

namespace needle::ref {

void dense(std::span<const float> x, int rows, std::span<const float> w, int out, int in, std::span<float> y) {
  for (int r = 0; r < rows; ++r) {
    const float* xr = x.data() + (size_t)r * in;
    for (int o = 0; o < out; ++o) {
      const float* wo = w.data() + (size_t)o * in;
      double acc = 0;
      for (int i = 0; i < in; ++i) acc += (double)xr[i] * wo[i];
      y[(size_t)r * out + o] = (float)acc;
    }
  }
}

void zc_rms_norm(std::span<float> x, int rows, int n, std::span<const float> scale) {
  for (int r = 0; r < rows; ++r) {
    float* xr = x.data() + (size_t)r * n;
    double ss = 0;
    for (int i = 0; i < n; ++i) ss += (double)xr[i] * xr[i];
    const float inv = (float)(1.0 / std::sqrt(ss / n + 1e-6));
    for (int i = 0; i < n; ++i) xr[i] = (1.0f + scale[i]) * (xr[i] * inv);
  }
}

void rope(std::span<float> x, int len, int heads, int hd, int pos0, double theta) {
  const int half = hd / 2;
  for (int t = 0; t < len; ++t) {
    for (int i = 0; i < half; ++i) {
      // As the original: freqs in f32, angle = pos * freq in f32, then cos/sin.
      const float freq = (float)(1.0 / std::pow(theta, (2.0 * i) / hd));
      const float ang = (float)(pos0 + t) * freq;
      const float cs = std::cos(ang), sn = std::sin(ang);
      for (int h = 0; h < heads; ++h) {
        float* v = x.data() + ((size_t)t * heads + h) * hd;
        const float x1 = v[i], x2 = v[i + half];
        v[i] = x1 * cs - x2 * sn;
        v[i + half] = x2 * cs + x1 * sn;
      }
    }
  }
}

namespace {

float sigmoid(float g) { return 1.0f / (1.0f + std::exp(-g)); }

// softmax(q k^T / sqrt(hd)) v for q [lq, H, hd], k/v [lk, Hkv, hd]; query head h reads kv
// head h / (H / Hkv). Query row t sees keys j with key_valid[j] and (if causal) j <= t + q_pos0.
// Masked scores take the lowest finite float before the softmax, as the original.
std::vector<float> attention(std::span<const float> q, int lq, std::span<const float> k, std::span<const float> v,
                             int lk, int H, int Hkv, int hd, bool causal, int q_pos0,
                             std::span<const uint8_t> key_valid) {
  std::vector<float> out((size_t)lq * H * hd, 0.0f);
  std::vector<double> s((size_t)lk);
  const int group = H / Hkv;
  const double scale = 1.0 / std::sqrt((double)hd);
  for (int t = 0; t < lq; ++t) {
    for (int h = 0; h < H; ++h) {
      const float* qv = q.data() + ((size_t)t * H + h) * hd;
      const int kh = h / group;
      double mx = -std::numeric_limits<double>::infinity();
      for (int j = 0; j < lk; ++j) {
        const bool ok = (key_valid.empty() || key_valid[(size_t)j]) && (!causal || j <= t + q_pos0);
        if (!ok) {
          s[(size_t)j] = std::numeric_limits<float>::lowest();
        } else {
          const float* kv = k.data() + ((size_t)j * Hkv + kh) * hd;
          double acc = 0;
          for (int i = 0; i < hd; ++i) acc += (double)qv[i] * kv[i];
          s[(size_t)j] = acc * scale;
        }
        mx = std::max(mx, s[(size_t)j]);
      }
      double sum = 0;
      for (int j = 0; j < lk; ++j) sum += (s[(size_t)j] = std::exp(s[(size_t)j] - mx));
      float* o = out.data() + ((size_t)t * H + h) * hd;
      for (int i = 0; i < hd; ++i) {
        double acc = 0;
        for (int j = 0; j < lk; ++j) acc += s[(size_t)j] * v[((size_t)j * Hkv + kh) * hd + i];
        o[i] = (float)(acc / sum);
      }
    }
  }
  return out;
}

// Projects and normalises K and V of `kv_in` [len, d] for one attention block.
void project_kv(const Config& c, const AttnT<std::vector<float>>& a, std::span<const float> kv_in, int len,
                bool use_rope, int pos0, std::vector<float>& k, std::vector<float>& v) {
  const int d = c.d_model, hd = c.head_dim(), kvd = c.kv_dim();
  k.resize((size_t)len * kvd);
  v.resize((size_t)len * kvd);
  dense(kv_in, len, a.k, kvd, d, k);
  dense(kv_in, len, a.v, kvd, d, v);
  zc_rms_norm(k, len * c.num_kv_heads, hd, a.k_norm);
  if (use_rope) rope(k, len, c.num_kv_heads, hd, pos0, c.rope_theta);
}

// Query projection + q_norm (+ RoPE), attention against K/V, output projection.
std::vector<float> attend(const Config& c, const AttnT<std::vector<float>>& a, std::span<const float> x, int len,
                          bool use_rope, int pos0, const std::vector<float>& k, const std::vector<float>& v, int lk,
                          bool causal, std::span<const uint8_t> key_valid) {
  const int d = c.d_model, hd = c.head_dim();
  std::vector<float> q((size_t)len * d);
  dense(x, len, a.q, d, d, q);
  zc_rms_norm(q, len * c.num_heads, hd, a.q_norm);
  if (use_rope) rope(q, len, c.num_heads, hd, pos0, c.rope_theta);
  auto ctx = attention(q, len, k, v, lk, c.num_heads, c.num_kv_heads, hd, causal, pos0, key_valid);
  std::vector<float> out((size_t)len * d);
  dense(ctx, len, a.o, d, d, out);
  return out;
}

// x += sigmoid(gate) * branch
void gated_residual(std::vector<float>& x, const std::vector<float>& branch, float gate) {
  const float g = sigmoid(gate);
  for (size_t i = 0; i < x.size(); ++i) x[i] += g * branch[i];
}

std::vector<float> embed(const Config& c, const Params& p, std::span<const int32_t> tokens) {
  const int d = c.d_model;
  const float s = std::sqrt((float)d);
  std::vector<float> x(tokens.size() * (size_t)d);
  for (size_t t = 0; t < tokens.size(); ++t) {
    int id = tokens[t];
    if (id < 0 || id >= c.vocab_size) id = 3;  // out-of-range ids read as UNK (callers validate)
    for (int i = 0; i < d; ++i) x[t * d + i] = p.embedding[(size_t)id * d + i] * s;
  }
  return x;
}

std::vector<float> logits_of(const Config& c, const Params& p, std::span<const float> h, int rows) {
  std::vector<float> logits((size_t)rows * c.vocab_size);
  dense(h, rows, p.embedding, c.vocab_size, c.d_model, logits);
  return logits;
}

}  // namespace

std::vector<float> encode(const Config& c, const Params& p, std::span<const int32_t> tokens,
                          std::span<const uint8_t> key_valid) {
  const int len = (int)tokens.size(), d = c.d_model;
  std::vector<float> x = embed(c, p, tokens), h, k, v;
  for (auto& L : p.encoder) {
    h = x;
    zc_rms_norm(h, len, d, L.norm);
    project_kv(c, L.attn, h, len, /*rope=*/true, 0, k, v);
    auto y = attend(c, L.attn, h, len, true, 0, k, v, len, /*causal=*/false, key_valid);
    gated_residual(x, y, L.gate[0]);
  }
  zc_rms_norm(x, len, d, p.encoder_norm);
  return x;
}

std::vector<float> decode(const Config& c, const Params& p, std::span<const float> enc_out, int enc_len,
                          std::span<const int32_t> tokens) {
  const int len = (int)tokens.size(), d = c.d_model;
  std::vector<float> x = embed(c, p, tokens), h, k, v;
  for (auto& L : p.decoder) {
    h = x;
    zc_rms_norm(h, len, d, L.norm_self);
    project_kv(c, L.self_attn, h, len, true, 0, k, v);
    gated_residual(x, attend(c, L.self_attn, h, len, true, 0, k, v, len, /*causal=*/true, {}), L.gate_self[0]);
    h = x;
    zc_rms_norm(h, len, d, L.norm_cross);
    project_kv(c, L.cross_attn, enc_out.first((size_t)enc_len * d), enc_len, false, 0, k, v);
    gated_residual(x, attend(c, L.cross_attn, h, len, false, 0, k, v, enc_len, false, {}), L.gate_cross[0]);
  }
  zc_rms_norm(x, len, d, p.decoder_norm);
  return logits_of(c, p, x, len);
}

DecoderCache start_decoder(const Config& c, const Params& p, std::span<const float> enc_out, int enc_len) {
  DecoderCache cache;
  cache.enc_len = enc_len;
  const size_t n = p.decoder.size();
  cache.self_k.resize(n);
  cache.self_v.resize(n);
  cache.cross_k.resize(n);
  cache.cross_v.resize(n);
  for (size_t l = 0; l < n; ++l)
    project_kv(c, p.decoder[l].cross_attn, enc_out.first((size_t)enc_len * c.d_model), enc_len, false, 0,
               cache.cross_k[l], cache.cross_v[l]);
  return cache;
}

std::vector<float> decode_step(const Config& c, const Params& p, DecoderCache& cache, int32_t token) {
  const int d = c.d_model, kvd = c.kv_dim(), pos = cache.pos;
  std::vector<float> x = embed(c, p, std::span<const int32_t>(&token, 1)), h, k, v;
  for (size_t l = 0; l < p.decoder.size(); ++l) {
    auto& L = p.decoder[l];
    h = x;
    zc_rms_norm(h, 1, d, L.norm_self);
    project_kv(c, L.self_attn, h, 1, true, pos, k, v);
    cache.self_k[l].insert(cache.self_k[l].end(), k.begin(), k.end());
    cache.self_v[l].insert(cache.self_v[l].end(), v.begin(), v.end());
    gated_residual(x, attend(c, L.self_attn, h, 1, true, pos, cache.self_k[l], cache.self_v[l], pos + 1, false, {}),
                   L.gate_self[0]);
    h = x;
    zc_rms_norm(h, 1, d, L.norm_cross);
    gated_residual(
        x, attend(c, L.cross_attn, h, 1, false, 0, cache.cross_k[l], cache.cross_v[l], cache.enc_len, false, {}),
        L.gate_cross[0]);
  }
  (void)kvd;
  cache.pos++;
  zc_rms_norm(x, 1, d, p.decoder_norm);
  return logits_of(c, p, x, 1);
}

std::vector<float> contrastive_embedding(const Config& c, const Params& p, std::span<const int32_t> tokens) {
  const int len = (int)tokens.size(), d = c.d_model, h4 = c.hidden_dim(), cd = c.contrastive_dim;
  std::vector<uint8_t> valid((size_t)len);
  for (int t = 0; t < len; ++t) valid[(size_t)t] = tokens[(size_t)t] != c.pad_token_id;
  auto enc = encode(c, p, tokens, valid);
  std::vector<float> pooled((size_t)d, 0.0f);
  double n = 0;
  for (int t = 0; t < len; ++t) {
    if (!valid[(size_t)t]) continue;
    n += 1;
    for (int i = 0; i < d; ++i) pooled[(size_t)i] += enc[(size_t)t * d + i];
  }
  for (auto& x : pooled) x = (float)(x / std::max(n, 1.0));
  std::vector<float> hid((size_t)h4), out((size_t)cd);
  dense(pooled, 1, p.contrastive_hidden, h4, d, hid);
  for (int i = 0; i < h4; ++i) hid[(size_t)i] = std::max(0.0f, hid[(size_t)i] + p.contrastive_hidden_bias[(size_t)i]);
  dense(hid, 1, p.contrastive_proj, cd, h4, out);
  double ss = 0;
  for (float x : out) ss += (double)x * x;
  const float inv = (float)(1.0 / std::sqrt(ss + 1e-12));
  for (auto& x : out) x *= inv;
  return out;
}

}  // namespace needle::ref
