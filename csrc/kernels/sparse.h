// 2:4 sparse GEMMs of the SIMD paths (their own translation units; tables in avx2.cpp / avx512_vnni.cpp).
#pragma once
#include "kernels.h"

namespace qk {
void gemm_s24_float_avx2(const S24Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1);
void gemm_s24_i8_avx2(const S24Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1);
void gemm_s24_float_avx512(const S24Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1);
void gemm_s24_i8_avx512(const S24Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1);
}  // namespace qk
