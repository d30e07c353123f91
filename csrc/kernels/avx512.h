// AVX-512 VNNI path helpers shared by its translation units (avx512_int8.cpp, avx512_int4.cpp):
// the one-instruction asm wrappers that keep accumulators in registers.
#pragma once
#include <immintrin.h>

#include <cstring>

#include "sparse.h"
#include "driver.h"

namespace qk {
void gemm_w4a8_avx512(const W4Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1);
void gemm_w4a16_avx512(const W4Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1);

namespace {

// c += dot4(u8 b, s8 w). The intrinsic's tied accumulator makes GCC copy (and spill) all
// accumulators every iteration; a "+v" asm operand keeps each one pinned in its register.
inline void dpbusd(__m512i& c, __m512i b, __m512i w) {
  asm("vpdpbusd %2, %1, %0" : "+v"(c) : "v"(b), "v"(w));
}

// The 4 bytes at a4 (int8 a[0..3], or a bf16 pair x[k] | x[k+1] << 16) as a dword in every lane: a
// register broadcast, loaded once for all the column vectors of a tile row it meets.
inline __m512i bcast4(const void* a4) {
  int32_t v;
  std::memcpy(&v, a4, 4);
  return _mm512_set1_epi32(v);
}

// c += dot4(u8 w, s8 a[0..3] broadcast from memory).
inline void dpbusd_bcast(__m512i& c, __m512i w, const int8_t* a4) {
  asm("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(c) : "v"(w), "m"(*reinterpret_cast<const int32_t*>(a4)));
}

// c += u * x[0] broadcast from memory.
inline void fma_bcast(__m512& c, __m512 u, const float* x) {
  asm("vfmadd231ps %2%{1to16%}, %1, %0" : "+v"(c) : "v"(u), "m"(*x));
}

// c += u * xb with xb a register broadcast of one x value.
inline void fma_reg(__m512& c, __m512 u, __m512 xb) {
  asm("vfmadd231ps %2, %1, %0" : "+v"(c) : "v"(u), "v"(xb));
}

}  // namespace
}  // namespace qk
