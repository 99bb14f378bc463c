// The scalar reference f32 GEMM: what sgemm means, written for clarity. Each element of C is one
// accumulator summed over all of k in order (acc += A(i, k) * B(k, j)), then stored or added to C.
// Sixteen columns are accumulated side by side (still one sequential sum per element), which
// lets the compiler vectorize the baseline build a little.
#include <cstring>

#include "internal.h"

namespace nk::detail {

void sgemm_ref(const SgemmArgs& g, size_t i0, size_t i1, size_t j0, size_t j1) {
  constexpr size_t kCols = 16;
  for (size_t i = i0; i < i1; ++i) {
    for (size_t j = j0; j < j1; j += kCols) {
      const size_t nj = min_sz(kCols, j1 - j);
      float acc[kCols] = {};
      for (size_t k = 0; k < g.k; ++k) {
        const float a = g.a[i * g.a_rs + k * g.a_cs];
        const float* b = g.b + k * g.b_rs + j * g.b_cs;
        for (size_t c = 0; c < nj; ++c) acc[c] += a * b[c * g.b_cs];
      }
      float* ci = g.c + i * g.ldc + j;
      for (size_t c = 0; c < nj; ++c) ci[c] = g.accumulate ? ci[c] + acc[c] : acc[c];
    }
  }
}

}  // namespace nk::detail
