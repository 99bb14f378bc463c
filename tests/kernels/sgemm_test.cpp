// f32 GEMM (Kernels::sgemm): every path against exact (double) arithmetic and against the scalar
// reference, on odd shapes and every operand layout; sub-ranges of C; and determinism (a product
// computed in pieces, or by a pool of any size, equals the whole product bit for bit).
//
// Tolerance. Let u = 2^-24 and, per element, T = |C0| + sum_k |A(i,k) B(k,j)| (C0 = the initial
// C when accumulating, else 0). The scalar reference sums all k products in one accumulator and
// adds it to C0: each term passes through at most K + 1 roundings (its product, <= K - 1 adds,
// the add to C0), so |ref - exact| <= (K + 1) u T to first order. A blocked path sums chunks of
// kc <= 256 products with fused multiply-adds (<= kc roundings per term) and adds each of its
// nc = ceil(K / kc) chunk sums to C in turn (<= nc + 1 more), so <= (kc + nc + 1) u T <=
// (K + 2) u T. We check |path - exact| <= (K + 2) u T * 1.01 (the 1% covers the second-order
// terms, (K u)^2 < 2e-7 here) and |path - ref| <= 2 (K + 2) u T * 1.01, the two bounds added.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>

#include "kt_util.h"
#include "nk/threadpool.h"

namespace {

enum class ALayout { rows, transposed, strided };  // A(i,k) at i*lda+k / k*lda+i / i*lda*2+k*3
enum class BLayout { rows, weights, strided };     // B(k,j) at k*ldb+j / j*ldb+k (W [N,K]) / odd strides

struct Case {
  size_t m, n, k;
  ALayout al;
  BLayout bl;
  bool accumulate;
};

struct Operands {
  std::vector<float> a, b, c0;
  nk::SgemmArgs g;
};

Operands make(const Case& cs, uint32_t seed) {
  Operands o;
  const size_t m = cs.m, n = cs.n, k = cs.k;
  nk::SgemmArgs& g = o.g;
  g.m = m;
  g.n = n;
  g.k = k;
  g.accumulate = cs.accumulate;
  switch (cs.al) {  // leading dimensions padded past the logical size
    case ALayout::rows: g.a_rs = k + 3, g.a_cs = 1; o.a = kt::uniform(m * (k + 3) + 1, seed); break;
    case ALayout::transposed: g.a_rs = 1, g.a_cs = m + 5; o.a = kt::uniform(k * (m + 5) + 1, seed); break;
    case ALayout::strided: g.a_rs = 2 * k + 1, g.a_cs = 2; o.a = kt::uniform(m * (2 * k + 1) + 1, seed); break;
  }
  switch (cs.bl) {
    case BLayout::rows: g.b_rs = n + 2, g.b_cs = 1; o.b = kt::uniform(k * (n + 2) + 1, seed + 1); break;
    case BLayout::weights: g.b_rs = 1, g.b_cs = k + 1; o.b = kt::uniform(n * (k + 1) + 1, seed + 1); break;
    case BLayout::strided: g.b_rs = 3 * n + 1, g.b_cs = 3; o.b = kt::uniform(k * (3 * n + 1) + 1, seed + 1); break;
  }
  g.ldc = n + 7;
  o.c0 = kt::uniform(m * g.ldc, seed + 2, -4.0f, 4.0f);
  g.a = o.a.data();
  g.b = o.b.data();
  return o;
}

float A(const nk::SgemmArgs& g, size_t i, size_t k) { return g.a[i * g.a_rs + k * g.a_cs]; }
float B(const nk::SgemmArgs& g, size_t k, size_t j) { return g.b[k * g.b_rs + j * g.b_cs]; }

const char* name(ALayout l) { return l == ALayout::rows ? "A" : l == ALayout::transposed ? "A^T" : "A(strided)"; }
const char* name(BLayout l) { return l == BLayout::rows ? "B" : l == BLayout::weights ? "W^T" : "B(strided)"; }

void check_case(const Case& cs, uint32_t seed) {
  Operands o = make(cs, seed);
  nk::SgemmArgs g = o.g;
  const size_t m = cs.m, n = cs.n, k = cs.k, ldc = g.ldc;
  std::vector<double> exact(m * n), T(m * n);
  for (size_t i = 0; i < m; ++i)
    for (size_t j = 0; j < n; ++j) {
      double s = cs.accumulate ? o.c0[i * ldc + j] : 0.0, t = std::fabs(s);
      for (size_t p = 0; p < k; ++p) {
        const double prod = double(A(g, i, p)) * double(B(g, p, j));  // exact in double
        s += prod;
        t += std::fabs(prod);
      }
      exact[i * n + j] = s;
      T[i * n + j] = t;
    }
  const double bound_one = (double(k) + 2) * kt::kU * 1.01;

  std::vector<float> ref = o.c0;
  g.c = ref.data();
  nk::kernels_for(nk::Isa::scalar)->sgemm(g, 0, m, 0, n);

  for (const nk::Kernels* p : kt::all_paths()) {
    INFO(p->name << " m=" << m << " n=" << n << " k=" << k << " " << name(cs.al) << " x " << name(cs.bl)
                 << (cs.accumulate ? " accumulate" : " overwrite"));
    std::vector<float> c = o.c0;
    g.c = c.data();
    p->sgemm(g, 0, m, 0, n);
    size_t bad = 0;
    double worst = 0;  // largest |err| / bound seen, printed on failure
    for (size_t i = 0; i < m; ++i) {
      for (size_t j = 0; j < ldc; ++j) {
        const float got = c[i * ldc + j];
        if (j >= n) {  // padding columns of C are never written
          if (got != o.c0[i * ldc + j]) ++bad;
          continue;
        }
        const double e = exact[i * n + j], bnd = bound_one * T[i * n + j];
        const double err = std::fabs(double(got) - e), diff = std::fabs(double(got) - double(ref[i * ldc + j]));
        if (bnd > 0) worst = std::max(worst, err / bnd);
        if (!(err <= bnd) || !(diff <= 2 * bnd)) ++bad;
      }
    }
    INFO("worst |err| / bound = " << worst);
    CHECK(bad == 0);
  }
}

}  // namespace

