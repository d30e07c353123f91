// AVX-VNNI kernels (-mavx2 -mfma -mavxvnni): 256-bit vpdpbusd W8A8; quant and W8A16 from AVX2.
#include <immintrin.h>

#include "avx2.h"
#include "driver.h"
#include "sparse.h"
#include "w4_avx2.h"

namespace qk {
namespace {

// gemm_u8s8s32_2x32_avxvnni: half a panel (32 columns = 4 ymm of [8 n x 4 k]) per call,
// MR = 2 rows -> 8 accumulators + 4 weight registers + 2 broadcasts of the 16 ymm.
// Activations are u8 (s8 + 128); colsum after the panel removes the shift exactly.
// c += dot4(u8 b, s8 w). asm keeps the tied accumulator in place (GCC otherwise copies it every
// step), and {vex} forces the AVX-VNNI encoding, never the EVEX (AVX512-VL) one.
inline void dpbusd(__m256i& c, __m256i b, __m256i w) {
  asm("%{vex%} vpdpbusd %2, %1, %0" : "+x"(c) : "x"(b), "x"(w));
}

template <int MR>
inline void ukernel_w8a8_avxvnni(const uint8_t* a, int64_t lda, const int8_t* wp, int64_t K4,
                                 int32_t acc[][kPanelN], int half) {
  __m256i c[MR][4];
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < 4; ++j) c[r][j] = _mm256_setzero_si256();
  const int8_t* wh = wp + half * 128;
  for (int64_t k4 = 0; k4 < K4; ++k4) {
    const __m256i* wk = reinterpret_cast<const __m256i*>(wh + k4 * 256);
    __m256i wv[4];
    for (int j = 0; j < 4; ++j) wv[j] = _mm256_loadu_si256(wk + j);
    for (int r = 0; r < MR; ++r) {
      int32_t a4;
      std::memcpy(&a4, a + r * lda + 4 * k4, 4);
      const __m256i b = _mm256_set1_epi32(a4);
      for (int j = 0; j < 4; ++j) dpbusd(c[r][j], b, wv[j]);
    }
  }
  const int32_t* colsum = reinterpret_cast<const int32_t*>(wp + K4 * 256) + half * 32;
  for (int j = 0; j < 4; ++j) {
    const __m256i cs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(colsum + 8 * j));
    for (int r = 0; r < MR; ++r)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc[r] + half * 32 + 8 * j),
                          _mm256_sub_epi32(c[r][j], cs));
  }
}

void gemm_w8a8_avxvnni(const W8A8Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  drive_w8a8<2>(g, m0, m1, p0, p1, [](int mr, const uint8_t* a, int64_t lda, const int8_t* wp,
                                      int64_t K4, int32_t acc[][kPanelN]) {
    for (int half = 0; half < 2; ++half) {
      if (mr == 2) ukernel_w8a8_avxvnni<2>(a, lda, wp, K4, acc, half);
      else ukernel_w8a8_avxvnni<1>(a, lda, wp, K4, acc, half);
    }
  });
}

// W4A8: the shared 256-bit kernel with {vex} vpdpbusd (u4 weights unsigned, int8 activations signed).
void gemm_w4a8_avxvnni(const W4Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  gemm_w4a8_ymm(g, m0, m1, p0, p1, [](__m256i& c, __m256i u, __m256i a) { dpbusd(c, u, a); });
}

}  // namespace

extern const Kernels kernels_avx_vnni = {Isa::avx_vnni, true, quant_row_f32_avx2, quant_row_bf16_avx2,
                                         gemm_w8a8_avxvnni, gemm_w8a16_avx2, gemm_w4a8_avxvnni,
                                         gemm_w4a16_avx2, gemm_s24_float_avx2, gemm_s24_i8_avx2};

}  // namespace qk
