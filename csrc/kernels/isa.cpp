// Runtime ISA selection: CPUID + XGETBV (OS saves the registers), capped by QKERNELS_CPU_ISA.
#include <cpuid.h>
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "kernels.h"

namespace qk {

static const char* kNames[] = {"scalar", "avx2", "avx_vnni", "avx512_vnni", "amx"};

const char* isa_name(Isa isa) { return kNames[static_cast<int>(isa)]; }

bool isa_from_name(const char* name, Isa* out) {
  for (int i = 0; i < 5; ++i)
    if (std::strcmp(name, kNames[i]) == 0) {
      *out = static_cast<Isa>(i);
      return true;
    }
  return false;
}

static uint64_t xgetbv0() {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}

Isa detect_isa() {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return Isa::scalar;
  const bool osxsave = c & (1u << 27), fma = c & (1u << 12);
  if (!osxsave) return Isa::scalar;
  const uint64_t xcr0 = xgetbv0();
  const bool ymm_os = (xcr0 & 0x6) == 0x6;
  const bool zmm_os = (xcr0 & 0xe6) == 0xe6;
  const bool amx_os = (xcr0 & 0x60000) == 0x60000;
  __cpuid_count(7, 0, a, b, c, d);
  const bool avx2 = b & (1u << 5), avx512f = b & (1u << 16), avx512bw = b & (1u << 30);
  const bool avx512vl = b & (1u << 31), avx512vnni = c & (1u << 11);
  const bool amx_int8 = d & (1u << 25), amx_tile = d & (1u << 24);
  __cpuid_count(7, 1, a, b, c, d);
  const bool avxvnni = a & (1u << 4);
  (void)amx_int8; (void)amx_tile; (void)amx_os;  // AMX kernels are a later issue
  if (zmm_os && avx512f && avx512bw && avx512vl && avx512vnni) return Isa::avx512_vnni;
  if (ymm_os && avx2 && fma && avxvnni) return Isa::avx_vnni;
  if (ymm_os && avx2 && fma) return Isa::avx2;
  return Isa::scalar;
}

static Isa initial_isa() {
  Isa best = detect_isa();
  const char* env = std::getenv("QKERNELS_CPU_ISA");
  Isa want;
  if (env && *env && isa_from_name(env, &want) && want < best) return want;
  return best;
}

static std::atomic<int> g_isa{-1};

Isa active_isa() {
  int v = g_isa.load(std::memory_order_relaxed);
  if (v < 0) {
    v = static_cast<int>(initial_isa());
    g_isa.store(v);
  }
  return static_cast<Isa>(v);
}

void set_active_isa(Isa isa) {
  Isa best = detect_isa();
  g_isa.store(static_cast<int>(isa < best ? isa : best));
}

const Kernels& kernels(Isa isa) {
  switch (isa) {
    case Isa::amx:
    case Isa::avx512_vnni: return kAvx512VnniKernels;
    case Isa::avx_vnni: return kAvxVnniKernels;
    case Isa::avx2: return kAvx2Kernels;
    default: return kScalarKernels;
  }
}

}  // namespace qk
