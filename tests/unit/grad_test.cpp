// Training gradients against the original JAX model's (grads_tiny fixture), plus finite
// differences for what the fixture does not cover.
//
// Tolerances. Fixture: per tensor ||ours - ref|| / ||ref|| <= 1e-4. Both sides run f32 from the
// same f16-exact weights; the differences are f32 rounding in different summation orders (each
// dot product ~ sqrt(K) * 2^-24, K <= 1000 -> ~2e-6), amplified by the backward's chain of ~40
// products and softmax Jacobians: 1e-4 leaves a margin of ~10x over what we measure (printed).
// Finite differences: the f32 forward, central differences along one direction per tensor at
// h = 2e-2 and 1e-2, Richardson-extrapolated (truncation O(h^4)); f32 rounding of the loss
// (~1e-6 relative, |L| ~ 5-10) divided by h leaves ~1e-5 absolute, measured worst ~1.5e-3 of
// max(|g.u|, 1e-2); we check 5e-3 (a wrong term in any backward shows up as O(1)).
#include <catch2/catch.hpp>

#include "train_fixtures.h"

#include <cmath>
#include <random>

#include "eval/loss.h"
#include "fixtures.h"
#include "io/file.h"
#include "io/pickle.h"
#include "model/engine.h"
#include "model/forward_ref.h"
#include "model/model_io.h"
#include "train/grad.h"
#include "train/ops.h"
#include "train/trainer.h"
#include "nk/threadpool.h"

using namespace needle;
using namespace needle::train;

namespace {

struct Tiny {
  Config cfg;
  Params params;
};

Tiny load_tiny() {
  auto bytes = read_file(fixtures::test_data("tiny_np1_f16.pkl"));
  REQUIRE(bytes.is_ok());
  auto ck = read_pickle_checkpoint(*bytes);
  INFO(ck.message());
  REQUIRE(ck.is_ok());
  auto cfg = Config::from_pickle(ck->config);
  REQUIRE(cfg.is_ok());
  auto p = params_from_pickle(*ck, *cfg);
  REQUIRE(p.is_ok());
  return {*cfg, std::move(p).value()};
}

TextBatch fixture_batch(const fixtures::Arrays& g) {
  TextBatch b;
  auto shape = g.shape("src");
  b.batch = (int)shape[0];
  b.enc_len = (int)shape[1];
  b.dec_len = (int)g.shape("tgt_in")[1];
  b.src = g.i32("src");
  b.enc_seg = g.i32("enc_seg");
  b.tgt_in = g.i32("tgt_in");
  b.tgt_out = g.i32("tgt_out");
  b.dec_seg = g.i32("dec_seg");
  b.loss_class = g.i32("loss_class");
  return b;
}

// Compares every parameter's gradient with the fixture's (pickle layout, stacked layers).
// Returns the worst relative error.
double compare_grads(const Config& c, const Params& grads, const fixtures::Arrays& ref, const std::string& prefix) {
  PickleCheckpoint ck = params_to_pickle(grads, c);
  double worst = 0;
  int compared = 0;
  for (auto& [path, t] : ck.params) {
    const std::string name = prefix + path;
    INFO(name);
    REQUIRE(ref.has(name));
    auto want = ref.f32(name);
    auto got = t.to_f32();
    REQUIRE(got.is_ok());
    REQUIRE(got->size() == want.size());
    double den = 0, diff = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      den += (double)want[i] * want[i];
      diff += ((double)(*got)[i] - want[i]) * ((double)(*got)[i] - want[i]);
    }
    if (den == 0) {  // the reference gradient is exactly zero (e.g. the head in the text loss)
      CHECK(diff == 0);
      continue;
    }
    const double rel = std::sqrt(diff / den);
    UNSCOPED_INFO(name << " rel err " << rel);
    CHECK(rel <= 1e-4);
    worst = std::max(worst, rel);
    ++compared;
  }
  CHECK(compared > 10);
  return worst;
}

}  // namespace

