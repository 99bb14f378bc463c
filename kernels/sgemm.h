// The blocked f32 GEMM driver shared by the SIMD sgemm files (sgemm_avx2.cpp, sgemm_avx512.cpp,
// sgemm_neon.cpp), each of which supplies a register-tiled micro-kernel and a 4x4 transpose and
// compiles this header with its own flags (internal linkage: one copy per ISA, no STL).
//
// Loops (Goto/BLIS order, docs/kernels.md "f32 GEMM"):
//   for each block of kNC columns of C:
//     for each chunk of k (sgemm_kc(k) deep, chunks in order):
//       pack B[chunk, columns] into panels of NR columns (kc x NR each, zero padded)   ~L2
//       for each panel of MR rows of C:
//         pack A[rows, chunk] into one MR x kc panel (zero padded)                      ~L1
//         for each B panel: MR x NR register tile, kc fused multiply-adds per element,
//                           then C = tile (first chunk, no accumulate) or C = C + tile
// Every element of C is therefore: acc = 0; acc = fma(A(i,k), B(k,j), acc) over the chunk in
// k order; C = C + acc (or C = acc); chunk after chunk. Nothing in that depends on which block,
// panel or thread computed it, or on where the caller's [i0, i1) x [j0, j1) range starts:
// partial tiles at range edges run the same kernel into a scratch tile (zero-padded operands,
// so the valid elements see the same operations) and then perform the same C update.
#pragma once
#include <cstdint>
#include <cstring>

#include "internal.h"

namespace nk::detail {
namespace {

constexpr size_t kSgemmKC = 256;  // max depth of one k chunk (A panel 12 x 256 floats = 12 KiB)
constexpr size_t kSgemmNC = 512;  // columns of C per packed B block, at most (256 x 512 floats = 512 KiB)

// Depth of the k chunks: the fewest chunks of at most kSgemmKC, of equal size (the last may be
// shorter). A function of k only, which is what makes results independent of the split.
inline size_t sgemm_kc(size_t k) {
  const size_t chunks = (k + kSgemmKC - 1) / kSgemmKC;
  return (k + chunks - 1) / chunks;
}

inline float* align64(float* p) {
  return reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(p) + 63) & ~uintptr_t(63));
}

// ap[k * MR + r] = A(i + r, p + k) for r < mr; rows mr..MR-1 are zero.
template <size_t MR, class T4>
inline void sgemm_pack_a(const SgemmArgs& g, size_t i, size_t mr, size_t p, size_t kc, float* ap) {
  if (mr < MR || (g.a_cs != 1 && g.a_rs != 1)) std::memset(ap, 0, sizeof(float) * MR * kc);
  if (g.a_cs == 1) {  // rows of A contiguous in k: 4 rows x 4 k at a time through a transpose
    size_t r = 0;
    for (; r + 4 <= mr; r += 4) {
      const float* src = g.a + (i + r) * g.a_rs + p;
      size_t k = 0;
      for (; k + 4 <= kc; k += 4) T4::run(src + k, g.a_rs, ap + k * MR + r, MR);
      for (; k < kc; ++k)
        for (size_t q = 0; q < 4; ++q) ap[k * MR + r + q] = src[q * g.a_rs + k];
    }
    for (; r < mr; ++r) {
      const float* src = g.a + (i + r) * g.a_rs + p;
      for (size_t k = 0; k < kc; ++k) ap[k * MR + r] = src[k];
    }
  } else if (g.a_rs == 1) {  // A^T layout: the MR rows of one k are contiguous
    const float* src = g.a + p * g.a_cs + i;
    if (mr == MR) {
      for (size_t k = 0; k < kc; ++k)
        for (size_t r = 0; r < MR; ++r) ap[k * MR + r] = src[k * g.a_cs + r];  // fixed size: vector moves
    } else {
      for (size_t k = 0; k < kc; ++k)
        for (size_t r = 0; r < mr; ++r) ap[k * MR + r] = src[k * g.a_cs + r];
    }
  } else {
    for (size_t k = 0; k < kc; ++k)
      for (size_t r = 0; r < mr; ++r) ap[k * MR + r] = g.a[(i + r) * g.a_rs + (p + k) * g.a_cs];
  }
}

