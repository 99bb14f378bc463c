// Helpers shared by the kernel tests: seeded data and the list of paths to check.
#pragma once
#include <cfloat>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "nk/kernels.h"
#include "nk/quant.h"

namespace kt {

constexpr double kU = FLT_EPSILON / 2;  // unit roundoff of f32 (round to nearest)

inline std::vector<float> uniform(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// Every path this machine can run, scalar included.
inline std::vector<const nk::Kernels*> all_paths() {
  std::vector<const nk::Kernels*> out;
  for (nk::Isa i : nk::supported_isas()) out.push_back(nk::kernels_for(i));
  return out;
}

// Random Q4 weights covering the whole nibble range, scales of varied magnitude.
inline std::vector<nk::BlockQ4> random_q4(size_t n_blocks, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> sc(0.001f, 0.5f);
  std::vector<nk::BlockQ4> w(n_blocks);
  for (auto& b : w) {
    b.d = sc(rng);
    for (auto& q : b.qs) q = static_cast<uint8_t>(byte(rng));
  }
  return w;
}

// Random Q8 blocks; weights may use -128 (the format allows it), activations never do
// (the activation quantizer produces [-127, 127]).
inline std::vector<nk::BlockQ8> random_q8(size_t n_blocks, uint32_t seed, int qmin) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> q(qmin, 127);
  std::uniform_real_distribution<float> sc(0.001f, 0.5f);
  std::vector<nk::BlockQ8> w(n_blocks);
  for (auto& b : w) {
    b.d = sc(rng);
    for (auto& v : b.qs) v = static_cast<int8_t>(q(rng));
  }
  return w;
}

inline int q_at(const nk::BlockQ4& b, int j) { return nk::q4_get(b, j); }
inline int q_at(const nk::BlockQ8& b, int j) { return b.qs[j]; }

}  // namespace kt
