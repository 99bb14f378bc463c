// Quantizers: activation Q8 (every path bit-identical to the reference), weight Q4 with the QAT
// rule, weight Q8, dequantization round trips.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>

#include "kt_util.h"

namespace {

// The QAT rule written out independently of the library: d = max|w| * (1/7) in f32, floored at
// 1e-8, q = clip(round_half_even(w * (1/d)), -8, 7).
float qat_q4_value(const float* w, size_t n, size_t j) {
  float amax = 0.0f;
  for (size_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(w[i]));
  float d = amax * (1.0f / 7.0f);
  if (d < 1e-8f) d = 1e-8f;
  const float id = 1.0f / d;
  float q = std::nearbyint(w[j] * id);
  q = std::min(7.0f, std::max(-8.0f, q));
  return q * d;
}

}  // namespace

TEST_CASE("quantize_q8: every path equals the reference bit for bit") {
  const nk::Kernels& ref = *nk::kernels_for(nk::Isa::scalar);
  for (size_t k : {1, 16, 31, 32, 33, 48, 96, 100, 512, 1000}) {
    const size_t rows = 3, ldx = k + 5, nb = nk::blocks_per_row(k);
    auto x = kt::uniform(rows * ldx, 11 + static_cast<uint32_t>(k), -3.0f, 3.0f);
    // exact ties in the first block (max 127 -> d = 1, x = n + 0.5 rounds to even) and a zero block
    if (k >= 32) {
      x[0] = 127.0f;
      for (size_t i = 1; i < 32; ++i) x[i] = static_cast<float>(i) - 16.0f + 0.5f;
    }
    if (k >= 64) std::fill(x.begin() + 32, x.begin() + 64, 0.0f);
    std::vector<nk::BlockQ8> want(rows * nb);
    ref.quantize_q8(x.data(), ldx, want.data(), rows, k);
    for (const nk::Kernels* p : kt::all_paths()) {
      INFO("path " << p->name << " k=" << k);
      std::vector<nk::BlockQ8> got(rows * nb);
      std::memset(got.data(), 0x5A, got.size() * sizeof(nk::BlockQ8));
      p->quantize_q8(x.data(), ldx, got.data(), rows, k);
      CHECK(std::memcmp(got.data(), want.data(), got.size() * sizeof(nk::BlockQ8)) == 0);
    }
  }
}

TEST_CASE("quantize_q8 reference: scale, rounding error, padding") {
  const nk::Kernels& ref = *nk::kernels_for(nk::Isa::scalar);
  const size_t k = 100, nb = nk::blocks_per_row(k);
  auto x = kt::uniform(k, 5, -2.0f, 2.0f);
  std::vector<nk::BlockQ8> q(nb);
  ref.quantize_q8(x.data(), k, q.data(), 1, k);
  for (size_t b = 0; b < nb; ++b) {
    float amax = 0.0f;
    for (size_t j = b * 32; j < std::min(k, b * 32 + 32); ++j) amax = std::max(amax, std::fabs(x[j]));
    CHECK(q[b].d == amax / 127.0f);
    for (size_t j = 0; j < 32; ++j) {
      const size_t i = b * 32 + j;
      if (i >= k) {
        CHECK(q[b].qs[j] == 0);
        continue;
      }
      CHECK(std::abs(int(q[b].qs[j])) <= 127);
      // |x - q*d| <= d/2 up to the rounding of x * (1/d)
      CHECK(std::fabs(double(x[i]) - double(q[b].qs[j]) * q[b].d) <= 0.5 * q[b].d * (1 + 1e-5) + 1e-12);
    }
  }
  // a zero block gets d = 0 and q = 0
  std::vector<float> z(32, 0.0f);
  ref.quantize_q8(z.data(), 32, q.data(), 1, 32);
  CHECK(q[0].d == 0.0f);
  for (int j = 0; j < 32; ++j) CHECK(q[0].qs[j] == 0);
  // ties round half to even: with max 127 -> d = 1, 2.5 -> 2, 3.5 -> 4, -2.5 -> -2
  std::vector<float> t(32, 0.0f);
  t[0] = 127.0f;
  t[1] = 2.5f;
  t[2] = 3.5f;
  t[3] = -2.5f;
  ref.quantize_q8(t.data(), 32, q.data(), 1, 32);
  CHECK(q[0].d == 1.0f);
  CHECK(q[0].qs[1] == 2);
  CHECK(q[0].qs[2] == 4);
  CHECK(q[0].qs[3] == -2);
}

