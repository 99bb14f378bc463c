// LoRA (train/lora.h): adapter gradients, the exact start from the base, learning, the merged
// export against the adapters at run time, QAT through W + s B A, recomputation, checkpoints.
//
// Tolerances.
// - Finite differences: as in grad_test.cpp (f32 central differences at h = 2e-2 and 1e-2,
//   Richardson-extrapolated; error <= 5e-3 of max(|g.u|, 1e-2)). A wrong term (a missing scale
//   s, a transposed factor) is an O(1) error.
// - Merged vs run time: the two compute the same real numbers in different f32 orders. Per Dense
//   output, run time rounds x W^T (a K-term dot product), s x A^T (K terms) and u B^T (r terms)
//   and their sum; merged rounds B A (r terms), W + s (B A), then one K-term dot product. Each
//   K-term dot product is within gamma_K = K u / (1 - K u) (u = 2^-24) of exact relative to
//   sum |x_i w_i|: with K = 64, r = 4, ~(2 K + r + 3) u ~ 8e-6 worst case per Dense. A pass chains
//   at most 4 Dense per block over 2 + 2*3 blocks and the head (~33 roundings of that size,
//   adding to first order) -> ~3e-4 relative worst case in the logits, and the loss (CE + z,
//   |L| ~ 5-10) moves by at most that relative amount. We check 3e-4 relative; we measure ~1e-7
//   (rounding errors do not all align). The adapters themselves move the loss by > 100x that,
//   so a wrong merge fails.
// - QAT: the run-time QAT kernel is fake_quantize(merged_kernel(W, A, B)), the very function the
//   export merge uses, so a QAT step's loss equals the merged model's fake-quantized loss exactly.
#include <catch2/catch.hpp>

#include "train_fixtures.h"

#include <sys/resource.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <chrono>
#include <fstream>
#include <sstream>
#include <cmath>
#include <map>
#include <random>

#include "fixtures.h"
#include "io/file.h"
#include "io/pickle.h"
#include "model/model_io.h"
#include "nk/threadpool.h"
#include "text/tokenizer.h"
#include "train/finetune_data.h"
#include "train/grad.h"
#include "train/lora.h"
#include "train/trainer.h"

using namespace needle;
using namespace needle::train;

namespace {

using train_fixtures::small_config;

using train_fixtures::small_params;

// Adapters with a non-zero B (fresh adapters have B = 0, where dA is exactly 0).
Lora random_lora(const Config& c, int rank, float alpha, uint64_t seed) {
  Lora l = init_lora(c, rank, alpha, seed);
  std::mt19937 rng((unsigned)seed + 1);
  std::normal_distribution<float> nd(0.0f, 0.2f);
  for_each_adapter(l, c, [&](const LoraSpec&, LoraPair& p) {
    for (float& x : p.b) x = nd(rng);
  });
  return l;
}

using train_fixtures::small_batch;

std::vector<std::vector<float>*> tensors(Lora& l, const Config& c) {
  std::vector<std::vector<float>*> out;
  for_each_adapter(l, c, [&](const LoraSpec&, LoraPair& p) {
    out.push_back(&p.a);
    out.push_back(&p.b);
  });
  return out;
}

double rel_diff(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-30); }

// The tiny fixture model (d 64, 2/3 layers, vocabulary 1000) and its tokenizer.
struct TinyModel {
  Config cfg;
  Params params;
  text::Tokenizer tok;
};

TinyModel load_tiny_model() {
  auto bytes = read_file(fixtures::test_data("tiny_np1_f16.pkl"));
  REQUIRE(bytes.is_ok());
  auto ck = read_pickle_checkpoint(*bytes);
  REQUIRE(ck.is_ok());
  auto cfg = Config::from_pickle(ck->config);
  REQUIRE(cfg.is_ok());
  auto p = params_from_pickle(*ck, *cfg);
  REQUIRE(p.is_ok());
  auto tb = read_file(fixtures::test_data("tiny_tok.model"));
  REQUIRE(tb.is_ok());
  auto tok = text::Tokenizer::from_bytes(std::span<const uint8_t>(*tb));
  REQUIRE(tok.is_ok());
  return {*cfg, std::move(p).value(), std::move(tok).value()};
}

