#include "train/lora.h"

#include <cmath>
#include <cstring>
#include <random>

#include "train/matmul.h"

namespace needle::train {

namespace {

Lora shaped(const Config& c, int rank, float alpha) {
  Lora l;
  l.rank = rank;
  l.alpha = alpha;
  l.encoder.resize((size_t)c.num_encoder_layers);
  l.dec_self.resize((size_t)c.num_decoder_layers);
  l.dec_cross.resize((size_t)c.num_decoder_layers);
  return l;
}

}  // namespace

Lora zero_lora(const Config& c, int rank, float alpha) {
  Lora l = shaped(c, rank, alpha);
  for_each_adapter(l, c, [&](const LoraSpec& s, LoraPair& p) {
    p.a.assign((size_t)rank * s.in, 0.0f);
    p.b.assign((size_t)s.out * rank, 0.0f);
  });
  return l;
}

Lora init_lora(const Config& c, int rank, float alpha, uint64_t seed) {
  Lora l = zero_lora(c, rank, alpha);
  // A distinct stream from init_params(seed) and the dropout keys.
  std::mt19937_64 rng(seed ^ 0x4C6F524131ull);
  for_each_adapter(l, c, [&](const LoraSpec& s, LoraPair& p) {
    std::normal_distribution<double> nd(0.0, 1.0 / std::sqrt((double)s.in));
    for (float& x : p.a) x = (float)nd(rng);
  });
  return l;
}

Status check_lora(const Lora& l, const Config& c) {
  if (l.rank <= 0) return make_error("LoRA rank {} must be positive", l.rank);
  if (!(l.alpha > 0) || !std::isfinite(l.alpha)) return make_error("LoRA alpha {} must be positive", l.alpha);
  if ((int)l.encoder.size() != c.num_encoder_layers || (int)l.dec_self.size() != c.num_decoder_layers ||
      (int)l.dec_cross.size() != c.num_decoder_layers)
    return make_error("LoRA adapters have the wrong number of layers for the config");
  Status st;
  for_each_adapter(const_cast<Lora&>(l), c, [&](const LoraSpec& s, LoraPair& p) {
    if (st && (p.a.size() != (size_t)l.rank * s.in || p.b.size() != (size_t)s.out * l.rank))
      st = make_error("LoRA adapter of '{}' has A {} / B {} values, expected {} / {}", s.kernel, p.a.size(), p.b.size(),
                      (size_t)l.rank * s.in, (size_t)s.out * l.rank);
  });
  return st;
}

int64_t lora_param_count(const Lora& l) {
  int64_t n = 0;
  auto add = [&](const LoraAttn& a) {
    for (const LoraPair* p : {&a.q, &a.k, &a.v, &a.o}) n += (int64_t)(p->a.size() + p->b.size());
  };
  for (auto& a : l.encoder) add(a);
  for (auto& a : l.dec_self) add(a);
  for (auto& a : l.dec_cross) add(a);
  return n;
}

void merged_kernel(float* dst, const float* w, const LoraPair& p, int out, int in, int rank, float s) {
  // dst = B A   (B [out, rank] row-major: A(i, k) = b[i * rank + k]; A [rank, in] as the B operand)
  gemm(out, in, rank, p.b.data(), (size_t)rank, 1, p.a.data(), (size_t)in, dst, (size_t)in, /*accumulate=*/false);
  const size_t n = (size_t)out * in;
  for (size_t i = 0; i < n; ++i) dst[i] = w[i] + s * dst[i];
}

void merge_lora(Params& p, const Lora& l, const Config& c) {
  // The kernels of p in for_each_tensor order, matched by name to the adapters.
  std::vector<std::pair<std::string, std::vector<float>*>> kernels;
  for_each_tensor(p, c, [&](const TensorSpec& s, std::vector<float>& v) {
    if (s.role == Role::Kernel) kernels.emplace_back(s.name, &v);
  });
  std::vector<float> tmp;
  size_t k = 0;
  const float s = l.scale();
  for_each_adapter(const_cast<Lora&>(l), c, [&](const LoraSpec& spec, LoraPair& a) {
    while (k < kernels.size() && kernels[k].first != spec.kernel) ++k;  // same order: one pass
    if (k == kernels.size()) return;  // cannot happen for matching configs
    std::vector<float>& w = *kernels[k].second;
    tmp.resize(w.size());
    merged_kernel(tmp.data(), w.data(), a, spec.out, spec.in, l.rank, s);
    w.swap(tmp);
  });
}

namespace {
constexpr char kLoraMagic[8] = {'N', 'D', 'L', 'L', 'O', 'R', 'A', '1'};
}

std::vector<uint8_t> lora_to_bytes(const Lora& l, const Config& c) {
  // Sized once, then filled with memcpy (vector::insert trips GCC 12's -Warray-bounds here).
  std::vector<uint8_t> out(16 + (size_t)lora_param_count(l) * 4);
  const int32_t rank = l.rank;
  std::memcpy(out.data(), kLoraMagic, 8);
  std::memcpy(out.data() + 8, &rank, 4);
  std::memcpy(out.data() + 12, &l.alpha, 4);
  size_t pos = 16;
  auto put = [&](const std::vector<float>& v) {
    if (v.empty()) return;
    std::memcpy(out.data() + pos, v.data(), v.size() * 4);
    pos += v.size() * 4;
  };
  for_each_adapter(const_cast<Lora&>(l), c, [&](const LoraSpec&, LoraPair& p) {
    put(p.a);
    put(p.b);
  });
  return out;
}

Result<Lora> lora_from_bytes(std::span<const uint8_t> bytes, const Config& c) {
  if (bytes.size() < 16 || std::memcmp(bytes.data(), kLoraMagic, 8) != 0) return make_error("not LoRA adapter bytes");
  int32_t rank;
  float alpha;
  std::memcpy(&rank, bytes.data() + 8, 4);
  std::memcpy(&alpha, bytes.data() + 12, 4);
  if (rank <= 0 || rank > c.d_model || !(alpha > 0)) return make_error("LoRA adapter bytes: bad rank {} or alpha {}", rank, alpha);
  Lora l = zero_lora(c, rank, alpha);
  size_t pos = 16;
  bool ok = true;
  auto take = [&](std::vector<float>& v) {
    const size_t n = v.size() * 4;
    if (!ok || n > bytes.size() - pos) {
      ok = false;
      return;
    }
    if (n) std::memcpy(v.data(), bytes.data() + pos, n);
    pos += n;
  };
  for_each_adapter(l, c, [&](const LoraSpec&, LoraPair& p) {
    take(p.a);
    take(p.b);
  });
  if (!ok || pos != bytes.size()) return make_error("LoRA adapter bytes do not match the config's shapes");
  return l;
}

uint64_t params_fingerprint(const Params& p, const Config& c) {
  // FNV-1a over 64-bit words (each tensor's length, then its bits), a multiply-xorshift at the end.
  uint64_t h = 0xcbf29ce484222325ull;
  auto mix = [&](uint64_t w) { h = (h ^ w) * 0x100000001b3ull; };
  for_each_tensor(const_cast<Params&>(p), c, [&](const TensorSpec&, std::vector<float>& v) {
    mix(v.size());
    size_t i = 0;
    for (; i + 2 <= v.size(); i += 2) {
      uint64_t w;
      std::memcpy(&w, v.data() + i, 8);
      mix(w);
    }
    if (i < v.size()) {
      uint32_t w;
      std::memcpy(&w, v.data() + i, 4);
      mix(w);
    }
  });
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  return h;
}

}  // namespace needle::train
