// AVX2 2:4 sparse GEMMs (-mavx2 -mfma; also the AVX-VNNI path's): the layout of kernels.h read
// 8 columns per ymm, half a panel (32 columns) per call.
#include <immintrin.h>

#include "driver.h"
#include "sparse.h"
#include "ymm.h"

namespace qk {
namespace {

// Both kernels take NJ ymm of 8 columns from column 32 * half (ymm_column_blocks in driver.h: one
// row x the whole panel, or 2 rows x half of it), and blocks [b0, b1) of the panel per call
// (drive_streamed's chunks: the sums start from zero at b0 = 0, else from acc; the int8 column sums
// come off after the last block), touching pf's lines evenly over the blocks. Column group
// j = 4 * half + jj: its 2-bit indices are the 32 bytes at 32 * j of the block, its values the
// 16-column run j / 2 (second half of it when j is odd) of group gl's value area.

// gemm_f32sp24f32_mrxnj8_avx2: as the AVX-512 kernel with vpermps ymm (low 3 index bits; the window
// of 4 activations is broadcast to both 128-bit halves, so only the low 2 bits matter).
template <int MR, int NJ, bool BF16>
QK_UKERNEL void gemm_f32sp24f32_mrxnj8_avx2(const float* x, int64_t ldx, const uint8_t* wp, int64_t b0, int64_t b1,
                                            float acc[][kPanelN], int half, PrefetchShare pf) {
  constexpr int64_t esize = BF16 ? 2 : 4;
  __m256 c[MR][NJ];
  QK_UNROLL
  for (int r = 0; r < MR; ++r)
    QK_UNROLL
    for (int jj = 0; jj < NJ; ++jj)
      c[r][jj] = b0 == 0 ? _mm256_setzero_ps() : _mm256_loadu_ps(acc[r] + half * 32 + 8 * jj);
  const __m256i hi16 = _mm256_set1_epi32(int(0xffff0000u));
  SpreadPrefetch ahead(pf.p, pf.lines, b1 - b0);
  for (int64_t b = b0; b < b1; ++b) {
    if constexpr (MR > 1) ahead.step();
    const uint8_t* blk = wp + b * s24_block_bytes(esize);
    QK_UNROLL
    for (int gl = 0; gl < 8; ++gl) {  // unrolled: immediate shift counts
      __m256 xw[MR];
      QK_UNROLL
      for (int r = 0; r < MR; ++r) xw[r] = _mm256_broadcast_ps(reinterpret_cast<const __m128*>(x + r * ldx + b * kS24BlockK + 4 * gl));
      const uint8_t* vg = blk + 4 * kPanelN + gl * 4 * 32 * esize;
      QK_UNROLL
      for (int jj = 0; jj < NJ; ++jj) {
        const int j = 4 * half + jj;
        const __m256i m = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 32 * j));
        const __m256i i0 = _mm256_srli_epi32(m, 2 * gl), i1 = _mm256_srli_epi32(m, 16 + 2 * gl);
        const int64_t h = j % 2;
        __m256 v0, v1;
        if constexpr (BF16) {
          const __m256i d = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(vg + (j / 2) * 64 + h * 32));
          v0 = _mm256_castsi256_ps(_mm256_slli_epi32(d, 16));
          v1 = _mm256_castsi256_ps(_mm256_and_si256(d, hi16));
        } else {
          v0 = _mm256_loadu_ps(reinterpret_cast<const float*>(vg + (j / 2) * 128 + h * 32));
          v1 = _mm256_loadu_ps(reinterpret_cast<const float*>(vg + (j / 2) * 128 + 64 + h * 32));
        }
        QK_UNROLL
        for (int r = 0; r < MR; ++r) {
          c[r][jj] = _mm256_fmadd_ps(v0, _mm256_permutevar8x32_ps(xw[r], i0), c[r][jj]);
          c[r][jj] = _mm256_fmadd_ps(v1, _mm256_permutevar8x32_ps(xw[r], i1), c[r][jj]);
        }
      }
    }
  }
  QK_UNROLL
  for (int r = 0; r < MR; ++r)
    QK_UNROLL
    for (int jj = 0; jj < NJ; ++jj) _mm256_storeu_ps(acc[r] + half * 32 + 8 * jj, c[r][jj]);
}

