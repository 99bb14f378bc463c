#include "model/engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "nk/quant.h"

namespace needle {
namespace {

constexpr float kNormEps = 1e-6f;

Result<Linear> make_linear(const TensorView& t, std::vector<std::vector<float>>& owned) {
  Linear l;
  l.dtype = t.dtype;
  l.out = (int)t.shape[0];
  l.in = (int)t.shape[1];
  switch (t.dtype) {
    case DType::Q4: l.q4 = reinterpret_cast<const nk::BlockQ4*>(t.data); break;
    case DType::Q8: l.q8 = reinterpret_cast<const nk::BlockQ8*>(t.data); break;
    case DType::F32: l.f32 = reinterpret_cast<const float*>(t.data); break;
    case DType::F16:
    case DType::BF16: {
      NEEDLE_ASSIGN(auto v, tensor_to_f32(t));
      owned.push_back(std::move(v));
      l.f32 = owned.back().data();
      l.dtype = DType::F32;
      break;
    }
    default: return make_error("tensor '{}' has dtype {}, which the engine cannot multiply", t.name, dtype_name(t.dtype));
  }
  return l;
}

// Eight independent partial sums: the compiler vectorizes this without -ffast-math (f32
// models only; quantized weights go through the kernels).
float dot_f32(const float* a, const float* b, size_t k) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  size_t i = 0;
  for (; i + 8 <= k; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += a[i + (size_t)j] * b[i + (size_t)j];
  float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; i < k; ++i) s += a[i] * b[i];
  return s;
}

const float* f32_ptr(const TensorView& t) { return reinterpret_cast<const float*>(t.data); }

}  // namespace

Result<std::shared_ptr<const EngineWeights>> prepare_weights(const Model& m) {
  auto w = std::make_shared<EngineWeights>();
  w->config = m.config;
  w->owned.reserve(256);  // pointers into `owned` must stay valid
  const auto& t = m.tensors;
  auto attn = [&](const AttnT<TensorView>& a) -> Result<EngineWeights::Attn> {
    EngineWeights::Attn r;
    NEEDLE_ASSIGN(r.q, make_linear(a.q, w->owned));
    NEEDLE_ASSIGN(r.k, make_linear(a.k, w->owned));
    NEEDLE_ASSIGN(r.v, make_linear(a.v, w->owned));
    NEEDLE_ASSIGN(r.o, make_linear(a.o, w->owned));
    r.q_norm = f32_ptr(a.q_norm);
    r.k_norm = f32_ptr(a.k_norm);
    return r;
  };
  NEEDLE_ASSIGN(w->embedding, make_linear(t.embedding, w->owned));
  for (auto& L : t.encoder) {
    EngineWeights::Enc e;
    e.norm = f32_ptr(L.norm);
    e.gate = *f32_ptr(L.gate);
    NEEDLE_ASSIGN(e.attn, attn(L.attn));
    w->encoder.push_back(e);
  }
  w->encoder_norm = f32_ptr(t.encoder_norm);
  for (auto& L : t.decoder) {
    EngineWeights::Dec d;
    d.norm_self = f32_ptr(L.norm_self);
    d.norm_cross = f32_ptr(L.norm_cross);
    d.gate_self = *f32_ptr(L.gate_self);
    d.gate_cross = *f32_ptr(L.gate_cross);
    NEEDLE_ASSIGN(d.self_attn, attn(L.self_attn));
    NEEDLE_ASSIGN(d.cross_attn, attn(L.cross_attn));
    w->decoder.push_back(d);
  }
  w->decoder_norm = f32_ptr(t.decoder_norm);
  NEEDLE_ASSIGN(w->contrastive_hidden, make_linear(t.contrastive_hidden, w->owned));
  NEEDLE_ASSIGN(w->contrastive_proj, make_linear(t.contrastive_proj, w->owned));
  w->contrastive_bias = f32_ptr(t.contrastive_hidden_bias);
  if (w->owned.size() > 256) return make_error("internal: too many widened tensors");
  return std::shared_ptr<const EngineWeights>(std::move(w));
}

Result<std::unique_ptr<MemoryModel>> memory_model(const Params& p, const Config& c, const WriteOptions& opt) {
  NEEDLE_ASSIGN(NeedleWriter w, build_needle(p, c, opt));
  auto m = std::make_unique<MemoryModel>();
  m->bytes = w.serialize();
  NEEDLE_ASSIGN(NeedleFile f, NeedleFile::parse(m->bytes, /*verify_data=*/true));
  NEEDLE_ASSIGN(m->model, model_from_file(std::move(f)));
  NEEDLE_ASSIGN(m->weights, prepare_weights(m->model));
  return m;
}

