// AVX2 kernels shared with the AVX-VNNI table (AVX-VNNI CPUs always have AVX2 + FMA).
#pragma once
#include "kernels.h"

namespace qk {
void quant_row_f32_avx2(const float* x, int64_t K, int8_t* q, float* scale);
void quant_row_bf16_avx2(const uint16_t* x, int64_t K, int8_t* q, float* scale);
void gemm_w8a16_avx2(const W8A16Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1);
}  // namespace qk
