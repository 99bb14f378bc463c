#include "train/trainer.h"

#include <cmath>
#include <algorithm>
#include <cstring>
#include <random>
#include <string>

#include "nk/threadpool.h"
#include "train/ops.h"

namespace needle::train {
namespace {

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// ---- Checkpoint bytes: little-endian fields, FNV-1a 64 checksum at the end.
constexpr char kMagic[8] = {'N', 'D', 'L', 'T', 'R', 'A', 'I', 'N'};
// Version 1: full fine-tuning only. Version 2 adds a mode byte after the optimizer count:
// 0 = full (params, m, v as in version 1), 1 = LoRA (base fingerprint, adapters, their m, v).
constexpr uint32_t kVersion = 2;

uint64_t fnv1a(const uint8_t* p, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

struct Writer {
  std::vector<uint8_t> b;
  void raw(const void* p, size_t n) {
    const auto* c = static_cast<const uint8_t*>(p);
    b.insert(b.end(), c, c + n);
  }
  template <class T>
  void pod(T v) {
    raw(&v, sizeof v);
  }
  void str(const std::string& s) {
    pod<uint32_t>((uint32_t)s.size());
    raw(s.data(), s.size());
  }
  void floats(const std::vector<float>& v) {
    pod<uint64_t>(v.size());
    raw(v.data(), v.size() * sizeof(float));
  }
};

struct Reader {
  std::span<const uint8_t> b;
  size_t pos = 0;
  bool ok = true;
  bool take(void* dst, size_t n) {
    if (!ok || n > b.size() - pos) return ok = false;
    if (n) std::memcpy(dst, b.data() + pos, n);  // an empty vector's data() may be null
    pos += n;
    return true;
  }
  template <class T>
  T pod() {
    T v{};
    take(&v, sizeof v);
    return v;
  }
  std::string str() {
    const uint32_t n = pod<uint32_t>();
    if (!ok || n > b.size() - pos) {
      ok = false;
      return {};
    }
    std::string s(reinterpret_cast<const char*>(b.data() + pos), n);
    pos += n;
    return s;
  }
  bool floats(std::vector<float>& v) {
    const uint64_t n = pod<uint64_t>();
    if (!ok || n > (b.size() - pos) / sizeof(float)) return ok = false;
    v.resize((size_t)n);
    return take(v.data(), (size_t)n * sizeof(float));
  }
};

// Options as named numbers, so a later version can add fields.
template <class F>
void visit_options(TrainOptions& o, F&& f) {
  auto& op = o.optim;
  f("optim.muon", op.muon);
  f("optim.adam_lr", op.adam_lr);
  f("optim.adam_b1", op.adam_b1);
  f("optim.adam_b2", op.adam_b2);
  f("optim.adam_eps", op.adam_eps);
  f("optim.adam_weight_decay", op.adam_weight_decay);
  f("optim.muon_lr", op.muon_lr);
  f("optim.muon_momentum", op.muon_momentum);
  f("optim.muon_weight_decay", op.muon_weight_decay);
  f("optim.muon_ns_steps", op.muon_ns_steps);
  f("optim.clip_norm", op.clip_norm);
  for (size_t i = 0; i < 4; ++i) f("loss.class_weight." + std::to_string(i), o.loss.class_weights[i]);
  f("loss.z_loss", o.loss.z_loss);
  f("schedule.total_steps", o.schedule.total_steps);
  f("schedule.warmup_frac", o.schedule.warmup_frac);
  f("schedule.decay_frac", o.schedule.decay_frac);
  f("schedule.final_frac", o.schedule.final_frac);
  f("dropout", o.dropout);
  f("qat_every", o.qat_every);
  f("clip_weight", o.clip_weight);
  f("seed", o.seed);
  f("lora.rank", o.lora_rank);
  f("lora.alpha", o.lora_alpha);
  f("recompute", o.recompute);
}

// Every adapter tensor (A then B of each adapter, for_each_adapter order).
template <class F>
void for_each_lora_tensor(Lora& l, const Config& c, F&& f) {
  for_each_adapter(l, c, [&](const LoraSpec&, LoraPair& p) {
    f(p.a);
    f(p.b);
  });
}

Status check_shapes(const Params& p, const Config& c) {
  if ((int)p.encoder.size() != c.num_encoder_layers || (int)p.decoder.size() != c.num_decoder_layers)
    return make_error("parameters have the wrong number of layers for the config");
  Status st;
  for_each_tensor(const_cast<Params&>(p), c, [&](const TensorSpec& s, std::vector<float>& v) {
    int64_t n = 1;
    for (auto d : s.shape) n *= d;
    if (st && (int64_t)v.size() != n) st = make_error("tensor '{}' has {} values, expected {}", s.name, v.size(), n);
  });
  return st;
}

}  // namespace

Params fake_quantize_kernels(const Params& p, const Config& c) {
  Params q = p;
  for_each_tensor(q, c, [&](const TensorSpec& s, std::vector<float>& v) {
    // Stored [out, in]: a row is one output column of the original (in, out) kernel, so groups
    // of 32 along the row are the original's groups along the input axis.
    if (s.role == Role::Kernel) fake_quantize_rows(v.data(), (size_t)s.shape[0], (size_t)s.shape[1]);
  });
  return q;
}

Params init_params(const Config& c, uint64_t seed) {
  Params p = zero_params(c);
  std::mt19937_64 rng(seed);
  for_each_tensor(p, c, [&](const TensorSpec& s, std::vector<float>& v) {
    double sd = 0;
    if (s.role == Role::Embedding) sd = 0.02;
    else if (s.role == Role::Kernel) sd = 1.0 / std::sqrt((double)s.shape[1]);
    if (sd > 0) {
      std::normal_distribution<double> nd(0.0, sd);
      for (float& x : v) x = (float)nd(rng);
    }
    if (s.role == Role::Scalar) v.assign(v.size(), (float)std::log(0.07));
  });
  return p;
}

Trainer::Trainer(Trainer&&) noexcept = default;
Trainer& Trainer::operator=(Trainer&&) noexcept = default;
Trainer::~Trainer() = default;

Result<Trainer> Trainer::create(const Config& c, Params p, const TrainOptions& o, unsigned threads) {
  NEEDLE_TRY(c.validate());
  NEEDLE_TRY(check_shapes(p, c));
  if (o.schedule.total_steps <= 0) return make_error("training needs total_steps > 0");
  if (o.dropout < 0 || o.dropout >= 1) return make_error("dropout {} must be in [0, 1)", o.dropout);
  if (o.lora_rank < 0 || o.lora_rank > c.d_model)
    return make_error("LoRA rank {} must be in [1, d_model = {}]", o.lora_rank, c.d_model);
  if (o.lora_rank > 0 && !(o.lora_alpha >= 0 && std::isfinite(o.lora_alpha)))
    return make_error("LoRA alpha {} must be positive", o.lora_alpha);
  Trainer t;
  t.c_ = c;
  t.o_ = o;
  t.p_ = std::move(p);
  if (o.lora_rank > 0) {
    if (t.o_.lora_alpha == 0) t.o_.lora_alpha = (float)o.lora_rank;
    t.lora_ = init_lora(c, o.lora_rank, t.o_.lora_alpha, o.seed);
    t.lora_m_ = zero_lora(c, o.lora_rank, t.o_.lora_alpha);
    t.lora_v_ = t.lora_m_;
    t.base_fingerprint_ = params_fingerprint(t.p_, c);
  } else {
    t.s_ = init_optim_state(c, o.optim);
  }
  t.rng_ = o.seed;
  t.pool_ = std::make_unique<nk::ThreadPool>(threads);
  t.ws_ = std::make_unique<Workspace>();
  return t;
}

PassOptions Trainer::pass(float dropout, uint64_t key) const {
  PassOptions ps{dropout, key, pool_.get(), ws_.get()};
  if (is_lora()) ps.lora = &lora_;
  ps.recompute = o_.recompute;
  return ps;
}

Params Trainer::merged_params() const {
  Params m = p_;
  if (is_lora()) merge_lora(m, lora_, c_);
  return m;
}

void Trainer::release_workspace() { ws_ = std::make_unique<Workspace>(); }

Result<StepStats> Trainer::train_step(const TextBatch& batch, const ClipBatch* clip) {
  StepStats st;
  st.step = step_;
  st.fake_quant = o_.qat_every > 0 && (step_ + 1) % o_.qat_every == 0;
  uint64_t rng = rng_;
  const uint64_t key = splitmix64(rng);

  // QAT: the forward (and so the backward's Jacobians) sees the fake-quantized kernels -- with
  // LoRA fake_quantize(W + s B A) -- computed layer by layer (PassOptions::fake_quant); the
  // gradient is applied to the f32 weights (or the adapters) unchanged (straight-through).
  PassOptions text_pass = pass(o_.dropout, key), clip_pass = pass(o_.dropout, key ^ 0x5bd1e995ull);
  text_pass.fake_quant = clip_pass.fake_quant = st.fake_quant;
  Params* grads = nullptr;
  if (is_lora()) {
    if (lora_g_.empty()) lora_g_ = zero_lora(c_, lora_.rank, lora_.alpha);
    for_each_lora_tensor(lora_g_, c_, [](std::vector<float>& v) { std::fill(v.begin(), v.end(), 0.0f); });
    text_pass.lora_grads = clip_pass.lora_grads = &lora_g_;
  } else {
    if (grads_.encoder.empty() && grads_.decoder.empty()) grads_ = zero_params(c_);
    for_each_tensor(grads_, c_, [](const TensorSpec&, std::vector<float>& v) { std::fill(v.begin(), v.end(), 0.0f); });
    grads = &grads_;
  }
  NEEDLE_ASSIGN(st.text, text_loss(c_, p_, batch, o_.loss, text_pass, grads, 1.0f));
  st.loss = st.text.loss;
  if (clip) {
    NEEDLE_ASSIGN(st.clip_loss, clip_loss(c_, p_, *clip, clip_pass, grads, o_.clip_weight));
    st.loss += o_.clip_weight * st.clip_loss;
  }
  if (!std::isfinite(st.loss)) return make_error("loss is not finite at step {} ({})", step_, st.loss);

  st.lr_scale = o_.schedule(step_);
  if (is_lora()) {
    // Global-norm clipping over the adapters' gradients (double accumulation, as for the full model),
    // then AdamW on every A and B (docs/training.md: why not Muon).
    double ss = 0;
    for_each_lora_tensor(lora_g_, c_, [&](std::vector<float>& v) {
      for (float x : v) ss += (double)x * x;
    });
    st.grad_norm = std::sqrt(ss);
    const float clip_norm = o_.optim.clip_norm;
    if (clip_norm > 0 && st.grad_norm > clip_norm) {
      const float f = (float)(clip_norm / st.grad_norm);
      for_each_lora_tensor(lora_g_, c_, [&](std::vector<float>& v) {
        for (float& x : v) x *= f;
      });
    }
    s_.count += 1;
    std::vector<std::vector<float>*> gs, ms, vs;
    for_each_lora_tensor(lora_g_, c_, [&](std::vector<float>& v) { gs.push_back(&v); });
    for_each_lora_tensor(lora_m_, c_, [&](std::vector<float>& v) { ms.push_back(&v); });
    for_each_lora_tensor(lora_v_, c_, [&](std::vector<float>& v) { vs.push_back(&v); });
    const auto& op = o_.optim;
    const float lr = (float)(op.adam_lr * st.lr_scale);
    size_t i = 0;
    for_each_lora_tensor(lora_, c_, [&](std::vector<float>& w) {
      adamw_update(w.data(), gs[i]->data(), ms[i]->data(), vs[i]->data(), w.size(), s_.count, lr, op.adam_b1,
                   op.adam_b2, op.adam_eps, op.adam_weight_decay);
      ++i;
    });
  } else {
    st.grad_norm = clip_by_global_norm(grads_, c_, o_.optim.clip_norm);
    optimizer_step(p_, grads_, s_, c_, o_.optim, st.lr_scale, pool_.get());
  }
  rng_ = rng;
  step_ += 1;
  return st;
}

Result<TextLoss> Trainer::eval_loss(const TextBatch& batch) {
  return text_loss(c_, p_, batch, o_.loss, pass(0.0f, 0));
}

Result<double> Trainer::eval_clip_loss(const ClipBatch& batch) { return clip_loss(c_, p_, batch, pass(0.0f, 0)); }

std::vector<uint8_t> Trainer::to_bytes() const {
  Writer w;
  w.raw(kMagic, sizeof kMagic);
  w.pod<uint32_t>(kVersion);
  auto cfg = c_.to_pickle();
  w.pod<uint32_t>((uint32_t)cfg.size());
  for (auto& [k, v] : cfg) {
    w.str(k);
    w.pod<uint8_t>((uint8_t)v.index());
    if (auto* b = std::get_if<bool>(&v)) w.pod<uint8_t>(*b);
    else if (auto* i = std::get_if<int64_t>(&v)) w.pod<int64_t>(*i);
    else if (auto* d = std::get_if<double>(&v)) w.pod<double>(*d);
    else if (auto* s = std::get_if<std::string>(&v)) w.str(*s);
  }
  TrainOptions o = o_;
  uint32_t n_opts = 0;
  visit_options(o, [&](const std::string&, auto&) { ++n_opts; });
  w.pod<uint32_t>(n_opts);
  visit_options(o, [&](const std::string& name, auto& v) {
    w.str(name);
    using T = std::decay_t<decltype(v)>;
    if constexpr (std::is_floating_point_v<T>) {
      w.pod<uint8_t>(0);
      w.pod<double>((double)v);
    } else {
      w.pod<uint8_t>(1);
      w.pod<uint64_t>((uint64_t)v);
    }
  });
  w.pod<int64_t>(step_);
  w.pod<uint64_t>(rng_);
  w.pod<int64_t>(s_.count);
  w.pod<uint8_t>(is_lora() ? 1 : 0);
  if (is_lora()) {
    w.pod<uint64_t>(base_fingerprint_);
    for (const Lora* l : {&lora_, &lora_m_, &lora_v_})
      for_each_lora_tensor(const_cast<Lora&>(*l), c_, [&](std::vector<float>& v) { w.floats(v); });
  } else {
    for (const Params* t : {&p_, &s_.m, &s_.v})
      for_each_tensor(const_cast<Params&>(*t), c_, [&](const TensorSpec&, std::vector<float>& v) { w.floats(v); });
  }
  w.pod<uint64_t>(fnv1a(w.b.data(), w.b.size()));
  return std::move(w.b);
}

Result<Trainer> Trainer::from_bytes(std::span<const uint8_t> bytes, unsigned threads) {
  return from_bytes(bytes, Params{}, threads);
}

Result<Trainer> Trainer::from_bytes(std::span<const uint8_t> bytes, Params base, unsigned threads) {
  if (bytes.size() < sizeof kMagic + 12 || std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0)
    return make_error("not a needle training state (bad magic)");
  uint64_t sum;
  std::memcpy(&sum, bytes.data() + bytes.size() - 8, 8);
  if (fnv1a(bytes.data(), bytes.size() - 8) != sum) return make_error("training state checksum mismatch (corrupt file)");
  Reader r{bytes.first(bytes.size() - 8), sizeof kMagic};
  const uint32_t version = r.pod<uint32_t>();
  if (version != 1 && version != kVersion)
    return make_error("training state version {} is not supported (this build reads 1 and {})", version, kVersion);

  std::vector<std::pair<std::string, ScalarValue>> cfg;
  const uint32_t n_cfg = r.pod<uint32_t>();
  for (uint32_t i = 0; i < n_cfg && r.ok; ++i) {
    std::string k = r.str();
    switch (r.pod<uint8_t>()) {
      case 1: cfg.emplace_back(k, r.pod<uint8_t>() != 0); break;
      case 2: cfg.emplace_back(k, r.pod<int64_t>()); break;
      case 3: cfg.emplace_back(k, r.pod<double>()); break;
      case 4: cfg.emplace_back(k, r.str()); break;
      default: return make_error("training state: bad config value for '{}'", k);
    }
  }
  if (!r.ok) return make_error("training state is truncated (config)");
  NEEDLE_ASSIGN(Config c, Config::from_pickle(cfg));

  TrainOptions o;
  const uint32_t n_opts = r.pod<uint32_t>();
  for (uint32_t i = 0; i < n_opts && r.ok; ++i) {
    const std::string name = r.str();
    const uint8_t tag = r.pod<uint8_t>();
    double d = 0;
    uint64_t u = 0;
    if (tag == 0) d = r.pod<double>();
    else u = r.pod<uint64_t>();
    visit_options(o, [&](const std::string& n, auto& v) {  // unknown names are ignored
      if (n != name) return;
      using T = std::decay_t<decltype(v)>;
      if constexpr (std::is_floating_point_v<T>) v = (T)d;
      else v = (T)u;
    });
  }
  Trainer t;
  t.c_ = c;
  t.o_ = o;
  t.step_ = r.pod<int64_t>();
  t.rng_ = r.pod<uint64_t>();
  t.s_.count = r.pod<int64_t>();
  const uint8_t mode = version == 1 ? 0 : r.pod<uint8_t>();
  if (!r.ok) return make_error("training state is truncated (header)");
  if (mode > 1) return make_error("training state: unknown mode {}", mode);
  if ((mode == 1) != (o.lora_rank > 0)) return make_error("training state: LoRA mode and options disagree");
  if (mode == 1) {
    if (o.lora_rank > c.d_model || !(o.lora_alpha > 0)) return make_error("training state: bad LoRA rank or alpha");
    const uint64_t fp = r.pod<uint64_t>();
    for (Lora* l : {&t.lora_, &t.lora_m_, &t.lora_v_}) {
      *l = zero_lora(c, o.lora_rank, o.lora_alpha);
      for_each_lora_tensor(*l, c, [&](std::vector<float>& v) { r.floats(v); });
    }
    if (!r.ok) return make_error("training state is truncated (adapters)");
    if (r.pos != r.b.size()) return make_error("training state has {} unexpected trailing bytes", r.b.size() - r.pos);
    for (Lora* l : {&t.lora_, &t.lora_m_, &t.lora_v_}) NEEDLE_TRY(check_lora(*l, c));
    if (base.encoder.empty() && base.decoder.empty() && base.embedding.empty())
      return make_error("a LoRA training state holds no base weights: resume it with the same base model");
    NEEDLE_TRY(check_shapes(base, c));
    if (params_fingerprint(base, c) != fp)
      return make_error("the base model differs from the one this LoRA run started from (fingerprint mismatch)");
    t.p_ = std::move(base);
    t.base_fingerprint_ = fp;
  } else {
    t.p_.resize(c);
    t.s_.m.resize(c);
    t.s_.v.resize(c);
    for (Params* ps : {&t.p_, &t.s_.m, &t.s_.v})
      for_each_tensor(*ps, c, [&](const TensorSpec&, std::vector<float>& v) { r.floats(v); });
    if (!r.ok) return make_error("training state is truncated (tensors)");
    if (r.pos != r.b.size()) return make_error("training state has {} unexpected trailing bytes", r.b.size() - r.pos);
    NEEDLE_TRY(check_shapes(t.p_, c));
    NEEDLE_TRY(check_shapes(t.s_.m, c));
  }
  t.pool_ = std::make_unique<nk::ThreadPool>(threads);
  t.ws_ = std::make_unique<Workspace>();
  return t;
}

}  // namespace needle::train