// gemm_u8sp24s32_mrxnj8_avx2: no vpermw here, so each column's pair (a[i0], a[i1]) is a vpshufb of
// the group's 4 activation bytes (u8, a + 128; one vpbroadcastd puts them in every dword, so a
// control byte's bits 2-3 do not matter and bits 4-6 never do) with control bytes (i, 0x80) per
// word: the byte a[i] + 128 zero-extended to int16. vpmaddwd with the sign-extended (v0, v1) pair
// adds both products (at most 2 * 255 * 127, exact); the panel's colsum (128 * sum of values) is
// subtracted at the end. Every int32 operation wraps mod 2^32, so the result is the exact sum
// whenever that fits in int32 (kMaxK_s24_w8a8).
// The control of group gl: meta >> 2 gl (an immediate: the gl loop is unrolled) has i in bits 0-1
// of each word; for gl < 5 an and clears the low byte's bit 7 (another group's bit), for gl >= 5
// the shift has already zeroed it; an or of 0x8000 makes the high byte pick zero.
// Zen 3, one thread, M = 1, K = 4096, N = 256 in L2 (2026-12-07, 5 alternating runs): 1.27x over
// the int16 form (control bytes 2i, 2i + 1 from a shift, an and, a byte-duplicating vpshufb and an
// add); docs/kernels.md has the rest.
template <int MR, int NJ>
QK_UKERNEL void gemm_u8sp24s32_mrxnj8_avx2(const uint8_t* a, int64_t lda, const uint8_t* wp, int64_t nblk, int64_t b0,
                                           int64_t b1, int32_t acc[][kPanelN], int half, PrefetchShare pf_next) {
  __m256i c[MR][NJ];
  QK_UNROLL
  for (int r = 0; r < MR; ++r)
    QK_UNROLL
    for (int jj = 0; jj < NJ; ++jj)
      c[r][jj] = b0 == 0 ? _mm256_setzero_si256()
                         : _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc[r] + half * 32 + 8 * jj));
  const __m256i low = _mm256_set1_epi16(0x0003), zero_hi = _mm256_set1_epi16(int16_t(0x8000));
  const int64_t pf = MR == 1 ? tuning().sparse_prefetch_distance : 0;
  SpreadPrefetch ahead(pf_next.p, pf_next.lines, b1 - b0);
  for (int64_t b = b0; b < b1; ++b) {
    const uint8_t* blk = wp + b * s24_block_bytes(1);
    prefetch_lines(blk, pf, s24_block_bytes(1));  // M = 1: the block pf bytes ahead
    if constexpr (MR > 1) ahead.step();
    QK_UNROLL
    for (int gl = 0; gl < 8; ++gl) {
      __m256i aw[MR];
      QK_UNROLL
      for (int r = 0; r < MR; ++r) aw[r] = bcast4(a + r * lda + b * kS24BlockK + 4 * gl);
      const uint8_t* vg = blk + 4 * kPanelN + gl * 4 * 32;
      QK_UNROLL
      for (int jj = 0; jj < NJ; ++jj) {
        const int j = 4 * half + jj;
        // The control, then per row pick, vpmaddwd and vpaddd, as asm with the meta and the values
        // memory operands: as intrinsics GCC 12 reassociated the int32 sums of the unrolled group
        // loop and kept a block's products on the stack (8-23 stores per 64 accumulations). The
        // shift count is an immediate, so this needs the group loop unrolled (gl a constant); if
        // it is not, the "i" operand fails to compile. (VEX shifts by an immediate take no memory
        // source: the meta is loaded first.)
        __m256i t, u;
        asm("vmovdqu %[m], %[t]\n\tvpsrlw %[sh], %[t], %[t]"
            : [t] "=x"(t)
            : [m] "m"(*reinterpret_cast<const __m256i*>(blk + 32 * j)), [sh] "i"(2 * gl));
        if (gl < 5) asm("vpand %[low], %[t], %[t]" : [t] "+x"(t) : [low] "x"(low));
        asm("vpor %[hi], %[t], %[t]\n\tvpmovsxbw %[v], %[u]"
            : [t] "+x"(t), [u] "=x"(u)
            : [hi] "x"(zero_hi), [v] "m"(*reinterpret_cast<const __m128i*>(vg + (j / 2) * 32 + (j % 2) * 16)));
        QK_UNROLL
        for (int r = 0; r < MR; ++r) {
          __m256i p;
          asm("vpshufb %[t], %[aw], %[p]\n\t"
              "vpmaddwd %[p], %[u], %[p]\n\t"
              "vpaddd %[p], %[c], %[c]"
              : [c] "+x"(c[r][jj]), [p] "=&x"(p)
              : [t] "x"(t), [aw] "x"(aw[r]), [u] "x"(u));
        }
      }
    }
  }
  const int32_t* colsum = reinterpret_cast<const int32_t*>(wp + nblk * s24_block_bytes(1)) + half * 32;
  QK_UNROLL
  for (int jj = 0; jj < NJ; ++jj) {
    const __m256i cs = b1 == nblk ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(colsum + 8 * jj))
                                  : _mm256_setzero_si256();
    QK_UNROLL
    for (int r = 0; r < MR; ++r)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc[r] + half * 32 + 8 * jj), _mm256_sub_epi32(c[r][jj], cs));
  }
}

}  // namespace