// The first n_batches * batch examples of ft_small.jsonl as padded batches.
std::vector<TextBatch> ft_small_batches(const text::Tokenizer& tok, int n_batches, int batch) {
  LoadReport rep;
  SeqLimits lim;
  lim.max_enc_len = 256;
  lim.max_dec_len = 64;
  auto ex = load_examples(fixtures::test_data("ft_small.jsonl"), tok, lim, rep);
  REQUIRE(ex.is_ok());
  REQUIRE(ex->size() >= (size_t)(n_batches * batch));
  std::vector<TextBatch> out;
  for (int i = 0; i < n_batches; ++i) {
    std::vector<size_t> idx;
    for (int j = 0; j < batch; ++j) idx.push_back((size_t)(i * batch + j));
    out.push_back(make_batch(*ex, idx));
  }
  return out;
}

double mean_loss(Trainer& t, const std::vector<TextBatch>& bs) {
  double s = 0;
  for (auto& b : bs) {
    auto l = t.eval_loss(b);
    REQUIRE(l.is_ok());
    s += l->loss;
  }
  return s / (double)bs.size();
}

bool same_bits(const Params& a, const Params& b, const Config& c) {
  std::vector<const std::vector<float>*> va;
  for_each_tensor(const_cast<Params&>(a), c, [&](const TensorSpec&, std::vector<float>& v) { va.push_back(&v); });
  size_t i = 0;
  bool same = true;
  for_each_tensor(const_cast<Params&>(b), c, [&](const TensorSpec&, std::vector<float>& v) {
    same = same && *va[i++] == v;
  });
  return same;
}

}  // namespace

TEST_CASE("LoRA: dA and dB agree with finite differences", "[lora]") {
  struct Case {
    int heads, kv, rank;
    float alpha, dropout;
  };
  for (Case k : {Case{4, 2, 3, 6.0f, 0.0f}, Case{2, 1, 2, 1.0f, 0.2f}}) {
    DYNAMIC_SECTION("heads " << k.heads << " kv " << k.kv << " rank " << k.rank << " alpha " << k.alpha
                             << " dropout " << k.dropout) {
      Config c = small_config(k.heads, k.kv);
      const Params p = small_params(c, 5);
      const Lora l = random_lora(c, k.rank, k.alpha, 7);
      TextBatch b = small_batch(c, 9);
      LossOptions opt;
      nk::ThreadPool pool(2);
      PassOptions pass{k.dropout, 1234, &pool};
      pass.lora = &l;
      Lora g = zero_lora(c, k.rank, k.alpha);
      PassOptions gpass = pass;
      gpass.lora_grads = &g;
      auto loss = text_loss(c, p, b, opt, gpass, nullptr);  // base frozen: no base gradients
      REQUIRE(loss.is_ok());

      Lora probe = l;
      auto pt = tensors(probe, c);
      auto gt = tensors(g, c);
      std::mt19937 rng(17);
      std::normal_distribution<double> nd(0.0, 1.0);
      double worst = 0;
      for (size_t t = 0; t < pt.size(); ++t) {
        std::vector<float>& w = *pt[t];
        const std::vector<float>& gr = *gt[t];
        const std::vector<float> w0 = w;
        double gn = 0, rn = 0, un = 0, gu = 0;
        for (float x : gr) gn += (double)x * x;
        gn = std::sqrt(gn);
        std::vector<double> u(w.size());
        for (auto& x : u) {
          x = nd(rng);
          rn += x * x;
        }
        rn = std::sqrt(rn);
        for (size_t i = 0; i < u.size(); ++i) {
          u[i] = u[i] / rn + (gn > 0 ? gr[i] / gn : 0.0);
          un += u[i] * u[i];
        }
        un = std::sqrt(un);
        for (size_t i = 0; i < u.size(); ++i) {
          u[i] /= un;
          gu += u[i] * gr[i];
        }
        auto central = [&](double h) {
          PassOptions q = pass;
          q.lora = &probe;
          for (size_t i = 0; i < w.size(); ++i) w[i] = (float)(w0[i] + h * u[i]);
          const double lp = text_loss(c, p, b, opt, q)->loss;
          for (size_t i = 0; i < w.size(); ++i) w[i] = (float)(w0[i] - h * u[i]);
          const double lm = text_loss(c, p, b, opt, q)->loss;
          w = w0;
          return (lp - lm) / (2 * h);
        };
        const double fd = (4 * central(1e-2) - central(2e-2)) / 3;
        const double err = std::abs(fd - gu) / std::max(std::abs(gu), 1e-2);
        INFO("adapter tensor " << t << " (" << (t % 2 ? "B" : "A") << "): analytic " << gu << " fd " << fd);
        CHECK(err <= 5e-3);
        worst = std::max(worst, err);
      }
      WARN("LoRA finite differences: worst relative error " << worst << " over " << pt.size() << " tensors");
    }
  }
}

