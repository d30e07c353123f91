// Bench only: single-thread throughput ceilings of one CPU path's inner instructions (the int8 dot
// and the fp32 FMA), in ops/s (a MAC is 2 ops). Compiled once per path with that path's flags and
// QK_PROBE_PATH=<name>; the instructions are picked from the ISA macros those flags define.
#include <cstdint>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include "peak.h"
#endif

#define QK_CAT2(a, b) a##b
#define QK_CAT(a, b) QK_CAT2(a, b)

namespace qk_bench {

double QK_CAT(peak_int8_, QK_PROBE_PATH)() {
#if defined(__AVX512VNNI__) && defined(__AVX512F__)
  return 128.0 * qk::instr_per_second<__m512i>([](__m512i& c, __m512i a, __m512i b) {
    asm("vpdpbusd %2, %1, %0" : "+v"(c) : "v"(a), "v"(b));  // 64 MACs
  });
#elif defined(__AVXVNNI__)
  return 64.0 * qk::instr_per_second<__m256i>([](__m256i& c, __m256i a, __m256i b) {
    asm("%{vex%} vpdpbusd %2, %1, %0" : "+x"(c) : "x"(a), "x"(b));  // 32 MACs
  });
#elif defined(__AVX2__)
  // The sign-trick dot the AVX2 W8A8 kernel issues (4 instructions for 32 MACs), all in asm so
  // the loop-invariant part is not hoisted out.
  const __m256i ones = _mm256_set1_epi16(1);
  return 64.0 * qk::instr_per_second<__m256i>([ones](__m256i& c, __m256i a, __m256i b) {
    __m256i t;
    asm("vpsignb %[a], %[b], %[t]\n\t"
        "vpmaddubsw %[t], %[a], %[t]\n\t"
        "vpmaddwd %[ones], %[t], %[t]\n\t"
        "vpaddd %[t], %[c], %[c]"
        : [c] "+x"(c), [t] "=&x"(t) : [a] "x"(a), [b] "x"(b), [ones] "x"(ones));
  });
#else
  return 0.0;  // scalar: no vector ceiling
#endif
}

double QK_CAT(peak_f32_, QK_PROBE_PATH)() {
#if defined(__AVX512F__)
  return 32.0 * qk::instr_per_second<__m512>([](__m512& c, __m512 a, __m512 b) {
    asm("vfmadd231ps %1, %2, %0" : "+v"(c) : "v"(a), "v"(b));  // 16 FMAs
  });
#elif defined(__FMA__)
  return 16.0 * qk::instr_per_second<__m256>([](__m256& c, __m256 a, __m256 b) {
    asm("vfmadd231ps %1, %2, %0" : "+x"(c) : "x"(a), "x"(b));  // 8 FMAs
  });
#else
  return 0.0;
#endif
}

}  // namespace qk_bench