TEST_CASE("quantize_row_q4 follows the QAT rule exactly") {
  for (size_t k : {16, 32, 48, 100, 512}) {
    auto w = kt::uniform(k, 100 + static_cast<uint32_t>(k), -0.2f, 0.2f);
    w[0] = 0.2f * 6.5f / 7.0f;  // a value close to a tie after scaling
    const size_t nb = nk::blocks_per_row(k);
    std::vector<nk::BlockQ4> q(nb);
    nk::quantize_row_q4(w.data(), q.data(), k);
    std::vector<float> back(k);
    nk::dequantize_row_q4(q.data(), back.data(), k);
    for (size_t i = 0; i < k; ++i) {
      const size_t b = i / 32, n = std::min<size_t>(32, k - b * 32);
      const float want = qat_q4_value(w.data() + b * 32, n, i % 32);
      INFO("k=" << k << " i=" << i);
      CHECK(back[i] == want);  // bit-exact, not approximately
    }
    // padding nibbles encode q = 0
    if (k % 32)
      for (size_t j = k % 32; j < 32; ++j) CHECK(nk::q4_get(q[nb - 1], static_cast<int>(j)) == 0);
  }
}

TEST_CASE("quantize_row_q4: half-even rounding, clipping at -8, zero rows") {
  // max|w| = 7 -> d = 7 * (1/7) (rounded to f32), w * (1/d) of 2.5, 3.5 are ties or near ties
  std::vector<float> w(32, 0.0f);
  w[0] = 7.0f;
  w[1] = -7.0f;
  w[2] = 2.5f;
  w[3] = 3.5f;
  w[4] = -0.5f;
  std::vector<nk::BlockQ4> q(1);
  nk::quantize_row_q4(w.data(), q.data(), 32);
  const float d = 7.0f * (1.0f / 7.0f);
  const float id = 1.0f / d;
  CHECK(q[0].d == d);
  CHECK(nk::q4_get(q[0], 0) == 7);
  CHECK(nk::q4_get(q[0], 1) == -7);
  CHECK(nk::q4_get(q[0], 2) == static_cast<int>(std::nearbyint(2.5f * id)));
  CHECK(nk::q4_get(q[0], 3) == static_cast<int>(std::nearbyint(3.5f * id)));
  CHECK(nk::q4_get(q[0], 4) == 0);  // -0.5 * ~1 rounds to even 0
  // |w * (1/d)| <= 7 (1 + 2u), so the clip to [-8, 7] never binds for finite input.
  for (int j = 0; j < 32; ++j) {
    CHECK(nk::q4_get(q[0], j) >= -8);
    CHECK(nk::q4_get(q[0], j) <= 7);
  }
  std::vector<float> z(32, 0.0f);
  nk::quantize_row_q4(z.data(), q.data(), 32);
  CHECK(q[0].d == 1e-8f);
  for (int j = 0; j < 32; ++j) CHECK(nk::q4_get(q[0], j) == 0);
}

TEST_CASE("quantize_row_q8 / dequantize round trip within d/2") {
  const size_t k = 1000, nb = nk::blocks_per_row(k);
  auto w = kt::uniform(k, 77, -1.0f, 1.0f);
  std::vector<nk::BlockQ8> q(nb);
  nk::quantize_row_q8(w.data(), q.data(), k);
  std::vector<float> back(k);
  nk::dequantize_row_q8(q.data(), back.data(), k);
  for (size_t i = 0; i < k; ++i) {
    const float d = q[i / 32].d;
    float amax = 0.0f;
    for (size_t j = i / 32 * 32; j < std::min(k, i / 32 * 32 + 32); ++j) amax = std::max(amax, std::fabs(w[j]));
    CHECK(d == amax * (1.0f / 127.0f));
    // |w - q d| <= d/2 + rounding of w*(1/d) (|w/d| <= 127 -> relative 2u) + rounding of q*d
    CHECK(std::fabs(double(w[i]) - double(back[i])) <= 0.5 * d + 127 * 3 * kt::kU * d);
  }
  // Q4 round trip: |w - w'| <= d/2 (+ rounding), except clipping never happens at +7 / -7 extremes
  std::vector<nk::BlockQ4> q4(nb);
  nk::quantize_row_q4(w.data(), q4.data(), k);
  nk::dequantize_row_q4(q4.data(), back.data(), k);
  for (size_t i = 0; i < k; ++i) {
    const float d = q4[i / 32].d;
    CHECK(std::fabs(double(w[i]) - double(back[i])) <= 0.5 * d + 8 * 3 * kt::kU * d);
  }
}
