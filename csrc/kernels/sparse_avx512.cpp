// AVX-512 VNNI path, 2:4 sparse GEMMs (same flags as avx512_int8.cpp): activations gathered by the metadata
// in registers, so only the kept half of the weights is ever read.
#include <immintrin.h>

#include <algorithm>

#include "driver.h"
#include "sparse.h"

namespace qk {
namespace {
// ---- float values: gemm_f32sp24f32_mrx64_avx512 (sp24: 2:4-compressed fp32 or bf16 values) -----------------------------------------------------
// Per block (32 k) the 64 columns' meta words sit in m[0..3] (16 lanes each). For group g:
//   xw[r]   = x[r][4g .. 4g+3] broadcast to all four 128-bit quads (vbroadcastf32x4)
//   i0 = m >> 2g, i1 = m >> (16 + 2g): vpermps reads the low 4 bits of each lane, and since every
//   quad holds the same 4 activations, only the low 2 bits (the kept position) matter.
//   c[r][j] += v0 * vpermps(i0, xw[r]) + v1 * vpermps(i1, xw[r])
// Values: fp32 as two vectors (v0[16], v1[16]); bf16 as 16 (v0, v1) pairs, widened by a shift
// (v0: pair << 16) and a mask (v1: pair & 0xffff0000). MR <= 4: 16 accumulators + 4 meta + temps.
// The kept values (v0, v1) of columns 16j .. 16j+15 of one group, as fp32 vectors: fp32 values are
// stored as two vectors; bf16 pairs widen by a shift (v0) and a mask (v1).
template <bool BF16>
inline void load_values(const uint8_t* vg, int j, __m512* v0, __m512* v1) {
  if constexpr (BF16) {
    const __m512i d = _mm512_loadu_si512(vg + j * 64);
    *v0 = _mm512_castsi512_ps(_mm512_slli_epi32(d, 16));
    *v1 = _mm512_castsi512_ps(_mm512_and_si512(d, _mm512_set1_epi32(int(0xffff0000u))));
  } else {
    *v0 = _mm512_loadu_ps(reinterpret_cast<const float*>(vg + j * 128));
    *v1 = _mm512_loadu_ps(reinterpret_cast<const float*>(vg + j * 128 + 64));
  }
}

template <int MR, bool BF16>
QK_UKERNEL void gemm_f32sp24f32_mrx64_avx512(const float* x, int64_t ldx, const uint8_t* wp, int64_t nblk, float acc[][kPanelN]) {
  const int64_t pf = tuning().sparse_prefetch_distance;
  constexpr int64_t esize = BF16 ? 2 : 4;
  __m512 c[MR][4];
  QK_UNROLL
  for (int r = 0; r < MR; ++r)
    QK_UNROLL
    for (int j = 0; j < 4; ++j) c[r][j] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nblk; ++b) {
    const uint8_t* blk = wp + b * s24_block_bytes(esize);
    prefetch_lines(blk, pf, s24_block_bytes(esize));
    __m512i m[4];
    QK_UNROLL
    for (int j = 0; j < 4; ++j) m[j] = _mm512_loadu_si512(blk + 64 * j);
#pragma GCC unroll 8
    for (int gl = 0; gl < 8; ++gl) {
      __m512 xw[MR];
      QK_UNROLL
      for (int r = 0; r < MR; ++r) xw[r] = _mm512_broadcast_f32x4(_mm_loadu_ps(x + r * ldx + b * kS24BlockK + 4 * gl));
      const uint8_t* vg = blk + 4 * kPanelN + gl * 4 * 32 * esize;
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        const __m512i i0 = _mm512_srli_epi32(m[j], 2 * gl), i1 = _mm512_srli_epi32(m[j], 16 + 2 * gl);
        __m512 v0, v1;
        load_values<BF16>(vg, j, &v0, &v1);
        QK_UNROLL
        for (int r = 0; r < MR; ++r) {
          c[r][j] = _mm512_fmadd_ps(v0, _mm512_permutexvar_ps(i0, xw[r]), c[r][j]);
          c[r][j] = _mm512_fmadd_ps(v1, _mm512_permutexvar_ps(i1, xw[r]), c[r][j]);
        }
      }
    }
  }
  QK_UNROLL
  for (int r = 0; r < MR; ++r)
    QK_UNROLL
    for (int j = 0; j < 4; ++j) _mm512_storeu_ps(acc[r] + 16 * j, c[r][j]);
}

