// 256-bit helpers shared by the AVX2 / AVX-VNNI translation units (ymm_int8.h, sparse_avx2.cpp).
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace qk {
namespace {

// The 4 bytes at p in every dword lane: one vpbroadcastd from memory (a load, no shuffle; GCC builds
// _mm256_set1_epi32 of a loaded int through a general register and vmovd).
inline __m256i bcast4(const void* p) {
  using i32u = int32_t __attribute__((may_alias, aligned(1)));
  __m256i b;
  asm("vpbroadcastd %1, %0" : "=x"(b) : "m"(*static_cast<const i32u*>(p)));
  return b;
}

}  // namespace
}  // namespace qk
