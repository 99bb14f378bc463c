// Attention: every path against a double-precision naive reference with a bound derived from the
// f32 arithmetic, masks, GQA, online-softmax block sizes against the one-shot reference.
//
// Bound, per output element (i, h, t). Scores: an f32 dot of length hd plus the scale multiply
// has |ds_j| <= D_j = (hd + 2) u scale sum_t |q_t k_jt|. A perturbation of the scores changes
// each softmax weight by a factor within exp(+-2 max_j D_j). Forming p_j = exp(s_j - m) adds
// relative errors u |s_j - m| (the subtraction) + 4u (exp within 2 ulp: libm's expf is within 1,
// the x86 vector exp within 2, tested below); the sums over Lk keys (the normalizer and the
// weighted sum of v, including the online rescalings) and the final division add at most
// (2 Lk + 4) u relatively, and the normalizer's own error enters once more (2u spare). So
//   |o - o_exact| <= sum_j p_j |v_jt| (2.2 max D + u |s_j - m| + (2 Lk + 10) u)
// (2.2 instead of 2 covers exp(x) - 1 <= 1.1 x for the small x here).
#include <catch2/catch.hpp>

#include <cmath>

#include "../../kernels/internal.h"
#include "kt_util.h"

namespace {

struct Case {
  Case(size_t lq_, size_t lk_, size_t hq_, size_t hkv_, size_t hd_) : lq(lq_), lk(lk_), hq(hq_), hkv(hkv_), hd(hd_) {}
  size_t lq, lk, hq, hkv, hd;
  bool causal = false;
  size_t q_pos0 = 0;
  size_t k_valid = SIZE_MAX;
  std::vector<uint8_t> key_mask;  // empty = none
};

struct Data {
  std::vector<float> q, k, v;
};

Data make_data(const Case& c, uint32_t seed, float amp) {
  return {kt::uniform(c.lq * c.hq * c.hd, seed, -amp, amp), kt::uniform(c.lk * c.hkv * c.hd, seed + 1, -amp, amp),
          kt::uniform(c.lk * c.hkv * c.hd, seed + 2, -1.0f, 1.0f)};
}

nk::AttnArgs args(const Case& c, const Data& d, float* out) {
  nk::AttnArgs a;
  a.q = d.q.data();
  a.k = d.k.data();
  a.v = d.v.data();
  a.out = out;
  a.lq = c.lq;
  a.lk = c.lk;
  a.hq = c.hq;
  a.hkv = c.hkv;
  a.hd = c.hd;
  a.causal = c.causal;
  a.q_pos0 = c.q_pos0;
  a.k_valid = c.k_valid;
  a.key_mask = c.key_mask.empty() ? nullptr : c.key_mask.data();
  return a;
}

// Naive double-precision attention with the model's masking semantics, plus the error bound.
void naive(const Case& c, const Data& d, std::vector<double>& out, std::vector<double>& bound) {
  const size_t hd = c.hd, group = c.hq / c.hkv;
  const double scale = 1.0 / std::sqrt(static_cast<double>(static_cast<float>(hd)));
  const double fscale = static_cast<double>(1.0f / std::sqrt(static_cast<float>(hd)));
  out.assign(c.lq * c.hq * hd, 0.0);
  bound.assign(out.size(), 0.0);
  std::vector<double> s(c.lk), D(c.lk), p(c.lk);
  for (size_t h = 0; h < c.hq; ++h) {
    const size_t g = h / group;
    for (size_t i = 0; i < c.lq; ++i) {
      double mx = -DBL_MAX, maxD = 0.0;
      for (size_t j = 0; j < c.lk; ++j) {
        bool vis = j < c.k_valid && (c.key_mask.empty() || c.key_mask[j]);
        if (c.causal && j > c.q_pos0 + i) vis = false;
        double dot = 0.0, adot = 0.0;
        for (size_t t = 0; t < hd; ++t) {
          const double qk = double(d.q[(i * c.hq + h) * hd + t]) * d.k[(j * c.hkv + g) * hd + t];
          dot += qk;
          adot += std::fabs(qk);
        }
        s[j] = vis ? dot * fscale : -double(FLT_MAX);
        D[j] = vis ? (hd + 2) * kt::kU * fscale * adot : 0.0;
        maxD = std::max(maxD, D[j]);
        mx = std::max(mx, s[j]);
      }
      (void)scale;
      double sum = 0.0;
      for (size_t j = 0; j < c.lk; ++j) sum += (p[j] = std::exp(s[j] - mx));
      for (size_t j = 0; j < c.lk; ++j) p[j] /= sum;
      for (size_t t = 0; t < hd; ++t) {
        double o = 0.0, b = 0.0;
        for (size_t j = 0; j < c.lk; ++j) {
          const double vj = d.v[(j * c.hkv + g) * hd + t];
          o += p[j] * vj;
          const double sm = s[j] > -double(FLT_MAX) ? std::fabs(s[j] - mx) : 0.0;
          b += p[j] * std::fabs(vj) * (2.2 * maxD + kt::kU * sm + (2.0 * c.lk + 10) * kt::kU);
        }
        out[(i * c.hq + h) * hd + t] = o;
        bound[(i * c.hq + h) * hd + t] = b + 1e-30;
      }
    }
  }
}

using AttnFn = void (*)(const nk::AttnArgs&, size_t, size_t, size_t, size_t);

void check_against_naive(const char* what, AttnFn fn, const Case& c, const Data& d, size_t kv_block,
                         double bound_factor = 1.0) {
  std::vector<double> want, bound;
  naive(c, d, want, bound);
  std::vector<float> out(c.lq * c.hq * c.hd, -7.0f);
  nk::AttnArgs a = args(c, d, out.data());
  a.kv_block = kv_block;
  // split heads and rows as two threads might
  const size_t hm = c.hq / 2, im = c.lq / 2;
  fn(a, 0, hm, 0, c.lq);
  fn(a, hm, c.hq, 0, im);
  fn(a, hm, c.hq, im, c.lq);
  size_t bad = 0;
  for (size_t e = 0; e < out.size(); ++e) {
    const double err = std::fabs(double(out[e]) - want[e]);
    if (!(err <= bound_factor * bound[e])) {
      if (bad++ < 5)
        FAIL_CHECK(what << ": element " << e << " got " << out[e] << " want " << want[e] << " err " << err
                        << " bound " << bound[e] << " (lq " << c.lq << " lk " << c.lk << " kv_block " << kv_block
                        << ")");
    }
  }
  CHECK(bad == 0);
}

void check_all_paths(const Case& c, uint32_t seed, float amp = 1.0f) {
  const Data d = make_data(c, seed, amp);
  for (const nk::Kernels* p : kt::all_paths()) check_against_naive(p->name, p->attention, c, d, 0);
  for (size_t blk : {1, 3, 16, 64, 1000}) check_against_naive("online-scalar", nk::detail::attention_online_scalar, c, d, blk);
}

}  // namespace

