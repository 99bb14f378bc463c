// Masked row softmax and its backward (Kernels::softmax_rows*): every path against double
// precision, with masks (causal with offsets, key padding, rows with no visible key).
//
// Forward bound (u = 2^-24). Let s_k = x_k * scale and M = max over visible s_k (exact), and
// P_j = exp(s_j - M) / sum_visible exp(s_k - M). A path rounds x_k * scale (u |s_k|), takes the
// max of rounded values and subtracts it (u |s_k - M|), so each exponent argument is off by at
// most 2u (|s_k| + |M|); exp adds <= 2 ulp (4u), the f32 sum of n terms (n u), the reciprocal and
// the product (2u). Every p_j is therefore within P_j (4u A + (n + 10) u), A = max_k (|s_k| + |M|)
// over visible keys (the numerator's and the sum's worst argument errors add). Masked keys give
// exactly 0, and a row with no visible key exactly fl(1/n) (n ones sum exactly).
// Backward: D = sum_k p_k g_k in f32 lanes (<= (n + 1) u sum |p_k g_k|, the reference sums in
// double), then p_j (g_j - D) scale: three roundings. |g_j - G_j| <= |scale| p_j ((n + 1) u
// sum_k |p_k g_k| + 3u |g_j - D|), masked keys exactly 0.
#include <catch2/catch.hpp>

#include <cmath>

#include "kt_util.h"

namespace {

struct Mask {
  size_t n;
  const uint8_t* key;
  bool causal;
  size_t pos0;
  bool visible(size_t r, size_t j) const {
    return (!causal || j < pos0 + r + 1) && (!key || key[j]);
  }
};

}  // namespace

TEST_CASE("softmax_rows: paths vs double, masks and fully masked rows", "[softmax]") {
  const size_t rows = 6;
  uint32_t seed = 1;
  for (size_t n : {1, 3, 8, 13, 64, 100, 256}) {
    for (int mask_kind = 0; mask_kind < 3; ++mask_kind) {  // none, random padding, all padding
      std::vector<uint8_t> km(n);
      for (size_t j = 0; j < n; ++j) km[j] = mask_kind == 1 ? (j * 7 + 3) % 5 != 0 : 0;
      if (mask_kind == 1 && n > 1) km[0] = 0;  // the first key padded: causal row 0 sees nothing
      const uint8_t* key = mask_kind == 0 ? nullptr : km.data();
      for (bool causal : {false, true}) {
        for (size_t pos0 : {size_t(0), size_t(2)}) {
          if (!causal && pos0) continue;
          for (float scale : {0.125f, 1.0f}) {
            const Mask mk{n, key, causal, pos0};
            const size_t ld = n + 3;
            auto x0 = kt::uniform(rows * ld, seed++, -6.0f, 6.0f);
            std::vector<float> ref = x0;
            nk::kernels_for(nk::Isa::scalar)->softmax_rows(ref.data(), ld, rows, n, scale, key, causal, pos0);
            for (const nk::Kernels* p : kt::all_paths()) {
              std::vector<float> x = x0;
              p->softmax_rows(x.data(), ld, rows, n, scale, key, causal, pos0);
              size_t bad = 0;
              for (size_t r = 0; r < rows; ++r) {
                double M = -INFINITY;
                size_t nvis = 0;
                for (size_t j = 0; j < n; ++j)
                  if (mk.visible(r, j)) M = std::max(M, double(x0[r * ld + j]) * scale), ++nvis;
                double sum = 0, A = 0;
                for (size_t j = 0; j < n; ++j)
                  if (mk.visible(r, j)) {
                    const double s = double(x0[r * ld + j]) * scale;
                    sum += std::exp(s - M);
                    A = std::max(A, std::fabs(s) + std::fabs(M));
                  }
                for (size_t j = 0; j < ld; ++j) {
                  const float got = x[r * ld + j];
                  if (j >= n) {  // padding of the row untouched
                    bad += got != x0[r * ld + j];
                    continue;
                  }
                  if (nvis == 0) {
                    bad += got != 1.0f / float(n);
                    continue;
                  }
                  if (!mk.visible(r, j)) {
                    bad += got != 0.0f;
                    continue;
                  }
                  const double P = std::exp(double(x0[r * ld + j]) * scale - M) / sum;
                  const double bound = P * (4 * kt::kU * A + (double(n) + 10) * kt::kU) * 1.01;
                  bad += !(std::fabs(got - P) <= bound);
                  bad += !(std::fabs(got - ref[r * ld + j]) <= 2 * bound);
                }
              }
              INFO(p->name << " n " << n << " mask " << mask_kind << " causal " << causal << " pos0 " << pos0
                           << " scale " << scale);
              CHECK(bad == 0);
            }
          }
        }
      }
    }
  }
}

TEST_CASE("softmax_rows_backward: paths vs double", "[softmax]") {
  const size_t rows = 5;
  uint32_t seed = 100;
  for (size_t n : {1, 5, 8, 17, 64, 256}) {
    std::vector<uint8_t> km(n);
    for (size_t j = 0; j < n; ++j) km[j] = (j * 5 + 1) % 4 != 0;
    for (const uint8_t* key : {static_cast<const uint8_t*>(nullptr), static_cast<const uint8_t*>(km.data())}) {
      for (bool causal : {false, true}) {
        const Mask mk{n, key, causal, 1};
        const size_t ldp = n + 1, ldg = n + 2;
        const float scale = 0.125f;
        // p: a softmax of random scores (in double, rounded), masked entries 0 like the forward's
        auto s = kt::uniform(rows * ldp, seed++, -3.0f, 3.0f);
        std::vector<float> p(rows * ldp, 0.0f);
        for (size_t r = 0; r < rows; ++r) {
          double sum = 0;
          for (size_t j = 0; j < n; ++j) sum += mk.visible(r, j) ? std::exp(double(s[r * ldp + j])) : 0.0;
          for (size_t j = 0; j < n; ++j)
            p[r * ldp + j] = sum > 0 && mk.visible(r, j) ? float(std::exp(double(s[r * ldp + j])) / sum) : 0.0f;
        }
        auto g0 = kt::uniform(rows * ldg, seed++, -2.0f, 2.0f);
        for (const nk::Kernels* path : kt::all_paths()) {
          std::vector<float> g = g0;
          path->softmax_rows_backward(p.data(), ldp, g.data(), ldg, rows, n, scale, key, causal, 1);
          size_t bad = 0;
          for (size_t r = 0; r < rows; ++r) {
            double D = 0, T = 0;
            for (size_t j = 0; j < n; ++j) {
              D += double(p[r * ldp + j]) * g0[r * ldg + j];
              T += std::fabs(double(p[r * ldp + j]) * g0[r * ldg + j]);
            }
            for (size_t j = 0; j < ldg; ++j) {
              const float got = g[r * ldg + j];
              if (j >= n) {
                bad += got != g0[r * ldg + j];
                continue;
              }
              if (!mk.visible(r, j)) {
                bad += got != 0.0f;
                continue;
              }
              const double pj = p[r * ldp + j], G = pj * (g0[r * ldg + j] - D) * scale;
              const double bound =
                  scale * pj * ((double(n) + 1) * kt::kU * T + 3 * kt::kU * std::fabs(g0[r * ldg + j] - D)) * 1.01;
              bad += !(std::fabs(got - G) <= bound + 1e-30);
            }
          }
          INFO(path->name << " n " << n << " key mask " << (key != nullptr) << " causal " << causal);
          CHECK(bad == 0);
        }
      }
    }
  }
}
