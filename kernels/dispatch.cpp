// CPU features -> one function table, chosen once. NEEDLE_ISA forces a path; an unknown or
// unsupported request falls back to the best supported path and says so in dispatch_info().
#include <cstdlib>
#include <string>

#include "internal.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

namespace nk {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::scalar: return "scalar";
    case Isa::avx2: return "avx2";
    case Isa::avxvnni: return "avxvnni";
    case Isa::avx512: return "avx512";
    case Isa::neon: return "neon";
    case Isa::neondot: return "neondot";
  }
  return "?";
}

bool parse_isa(std::string_view name, Isa* out) {
  for (Isa i : {Isa::scalar, Isa::avx2, Isa::avxvnni, Isa::avx512, Isa::neon, Isa::neondot}) {
    if (name == isa_name(i)) {
      *out = i;
      return true;
    }
  }
  return false;
}

namespace {

struct Features {
  bool avx2 = false, avxvnni = false, avx512 = false, neon = false, neondot = false;
};

#if defined(__x86_64__) || defined(_M_X64)
Features detect() {
  Features f;
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = c & (1u << 27), fma = c & (1u << 12), f16c = c & (1u << 29);
  if (!osxsave) return f;
  unsigned xlo, xhi;
  __asm__("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
  const bool ymm_os = (xlo & 0x6) == 0x6;            // SSE and AVX state
  const bool zmm_os = ymm_os && (xlo & 0xE0) == 0xE0;  // opmask, ZMM_Hi256, Hi16_ZMM
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
  const bool avx2 = b & (1u << 5);
  const bool avx512f = b & (1u << 16), avx512bw = b & (1u << 30), avx512vl = b & (1u << 31);
  const bool avx512vnni = c & (1u << 11);
  f.avx2 = ymm_os && avx2 && fma && f16c;
  f.avx512 = f.avx2 && zmm_os && avx512f && avx512bw && avx512vl && avx512vnni;
  if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) f.avxvnni = f.avx2 && (a & (1u << 4));
  return f;
}
#elif defined(__aarch64__)
Features detect() {
  Features f;
  f.neon = true;  // Advanced SIMD is mandatory on AArch64
#if defined(__linux__)
  f.neondot = (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#endif
  return f;
}
#else
Features detect() { return {}; }
#endif

bool supported(const Features& f, Isa isa) {
  switch (isa) {
    case Isa::scalar: return true;
    case Isa::avx2: return f.avx2;
    case Isa::avxvnni: return f.avxvnni;
    case Isa::avx512: return f.avx512;
    case Isa::neon: return f.neon;
    case Isa::neondot: return f.neondot;
  }
  return false;
}

const Kernels* table(Isa isa) {
  switch (isa) {
    case Isa::scalar: return &detail::ref_kernels();
#if defined(__x86_64__) || defined(_M_X64)
    case Isa::avx2: return &detail::avx2_kernels();
    case Isa::avxvnni: return &detail::avxvnni_kernels();
    case Isa::avx512: return &detail::avx512_kernels();
#endif
#if defined(__aarch64__)
    case Isa::neon: return &detail::neon_kernels();
    case Isa::neondot: return &detail::neondot_kernels();
#endif
    default: return nullptr;
  }
}

const Features& features() {
  static const Features f = detect();
  return f;
}

// Preference order when nothing is forced. The avx512 path runs the same 256-bit VNNI dot
// products as avxvnni but with 32 registers, which its GEMM tiles use (docs/kernels.md has the
// measurements); it issues no 512-bit instructions, so no frequency licence applies.
Isa best() {
  static const Isa order[] = {Isa::avx512, Isa::avxvnni, Isa::avx2, Isa::neondot, Isa::neon};
  for (Isa i : order)
    if (supported(features(), i) && table(i)) return i;
  return Isa::scalar;
}

DispatchInfo choose() {
  DispatchInfo info{best(), "", ""};
  const char* env = std::getenv("NEEDLE_ISA");
  if (!env || !*env) return info;
  info.requested = env;
  Isa want;
  if (!parse_isa(info.requested, &want)) {
    info.message = "NEEDLE_ISA=" + info.requested +
                   " is not one of scalar|avx2|avxvnni|avx512|neon|neondot; using " + isa_name(info.chosen);
  } else if (!supported(features(), want) || !table(want)) {
    info.message = "NEEDLE_ISA=" + info.requested + " is not supported by this CPU/build; using " +
                   isa_name(info.chosen);
  } else {
    info.chosen = want;
  }
  return info;
}

}  // namespace

const DispatchInfo& dispatch_info() {
  static const DispatchInfo info = choose();
  return info;
}

const Kernels& kernels() {
  static const Kernels* k = table(dispatch_info().chosen);
  return *k;
}

const Kernels* kernels_for(Isa isa) {
  if (!supported(features(), isa)) return nullptr;
  return table(isa);
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> out;
  for (Isa i : {Isa::scalar, Isa::neon, Isa::neondot, Isa::avx2, Isa::avxvnni, Isa::avx512})
    if (kernels_for(i)) out.push_back(i);
  return out;
}

}  // namespace nk