TEST_CASE("text loss and gradients match the original (grads_tiny)", "[grad]") {
  Tiny m = load_tiny();
  fixtures::Arrays g(fixtures::test_data("grads_tiny"));
  TextBatch batch = fixture_batch(g);
  auto w = g.f32("loss_weights");
  LossOptions opt;
  for (int i = 0; i < 4; ++i) opt.class_weights[(size_t)i] = w[(size_t)i];

  for (unsigned threads : {1u, 2u}) {
    nk::ThreadPool pool(threads);
    Params grads;
    auto loss = text_loss(m.cfg, m.params, batch, opt, PassOptions{0.0f, 0, &pool}, &grads);
    INFO(loss.message());
    REQUIRE(loss.is_ok());
    CHECK(loss->ce == Approx(g.f32("ce")[0]).epsilon(1e-5));
    CHECK(loss->z_loss == Approx(g.f32("z_loss")[0]).epsilon(1e-5));
    CHECK(loss->loss == Approx(g.f32("text_loss")[0]).epsilon(1e-5));
    CHECK(loss->tokens == batch.target_tokens());
    const double worst = compare_grads(m.cfg, grads, g, "grad_text/");
    WARN("grad_text worst per-tensor relative error: " << worst << " (threads " << threads << ")");

    // Without gradients the loss is the same number.
    auto again = text_loss(m.cfg, m.params, batch, opt, PassOptions{0.0f, 0, &pool});
    REQUIRE(again.is_ok());
    CHECK(again->loss == loss->loss);
  }
}

TEST_CASE("clip loss and gradients match the original (grads_tiny)", "[grad]") {
  Tiny m = load_tiny();
  fixtures::Arrays g(fixtures::test_data("grads_tiny"));
  ClipBatch cb;
  cb.batch = (int)g.shape("clip_query_tokens")[0];
  cb.query_len = (int)g.shape("clip_query_tokens")[1];
  cb.tool_len = (int)g.shape("clip_tool_tokens")[1];
  cb.query = g.i32("clip_query_tokens");
  cb.tool = g.i32("clip_tool_tokens");
  nk::ThreadPool pool(2);
  Params grads;
  auto loss = clip_loss(m.cfg, m.params, cb, PassOptions{0.0f, 0, &pool}, &grads);
  INFO(loss.message());
  REQUIRE(loss.is_ok());
  CHECK(*loss == Approx(g.f32("clip_loss")[0]).epsilon(1e-5));
  const double worst = compare_grads(m.cfg, grads, g, "grad_clip/");
  WARN("grad_clip worst per-tensor relative error: " << worst);

}

// ---------------------------------------------------------------------------------------------
// Finite differences on tiny random configs: padding patterns, GQA ratios the fixture does not
// use (1:1 and 4:1), a large z-loss coefficient, dropout (a fixed mask is a fixed function) and
// the CLIP loss with a non-default temperature.

