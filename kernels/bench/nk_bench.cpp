// Micro-benchmark for the kernels: GEMV/GEMM rates per ISA and thread-pool scaling.
// Prints numbers only; it is not a test. Usage: nk_bench [seconds-per-case, default 0.3]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "nk/kernels.h"
#include "nk/quant.h"
#include "nk/threadpool.h"

namespace {
using Clock = std::chrono::steady_clock;
double g_secs = 0.3;

template <class F>
double time_per_call(F&& f) {
  f();
  size_t iters = 0;
  const auto t0 = Clock::now();
  double el = 0;
  do {
    for (int i = 0; i < 16; ++i) f();
    iters += 16;
    el = std::chrono::duration<double>(Clock::now() - t0).count();
  } while (el < g_secs);
  return el / static_cast<double>(iters);
}

std::vector<float> randv(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc > 1) g_secs = std::atof(argv[1]);
  std::printf("dispatch: %s%s%s\n", nk::isa_name(nk::dispatch_info().chosen),
              nk::dispatch_info().message.empty() ? "" : " -- ", nk::dispatch_info().message.c_str());

  struct Shape { const char* what; size_t m, n, k; bool q8w; };
  const Shape shapes[] = {
      {"gemv q4 512x512", 1, 512, 512, false},   {"gemv q4 256x512", 1, 256, 512, false},
      {"gemv q8 8192x512", 1, 8192, 512, true},  {"gemm q4 M=64 512x512", 64, 512, 512, false},
      {"gemm q4 M=256 512x512", 256, 512, 512, false}, {"gemm q8 M=64 8192x512", 64, 8192, 512, true},
  };
  for (const Shape& s : shapes) {
    const size_t nb = nk::blocks_per_row(s.k);
    auto wf = randv(s.n * s.k, 1), xf = randv(s.m * s.k, 2);
    std::vector<nk::BlockQ4> w4(s.n * nb);
    std::vector<nk::BlockQ8> w8(s.n * nb), xq(s.m * nb);
    for (size_t n = 0; n < s.n; ++n) {
      nk::quantize_row_q4(wf.data() + n * s.k, w4.data() + n * nb, s.k);
      nk::quantize_row_q8(wf.data() + n * s.k, w8.data() + n * nb, s.k);
    }
    std::vector<float> y(s.m * s.n);
    for (nk::Isa isa : nk::supported_isas()) {
      const nk::Kernels& k = *nk::kernels_for(isa);
      k.quantize_q8(xf.data(), s.k, xq.data(), s.m, s.k);
      double t;
      if (s.m == 1)
        t = time_per_call([&] {
          if (s.q8w) k.gemv_q8(w8.data(), xq.data(), y.data(), s.k, 0, s.n);
          else k.gemv_q4(w4.data(), xq.data(), y.data(), s.k, 0, s.n);
        });
      else
        t = time_per_call([&] {
          if (s.q8w) k.gemm_q8(w8.data(), xq.data(), y.data(), s.n, s.m, s.k, 0, s.n);
          else k.gemm_q4(w4.data(), xq.data(), y.data(), s.n, s.m, s.k, 0, s.n);
        });
      const double macs = double(s.m) * s.n * s.k;
      const double wbytes = double(s.n) * nb * (s.q8w ? sizeof(nk::BlockQ8) : sizeof(nk::BlockQ4));
      std::printf("%-24s %-8s %9.2f us  %7.2f GMAC/s  %7.2f GB/s weights\n", s.what, k.name, t * 1e6,
                  macs / t * 1e-9, wbytes / t * 1e-9);
    }
  }

  // Thread pool: one decode-size GEMV split over 1 and 2 threads, by minimum rows per chunk.
  {
    const size_t N = 512, K = 512, nb = nk::blocks_per_row(K);
    auto wf = randv(N * K, 3), xf = randv(K, 4);
    std::vector<nk::BlockQ4> w4(N * nb);
    std::vector<nk::BlockQ8> xq(nb);
    for (size_t n = 0; n < N; ++n) nk::quantize_row_q4(wf.data() + n * K, w4.data() + n * nb, K);
    const nk::Kernels& k = nk::kernels();
    k.quantize_q8(xf.data(), K, xq.data(), 1, K);
    std::vector<float> y(N);
    for (unsigned th : {1u, 2u}) {
      nk::ThreadPool pool(th);
      for (size_t rows : {size_t(16), size_t(32), size_t(64), size_t(128), size_t(256), size_t(512)}) {
        for (size_t grain : {size_t(8), size_t(64)}) {
          const double t = time_per_call([&] {
            pool.parallel_range(rows, grain, [&](size_t b, size_t e, unsigned) {
              k.gemv_q4(w4.data(), xq.data(), y.data(), K, b, e);
            }, 4);
          });
          std::printf("pool threads=%u gemv q4 %4zux512 min_chunk=%3zu %8.2f us\n", th, rows, grain, t * 1e6);
        }
      }
    }
  }
  return 0;
}