TEST_CASE("LoRA: gradients are the chain rule through W_eff = W + s B A", "[lora]") {
  // dW_eff from a full-model pass on the merged weights gives dB = s dW_eff A^T and
  // dA = s B^T dW_eff; the base gradient of an adapted pass equals dW_eff. Checked with and
  // without the INT4 QAT forward (straight-through: the same expressions with Q(W_eff)).
  Config c = small_config(4, 2);
  const Params p = small_params(c, 3);
  const Lora l = random_lora(c, 3, 4.5f, 11);
  TextBatch b = small_batch(c, 4);
  LossOptions opt;
  Params merged = p;
  merge_lora(merged, l, c);
  for (bool qat : {false, true}) {
    DYNAMIC_SECTION("qat " << qat) {
      PassOptions full;
      full.fake_quant = qat;
      Params g_eff;
      auto lf = text_loss(c, merged, b, opt, full, &g_eff);
      REQUIRE(lf.is_ok());

      PassOptions pass = full;
      pass.lora = &l;
      Lora gl = zero_lora(c, 3, 4.5f);
      pass.lora_grads = &gl;
      Params g_base;
      auto la = text_loss(c, p, b, opt, pass, &g_base);
      REQUIRE(la.is_ok());
      if (qat) CHECK(la->loss == lf->loss);  // the same quantized kernels, bit for bit
      else CHECK(rel_diff(la->loss, lf->loss) < 3e-4);

      // Kernel gradients by name.
      std::map<std::string, std::vector<float>*> geff, gbase;
      for_each_tensor(g_eff, c, [&](const TensorSpec& s, std::vector<float>& v) { geff[s.name] = &v; });
      for_each_tensor(g_base, c, [&](const TensorSpec& s, std::vector<float>& v) { gbase[s.name] = &v; });
      const double s = l.scale();
      double worst = 0;
      for_each_adapter(gl, c, [&](const LoraSpec& spec, LoraPair& got) {
        const LoraPair* ad = nullptr;
        for_each_adapter(const_cast<Lora&>(l), c, [&](const LoraSpec& s2, LoraPair& pp) {
          if (s2.kernel == spec.kernel) ad = &pp;
        });
        REQUIRE(ad);
        const std::vector<float>& G = *geff.at(spec.kernel);  // [out, in]
        const int r = 3;
        std::vector<float> want_b((size_t)spec.out * r, 0.0f), want_a((size_t)r * spec.in, 0.0f);
        for (int o = 0; o < spec.out; ++o)
          for (int k = 0; k < r; ++k) {
            double acc = 0;
            for (int i = 0; i < spec.in; ++i) acc += (double)G[(size_t)o * spec.in + i] * ad->a[(size_t)k * spec.in + i];
            want_b[(size_t)o * r + k] = (float)(s * acc);
          }
        for (int k = 0; k < r; ++k)
          for (int i = 0; i < spec.in; ++i) {
            double acc = 0;
            for (int o = 0; o < spec.out; ++o) acc += (double)ad->b[(size_t)o * r + k] * G[(size_t)o * spec.in + i];
            want_a[(size_t)k * spec.in + i] = (float)(s * acc);
          }
        INFO(spec.kernel);
        const double eb = fixtures::rel_err(got.b, want_b), ea = fixtures::rel_err(got.a, want_a);
        const double ew = fixtures::rel_err(*gbase.at(spec.kernel), G);
        CHECK(eb < 1e-4);
        CHECK(ea < 1e-4);
        CHECK(ew < 1e-4);
        worst = std::max({worst, eb, ea, ew});
      });
      WARN("LoRA chain rule (qat " << qat << "): worst relative error " << worst);
    }
  }
}

