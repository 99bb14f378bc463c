// Micro-benchmark for the kernels: GEMV/GEMM rates per ISA and thread-pool scaling.
// Prints numbers only; it is not a test. Usage: nk_bench [seconds-per-case, default 0.3]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <random>
#include <vector>

#include "nk/kernels.h"
#include "nk/quant.h"
#include "nk/threadpool.h"

namespace {
using Clock = std::chrono::steady_clock;
double g_secs = 0.3;

// Best of 7 trials of ~g_secs/7 each, timed with this thread's CPU clock (the dev machine is
// shared: the minimum of CPU time is the stable number). Wall time for the thread-pool cases.
double now(bool cpu) {
  if (!cpu) return std::chrono::duration<double>(Clock::now().time_since_epoch()).count();
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

template <class F>
double time_per_call(F&& f, bool cpu = true) {
  f();
  // calls per clock read: enough for ~50 us, so reading the clock (slow in a VM) does not count
  size_t batch = 1;
  for (;;) {
    const double t0 = now(cpu);
    for (size_t i = 0; i < batch; ++i) f();
    if (now(cpu) - t0 > 50e-6 || batch >= (1u << 20)) break;
    batch *= 2;
  }
  double best = 1e30;
  for (int trial = 0; trial < 7; ++trial) {
    size_t iters = 0;
    const double t0 = now(cpu);
    double el = 0;
    do {
      for (size_t i = 0; i < batch; ++i) f();
      iters += batch;
      el = now(cpu) - t0;
    } while (el < g_secs / 7);
    best = std::min(best, el / static_cast<double>(iters));
  }
  return best;
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
      {"gemv q8 8192x512", 1, 8192, 512, true},  {"gemv q8 1024x512", 1, 1024, 512, true},  {"gemm q4 M=64 512x512", 64, 512, 512, false},
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

  // f32 GEMM (sgemm): the training step's shapes and layouts (A: rows or A^T; B: rows or the
  // W [N, K] layout of x W^T), GFLOP/s = 2 m n k / time.
  {
    struct G { const char* what; size_t m, n, k; bool at, bw, acc; };
    const G gs[] = {
        {"x W^T    4096x512 k512", 4096, 512, 512, false, true, false},
        {"dout W   4096x512 k512", 4096, 512, 512, false, false, true},
        {"dout^T x 512x512 k4096", 512, 512, 4096, true, false, true},
        {"Xt^T Xt  512x512 k512 (NS)", 512, 512, 512, true, false, false},
        {"Q K^T    256x256 k64", 256, 256, 64, false, false, false},
        {"P V      256x64 k256", 256, 64, 256, false, false, false},
        {"P^T dO   256x64 k256", 256, 64, 256, true, false, true},
        {"dlogit E 128x512 k8192", 128, 512, 8192, false, false, true},
    };
    for (const G& gm : gs) {
      auto a = randv(gm.m * gm.k, 11), b = randv(gm.k * gm.n, 12);
      std::vector<float> c(gm.m * gm.n);
      nk::SgemmArgs g;
      g.m = gm.m, g.n = gm.n, g.k = gm.k, g.a = a.data(), g.b = b.data(), g.c = c.data(), g.ldc = gm.n;
      g.accumulate = gm.acc;
      if (gm.at) g.a_rs = 1, g.a_cs = gm.m;
      else g.a_rs = gm.k, g.a_cs = 1;
      if (gm.bw) g.b_rs = 1, g.b_cs = gm.k;
      else g.b_rs = gm.n, g.b_cs = 1;
      for (nk::Isa isa : nk::supported_isas()) {
        const nk::Kernels& k = *nk::kernels_for(isa);
        if (isa == nk::Isa::scalar && gm.m * gm.n * gm.k > (size_t(1) << 27)) continue;  // minutes
        const double t = time_per_call([&] { k.sgemm(g, 0, gm.m, 0, gm.n); });
        std::printf("sgemm %-27s %-8s %9.1f us  %7.1f GFLOP/s\n", gm.what, k.name, t * 1e6,
                    2.0 * gm.m * gm.n * gm.k / t * 1e-9);
      }
    }
  }

  // Training attention's softmax on one head's 256 x 256 scores (causal, half the keys padded in
  // the last quarter), forward and backward; the scalar path is the loop lib/train ran before.
  {
    const size_t L = 256;
    auto s0 = randv(L * L, 13), g0 = randv(L * L, 14);
    std::vector<uint8_t> km(L, 1);
    for (size_t j = 3 * L / 4; j < L; j += 2) km[j] = 0;
    for (nk::Isa isa : nk::supported_isas()) {
      const nk::Kernels& k = *nk::kernels_for(isa);
      std::vector<float> p = s0, g = g0;
      const double tf = time_per_call([&] {
        std::copy(s0.begin(), s0.end(), p.begin());
        k.softmax_rows(p.data(), L, L, L, 0.125f, km.data(), true, 0);
      });
      const double tb = time_per_call([&] {
        std::copy(g0.begin(), g0.end(), g.begin());
        k.softmax_rows_backward(p.data(), L, g.data(), L, L, L, 0.125f, km.data(), true, 0);
      });
      std::printf("softmax_rows 256x256 causal %-8s forward %8.1f us  backward %8.1f us (incl. a 256 KiB copy)\n",
                  k.name, tf * 1e6, tb * 1e6);
    }
  }

  // Element-wise kernels at decode size (one row of d = 512), to judge whether fusing them pays.
  {
    const size_t d = 512;
    auto x = randv(d, 8), sc = randv(d, 9), y2 = randv(d, 10);
    std::vector<float> out(d);
    std::vector<nk::BlockQ8> q(nk::blocks_per_row(d));
    const nk::Kernels& k = nk::kernels();
    const double tq = time_per_call([&] { k.quantize_q8(x.data(), d, q.data(), 1, d); });
    const double tn = time_per_call([&] { k.rmsnorm(x.data(), sc.data(), out.data(), 1, d, 1e-6f); });
    const double tr = time_per_call([&] { k.rope(out.data(), 1, d, 8, 64, 100, 10000.0f); });
    const double tg = time_per_call([&] { k.gated_residual(out.data(), y2.data(), 0.3f, d); });
    std::printf("%s, one row of 512: quantize_q8 %.3f us, rmsnorm %.3f us, rope (8x64) %.3f us, gated_residual %.3f us\n",
                k.name, tq * 1e6, tn * 1e6, tr * 1e6, tg * 1e6);
  }

  // Attention: 8 query heads, 4 kv heads, hd 64 (prefill: Lq = Lk; decode: one query row).
  for (size_t L : {size_t(64), size_t(256), size_t(1024)}) {
    const size_t hq = 8, hkv = 4, hd = 64;
    auto q = randv(L * hq * hd, 5), kk = randv(L * hkv * hd, 6), v = randv(L * hkv * hd, 7);
    std::vector<float> o(L * hq * hd);
    for (nk::Isa isa : nk::supported_isas()) {
      const nk::Kernels& k = *nk::kernels_for(isa);
      nk::AttnArgs a;
      a.q = q.data();
      a.k = kk.data();
      a.v = v.data();
      a.out = o.data();
      a.lq = L;
      a.lk = L;
      a.hq = hq;
      a.hkv = hkv;
      a.hd = hd;
      a.causal = true;
      const double tp = time_per_call([&] { k.attention(a, 0, hq, 0, L); });
      a.q_pos0 = L - 1;
      a.lq = 1;
      const double td = time_per_call([&] { k.attention(a, 0, hq, 0, 1); });
      // causal prefill does about half of the L*L score/value work
      const double flop = 2.0 * 2.0 * hq * hd * (double(L) * (L + 1) / 2);
      std::printf("attention L=%-5zu %-8s prefill %9.1f us (%6.2f GFLOP/s)  decode step %7.2f us\n", L, k.name,
                  tp * 1e6, flop / tp * 1e-9, td * 1e6);
    }
  }

  // Thread pool: one decode-size GEMV split over 1 and 2 threads. Per-call wall times over many
  // calls: min (what an idle machine gives) and median (what this machine gave).
  {
    const size_t N = 512, K = 512, nb = nk::blocks_per_row(K);
    auto wf = randv(N * K, 3), xf = randv(K, 4);
    std::vector<nk::BlockQ4> w4(N * nb);
    std::vector<nk::BlockQ8> xq(nb);
    for (size_t n = 0; n < N; ++n) nk::quantize_row_q4(wf.data() + n * K, w4.data() + n * nb, K);
    const nk::Kernels& k = nk::kernels();
    k.quantize_q8(xf.data(), K, xq.data(), 1, K);
    std::vector<float> y(N);
    std::printf("thread pool, gemv q4 rows x 512, per call: min / median us (1 thread | 2 threads split)\n");
    nk::ThreadPool p1(1), p2(2);
    for (size_t rows : {size_t(8), size_t(16), size_t(32), size_t(64), size_t(128), size_t(256), size_t(512)}) {
      double r[2][2];
      for (int t = 0; t < 2; ++t) {
        nk::ThreadPool& pool = t ? p2 : p1;
        std::vector<double> times;
        for (int i = 0; i < 3000; ++i) {
          const auto t0 = Clock::now();
          pool.parallel_range(rows, 8, [&](size_t b, size_t e, unsigned) {
            k.gemv_q4(w4.data(), xq.data(), y.data(), K, b, e);
          }, 8);
          times.push_back(std::chrono::duration<double>(Clock::now() - t0).count() * 1e6);
        }
        std::sort(times.begin(), times.end());
        r[t][0] = times[0];
        r[t][1] = times[times.size() / 2];
      }
      std::printf("  %4zu rows: %7.2f / %7.2f | %7.2f / %7.2f\n", rows, r[0][0], r[0][1], r[1][0], r[1][1]);
    }
  }
  return 0;
}
