// INT4 x INT8 and INT8 x INT8 GEMV/GEMM: the reference against exact double arithmetic, every
// SIMD path against the reference.
//
// Tolerance. Per block b the integer dot i_b is exact on every path, and so is its conversion to
// f32 (|i_b| <= 32*128*127 < 2^24). A path then forms t_b = (w.d * x.d) * i_b (two roundings,
// in any order or fused) and sums the nb terms in some order (recursive sum, lanes + a final
// horizontal tree of depth <= 3). With u = 2^-24 and T = sum_b |w.d * x.d| * sum_j |q_wj * q_xj|
// (which bounds every partial sum a path can form), standard error analysis gives
//   |y_path - y_exact| <= (nb + 5) * u * T      (first order in u; nb - 1 additions, 2 product
//                                                roundings, <= 3 levels of tree, 1 spare)
// so two paths differ by at most 2 (nb + 5) u T.
#include <catch2/catch.hpp>

#include <cmath>

#include "kt_util.h"

namespace {

template <class WB>
void exact_and_bound(const WB* w, const nk::BlockQ8* x, size_t nb, double* exact, double* T) {
  double s = 0.0, t = 0.0;
  for (size_t b = 0; b < nb; ++b) {
    long long isum = 0, iabs = 0;
    for (int j = 0; j < 32; ++j) {
      const long long p = static_cast<long long>(kt::q_at(w[b], j)) * x[b].qs[j];
      isum += p;
      iabs += p < 0 ? -p : p;
    }
    const double sc = static_cast<double>(w[b].d) * static_cast<double>(x[b].d);
    s += sc * static_cast<double>(isum);
    t += std::fabs(sc) * static_cast<double>(iabs);
  }
  *exact = s;
  *T = t;
}

template <class WB>
void check_gemm(const char* what, const std::vector<WB>& w, const std::vector<nk::BlockQ8>& x, size_t M,
                size_t N, size_t K) {
  const size_t nb = nk::blocks_per_row(K);
  const float sentinel = -12345.0f;
  // exact values and bounds
  std::vector<double> exact(M * N), T(M * N);
  for (size_t m = 0; m < M; ++m)
    for (size_t n = 0; n < N; ++n) exact_and_bound(&w[n * nb], &x[m * nb], nb, &exact[m * N + n], &T[m * N + n]);
  const nk::Kernels& ref = *nk::kernels_for(nk::Isa::scalar);
  std::vector<float> yref(M * N);
  if constexpr (std::is_same_v<WB, nk::BlockQ4>)
    ref.gemm_q4(w.data(), x.data(), yref.data(), N, M, K, 0, N);
  else
    ref.gemm_q8(w.data(), x.data(), yref.data(), N, M, K, 0, N);

  for (const nk::Kernels* p : kt::all_paths()) {
    // a sub-range of output columns, as a thread would get it; the rest must stay untouched
    const size_t n0 = N > 2 ? 1 : 0, n1 = N;
    const size_t ldy = N + 3;
    std::vector<float> y(M * ldy, sentinel), yv(N, sentinel);
    if constexpr (std::is_same_v<WB, nk::BlockQ4>) {
      p->gemm_q4(w.data(), x.data(), y.data(), ldy, M, K, n0, n1);
      p->gemv_q4(w.data(), x.data(), yv.data(), K, n0, n1);
    } else {
      p->gemm_q8(w.data(), x.data(), y.data(), ldy, M, K, n0, n1);
      p->gemv_q8(w.data(), x.data(), yv.data(), K, n0, n1);
    }
    for (size_t m = 0; m < M; ++m) {
      for (size_t n = 0; n < ldy; ++n) {
        INFO(what << " path " << p->name << " M=" << M << " N=" << N << " K=" << K << " m=" << m << " n=" << n);
        const float got = y[m * ldy + n];
        if (n < n0 || n >= n1) {
          CHECK(got == sentinel);
          continue;
        }
        const double e = exact[m * N + n], bound = (nb + 5) * kt::kU * T[m * N + n];
        CHECK(std::fabs(double(got) - e) <= bound);
        CHECK(std::fabs(double(got) - double(yref[m * N + n])) <= 2 * bound);
        if (m == 0) CHECK(yv[n] == got);  // gemv is gemm with one row, same order
      }
    }
    for (size_t n = 0; n < n0; ++n) CHECK(yv[n] == sentinel);
  }
}

}  // namespace