TEST_CASE("LoRA: fresh adapters start exactly at the base model", "[lora]") {
  Config c = small_config(4, 2);
  const Params p = small_params(c, 6);
  TextBatch b = small_batch(c, 2);
  TrainOptions o;
  o.lora_rank = 4;
  o.lora_alpha = 8;
  o.dropout = 0.0f;
  o.qat_every = 0;
  o.schedule.total_steps = 10;
  auto base = text_loss(c, p, b, o.loss, PassOptions{});
  REQUIRE(base.is_ok());
  auto t = Trainer::create(c, p, o, 2);
  REQUIRE(t.is_ok());
  CHECK(t->is_lora());
  CHECK(t->optim_state().m.embedding.empty());  // no moments for the frozen base
  auto l0 = t->eval_loss(b);
  REQUIRE(l0.is_ok());
  CHECK(l0->loss == base->loss);  // B = 0: bit for bit
  auto s0 = t->train_step(b);
  REQUIRE(s0.is_ok());
  CHECK(s0->loss == base->loss);
  CHECK(s0->grad_norm > 0);
  // Only B has a gradient at B = 0 (dA = s B^T dW = 0), so after one step A is unchanged
  // and the loss has moved.
  Lora fresh = init_lora(c, 4, 8.0f, o.seed);
  for_each_adapter(fresh, c, [&](const LoraSpec& s, LoraPair& a) {
    for_each_adapter(const_cast<Lora&>(t->lora()), c, [&](const LoraSpec& s2, LoraPair& a2) {
      if (s2.kernel == s.kernel) CHECK(a2.a == a.a);
    });
  });
  auto l1 = t->eval_loss(b);
  REQUIRE(l1.is_ok());
  CHECK(l1->loss != base->loss);
  CHECK(same_bits(t->params(), p, c));  // the base never changes
}

TEST_CASE("LoRA: recomputation gives bit-identical gradients", "[lora]") {
  Config c = small_config(4, 2);
  const Params p = small_params(c, 8);
  const Lora l = random_lora(c, 2, 2.0f, 3);
  TextBatch b = small_batch(c, 5);
  ClipBatch cb;
  cb.batch = 2;
  cb.query_len = 4;
  cb.tool_len = 5;
  cb.query = {3, 4, 5, 0, 6, 7, 8, 9};
  cb.tool = {10, 11, 12, 0, 0, 13, 14, 15, 16, 17};
  for (bool lora : {false, true}) {
    Params g[2];
    Lora gl[2] = {zero_lora(c, 2, 2.0f), zero_lora(c, 2, 2.0f)};
    double loss[2], clip[2];
    for (int rc = 0; rc < 2; ++rc) {
      Workspace ws;
      PassOptions pass{0.1f, 77, nullptr, &ws};
      pass.recompute = rc == 1;
      if (lora) pass.lora = &l, pass.lora_grads = &gl[rc];
      loss[rc] = text_loss(c, p, b, LossOptions{}, pass, lora ? nullptr : &g[rc])->loss;
      clip[rc] = *clip_loss(c, p, cb, pass, lora ? nullptr : &g[rc], 0.5f);
    }
    INFO("lora " << lora);
    CHECK(loss[0] == loss[1]);
    CHECK(clip[0] == clip[1]);
    if (lora) {
      auto a = tensors(gl[0], c), bb = tensors(gl[1], c);
      for (size_t i = 0; i < a.size(); ++i) CHECK(*a[i] == *bb[i]);
    } else {
      CHECK(same_bits(g[0], g[1], c));
    }
  }
}