TEST_CASE("attention: no mask, GQA, several shapes") {
  uint32_t seed = 1;
  for (size_t hd : {4, 8, 12, 64}) {
    for (size_t lk : {1, 2, 7, 64, 65, 200}) {
      Case c{3, lk, 8, 4, hd};
      check_all_paths(c, seed += 3);
      Case mha{2, lk, 2, 2, hd};
      check_all_paths(mha, seed += 3);
      Case mqa{2, lk, 4, 1, hd};
      check_all_paths(mqa, seed += 3);
      Case odd{2, lk, 6, 3, hd};  // head splits that break kv groups apart (3 | 3 of pairs)
      check_all_paths(odd, seed += 3);
    }
  }
}

TEST_CASE("attention: large scores (peaked softmax)") {
  Case c{4, 100, 4, 2, 64};
  check_all_paths(c, 99, 3.0f);  // scores up to ~ 3*3*64/8 = 72
}

TEST_CASE("attention: causal, with a KV-cache offset") {
  Case c{9, 9, 8, 4, 64};
  c.causal = true;
  check_all_paths(c, 200);
  Case dec{1, 30, 8, 4, 64};  // one decode step at position 29
  dec.causal = true;
  dec.q_pos0 = 29;
  check_all_paths(dec, 201);
  Case mid{3, 70, 4, 2, 16};  // 3 new rows at positions 40..42 of a 70-row cache
  mid.causal = true;
  mid.q_pos0 = 40;
  check_all_paths(mid, 202);
}

TEST_CASE("attention: key length and key padding masks") {
  Case kl{5, 20, 4, 2, 32};
  kl.k_valid = 13;
  check_all_paths(kl, 300);
  Case km{5, 90, 4, 2, 32};
  km.key_mask.assign(90, 1);
  for (size_t j = 0; j < 90; j += 3) km.key_mask[j] = 0;
  for (size_t j = 10; j < 80; ++j) km.key_mask[j] = 0;  // whole online blocks masked
  check_all_paths(km, 301);
  Case both{6, 12, 4, 2, 8};  // causal + padding (decoder self-attention of a padded batch)
  both.causal = true;
  both.key_mask.assign(12, 1);
  for (size_t j = 8; j < 12; ++j) both.key_mask[j] = 0;
  both.key_mask[0] = 0;  // query 0 sees nothing -> uniform over all keys
  check_all_paths(both, 302);
}

