// AVX-VNNI path (-mavx -mavx2 -mfma -mavxvnni): 256-bit {vex} vpdpbusd for W8A8 (u8 activations,
// column-sum compensation) and W4A8 (u4 weights x s8 activations); quant, W8A16, W4A16 and 2:4
// come from the AVX2 path, whose features are a subset of this one's.
#include <immintrin.h>

#include "driver.h"
#include "sparse.h"
#include "ymm_int8.h"

namespace qk {
namespace {

// c += dot4(u8, s8). asm keeps the tied accumulator in place (GCC otherwise copies it every step),
// and {vex} forces the AVX-VNNI encoding, never the EVEX (AVX512-VL) one.
struct U8S8DotVnni {
  static constexpr bool kU8 = true;  // W8A8: activations are s8 + 128; the colsums compensate
  static constexpr int kChainSteps = 1;  // W4A8: one vpdpbusd per 4-k dot, straight to int32
  void operator()(__m256i& c, __m256i u, __m256i s) const {
    asm("%{vex%} vpdpbusd %2, %1, %0" : "+x"(c) : "x"(u), "x"(s));
  }
  void pair(__m256i& c, __m256i u0, __m256i s0, __m256i u1, __m256i s1) const {
    (*this)(c, u0, s0);
    (*this)(c, u1, s1);
  }
};

void gemm_w8a8_avxvnni(const W8A8Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  gemm_w8a8_ymm(g, m0, m1, p0, p1, U8S8DotVnni{});
}

void gemm_w4a8_avxvnni(const W4Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  gemm_w4a8_ymm(g, m0, m1, p0, p1, U8S8DotVnni{});
}

}  // namespace

extern const Kernels kernels_avx_vnni = {Isa::avx_vnni, true, true, quant_row_f32_avx2, quant_row_bf16_avx2,
                                         gemm_w8a8_avxvnni, gemm_w8a16_avx2, gemm_w4a8_avxvnni,
                                         gemm_w4a16_avx2, gemm_s24_float_avx2, gemm_s24_i8_avx2};

}  // namespace qk