namespace {

Config fd_config(int heads, int kv_heads) { return train_fixtures::small_config(heads, kv_heads); }

// Random parameters where every tensor matters, and a non-default CLIP temperature.
Params fd_params(const Config& c, uint64_t seed) {
  Params p = train_fixtures::small_params(c, seed);
  p.log_temp[0] = -1.0f;
  return p;
}

TextBatch fd_batch(const Config& c, uint64_t seed) { return train_fixtures::small_batch(c, seed); }

// Checks d loss / d params against central differences along one direction per tensor.
template <class LossFn>
void check_fd(const Config& c, const Params& p, const Params& grads, LossFn&& loss, const char* what) {
  std::mt19937 rng(17);
  std::normal_distribution<double> nd(0.0, 1.0);
  Params probe = p;
  auto flat_p = std::vector<std::vector<float>*>{};
  for_each_tensor(probe, c, [&](const TensorSpec&, std::vector<float>& v) { flat_p.push_back(&v); });
  size_t idx = 0;
  double worst = 0;
  for_each_tensor(const_cast<Params&>(grads), c, [&](const TensorSpec& s, std::vector<float>& g) {
    std::vector<float>& w = *flat_p[idx++];
    const std::vector<float> w0 = w;
    // Direction: the normalized gradient plus a random unit vector (a wrong gradient shows up
    // in either component).
    double gn = 0;
    for (float x : g) gn += (double)x * x;
    gn = std::sqrt(gn);
    std::vector<double> u(g.size());
    double rn = 0;
    for (auto& x : u) {
      x = nd(rng);
      rn += x * x;
    }
    rn = std::sqrt(rn);
    double un = 0;
    // (a one-element tensor gets the direction +1: random + gradient could cancel there)
    for (size_t i = 0; i < u.size(); ++i) {
      u[i] = u.size() == 1 ? 1.0 : u[i] / rn + (gn > 0 ? g[i] / gn : 0.0);
      un += u[i] * u[i];
    }
    un = std::sqrt(un);
    double gu = 0;
    for (size_t i = 0; i < u.size(); ++i) {
      u[i] /= un;
      gu += u[i] * g[i];
    }
    // Central differences at h and h/2, Richardson-extrapolated: (4 D(h/2) - D(h)) / 3 cancels
    // the O(h^2) truncation term, leaving O(h^4) plus f32 rounding ~ eps * |L| / h.
    auto central = [&](double h) {
      for (size_t i = 0; i < w.size(); ++i) w[i] = (float)(w0[i] + h * u[i]);
      const double lp = loss(probe);
      for (size_t i = 0; i < w.size(); ++i) w[i] = (float)(w0[i] - h * u[i]);
      const double lm = loss(probe);
      w = w0;
      return (lp - lm) / (2 * h);
    };
    const double h = 2e-2;
    const double fd = (4 * central(h / 2) - central(h)) / 3;
    const double err = std::abs(fd - gu) / std::max(std::abs(gu), 1e-2);
    INFO(what << " " << s.name << ": analytic " << gu << " finite difference " << fd);
    CHECK(err <= 5e-3);
    worst = std::max(worst, err);
  });
  WARN(what << ": worst finite-difference relative error " << worst);
}

}  // namespace

TEST_CASE("text-loss gradients agree with finite differences (GQA ratios, padding, z-loss, dropout)", "[grad]") {
  struct Case {
    int heads, kv;
    float z, dropout;
  };
  for (Case k : {Case{4, 4, 1e-4f, 0.0f}, Case{4, 1, 0.05f, 0.0f}, Case{2, 1, 1e-4f, 0.2f}}) {
    DYNAMIC_SECTION("heads " << k.heads << " kv " << k.kv << " z " << k.z << " dropout " << k.dropout) {
      Config c = fd_config(k.heads, k.kv);
      Params p = fd_params(c, 5);
      TextBatch b = fd_batch(c, 9);
      LossOptions opt;
      opt.z_loss = k.z;
      nk::ThreadPool pool(2);
      const PassOptions pass{k.dropout, 1234, &pool};
      Params g;
      auto l = text_loss(c, p, b, opt, pass, &g);
      REQUIRE(l.is_ok());
      CHECK(l->tokens == 10);
      check_fd(c, p, g, [&](const Params& q) { return text_loss(c, q, b, opt, pass)->loss; }, "text");
    }
  }
}

TEST_CASE("clip-loss gradients agree with finite differences", "[grad]") {
  Config c = fd_config(4, 2);
  Params p = fd_params(c, 8);
  ClipBatch cb;
  cb.batch = 4;
  cb.query_len = 5;
  cb.tool_len = 6;
  std::mt19937 rng(4);
  std::uniform_int_distribution<int> tok(1, c.vocab_size - 1);
  const int qn[4] = {5, 3, 2, 4}, tn[4] = {6, 6, 1, 3};
  for (int i = 0; i < 4; ++i) {
    for (int t = 0; t < 5; ++t) cb.query.push_back(t < qn[i] ? tok(rng) : 0);
    for (int t = 0; t < 6; ++t) cb.tool.push_back(t < tn[i] ? tok(rng) : 0);
  }
  const PassOptions pass{};
  Params g;
  auto l = clip_loss(c, p, cb, pass, &g, 1.0f);
  REQUIRE(l.is_ok());
  check_fd(c, p, g, [&](const Params& q) { return *clip_loss(c, q, cb, pass); }, "clip");
}