TEST_CASE("attention: all keys masked gives the mean of all value rows, like the reference") {
  Case c{2, 10, 2, 1, 8};
  c.key_mask.assign(10, 0);
  const Data d = make_data(c, 400, 1.0f);
  for (const nk::Kernels* p : kt::all_paths()) {
    std::vector<float> out(c.lq * c.hq * c.hd);
    nk::AttnArgs a = args(c, d, out.data());
    p->attention(a, 0, c.hq, 0, c.lq);
    for (size_t t = 0; t < c.hd; ++t) {
      double mean = 0.0;
      for (size_t j = 0; j < c.lk; ++j) mean += d.v[j * c.hd + t];
      mean /= c.lk;
      CHECK(std::fabs(out[t] - mean) <= (c.lk + 4) * kt::kU * 1.0);  // |v| <= 1
    }
  }
  Case kv{2, 10, 2, 1, 8};
  kv.k_valid = 0;  // key length 0 masks every key as well
  check_all_paths(kv, 401);
}

TEST_CASE("attention: explicit scale and strided rows") {
  Case c{3, 17, 4, 2, 16};
  const Data d = make_data(c, 500, 1.0f);
  // q, k, v embedded in wider rows (e.g. a fused QKV buffer)
  const size_t qw = c.hq * c.hd + 5, kw = c.hkv * c.hd + 3, ow = c.hq * c.hd + 7;
  std::vector<float> qs(c.lq * qw), ks(c.lk * kw), vs(c.lk * kw);
  for (size_t i = 0; i < c.lq; ++i)
    for (size_t e = 0; e < c.hq * c.hd; ++e) qs[i * qw + e] = d.q[i * c.hq * c.hd + e];
  for (size_t j = 0; j < c.lk; ++j)
    for (size_t e = 0; e < c.hkv * c.hd; ++e) {
      ks[j * kw + e] = d.k[j * c.hkv * c.hd + e];
      vs[j * kw + e] = d.v[j * c.hkv * c.hd + e];
    }
  for (const nk::Kernels* p : kt::all_paths()) {
    std::vector<float> packed(c.lq * c.hq * c.hd), strided(c.lq * ow, 0.0f);
    nk::AttnArgs a = args(c, d, packed.data());
    a.scale = 0.3f;
    p->attention(a, 0, c.hq, 0, c.lq);
    nk::AttnArgs b = a;
    b.q = qs.data();
    b.k = ks.data();
    b.v = vs.data();
    b.out = strided.data();
    b.q_ld = qw;
    b.k_ld = kw;
    b.v_ld = kw;
    b.out_ld = ow;
    p->attention(b, 0, c.hq, 0, c.lq);
    for (size_t i = 0; i < c.lq; ++i)
      for (size_t e = 0; e < c.hq * c.hd; ++e) CHECK(strided[i * ow + e] == packed[i * c.hq * c.hd + e]);
    // and the scale is used: compare with the default-scale result
    std::vector<float> def(packed.size());
    nk::AttnArgs dflt = args(c, d, def.data());
    p->attention(dflt, 0, c.hq, 0, c.lq);
    bool differs = false;
    for (size_t e = 0; e < def.size(); ++e) differs |= def[e] != packed[e];
    CHECK(differs);
  }
}

namespace {
using ExpFn = void (*)(const float*, float*, size_t);
void check_vector_exp(ExpFn fn) {
  std::vector<float> x = kt::uniform(200000, 600, -87.0f, 88.3f);
  for (float v : {0.0f, -0.0f, 1.0f, -1.0f, 0.34657359f, -0.34657359f, 1e-8f, -1e-8f, 88.3f, -87.0f}) x.push_back(v);
  std::vector<float> y(x.size());
  fn(x.data(), y.data(), x.size());
  double worst = 0.0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double want = std::exp(double(x[i]));
    const double ulp = std::ldexp(1.0, std::ilogb(want) - 23);  // ulp of the f32 result
    worst = std::max(worst, std::fabs(double(y[i]) - want) / ulp);
  }
  INFO("worst error " << worst << " ulp");
  CHECK(worst <= 2.0);
  std::vector<float> low = {-87.5f, -100.0f, -FLT_MAX, -INFINITY}, out(low.size());
  fn(low.data(), out.data(), low.size());
  for (float v : out) CHECK(v == 0.0f);
}
}  // namespace

#if defined(__x86_64__)
TEST_CASE("x86 vector exp: within 2 ulp on [-87, 88.3], 0 below -87.3 and at -inf") {
  if (nk::kernels_for(nk::Isa::avx2)) check_vector_exp(nk::detail::exp_avx2_for_test);
}
#endif
#if defined(__aarch64__)
TEST_CASE("NEON vector exp: within 2 ulp on [-87, 88.3], 0 below -87.3 and at -inf") {
  check_vector_exp(nk::detail::exp_neon_for_test);
}
#endif