TEST_CASE("LoRA: training lowers the loss; the merged export evaluates as the adapters at run time", "[lora]") {
  TinyModel m = load_tiny_model();
  const Config& c = m.cfg;
  const auto batches = ft_small_batches(m.tok, 4, 8);
  TrainOptions o;
  o.lora_rank = 4;
  o.lora_alpha = 8;  // s = 2: a merge that forgot the scale would fail below
  o.optim.adam_lr = 2e-2f;
  o.dropout = 0.0f;
  o.qat_every = 0;
  o.schedule.total_steps = 32;
  o.seed = 5;
  auto t = Trainer::create(c, m.params, o, 2);
  REQUIRE(t.is_ok());
  const double before = mean_loss(*t, batches);
  for (int s = 0; s < 32; ++s) REQUIRE(t->train_step(batches[(size_t)s % batches.size()]).is_ok());
  const double after = mean_loss(*t, batches);
  WARN("LoRA rank 4 on ft_small (tiny model): training loss " << before << " -> " << after << " in 32 steps");
  CHECK(after < 0.85 * before);  // measured ~0.77 x; a wrong sign or unapplied adapters stay >= 1 x
  CHECK(same_bits(t->params(), m.params, c));  // frozen base

  // Export the merged model as a .needle (f32), read it back, and evaluate it.
  Params merged = t->merged_params();
  WriteOptions wo;
  wo.type = WeightType::F32;
  auto w = build_needle(merged, c, wo);
  REQUIRE(w.is_ok());
  const std::vector<uint8_t> file_bytes = w->serialize();
  auto f = NeedleFile::parse(file_bytes);
  REQUIRE(f.is_ok());
  auto mf = model_from_file(std::move(f).value());
  REQUIRE(mf.is_ok());
  auto exported = to_params(*mf);
  REQUIRE(exported.is_ok());
  // Only the adapted kernels differ from the base.
  std::map<std::string, const std::vector<float>*> base_t;
  for_each_tensor(m.params, c, [&](const TensorSpec& s, std::vector<float>& v) { base_t[s.name] = &v; });
  size_t changed = 0;
  for_each_tensor(*exported, c, [&](const TensorSpec& s, std::vector<float>& v) {
    const bool adapted = s.role == Role::Kernel && s.name.find("_attn/") != std::string::npos;
    INFO(s.name);
    if (!adapted) CHECK(v == *base_t.at(s.name));
    changed += adapted && v != *base_t.at(s.name);
  });
  CHECK(changed == (size_t)4 * (c.num_encoder_layers + 2 * c.num_decoder_layers));

  double worst = 0, moved = 1e30;
  for (const auto& b : batches) {
    auto rt = t->eval_loss(b);
    auto me = text_loss(c, *exported, b, o.loss, PassOptions{});
    auto bl = text_loss(c, m.params, b, o.loss, PassOptions{});
    REQUIRE(rt.is_ok());
    REQUIRE(me.is_ok());
    REQUIRE(bl.is_ok());
    worst = std::max(worst, rel_diff(me->loss, rt->loss));
    moved = std::min(moved, rel_diff(bl->loss, rt->loss));
  }
  WARN("merged export vs adapters at run time: worst relative loss difference " << worst
                                                                                << "; adapters moved the loss by >= "
                                                                                << moved);
  CHECK(worst <= 3e-4);
  CHECK(moved > 100 * 3e-4);

  // A QAT step runs fake_quantize(W + s B A): its loss is the merged model's fake-quantized loss.
  TrainOptions oq = t->options();
  oq.qat_every = 1;
  t->set_options(oq);
  auto want = text_loss(c, fake_quantize_kernels(t->merged_params(), c), batches[0], o.loss, PassOptions{});
  auto sq = t->train_step(batches[0]);
  REQUIRE(want.is_ok());
  REQUIRE(sq.is_ok());
  CHECK(sq->fake_quant);
  CHECK(sq->text.loss == want->loss);
}

TEST_CASE("LoRA: checkpoint holds adapters and moments, resumes bit-identically, checks its base", "[lora]") {
  Config c = small_config(4, 2);
  const Params p = small_params(c, 2);
  std::vector<TextBatch> bs;
  for (uint64_t i = 0; i < 6; ++i) bs.push_back(small_batch(c, 20 + i));
  TrainOptions o;
  o.lora_rank = 2;
  o.optim.adam_lr = 1e-2f;
  o.qat_every = 3;  // a QAT step on each side of the save
  o.seed = 4;
  o.recompute = true;
  o.schedule.total_steps = 6;
  auto a = Trainer::create(c, p, o, 2);
  REQUIRE(a.is_ok());
  CHECK(a->options().lora_alpha == 2.0f);  // alpha defaults to the rank
  for (int i = 0; i < 3; ++i) REQUIRE(a->train_step(bs[(size_t)i]).is_ok());
  const auto bytes = a->to_bytes();
  CHECK(bytes.size() < (size_t)param_count(c) * sizeof(float));  // no base weights inside

  CHECK_FALSE(Trainer::from_bytes(bytes).is_ok());  // needs the base
  Params other = p;
  other.decoder_norm[0] += 1e-3f;
  auto wrong = Trainer::from_bytes(bytes, other, 1);
  REQUIRE_FALSE(wrong.is_ok());
  CHECK(wrong.message().find("base model differs") != std::string::npos);

  auto b = Trainer::from_bytes(bytes, p, 1);  // another thread count on purpose
  INFO(b.message());
  REQUIRE(b.is_ok());
  CHECK(b->is_lora());
  CHECK(b->step() == 3);
  CHECK(b->to_bytes() == bytes);
  for (int i = 3; i < 6; ++i) {
    auto sa = a->train_step(bs[(size_t)i]);
    auto sb = b->train_step(bs[(size_t)i]);
    REQUIRE(sa.is_ok());
    REQUIRE(sb.is_ok());
    CHECK(sa->loss == sb->loss);
    CHECK(sa->grad_norm == sb->grad_norm);
  }
  CHECK(a->to_bytes() == b->to_bytes());
  CHECK(same_bits(a->merged_params(), b->merged_params(), c));

  auto bad = bytes;
  bad[bad.size() / 3] ^= 4;
  CHECK_FALSE(Trainer::from_bytes(bad, p).is_ok());
  o.lora_rank = c.d_model + 1;
  CHECK_FALSE(Trainer::create(c, p, o).is_ok());
}