TEST_CASE("gradients accumulate with the given scale and padding does not leak", "[grad]") {
  Config c = fd_config(4, 2);
  Params p = fd_params(c, 3);
  TextBatch b = fd_batch(c, 2);
  LossOptions opt;
  Params g1, g2;
  REQUIRE(text_loss(c, p, b, opt, PassOptions{}, &g1, 1.0f).is_ok());
  REQUIRE(text_loss(c, p, b, opt, PassOptions{}, &g2, 0.5f).is_ok());
  REQUIRE(text_loss(c, p, b, opt, PassOptions{}, &g2, 0.5f).is_ok());
  CHECK(fixtures::rel_err(g2.embedding, g1.embedding) < 1e-6);
  CHECK(fixtures::rel_err(g2.encoder[0].attn.q, g1.encoder[0].attn.q) < 1e-6);

  // Changing padded tokens (ids under seg = 0) changes neither the loss nor any gradient.
  TextBatch b2 = b;
  for (size_t i = 0; i < b2.src.size(); ++i)
    if (!b2.enc_seg[i]) b2.src[i] = 7;
  for (size_t i = 0; i < b2.tgt_in.size(); ++i)
    if (!b2.dec_seg[i]) b2.tgt_in[i] = 9, b2.tgt_out[i] = 11, b2.loss_class[i] = 2;
  Params g3;
  auto l1 = text_loss(c, p, b, opt, PassOptions{}, nullptr);
  auto l3 = text_loss(c, p, b2, opt, PassOptions{}, &g3);
  REQUIRE(l3.is_ok());
  CHECK(l3->loss == l1->loss);
  // Padded rows' embeddings get no gradient except through tied logits (none: rows are skipped).
  CHECK(fixtures::rel_err(g3.encoder[1].attn.v, g1.encoder[1].attn.v) == 0.0);
  CHECK(g3.embedding[7 * 16] == g1.embedding[7 * 16]);
}

TEST_CASE("row-parallel norm, RoPE and residual passes: the same bits on any thread count, and correct",
          "[grad]") {
  // 3000 rows of 64 = 192,000 floats: 3 blocks of 65,536 (the last partial), so the per-block
  // partial sums of dscale and dgate are really exercised.
  const int rows = 3000, n = 64;
  const auto x = fixtures::randn((size_t)rows * n, 3), dout = fixtures::randn((size_t)rows * n, 4),
             scale = fixtures::randn((size_t)n, 5);
  const Dropout drop{0.1f, 12345};

  struct Out {
    std::vector<float> y, rstd, dx, dx_in, dscale, dscale_in, res, dres, rope;
    float dgate = 0.0f;
  };
  auto run = [&](nk::ThreadPool* pool) {
    Out o;
    o.y.resize(x.size());
    o.rstd.resize((size_t)rows);
    rmsnorm_forward(o.y.data(), o.rstd.data(), x.data(), scale.data(), rows, n, pool);
    o.dx.assign(x.size(), 0.5f);
    o.dscale.assign((size_t)n, 0.25f);
    rmsnorm_backward(o.dx.data(), o.dscale.data(), dout.data(), x.data(), o.rstd.data(), scale.data(), rows, n, pool);
    o.dx_in = dout;
    o.dscale_in.assign((size_t)n, 0.0f);
    rmsnorm_backward_inplace(o.dx_in.data(), o.dscale_in.data(), x.data(), o.rstd.data(), scale.data(), rows, n, pool);
    o.res = x;
    residual_forward(o.res.data(), dout.data(), 0.3f, drop, x.size(), pool);
    o.dres.assign(x.size(), 0.0f);
    residual_backward(o.dres.data(), &o.dgate, dout.data(), x.data(), 0.3f, drop, x.size(), pool);
    o.rope = x;
    rope_forward(o.rope.data(), 3, 1000, 1, 64, 10000.0, pool);  // [3 * 1000, 1 head * 64]: 3 blocks
    return o;
  };
  const Out ref = run(nullptr);
  for (unsigned threads : {1u, 2u, 3u}) {
    nk::ThreadPool pool(threads);
    const Out o = run(&pool);
    CHECK(o.y == ref.y);
    CHECK(o.rstd == ref.rstd);
    CHECK(o.dx == ref.dx);
    CHECK(o.dscale == ref.dscale);
    CHECK(o.dx_in == ref.dx_in);
    CHECK(o.dscale_in == ref.dscale_in);
    CHECK(o.res == ref.res);
    CHECK(o.dres == ref.dres);
    CHECK(o.dgate == ref.dgate);
    CHECK(o.rope == ref.rope);
  }

  // Against plain double-precision sums over all rows (f32 rounding of ~3000 terms: 1e-4 rel).
  for (int i = 0; i < n; ++i) {
    double ds = 0;
    for (int r = 0; r < rows; ++r) ds += (double)dout[(size_t)r * n + i] * x[(size_t)r * n + i] * ref.rstd[(size_t)r];
    CHECK(ref.dscale_in[(size_t)i] == Approx(ds).epsilon(1e-4).margin(1e-3));
    CHECK(ref.dscale[(size_t)i] - 0.25f == Approx(ds).epsilon(1e-4).margin(1e-3));
  }
  for (size_t i = 0; i < x.size(); i += 997) CHECK(ref.dx[i] - 0.5f == Approx(ref.dx_in[i]).margin(1e-6));
  const double g = 1.0 / (1.0 + std::exp(-0.3));
  double dg = 0;
  for (size_t i = 0; i < x.size(); ++i) dg += (double)dout[i] * x[i] * drop.factor(i);
  CHECK(ref.dgate == Approx(dg * g * (1.0 - g)).epsilon(1e-5));
  // RoPE at position 0 is the identity; the backward undoes the forward.
  CHECK(std::equal(ref.rope.begin(), ref.rope.begin() + 64, x.begin()));
  std::vector<float> back = ref.rope;
  rope_backward(back.data(), 3, 1000, 1, 64, 10000.0);
  for (size_t i = 0; i < x.size(); i += 101) CHECK(back[i] == Approx(x[i]).margin(1e-5));
}