// ---- int8 values: gemm_s16sp24s32_mrx64_avx512vnni (int16 activations x 2:4 int8 values) ------------------------------------------------
// Activations are int16 (widened once per row). For group g: aw[r] = a[r][4g .. 4g+3] broadcast to
// every qword; idx = m >> 2g as 16-bit lanes puts i0 in the low bits of word 0 and i1 in word 1 of
// each column's dword; vpermw (low 5 bits; all qwords equal, so the low 2 bits decide) gathers
// (a[i0], a[i1]) per column, and vpdpwssd adds v0 * a[i0] + v1 * a[i1] to int32 lanes: exact.
inline void dpwssd(__m512i& c, __m512i v, __m512i a) {
  asm("vpdpwssd %2, %1, %0" : "+v"(c) : "v"(v), "v"(a));
}

template <int MR>
QK_UKERNEL void gemm_s16sp24s32_mrx64_avx512vnni(const int16_t* a, int64_t lda, const uint8_t* wp, int64_t nblk, int32_t acc[][kPanelN]) {
  const int64_t pf = tuning().sparse_prefetch_distance;
  __m512i c[MR][4];
  QK_UNROLL
  for (int r = 0; r < MR; ++r)
    QK_UNROLL
    for (int j = 0; j < 4; ++j) c[r][j] = _mm512_setzero_si512();
  for (int64_t b = 0; b < nblk; ++b) {
    const uint8_t* blk = wp + b * s24_block_bytes(1);
    prefetch_lines(blk, pf, s24_block_bytes(1));
    __m512i m[4];
    QK_UNROLL
    for (int j = 0; j < 4; ++j) m[j] = _mm512_loadu_si512(blk + 64 * j);
#pragma GCC unroll 8
    for (int gl = 0; gl < 8; ++gl) {
      __m512i aw[MR];
      QK_UNROLL
      for (int r = 0; r < MR; ++r) {
        int64_t q;
        std::memcpy(&q, a + r * lda + b * kS24BlockK + 4 * gl, 8);
        aw[r] = _mm512_set1_epi64(q);
      }
      const uint8_t* vg = blk + 4 * kPanelN + gl * 4 * 32;
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        const __m512i idx = _mm512_srli_epi16(m[j], 2 * gl);
        const __m512i v = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(vg + j * 32)));
        QK_UNROLL
        for (int r = 0; r < MR; ++r) dpwssd(c[r][j], v, _mm512_permutexvar_epi16(idx, aw[r]));
      }
    }
  }
  QK_UNROLL
  for (int r = 0; r < MR; ++r)
    QK_UNROLL
    for (int j = 0; j < 4; ++j) _mm512_storeu_si512(acc[r] + 16 * j, c[r][j]);
}

// ---- decode (one row): NP panels in lockstep, one 32-k block of each in turn -------------------
// NP concurrent weight streams per core (see gemm_s8u4s32_1xnp64_avx512vnni in avx512_int4.cpp for why);
// the per-column arithmetic and its order are those of the kernels above.
// Prefetches pf bytes ahead (tuning().sparse_prefetch_distance) in each of np panel streams (pb bytes
// apart), bb bytes each.
inline void prefetch_blocks(const uint8_t* w, int64_t pb, int np, int64_t bb, int64_t pf) {
  for (int q = 0; q < np; ++q) prefetch_lines(w + q * pb, pf, bb);
}

template <int NP, bool BF16>
QK_UKERNEL void gemm_f32sp24f32_1xnp64_avx512(const float* x, const uint8_t* wp, int64_t pb, int64_t nblk, float acc[][kPanelN]) {
  const int64_t pf = tuning().sparse_prefetch_distance;
  constexpr int64_t esize = BF16 ? 2 : 4, bb = 4 * kPanelN + 8 * 4 * 32 * esize;
  __m512 c[NP][4];
  QK_UNROLL
  for (int q = 0; q < NP; ++q)
    QK_UNROLL
    for (int j = 0; j < 4; ++j) c[q][j] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nblk; ++b) {
    prefetch_blocks(wp + b * bb, pb, NP, bb, pf);
#pragma GCC unroll 8
    for (int gl = 0; gl < 8; ++gl) {
      const __m512 xw = _mm512_broadcast_f32x4(_mm_loadu_ps(x + b * kS24BlockK + 4 * gl));
      QK_UNROLL
      for (int q = 0; q < NP; ++q) {
        const uint8_t* blk = wp + q * pb + b * bb;
        const uint8_t* vg = blk + 4 * kPanelN + gl * 4 * 32 * esize;
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j) {
          const __m512i m = _mm512_loadu_si512(blk + 64 * j);
          const __m512i i0 = _mm512_srli_epi32(m, 2 * gl), i1 = _mm512_srli_epi32(m, 16 + 2 * gl);
          __m512 v0, v1;
          load_values<BF16>(vg, j, &v0, &v1);
          c[q][j] = _mm512_fmadd_ps(v0, _mm512_permutexvar_ps(i0, xw), c[q][j]);
          c[q][j] = _mm512_fmadd_ps(v1, _mm512_permutexvar_ps(i1, xw), c[q][j]);
        }
      }
    }
  }
  QK_UNROLL
  for (int q = 0; q < NP; ++q)
    QK_UNROLL
    for (int j = 0; j < 4; ++j) _mm512_storeu_ps(acc[q] + 16 * j, c[q][j]);
}