Engine::Engine(std::shared_ptr<const EngineWeights> w, unsigned threads, const nk::Kernels* kernels)
    : w_(std::move(w)), k_(kernels ? kernels : &nk::kernels()), pool_(threads) {}

void Engine::linear(const Linear& W, const float* x, int rows, float* y) {
  const size_t n = (size_t)W.out, k = (size_t)W.in;
  // Below ~64K multiply-adds per chunk waking a worker costs more than it saves.
  const size_t min_rows = std::max<size_t>(16, 65536 / std::max<size_t>(1, k * (size_t)rows));
  if (W.dtype == DType::F32) {
    pool_.parallel_range(n, min_rows, [&](size_t n0, size_t n1, unsigned) {
      for (int r = 0; r < rows; ++r) {
        const float* xr = x + (size_t)r * k;
        for (size_t o = n0; o < n1; ++o) y[(size_t)r * n + o] = dot_f32(xr, W.f32 + o * k, k);
      }
    });
    return;
  }
  const size_t nb = nk::blocks_per_row(k);
  if (xq_.size() < (size_t)rows * nb) xq_.resize((size_t)rows * nb);
  k_->quantize_q8(x, k, xq_.data(), (size_t)rows, k);
  const nk::BlockQ8* xq = xq_.data();
  pool_.parallel_range(
      n, min_rows,
      [&](size_t n0, size_t n1, unsigned) {
        if (W.dtype == DType::Q4) {
          if (rows == 1) k_->gemv_q4(W.q4, xq, y, k, n0, n1);
          else k_->gemm_q4(W.q4, xq, y, n, (size_t)rows, k, n0, n1);
        } else {
          if (rows == 1) k_->gemv_q8(W.q8, xq, y, k, n0, n1);
          else k_->gemm_q8(W.q8, xq, y, n, (size_t)rows, k, n0, n1);
        }
      },
      16);
}

void Engine::embed(std::span<const int32_t> tokens, float* x) {
  const Config& c = w_->config;
  const size_t d = (size_t)c.d_model;
  const float s = std::sqrt((float)c.d_model);
  const Linear& E = w_->embedding;
  const size_t nb = nk::blocks_per_row(d);
  for (size_t t = 0; t < tokens.size(); ++t) {
    int id = tokens[t];
    if (id < 0 || id >= c.vocab_size) id = 3;  // callers validate; never read out of range
    float* xr = x + t * d;
    if (E.dtype == DType::F32) {
      std::memcpy(xr, E.f32 + (size_t)id * d, d * sizeof(float));
    } else if (E.dtype == DType::Q8) {
      nk::dequantize_row_q8(E.q8 + (size_t)id * nb, xr, d);
    } else {
      nk::dequantize_row_q4(E.q4 + (size_t)id * nb, xr, d);
    }
    for (size_t i = 0; i < d; ++i) xr[i] *= s;
  }
}

void Engine::attention(const float* q, int lq, const float* k, const float* v, int lk, bool causal, int q_pos0,
                       const uint8_t* key_mask, float* out) {
  const Config& c = w_->config;
  nk::AttnArgs a;
  a.q = q;
  a.k = k;
  a.v = v;
  a.out = out;
  a.lq = (size_t)lq;
  a.lk = (size_t)lk;
  a.hq = (size_t)c.num_heads;
  a.hkv = (size_t)c.num_kv_heads;
  a.hd = (size_t)c.head_dim();
  a.causal = causal;
  a.q_pos0 = (size_t)q_pos0;
  a.key_mask = key_mask;
  // Split kv-head groups (decode) or group x row tiles (prefill) over the pool: the query
  // heads that share a kv head go to one task, so the kernel reads that K/V once.
  const size_t group = a.hq / a.hkv;
  const size_t rows_per = lq >= 64 ? 32 : (size_t)lq;
  const size_t row_tiles = ((size_t)lq + rows_per - 1) / rows_per;
  const size_t tasks = a.hkv * row_tiles;
  const size_t work = (size_t)lq * (size_t)lk * a.hq * a.hd;
  if (work < 32768 || pool_.size() == 1) {
    k_->attention(a, 0, a.hq, 0, a.lq);
    return;
  }
  pool_.parallel_for(tasks, [&](size_t t, unsigned) {
    const size_t g = t % a.hkv, r = t / a.hkv;
    const size_t i0 = r * rows_per, i1 = std::min(a.lq, i0 + rows_per);
    k_->attention(a, g * group, (g + 1) * group, i0, i1);
  });
}

