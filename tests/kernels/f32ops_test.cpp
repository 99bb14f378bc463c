// RMS-norm, RoPE and the gated residual: every path against double-precision math, with bounds
// from the f32 operation counts (u = 2^-24).
#include <catch2/catch.hpp>

#include <cmath>

#include "kt_util.h"

TEST_CASE("rmsnorm (1 + scale): paths vs double") {
  const float eps = 1e-6f;
  for (size_t dim : {1, 7, 8, 16, 64, 100, 512}) {
    const size_t rows = 5;
    auto x = kt::uniform(rows * dim, 10 + static_cast<uint32_t>(dim), -3.0f, 3.0f);
    auto s = kt::uniform(dim, 20 + static_cast<uint32_t>(dim), -0.5f, 0.5f);
    for (size_t t = 0; t < dim; ++t) x[3 * dim + t] *= 1e-4f;  // a small-norm row: eps matters
    for (const nk::Kernels* p : kt::all_paths()) {
      std::vector<float> y(rows * dim), inplace = x;
      p->rmsnorm(x.data(), s.data(), y.data(), rows, dim, eps);
      p->rmsnorm(inplace.data(), s.data(), inplace.data(), rows, dim, eps);
      for (size_t r = 0; r < rows; ++r) {
        double ss = 0.0;
        for (size_t t = 0; t < dim; ++t) ss += double(x[r * dim + t]) * x[r * dim + t];
        const double inv = 1.0 / std::sqrt(ss / dim + double(eps));
        // sum of squares (dim + 2) u, /dim, +eps, sqrt halves the relative error (+u), 1/ (u),
        // two products and 1 + s (3u): |dy| <= ((dim + 4) / 2 + 6) u |y|
        for (size_t t = 0; t < dim; ++t) {
          const double want = double(x[r * dim + t]) * inv * (1.0 + double(s[t]));
          INFO(p->name << " dim " << dim << " row " << r << " t " << t);
          CHECK(std::fabs(y[r * dim + t] - want) <= ((dim + 4) / 2.0 + 6) * kt::kU * std::fabs(want) + 1e-30);
          CHECK(inplace[r * dim + t] == y[r * dim + t]);
        }
      }
    }
  }
}

TEST_CASE("rope half-split: paths vs double") {
  const float theta = 10000.0f;
  for (size_t hd : {2, 8, 16, 24, 64}) {
    const size_t rows = 6, heads = 3, ld = heads * hd + 4, pos0 = 1000;
    auto x0 = kt::uniform(rows * ld, 30 + static_cast<uint32_t>(hd), -2.0f, 2.0f);
    for (const nk::Kernels* p : kt::all_paths()) {
      auto x = x0;
      p->rope(x.data(), rows, ld, heads, hd, pos0, theta);
      for (size_t r = 0; r < rows; ++r) {
        for (size_t h = 0; h < heads; ++h) {
          for (size_t i = 0; i < hd / 2; ++i) {
            const double freq = 1.0 / std::pow(double(theta), double(2 * i) / double(hd));
            const double ang = double(pos0 + r) * freq;
            const double c = std::cos(ang), sn = std::sin(ang);
            const double x1 = x0[r * ld + h * hd + i], x2 = x0[r * ld + h * hd + i + hd / 2];
            // The angle is formed in f32 as the model does: 2i/hd (u), theta^e (relative error
            // e u ln(theta) + u), 1/. (u), pos * freq (u): |d angle| <= (ln theta + 4) u |angle|;
            // cos/sin then move by at most that, and the rotation adds 3u of its terms.
            const double da = (std::log(double(theta)) + 4) * kt::kU * ang;
            const double b = (std::fabs(x1) + std::fabs(x2)) * (da + 4 * kt::kU);
            INFO(p->name << " hd " << hd << " r " << r << " h " << h << " i " << i);
            CHECK(std::fabs(x[r * ld + h * hd + i] - (x1 * c - x2 * sn)) <= b);
            CHECK(std::fabs(x[r * ld + h * hd + i + hd / 2] - (x2 * c + x1 * sn)) <= b);
          }
        }
        for (size_t e = heads * hd; e < ld; ++e) CHECK(x[r * ld + e] == x0[r * ld + e]);  // padding untouched
      }
    }
  }
}

TEST_CASE("rope at position 0 is the identity") {
  auto x0 = kt::uniform(64, 7);
  for (const nk::Kernels* p : kt::all_paths()) {
    auto x = x0;
    p->rope(x.data(), 1, 64, 1, 64, 0, 10000.0f);
    CHECK(x == x0);
  }
}

TEST_CASE("gated residual: paths vs double") {
  for (size_t n : {1, 9, 64, 515}) {
    auto x0 = kt::uniform(n, 40 + static_cast<uint32_t>(n)), y = kt::uniform(n, 41 + static_cast<uint32_t>(n));
    for (float g : {-3.0f, 0.0f, 0.7f, 12.0f}) {
      for (const nk::Kernels* p : kt::all_paths()) {
        auto x = x0;
        p->gated_residual(x.data(), y.data(), g, n);
        const double sg = 1.0 / (1.0 + std::exp(-double(g)));
        for (size_t i = 0; i < n; ++i) {
          const double want = double(x0[i]) + sg * y[i];
          // sigmoid in f32: exp (1 ulp) + add + divide -> 4u; product and sum: 2u
          CHECK(std::fabs(x[i] - want) <= kt::kU * (std::fabs(want) + 6 * sg * std::fabs(y[i])));
        }
      }
    }
  }
}