// Panels of NR columns: bp[(jp / NR) * kc * NR + k * NR + c] = B(p + k, j + jp + c); columns past
// nc are zero.
template <size_t NR, class T4>
inline void sgemm_pack_b(const SgemmArgs& g, size_t p, size_t kc, size_t j, size_t nc, float* bp) {
  if (g.b_cs == 1) {  // B row-major: row k of the block is split across the panels, read in order
    const size_t full = nc / NR, nr = nc % NR;
    if (nr) std::memset(bp + full * kc * NR, 0, sizeof(float) * kc * NR);
    for (size_t k = 0; k < kc; ++k) {
      const float* src = g.b + (p + k) * g.b_rs + j;
      for (size_t q = 0; q < full; ++q)
        for (size_t c = 0; c < NR; ++c) bp[q * kc * NR + k * NR + c] = src[q * NR + c];  // fixed size
      for (size_t c = 0; c < nr; ++c) bp[full * kc * NR + k * NR + c] = src[full * NR + c];
    }
    return;
  }
  for (size_t jp = 0; jp < nc; jp += NR) {
    const size_t nr = min_sz(NR, nc - jp);
    float* dst = bp + (jp / NR) * kc * NR;
    const size_t j0 = j + jp;
    if (g.b_rs == 1) {  // W layout (B = W^T): column j of B is row j of W, contiguous in k
      if (nr < NR) std::memset(dst, 0, sizeof(float) * NR * kc);
      size_t c = 0;
      for (; c + 4 <= nr; c += 4) {
        const float* src = g.b + (j0 + c) * g.b_cs + p;
        size_t k = 0;
        for (; k + 4 <= kc; k += 4) T4::run(src + k, g.b_cs, dst + k * NR + c, NR);
        for (; k < kc; ++k)
          for (size_t q = 0; q < 4; ++q) dst[k * NR + c + q] = src[q * g.b_cs + k];
      }
      for (; c < nr; ++c) {
        const float* src = g.b + (j0 + c) * g.b_cs + p;
        for (size_t k = 0; k < kc; ++k) dst[k * NR + c] = src[k];
      }
    } else {
      for (size_t k = 0; k < kc; ++k)
        for (size_t c = 0; c < NR; ++c) dst[k * NR + c] = c < nr ? g.b[(p + k) * g.b_rs + (j0 + c) * g.b_cs] : 0.0f;
    }
  }
}

// MK: MR, NR and tile(kc, ap, bp, c, ldc, overwrite): the MR x NR tile of C at c (row stride
// ldc) = [c +] sum over k < kc of ap[k*MR + r] * bp[k*NR + j], with fused multiply-adds in k order
// into accumulators that start at zero, then one add to c (or a plain store when overwrite).
template <class MK, class T4>
void sgemm_blocked(const SgemmArgs& g, size_t i0, size_t i1, size_t j0, size_t j1) {
  constexpr size_t MR = MK::MR, NR = MK::NR;
  constexpr size_t NC = kSgemmNC / NR * NR;  // whole panels per B block
  if (i0 >= i1 || j0 >= j1) return;
  if (g.k == 0) {
    if (!g.accumulate)
      for (size_t i = i0; i < i1; ++i) std::memset(g.c + i * g.ldc + j0, 0, sizeof(float) * (j1 - j0));
    return;
  }
  const size_t kc_max = sgemm_kc(g.k);
  float* bp = align64(scratch_floats(kc_max * kSgemmNC + 16, 4));
  alignas(64) float ap[MR * kSgemmKC];
  alignas(64) float tmp[MR * NR];
  for (size_t jc = j0; jc < j1; jc += NC) {
    const size_t nc = min_sz(NC, j1 - jc);
    for (size_t p = 0; p < g.k;) {
      const size_t kc = min_sz(kc_max, g.k - p);
      const bool overwrite = !g.accumulate && p == 0;
      sgemm_pack_b<NR, T4>(g, p, kc, jc, nc, bp);
      for (size_t i = i0; i < i1; i += MR) {
        const size_t mr = min_sz(MR, i1 - i);
        sgemm_pack_a<MR, T4>(g, i, mr, p, kc, ap);
        for (size_t jp = 0; jp < nc; jp += NR) {
          const size_t nr = min_sz(NR, nc - jp);
          float* cij = g.c + i * g.ldc + jc + jp;
          const float* bpp = bp + (jp / NR) * kc * NR;
          if (mr == MR && nr == NR) {
            MK::tile(kc, ap, bpp, cij, g.ldc, overwrite);
          } else {
            MK::tile(kc, ap, bpp, tmp, NR, true);
            for (size_t r = 0; r < mr; ++r)
              for (size_t c = 0; c < nr; ++c) {
                float& dst = cij[r * g.ldc + c];
                dst = overwrite ? tmp[r * NR + c] : dst + tmp[r * NR + c];
              }
          }
        }
      }
      p += kc;
    }
  }
}

}  // namespace
}  // namespace nk::detail