void Engine::project_q(const EngineWeights::Attn& a, const float* h, int len, bool rope, int pos0, float* q) {
  const Config& c = w_->config;
  const size_t hd = (size_t)c.head_dim();
  linear(a.q, h, len, q);
  k_->rmsnorm(q, a.q_norm, q, (size_t)len * c.num_heads, hd, kNormEps);
  if (rope) k_->rope(q, (size_t)len, (size_t)c.d_model, (size_t)c.num_heads, hd, (size_t)pos0, (float)c.rope_theta);
}

void Engine::project_kv(const EngineWeights::Attn& a, const float* h, int len, bool rope, int pos0, float* k,
                        float* v) {
  const Config& c = w_->config;
  const size_t hd = (size_t)c.head_dim();
  linear(a.k, h, len, k);
  linear(a.v, h, len, v);
  k_->rmsnorm(k, a.k_norm, k, (size_t)len * c.num_kv_heads, hd, kNormEps);
  if (rope)
    k_->rope(k, (size_t)len, (size_t)c.kv_dim(), (size_t)c.num_kv_heads, hd, (size_t)pos0, (float)c.rope_theta);
}

void Engine::encode(std::span<const int32_t> tokens, std::vector<float>& x, std::span<const uint8_t> key_valid) {
  const Config& c = w_->config;
  const int len = (int)tokens.size();
  const size_t d = (size_t)c.d_model, kvd = (size_t)c.kv_dim();
  x.resize((size_t)len * d);
  h_.resize(x.size());
  q_.resize(x.size());
  ctx_.resize(x.size());
  y_.resize(x.size());
  kk_.resize((size_t)len * kvd);
  vv_.resize((size_t)len * kvd);
  embed(tokens, x.data());
  const uint8_t* mask = key_valid.empty() ? nullptr : key_valid.data();
  for (auto& L : w_->encoder) {
    k_->rmsnorm(x.data(), L.norm, h_.data(), (size_t)len, d, kNormEps);
    project_kv(L.attn, h_.data(), len, true, 0, kk_.data(), vv_.data());
    project_q(L.attn, h_.data(), len, true, 0, q_.data());
    attention(q_.data(), len, kk_.data(), vv_.data(), len, false, 0, mask, ctx_.data());
    linear(L.attn.o, ctx_.data(), len, y_.data());
    k_->gated_residual(x.data(), y_.data(), L.gate, x.size());
  }
  k_->rmsnorm(x.data(), w_->encoder_norm, x.data(), (size_t)len, d, kNormEps);
}

void Engine::start(std::span<const float> enc_out, int enc_len, int max_steps, DecodeState& st) {
  const Config& c = w_->config;
  const size_t kvd = (size_t)c.kv_dim(), n = w_->decoder.size();
  st.enc_len = enc_len;
  st.pos = 0;
  st.capacity = std::max(max_steps, 1);
  st.self_k.assign(n, std::vector<float>((size_t)st.capacity * kvd));
  st.self_v.assign(n, std::vector<float>((size_t)st.capacity * kvd));
  st.cross_k.assign(n, std::vector<float>((size_t)enc_len * kvd));
  st.cross_v.assign(n, std::vector<float>((size_t)enc_len * kvd));
  for (size_t l = 0; l < n; ++l)
    project_kv(w_->decoder[l].cross_attn, enc_out.data(), enc_len, false, 0, st.cross_k[l].data(),
               st.cross_v[l].data());
  st.logits.resize((size_t)c.vocab_size);
}