// Benchmarks, not tests (hidden; run ONE per process, since peak RSS is per process):
//   needle_tests "LoRA benchmark: 26M shape with recompute"      (the configuration --lora uses)
//   needle_tests "LoRA benchmark: 26M shape without recompute"
//   needle_tests "Full fine-tuning benchmark: 26M shape with recompute"
// Batch 16 x (256 encoder + 64 decoder) tokens, every position real, 2 threads, rank 8; prints
// seconds per step, tokens/s (encoder + decoder tokens) and the process's peak RSS.
namespace {
// Current and peak resident memory (MiB) from /proc/self/status.
std::string rss_now() {
  std::ifstream f("/proc/self/status");
  std::string line, out;
  while (std::getline(f, line))
    if (line.rfind("VmRSS", 0) == 0 || line.rfind("VmHWM", 0) == 0) {
      std::istringstream in(line.substr(6));
      long kb = 0;
      in >> kb;
      out += line.substr(0, 5) + " " + std::to_string(kb / 1024) + " MiB ";
    }
  return out;
}
void bench_26m(int rank, bool recompute, int steps) {
#if defined(__GLIBC__)
  mallopt(M_MMAP_THRESHOLD, 1 << 20);  // needle-finetune's allocation policy (apps/needle-finetune.cpp)
#endif
  Config c;  // the released shape (fixtures/README.md "full")
  c.vocab_size = 8192;
  c.d_model = 512;
  c.num_heads = 8;
  c.num_kv_heads = 4;
  c.num_encoder_layers = 12;
  c.num_decoder_layers = 8;
  c.contrastive_dim = 128;
  REQUIRE(c.validate().is_ok());
  std::mt19937 rng(1);
  std::uniform_int_distribution<int> tok(6, c.vocab_size - 1), cls(0, 3);
  TextBatch b;
  b.batch = 16;
  b.enc_len = 256;
  b.dec_len = 64;
  for (int i = 0; i < b.batch * b.enc_len; ++i) b.src.push_back(tok(rng)), b.enc_seg.push_back(1);
  for (int i = 0; i < b.batch * b.dec_len; ++i)
    b.tgt_in.push_back(tok(rng)), b.tgt_out.push_back(tok(rng)), b.dec_seg.push_back(1), b.loss_class.push_back(cls(rng));
  TrainOptions o;
  o.schedule.total_steps = 1000;
  o.qat_every = 2;  // every other step is a QAT step (its peak counts too)
  o.lora_rank = rank;
  o.recompute = recompute;
  o.optim.adam_lr = 1e-3f;
  auto t = Trainer::create(c, init_params(c, 1), o, 2);
  REQUIRE(t.is_ok());
  WARN("after Trainer::create: " << rss_now());
  REQUIRE(t->eval_loss(b).is_ok());
  WARN("after a forward-only pass: " << rss_now());
  const double tokens = (double)b.batch * (b.enc_len + b.dec_len);
  for (int s = 0; s < steps; ++s) {
    const auto t0 = std::chrono::steady_clock::now();
    auto st = t->train_step(b);
    REQUIRE(st.is_ok());
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    WARN((rank ? "LoRA rank " + std::to_string(rank) : std::string("full fine-tuning"))
         << (recompute ? ", recompute" : ", no recompute") << ": step " << s << (st->fake_quant ? " (QAT)" : "")
         << " " << sec << " s, " << tokens / sec << " tok/s, loss " << st->loss << " " << rss_now());
  }
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  WARN("peak RSS " << ru.ru_maxrss / 1024 << " MiB (" << ru.ru_maxrss * 1024 / 1000000 << " MB)");
}
}  // namespace

TEST_CASE("LoRA benchmark: 26M shape with recompute", "[.][lora-bench]") { bench_26m(8, true, 3); }
TEST_CASE("LoRA benchmark: 26M shape without recompute", "[.][lora-bench]") { bench_26m(8, false, 3); }
TEST_CASE("Full fine-tuning benchmark: 26M shape with recompute", "[.][lora-bench]") { bench_26m(0, true, 2); }