// Both over drive_streamed (driver.h): steps are 32-k blocks, stream_chunk_k k per chunk.
void gemm_s24_float_avx2(const S24Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  const int64_t esize = g.values_bf16 ? 2 : 4, nblk = round_up(g.K, kS24BlockK) / kS24BlockK;
  drive_streamed<2, float>(m0, m1, p0, p1, g.w, s24_panel_bytes(g.K, esize), nblk, s24_block_bytes(esize),
                           stream_chunk_steps(kS24BlockK),
                           [&](auto R, int64_t m, const uint8_t* wp, float acc[][kPanelN], int64_t s0, int64_t s1,
                               PrefetchShare pf) {
    const float* x = static_cast<const float*>(g.a) + m * g.lda;
    ymm_column_blocks<R>([&](auto NJ, int half) {
      const PrefetchShare mine = pf.part(half, kPanelN / (8 * NJ));
      if (g.values_bf16)
        gemm_f32sp24f32_mrxnj8_avx2<R, NJ, true>(x, g.lda, wp, s0, s1, acc, half, mine);
      else
        gemm_f32sp24f32_mrxnj8_avx2<R, NJ, false>(x, g.lda, wp, s0, s1, acc, half, mine);
    });
  }, s24_epilogue<false>(g));
}

void gemm_s24_i8_avx2(const S24Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  const int64_t nblk = round_up(g.K, kS24BlockK) / kS24BlockK;
  drive_streamed<2, int32_t>(m0, m1, p0, p1, g.w, s24_panel_bytes(g.K, 1), nblk, s24_block_bytes(1),
                             stream_chunk_steps(kS24BlockK),
                             [&](auto R, int64_t m, const uint8_t* wp, int32_t acc[][kPanelN], int64_t s0,
                                 int64_t s1, PrefetchShare pf) {
    ymm_column_blocks<R>([&](auto NJ, int half) {
      gemm_u8sp24s32_mrxnj8_avx2<R, NJ>(static_cast<const uint8_t*>(g.a) + m * g.lda, g.lda, wp, nblk, s0, s1, acc,
                                        half, pf.part(half, kPanelN / (8 * NJ)));
    });
  }, s24_epilogue<true>(g));
}

}  // namespace qk