std::span<const float> Engine::step(DecodeState& st, int32_t token) {
  const Config& c = w_->config;
  const size_t d = (size_t)c.d_model, kvd = (size_t)c.kv_dim();
  if (st.pos >= st.capacity) {  // grow the self-attention cache
    st.capacity *= 2;
    for (auto& v : st.self_k) v.resize((size_t)st.capacity * kvd);
    for (auto& v : st.self_v) v.resize((size_t)st.capacity * kvd);
  }
  std::vector<float>& x = x_;  // kept between steps: no allocation per token
  x.resize(d);
  h_.resize(d);
  q_.resize(d);
  ctx_.resize(d);
  y_.resize(d);
  embed(std::span<const int32_t>(&token, 1), x.data());
  const int pos = st.pos;
  for (size_t l = 0; l < w_->decoder.size(); ++l) {
    auto& L = w_->decoder[l];
    k_->rmsnorm(x.data(), L.norm_self, h_.data(), 1, d, kNormEps);
    project_kv(L.self_attn, h_.data(), 1, true, pos, st.self_k[l].data() + (size_t)pos * kvd,
               st.self_v[l].data() + (size_t)pos * kvd);
    project_q(L.self_attn, h_.data(), 1, true, pos, q_.data());
    attention(q_.data(), 1, st.self_k[l].data(), st.self_v[l].data(), pos + 1, false, 0, nullptr, ctx_.data());
    linear(L.self_attn.o, ctx_.data(), 1, y_.data());
    k_->gated_residual(x.data(), y_.data(), L.gate_self, d);

    k_->rmsnorm(x.data(), L.norm_cross, h_.data(), 1, d, kNormEps);
    project_q(L.cross_attn, h_.data(), 1, false, 0, q_.data());
    attention(q_.data(), 1, st.cross_k[l].data(), st.cross_v[l].data(), st.enc_len, false, 0, nullptr, ctx_.data());
    linear(L.cross_attn.o, ctx_.data(), 1, y_.data());
    k_->gated_residual(x.data(), y_.data(), L.gate_cross, d);
  }
  k_->rmsnorm(x.data(), w_->decoder_norm, x.data(), 1, d, kNormEps);
  linear(w_->embedding, x.data(), 1, st.logits.data());
  st.pos++;
  return st.logits;
}

void Engine::decode_all(std::span<const float> enc_out, int enc_len, std::span<const int32_t> tokens,
                        std::vector<float>& logits) {
  const Config& c = w_->config;
  const int len = (int)tokens.size();
  const size_t d = (size_t)c.d_model, kvd = (size_t)c.kv_dim();
  std::vector<float> x((size_t)len * d), k((size_t)std::max(len, enc_len) * kvd), v(k.size());
  h_.resize(x.size());
  q_.resize(x.size());
  ctx_.resize(x.size());
  y_.resize(x.size());
  embed(tokens, x.data());
  for (auto& L : w_->decoder) {
    k_->rmsnorm(x.data(), L.norm_self, h_.data(), (size_t)len, d, kNormEps);
    project_kv(L.self_attn, h_.data(), len, true, 0, k.data(), v.data());
    project_q(L.self_attn, h_.data(), len, true, 0, q_.data());
    attention(q_.data(), len, k.data(), v.data(), len, true, 0, nullptr, ctx_.data());
    linear(L.self_attn.o, ctx_.data(), len, y_.data());
    k_->gated_residual(x.data(), y_.data(), L.gate_self, x.size());
    k_->rmsnorm(x.data(), L.norm_cross, h_.data(), (size_t)len, d, kNormEps);
    project_kv(L.cross_attn, enc_out.data(), enc_len, false, 0, k.data(), v.data());
    project_q(L.cross_attn, h_.data(), len, false, 0, q_.data());
    attention(q_.data(), len, k.data(), v.data(), enc_len, false, 0, nullptr, ctx_.data());
    linear(L.cross_attn.o, ctx_.data(), len, y_.data());
    k_->gated_residual(x.data(), y_.data(), L.gate_cross, x.size());
  }
  k_->rmsnorm(x.data(), w_->decoder_norm, x.data(), (size_t)len, d, kNormEps);
  logits.resize((size_t)len * c.vocab_size);
  linear(w_->embedding, x.data(), len, logits.data());
}

std::vector<float> Engine::contrastive(std::span<const int32_t> tokens) {
  const Config& c = w_->config;
  const size_t d = (size_t)c.d_model;
  std::vector<uint8_t> valid(tokens.size());
  for (size_t t = 0; t < tokens.size(); ++t) valid[t] = tokens[t] != c.pad_token_id;
  std::vector<float> enc;
  encode(tokens, enc, valid);
  std::vector<float> pooled(d, 0.0f);
  double n = 0;
  for (size_t t = 0; t < tokens.size(); ++t) {
    if (!valid[t]) continue;
    n += 1;
    for (size_t i = 0; i < d; ++i) pooled[i] += enc[t * d + i];
  }
  for (auto& x : pooled) x = (float)(x / std::max(n, 1.0));
  std::vector<float> hid((size_t)c.hidden_dim()), out((size_t)c.contrastive_dim);
  linear(w_->contrastive_hidden, pooled.data(), 1, hid.data());
  for (size_t i = 0; i < hid.size(); ++i) hid[i] = std::max(0.0f, hid[i] + w_->contrastive_bias[i]);
  linear(w_->contrastive_proj, hid.data(), 1, out.data());
  double ss = 0;
  for (float x : out) ss += (double)x * x;
  const float inv = (float)(1.0 / std::sqrt(ss + 1e-12));
  for (auto& x : out) x *= inv;
  return out;
}

}  // namespace needle
