// lib/train/matmul and the optimizer's use of it: results equal plain double-precision products
// within the f32 bound, and -- what bit-identical resume needs -- do not depend on the number of
// threads, bit for bit. gram (the symmetric X X^T) equals the full product bit for bit.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <random>

#include "fixtures.h"
#include "nk/threadpool.h"
#include "train/matmul.h"
#include "train/optim.h"

using namespace needle;
using namespace needle::train;

namespace {

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("matmul forward/backward match double products and ignore the thread count", "[matmul]") {
  const int M = 203, K = 97, N = 130;  // odd sizes: edge tiles everywhere
  auto x = fixtures::randn((size_t)M * K, 1), w = fixtures::randn((size_t)N * K, 2), dout = fixtures::randn((size_t)M * N, 3);
  std::vector<float> out1((size_t)M * N), dx1((size_t)M * K, 0.5f), dw1((size_t)N * K, -0.25f);
  matmul_forward(out1.data(), x.data(), w.data(), M, K, N, nullptr);
  matmul_backward(dx1.data(), dw1.data(), dout.data(), x.data(), w.data(), M, K, N, nullptr);
  // against double: |err| <= (K + 2) u sum |x w| (docs/kernels.md, f32 GEMM)
  const double u = 0x1p-24;
  for (int i = 0; i < M; i += 17)
    for (int j = 0; j < N; j += 7) {
      double s = 0, t = 0;
      for (int k = 0; k < K; ++k) {
        s += (double)x[(size_t)i * K + k] * w[(size_t)j * K + k];
        t += std::fabs((double)x[(size_t)i * K + k] * w[(size_t)j * K + k]);
      }
      CHECK(std::fabs(out1[(size_t)i * N + j] - s) <= (K + 2) * u * t * 1.01);
    }
  for (int k = 0; k < K; k += 5)
    for (int j = 0; j < N; j += 11) {  // dw[j, k] = -0.25 + sum_i dout[i, j] x[i, k]
      double s = -0.25, t = 0.25;
      for (int i = 0; i < M; ++i) {
        s += (double)dout[(size_t)i * N + j] * x[(size_t)i * K + k];
        t += std::fabs((double)dout[(size_t)i * N + j] * x[(size_t)i * K + k]);
      }
      CHECK(std::fabs(dw1[(size_t)j * K + k] - s) <= (M + 2) * u * t * 1.01);
    }
  for (unsigned threads : {2u, 3u}) {
    nk::ThreadPool pool(threads);
    std::vector<float> out((size_t)M * N), dx((size_t)M * K, 0.5f), dw((size_t)N * K, -0.25f);
    matmul_forward(out.data(), x.data(), w.data(), M, K, N, &pool);
    matmul_backward(dx.data(), dw.data(), dout.data(), x.data(), w.data(), M, K, N, &pool);
    CHECK(same_bits(out, out1));
    CHECK(same_bits(dx, dx1));
    CHECK(same_bits(dw, dw1));
  }
}

TEST_CASE("gram X X^T equals the full product bit for bit, on any thread count", "[matmul]") {
  for (int r : {1, 5, 100, 200, 512}) {
    const int n = r == 512 ? 300 : 2 * r + 3;
    auto x = fixtures::randn((size_t)r * n, 10 + (uint32_t)r);
    std::vector<float> full((size_t)r * r);
    // the full product through the same kernel: A = X, B = X^T
    gemm_strided(r, r, n, x.data(), (size_t)n, 1, x.data(), 1, (size_t)n, full.data(), (size_t)r, false, nullptr);
    for (unsigned threads : {1u, 2u, 3u}) {
      nk::ThreadPool pool(threads);
      std::vector<float> c((size_t)r * r, NAN);
      gram(r, n, x.data(), (size_t)n, 1, c.data(), (size_t)r, &pool);
      INFO("r " << r << " threads " << threads);
      CHECK(same_bits(c, full));
    }
    // transposed storage (x_row = 1): X(i, k) = xt[k, i]
    std::vector<float> xt((size_t)n * r), c((size_t)r * r);
    transpose(xt.data(), x.data(), r, n);
    gram(r, n, xt.data(), 1, (size_t)r, c.data(), (size_t)r, nullptr);
    CHECK(same_bits(c, full));
  }
}

TEST_CASE("Newton-Schulz and the optimizer step do not depend on the thread count", "[matmul][optim]") {
  for (auto [rows, cols] : {std::pair{64, 200}, std::pair{200, 64}, std::pair{512, 512}}) {
    auto x0 = fixtures::randn((size_t)rows * cols, 99);
    auto x1 = x0;
    newton_schulz(x1.data(), rows, cols, 5, nullptr);
    for (unsigned threads : {2u, 3u}) {
      nk::ThreadPool pool(threads);
      auto x = x0;
      newton_schulz(x.data(), rows, cols, 5, &pool);
      INFO(rows << "x" << cols << " threads " << threads);
      CHECK(same_bits(x, x1));
    }
  }
  Config c;
  c.vocab_size = 300;
  c.d_model = 64;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.num_encoder_layers = 2;
  c.num_decoder_layers = 1;
  c.contrastive_dim = 16;
  REQUIRE(c.validate().is_ok());
  OptimOptions o;
  Params p0 = zero_params(c), g = zero_params(c);
  uint32_t seed = 5;
  for_each_tensor(p0, c, [&](const TensorSpec&, std::vector<float>& v) { v = fixtures::randn(v.size(), seed++); });
  for_each_tensor(g, c, [&](const TensorSpec&, std::vector<float>& v) { v = fixtures::randn(v.size(), seed++); });
  auto run = [&](nk::ThreadPool* pool) {
    Params p = p0;
    OptimState s = init_optim_state(c, o);
    for (int step = 0; step < 3; ++step) optimizer_step(p, g, s, c, o, 1.0, pool);
    return std::pair{p, s};
  };
  auto [p1, s1] = run(nullptr);
  for (unsigned threads : {2u, 3u}) {
    nk::ThreadPool pool(threads);
    auto [p, s] = run(&pool);
    std::vector<std::vector<float>*> a, b, ma, mb;
    for_each_tensor(p, c, [&](const TensorSpec&, std::vector<float>& v) { a.push_back(&v); });
    for_each_tensor(p1, c, [&](const TensorSpec&, std::vector<float>& v) { b.push_back(&v); });
    for_each_tensor(s.m, c, [&](const TensorSpec&, std::vector<float>& v) { ma.push_back(&v); });
    for_each_tensor(s1.m, c, [&](const TensorSpec&, std::vector<float>& v) { mb.push_back(&v); });
    for (size_t i = 0; i < a.size(); ++i) {
      CHECK(same_bits(*a[i], *b[i]));
      CHECK(same_bits(*ma[i], *mb[i]));
    }
  }
}

TEST_CASE("transpose, odd shapes", "[matmul]") {
  for (auto [rows, cols] : {std::pair{1, 1}, std::pair{3, 70}, std::pair{37, 5}, std::pair{64, 64}, std::pair{130, 67}}) {
    auto x = fixtures::randn((size_t)rows * cols, 7);
    std::vector<float> t((size_t)rows * cols);
    transpose(t.data(), x.data(), rows, cols);
    size_t bad = 0;
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) bad += t[(size_t)c * rows + r] != x[(size_t)r * cols + c];
    CHECK(bad == 0);
  }
}