TEST_CASE("the text loss's unweighted NLL is needle-eval --loss's teacher-forced loss", "[grad]") {
  // The trainer reports the class-weighted CE (its objective) and the plain NLL; the latter must
  // equal what the inference engine computes for the same sequences (f32 weights; both f32 with
  // different summation orders: ~1e-6 relative).
  const Config c = train_fixtures::small_config(4, 2);
  const Params p = train_fixtures::small_params(c, 21);
  const TextBatch b = train_fixtures::small_batch(c, 22);
  LossOptions opt;  // class weights 1, 2, 4, 1.5
  auto l = text_loss(c, p, b, opt, PassOptions{});
  REQUIRE(l.is_ok());
  WriteOptions wo;
  wo.type = WeightType::F32;
  auto mm = memory_model(p, c, wo);
  REQUIRE(mm.is_ok());
  Engine e((*mm)->weights, 1);
  eval::LossSum sum;
  for (int i = 0; i < b.batch; ++i) {
    std::vector<int32_t> enc, din, tgt;
    for (int t = 0; t < b.enc_len; ++t)
      if (b.enc_seg[(size_t)(i * b.enc_len + t)]) enc.push_back(b.src[(size_t)(i * b.enc_len + t)]);
    for (int t = 0; t < b.dec_len; ++t)
      if (b.dec_seg[(size_t)(i * b.dec_len + t)]) {
        din.push_back(b.tgt_in[(size_t)(i * b.dec_len + t)]);
        tgt.push_back(b.tgt_out[(size_t)(i * b.dec_len + t)]);
      }
    auto s = eval::teacher_forced_loss(e, enc, din, tgt);
    sum.sum += s.sum;
    sum.tokens += s.tokens;
  }
  REQUIRE((int64_t)sum.tokens == l->tokens);
  CHECK(l->nll == Approx(sum.sum / (double)sum.tokens).epsilon(1e-5));
  CHECK(l->ce != Approx(l->nll).epsilon(1e-3));  // the weights matter on this batch
}