template <int NP>
QK_UKERNEL void gemm_s16sp24s32_1xnp64_avx512vnni(const int16_t* a, const uint8_t* wp, int64_t pb, int64_t nblk, int32_t acc[][kPanelN]) {
  const int64_t pf = tuning().sparse_prefetch_distance;
  constexpr int64_t bb = 4 * kPanelN + 8 * 4 * 32;
  __m512i c[NP][4];
  QK_UNROLL
  for (int q = 0; q < NP; ++q)
    QK_UNROLL
    for (int j = 0; j < 4; ++j) c[q][j] = _mm512_setzero_si512();
  for (int64_t b = 0; b < nblk; ++b) {
    prefetch_blocks(wp + b * bb, pb, NP, bb, pf);
#pragma GCC unroll 8
    for (int gl = 0; gl < 8; ++gl) {
      int64_t w4;
      std::memcpy(&w4, a + b * kS24BlockK + 4 * gl, 8);
      const __m512i aw = _mm512_set1_epi64(w4);
      QK_UNROLL
      for (int q = 0; q < NP; ++q) {
        const uint8_t* blk = wp + q * pb + b * bb;
        const uint8_t* vg = blk + 4 * kPanelN + gl * 4 * 32;
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j) {
          const __m512i idx = _mm512_srli_epi16(_mm512_loadu_si512(blk + 64 * j), 2 * gl);
          const __m512i v = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(vg + j * 32)));
          dpwssd(c[q][j], v, _mm512_permutexvar_epi16(idx, aw));
        }
      }
    }
  }
  QK_UNROLL
  for (int q = 0; q < NP; ++q)
    QK_UNROLL
    for (int j = 0; j < 4; ++j) _mm512_storeu_si512(acc[q] + 16 * j, c[q][j]);
}

}  // namespace

void gemm_s24_float_avx512(const S24Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  const int64_t nblk = round_up(g.K, kS24BlockK) / kS24BlockK, pb = s24_panel_bytes(g.K, g.values_bf16 ? 2 : 4);
  const auto kernel = [&](auto bf16) {
    constexpr bool BF16 = decltype(bf16)::value;
    if (m1 - m0 == 1) {  // decode: 4 panels in lockstep
      const float* x = static_cast<const float*>(g.a) + m0 * g.lda;
      lockstep_panels<4, float>(p0, p1, [&](auto NP, int64_t p, float acc[][kPanelN]) {
        gemm_f32sp24f32_1xnp64_avx512<NP, BF16>(x, g.w + p * pb, pb, nblk, acc);
      }, [&, epi = s24_epilogue<false>(g)](int64_t p, const float* acc) { epi(m0, p, acc); });
      return;
    }
    drive<4, float>(m0, m1, p0, p1, g.w, pb, [&](auto R, int64_t m, const uint8_t* wp, float acc[][kPanelN]) {
      gemm_f32sp24f32_mrx64_avx512<R, BF16>(static_cast<const float*>(g.a) + m * g.lda, g.lda, wp, nblk, acc);
    }, s24_epilogue<false>(g));
  };
  if (g.values_bf16)
    kernel(std::true_type{});
  else
    kernel(std::false_type{});
}

void gemm_s24_i8_avx512(const S24Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  const int64_t nblk = round_up(g.K, kS24BlockK) / kS24BlockK, pb = s24_panel_bytes(g.K, 1);
  if (m1 - m0 == 1) {  // decode: 6 panels in lockstep
    const int16_t* a = static_cast<const int16_t*>(g.a) + m0 * g.lda;
    lockstep_panels<6, int32_t>(p0, p1, [&](auto NP, int64_t p, int32_t acc[][kPanelN]) {
      gemm_s16sp24s32_1xnp64_avx512vnni<NP>(a, g.w + p * pb, pb, nblk, acc);
    }, [&, epi = s24_epilogue<true>(g)](int64_t p, const int32_t* acc) { epi(m0, p, acc); });
    return;
  }
  drive<4, int32_t>(m0, m1, p0, p1, g.w, pb, [&](auto R, int64_t m, const uint8_t* wp, int32_t acc[][kPanelN]) {
    gemm_s16sp24s32_mrx64_avx512vnni<R>(static_cast<const int16_t*>(g.a) + m * g.lda, g.lda, wp, nblk, acc);
  }, s24_epilogue<true>(g));
}

}  // namespace qk
