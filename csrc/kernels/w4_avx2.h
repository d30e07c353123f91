// 256-bit W4A8 microkernel shared by the AVX2 and AVX-VNNI translation units (each instantiates it
// with its own int8 dot and its own flags), and the AVX2 W4A16 kernel both tables use.
#pragma once
#include <immintrin.h>

#include "driver.h"

namespace qk {
void gemm_w4a16_avx2(const W4Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1);

namespace {

// gemm_u4s8f32_2x32_avx2: half a panel (32 columns) per call. One k8 step of a group (layout in
// kernels.h) is 4 ymm of [8 n x (k0|k4, k1|k5, k2|k6, k3|k7)]; lo = v & 0x0f and hi = v >> 4 & 0x0f
// are u8 [8 n x 4 k] operands and dot(c, u8 w, s8 bcast a) adds 4-k dot products to int32 lanes.
// MR = 2 rows: 8 accumulators + v, lo, hi, mask, 2 broadcasts. Per group the contract's step
// y += float(c - zz * asum) * scale goes to y in L1.
template <int MR, typename Dot>
inline void ukernel_w4a8_ymm(const int8_t* a, int64_t lda, const int32_t* asum, const uint8_t* wp,
                             int64_t G, int64_t gk, float y[][kPanelN], int half, Dot dot) {
  const __m256i m4 = _mm256_set1_epi8(0x0f);
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < 4; ++j) _mm256_storeu_ps(y[r] + half * 32 + 8 * j, _mm256_setzero_ps());
  for (int64_t grp = 0; grp < G; ++grp) {
    const uint8_t* blk = wp + grp * w4_group_bytes(gk);
    const int8_t* ag = a + grp * gk;
    __m256i c[MR][4];
    for (int r = 0; r < MR; ++r)
      for (int j = 0; j < 4; ++j) c[r][j] = _mm256_setzero_si256();
    for (int64_t k8 = 0; k8 < gk / 8; ++k8) {
      const __m256i* w = reinterpret_cast<const __m256i*>(blk + k8 * 256 + half * 128);
      __m256i blo[MR], bhi[MR];
      for (int r = 0; r < MR; ++r) {
        int32_t a4[2];
        std::memcpy(a4, ag + r * lda + 8 * k8, 8);
        blo[r] = _mm256_set1_epi32(a4[0]);
        bhi[r] = _mm256_set1_epi32(a4[1]);
      }
      for (int j = 0; j < 4; ++j) {
        const __m256i v = _mm256_loadu_si256(w + j);
        const __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
        for (int r = 0; r < MR; ++r) {
          dot(c[r][j], lo, blo[r]);
          dot(c[r][j], hi, bhi[r]);
        }
      }
    }
    const float* scale = reinterpret_cast<const float*>(blk + 32 * gk) + half * 32;
    const uint8_t* zz = blk + 32 * gk + 4 * kPanelN + half * 32;
    for (int j = 0; j < 4; ++j) {
      const __m256 s = _mm256_loadu_ps(scale + 8 * j);
      const __m256i z = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(zz + 8 * j)));
      for (int r = 0; r < MR; ++r) {
        const __m256i corr = _mm256_mullo_epi32(z, _mm256_set1_epi32(asum[r * G + grp]));
        const __m256 t = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(c[r][j], corr)), s);
        float* yr = y[r] + half * 32 + 8 * j;
        _mm256_storeu_ps(yr, _mm256_add_ps(_mm256_loadu_ps(yr), t));
      }
    }
  }
}

template <typename Dot>
inline void gemm_w4a8_ymm(const W4Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1, Dot dot) {
  drive_w4<2, true>(g, m0, m1, p0, p1, [&](int mr, int64_t m, const uint8_t* wp, float y[][kPanelN]) {
    const int8_t* a = static_cast<const int8_t*>(g.a) + m * g.lda;
    const int32_t* as = static_cast<const int32_t*>(g.asum) + m * g.G;
    for (int half = 0; half < 2; ++half) {
      if (mr == 2) ukernel_w4a8_ymm<2>(a, g.lda, as, wp, g.G, g.gk, y, half, dot);
      else ukernel_w4a8_ymm<1>(a, g.lda, as, wp, g.G, g.gk, y, half, dot);
    }
  });
}

}  // namespace
}  // namespace qk