TEST_CASE("sgemm: paths vs exact vs scalar reference, odd shapes, every layout", "[sgemm]") {
  uint32_t seed = 1;
  for (size_t m : {1, 7, 13, 33})
    for (size_t n : {1, 7, 33, 47})
      for (size_t k : {1, 7, 33, 257, 511})
        for (bool acc : {false, true}) {
          const ALayout al = (m + n + k) % 3 == 0 ? ALayout::rows : (m + n + k) % 3 == 1 ? ALayout::transposed : ALayout::strided;
          for (BLayout bl : {BLayout::rows, BLayout::weights, BLayout::strided}) check_case({m, n, k, al, bl, acc}, seed++);
          if (k == 33)  // every A layout against every B layout at one depth
            for (ALayout a2 : {ALayout::rows, ALayout::transposed, ALayout::strided})
              for (BLayout bl : {BLayout::rows, BLayout::weights}) check_case({m, n, k, a2, bl, acc}, seed++);
        }
}

TEST_CASE("sgemm: larger shapes (several k chunks, column blocks past 512, tile edges)", "[sgemm]") {
  uint32_t seed = 500;
  check_case({37, 70, 1000, ALayout::rows, BLayout::weights, false}, seed++);
  check_case({50, 33, 1000, ALayout::transposed, BLayout::rows, true}, seed++);
  check_case({13, 515, 40, ALayout::rows, BLayout::rows, true}, seed++);
  check_case({25, 1100, 9, ALayout::transposed, BLayout::weights, false}, seed++);
  check_case({64, 64, 64, ALayout::rows, BLayout::rows, false}, seed++);
  check_case({96, 96, 512, ALayout::rows, BLayout::weights, true}, seed++);
}

TEST_CASE("sgemm: k = 0 overwrites with zeros or leaves C unchanged", "[sgemm]") {
  for (const nk::Kernels* p : kt::all_paths()) {
    for (bool acc : {false, true}) {
      std::vector<float> c(5 * 9, 3.0f);
      nk::SgemmArgs g;
      g.m = 5, g.n = 7, g.k = 0, g.a_rs = 1, g.b_rs = 1, g.ldc = 9, g.accumulate = acc;
      float dummy = 0;
      g.a = &dummy, g.b = &dummy, g.c = c.data();
      p->sgemm(g, 0, 5, 0, 7);
      for (size_t i = 0; i < 5; ++i)
        for (size_t j = 0; j < 9; ++j) CHECK(c[i * 9 + j] == (j < 7 && !acc ? 0.0f : 3.0f));
    }
  }
}

TEST_CASE("sgemm: results do not depend on how C is split (pieces and thread pools)", "[sgemm]") {
  // Bit-identical resume of training needs every element of C computed the same way whatever the
  // split: by rows or columns at odd offsets (not multiples of the register tile), in 2-D pieces,
  // or through a pool of 1, 2 or 3 threads.
  for (const Case& cs : {Case{61, 75, 600, ALayout::rows, BLayout::weights, false},
                         Case{45, 530, 300, ALayout::transposed, BLayout::rows, true},
                         Case{29, 40, 33, ALayout::strided, BLayout::strided, true}}) {
    Operands o = make(cs, 77);
    for (const nk::Kernels* p : kt::all_paths()) {
      INFO(p->name << " m=" << cs.m << " n=" << cs.n << " k=" << cs.k);
      nk::SgemmArgs g = o.g;
      std::vector<float> whole = o.c0;
      g.c = whole.data();
      p->sgemm(g, 0, cs.m, 0, cs.n);

      std::vector<float> pieces = o.c0;
      g.c = pieces.data();
      const size_t rs[] = {0, 5, 17, 18, cs.m}, cs_[] = {0, 3, 34, 35, cs.n};
      for (size_t a = 0; a + 1 < 5; ++a)
        for (size_t b = 0; b + 1 < 5; ++b) p->sgemm(g, rs[a], rs[a + 1], cs_[b], cs_[b + 1]);
      CHECK(std::memcmp(pieces.data(), whole.data(), whole.size() * sizeof(float)) == 0);

      for (unsigned threads : {1u, 2u, 3u}) {
        nk::ThreadPool pool(threads);
        std::vector<float> par = o.c0;
        g.c = par.data();
        // one task per 7 rows (dynamic assignment: which thread runs which rows varies)
        pool.parallel_for((cs.m + 6) / 7, [&](size_t t, unsigned) {
          p->sgemm(g, 7 * t, std::min(cs.m, 7 * t + 7), 0, cs.n);
        });
        CHECK(std::memcmp(par.data(), whole.data(), whole.size() * sizeof(float)) == 0);
      }
    }
  }
}

TEST_CASE("sgemm: the register tile is reported", "[sgemm]") {
  for (const nk::Kernels* p : kt::all_paths()) {
    CHECK(p->sgemm != nullptr);
    CHECK(p->sgemm_mr >= 1);
    CHECK(p->sgemm_nr >= 1);
  }
}
