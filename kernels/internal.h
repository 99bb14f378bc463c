// Internal to the kernels library: the per-ISA tables and code shared by several ISA files.
#pragma once
#include <cfloat>
#include <cmath>
#include <cstddef>

#include "nk/kernels.h"

namespace nk::detail {

// Each ISA file defines one of these; dispatch.cpp calls only those the CPU supports.
const Kernels& ref_kernels();
#if defined(__x86_64__) || defined(_M_X64)
const Kernels& avx2_kernels();
const Kernels& avxvnni_kernels();
const Kernels& avx512_kernels();
// The vectorized e^x of the x86 attention (x86_avx2.cpp), exposed for its accuracy test.
void exp_avx2_for_test(const float* x, float* y, size_t n);
#endif
#if defined(__aarch64__)
const Kernels& neon_kernels();
const Kernels& neondot_kernels();
// The vectorized e^x of the NEON attention (arm_neon.cpp), exposed for its accuracy test.
void exp_neon_for_test(const float* x, float* y, size_t n);
#endif

// f32 GEMM (Kernels::sgemm): the scalar reference (sgemm_ref.cpp) and the blocked SIMD paths
// (sgemm_*.cpp over sgemm.h), with their register tiles (rows x columns of C).
void sgemm_ref(const SgemmArgs& g, size_t i0, size_t i1, size_t j0, size_t j1);
constexpr size_t kSgemmRefMR = 1, kSgemmRefNR = 16;
#if defined(__x86_64__) || defined(_M_X64)
void sgemm_avx2(const SgemmArgs& g, size_t i0, size_t i1, size_t j0, size_t j1);
void sgemm_avx512(const SgemmArgs& g, size_t i0, size_t i1, size_t j0, size_t j1);
constexpr size_t kSgemmAvx2MR = 6, kSgemmAvx2NR = 16;
constexpr size_t kSgemmAvx512MR = 12, kSgemmAvx512NR = 32;
#endif
#if defined(__aarch64__)
void sgemm_neon(const SgemmArgs& g, size_t i0, size_t i1, size_t j0, size_t j1);
constexpr size_t kSgemmNeonMR = 8, kSgemmNeonNR = 12;
#endif

// The online-softmax attention over scalar loops (ref.cpp): tests compare block sizes with it.
void attention_online_scalar(const AttnArgs& a, size_t h0, size_t h1, size_t i0, size_t i1);

// Thread-local scratch floats (defined in ref.cpp, compiled for the baseline ISA: ISA files must
// not instantiate STL templates, whose copies the linker could share with baseline code).
// slot < 6 (0, 1: attention scores, 2: RoPE tables, 3: GEMM activation prep, 4: sgemm packed B);
// the pointer stays valid until the next call with the same slot on this thread.
float* scratch_floats(size_t n, int slot);

// Helpers below are compiled into each ISA file separately (internal linkage), for the same reason.
namespace {

inline size_t min_sz(size_t a, size_t b) { return a < b ? a : b; }

// Number of leading keys a query can see before masks that are not a prefix (key_mask):
// causal and k_valid both cut the key range at a prefix.
inline size_t attn_key_limit(const AttnArgs& a, size_t i) {
  size_t limit = a.lk;
  if (a.causal) limit = min_sz(limit, a.q_pos0 + i + 1);
  return min_sz(limit, a.k_valid);
}

// RoPE tables. freq_i = 1 / theta^(2i/hd) for i < hd/2, in f32 as the reference model computes
// it, cached per thread (decode calls rope with one row at a time). Returns 3 * hd/2 floats of
// thread-local scratch: [freq | cos | sin]; rope_angles fills cos/sin for one position (the
// angle rounded to f32 like the reference, then cosf/sinf, within 1 ulp).
inline float* rope_scratch(size_t hd, float theta) {
  thread_local size_t cached_hd = 0;
  thread_local float cached_theta = 0.0f;
  thread_local float* cached_buf = nullptr;
  const size_t half = hd / 2;
  float* buf = scratch_floats(3 * half, 2);
  if (buf != cached_buf || hd != cached_hd || theta != cached_theta) {
    for (size_t i = 0; i < half; ++i)
      buf[i] = 1.0f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(hd));
    cached_hd = hd;
    cached_theta = theta;
    cached_buf = buf;
  }
  return buf;
}

inline void rope_angles(size_t pos, size_t half, float* buf) {
  const float* freq = buf;
  float* cs = buf + half;
  float* sn = buf + 2 * half;
  for (size_t i = 0; i < half; ++i) {
    const float ang = static_cast<float>(pos) * freq[i];
    cs[i] = std::cos(ang);
    sn[i] = std::sin(ang);
  }
}

inline float sigmoid(float g) { return 1.0f / (1.0f + std::exp(-g)); }

}  // namespace
}  // namespace nk::detail