TEST_CASE("gemv/gemm q4 x q8: paths vs reference vs exact, odd shapes") {
  uint32_t seed = 1;
  for (size_t K : {16, 32, 48, 96, 100, 512, 1000}) {
    for (size_t N : {1, 2, 3, 4, 5, 6, 7, 64, 257}) {
      for (size_t M : {1, 2, 3, 4, 5, 6, 7, 8, 9}) {
        if (N == 257 && M > 3 && K > 100) continue;  // keep the run short; shapes stay covered
        const size_t nb = nk::blocks_per_row(K);
        auto w = kt::random_q4(N * nb, seed++);
        auto x = kt::random_q8(M * nb, seed++, -127);
        check_gemm("q4", w, x, M, N, K);
      }
    }
  }
}

TEST_CASE("gemv/gemm q8 x q8: paths vs reference vs exact, odd shapes, weights at -128") {
  uint32_t seed = 1000;
  for (size_t K : {16, 32, 48, 96, 100, 512, 1000}) {
    for (size_t N : {1, 2, 3, 5, 7, 64, 257}) {
      for (size_t M : {1, 2, 3, 4, 5, 8, 9}) {
        if (N == 257 && M > 3 && K > 100) continue;
        const size_t nb = nk::blocks_per_row(K);
        auto w = kt::random_q8(N * nb, seed++, -128);
        auto x = kt::random_q8(M * nb, seed++, -127);
        check_gemm("q8", w, x, M, N, K);
      }
    }
  }
}

TEST_CASE("gemv q4: extreme blocks (all -8 x all +-127) accumulate without saturation") {
  const size_t K = 512, N = 5, nb = nk::blocks_per_row(K);
  std::vector<nk::BlockQ4> w(N * nb);
  for (auto& b : w) {
    b.d = 1.0f;
    for (auto& q : b.qs) q = 0x00;  // every element -8
  }
  for (auto& b : w) b.qs[3] = 0xFF;  // a few +7
  std::vector<nk::BlockQ8> x(nb);
  for (auto& b : x) {
    b.d = 1.0f;
    for (auto& q : b.qs) q = -127;
  }
  double want = 0.0;
  for (int j = 0; j < 32; ++j) want += nk::q4_get(w[0], j) * -127.0;
  want *= static_cast<double>(nb);
  for (const nk::Kernels* p : kt::all_paths()) {
    std::vector<float> y(N);
    p->gemv_q4(w.data(), x.data(), y.data(), K, 0, N);
    for (size_t n = 0; n < N; ++n) CHECK(y[n] == static_cast<float>(want));  // small integers: exact
  }
}

TEST_CASE("end to end: quantized GEMV approximates the f32 product") {
  // y = W x in f32 vs Q4 weights and Q8 activations: the error is the quantization error, bounded
  // per element by |dw|/2 |x| + |w| dx/2 (+ their product); this checks the pieces fit together.
  const size_t N = 64, K = 100, nb = nk::blocks_per_row(K);
  auto wf = kt::uniform(N * K, 9), xf = kt::uniform(K, 10);
  std::vector<nk::BlockQ4> w(N * nb);
  for (size_t n = 0; n < N; ++n) nk::quantize_row_q4(&wf[n * K], &w[n * nb], K);
  for (const nk::Kernels* p : kt::all_paths()) {
    std::vector<nk::BlockQ8> xq(nb);
    p->quantize_q8(xf.data(), K, xq.data(), 1, K);
    std::vector<float> y(N);
    p->gemv_q4(w.data(), xq.data(), y.data(), K, 0, N);
    for (size_t n = 0; n < N; ++n) {
      double exact = 0.0, bound = 0.0;
      for (size_t i = 0; i < K; ++i) {
        const double dw = w[n * nb + i / 32].d, dx = xq[i / 32].d;
        exact += double(wf[n * K + i]) * xf[i];
        bound += 0.5 * dw * std::fabs(xf[i]) + 0.5 * dx * std::fabs(wf[n * K + i]) + 0.25 * dw * dx;
      }
      CHECK(std::fabs(double(y[n]) - exact) <= bound * 1.001 + 1e-6);
    }
  }
}
