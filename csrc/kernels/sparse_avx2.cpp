// AVX2 2:4 sparse GEMMs (-mavx2 -mfma; also the AVX-VNNI path's): the layout of kernels.h read
// 8 columns per ymm, half a panel (32 columns) per call.
#include <immintrin.h>

#include "driver.h"
#include "sparse.h"

namespace qk {
namespace {

// Both kernels take NJ ymm of 8 columns from column 32 * half (ymm_column_blocks in driver.h: one
// row x the whole panel, or 2 rows x half of it). Column group j = 4 * half + jj: its 2-bit indices are the 32 bytes at 32 * j of the block, its values the
// 16-column run j / 2 (second half of it when j is odd) of group gl's value area.

// gemm_f32sp24f32_mrxnj8_avx2: as the AVX-512 kernel with vpermps ymm (low 3 index bits; the window
// of 4 activations is broadcast to both 128-bit halves, so only the low 2 bits matter).
template <int MR, int NJ, bool BF16>
QK_UKERNEL void gemm_f32sp24f32_mrxnj8_avx2(const float* x, int64_t ldx, const uint8_t* wp, int64_t nblk,
                              float acc[][kPanelN], int half) {
  constexpr int64_t esize = BF16 ? 2 : 4;
  __m256 c[MR][NJ];
  QK_UNROLL
  for (int r = 0; r < MR; ++r)
    QK_UNROLL
    for (int jj = 0; jj < NJ; ++jj) c[r][jj] = _mm256_setzero_ps();
  const __m256i hi16 = _mm256_set1_epi32(int(0xffff0000u));
  for (int64_t b = 0; b < nblk; ++b) {
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

// gemm_s16sp24s32_mrxnj8_avx2: no vpermw here, so the (a[i0], a[i1]) int16 pair of each column is a
// vpshufb of the 8-byte window (broadcast to every qword) with control bytes 2i, 2i+1 per word:
// 2i = (m >> (2 gl - 1)) & 6 (an immediate shift: the gl loop is unrolled), copied to both bytes of
// the word by a vpshufb, + 0x0100. vpmaddwd with the sign-extended (v0, v1) pair adds both products
// exactly. (Zen 3, one thread, M = 1: 1.20x over i * 0x0202 + 0x0100 with vpmullw and a
// variable-count shift.)
template <int MR, int NJ>
QK_UKERNEL void gemm_s16sp24s32_mrxnj8_avx2(const int16_t* a, int64_t lda, const uint8_t* wp, int64_t nblk,
                               int32_t acc[][kPanelN], int half) {
  __m256i c[MR][NJ];
  QK_UNROLL
  for (int r = 0; r < MR; ++r)
    QK_UNROLL
    for (int jj = 0; jj < NJ; ++jj) c[r][jj] = _mm256_setzero_si256();
  const __m256i six = _mm256_set1_epi16(6), add = _mm256_set1_epi16(0x0100);
  const __m256i dup = _mm256_setr_epi8(0, 0, 2, 2, 4, 4, 6, 6, 8, 8, 10, 10, 12, 12, 14, 14,
                                       0, 0, 2, 2, 4, 4, 6, 6, 8, 8, 10, 10, 12, 12, 14, 14);
  const int64_t pf = MR == 1 ? tuning().sparse_prefetch_distance : 0;
  for (int64_t b = 0; b < nblk; ++b) {
    const uint8_t* blk = wp + b * s24_block_bytes(1);
    if (pf) prefetch_lines(blk, pf, s24_block_bytes(1));  // M = 1: the block pf bytes ahead
    QK_UNROLL
    for (int gl = 0; gl < 8; ++gl) {
      __m256i aw[MR];
      QK_UNROLL
      for (int r = 0; r < MR; ++r) {
        int64_t q;
        std::memcpy(&q, a + r * lda + b * kS24BlockK + 4 * gl, 8);
        aw[r] = _mm256_set1_epi64x(q);
      }
      const uint8_t* vg = blk + 4 * kPanelN + gl * 4 * 32;
      if constexpr (MR == 1) {
        // The whole step as asm, the meta and the values memory operands: with only the last three
        // instructions as asm (the MR = 2 form below) GCC 12 still made 23 stack stores per 64
        // accumulations in this 8-block tile. The shift count is an immediate, so this needs the
        // group loop unrolled (gl a constant); if it is not, the "i" operand fails to compile.
        QK_UNROLL
        for (int jj = 0; jj < NJ; ++jj) {
          const int j = 4 * half + jj;
          __m256i t, u;
          // (VEX shifts by an immediate take no memory source: the meta is loaded first.)
          if (gl == 0)
            asm("vmovdqu %[m], %[t]\n\tvpsllw $1, %[t], %[t]"
                : [t] "=x"(t) : [m] "m"(*reinterpret_cast<const __m256i*>(blk + 32 * j)));
          else
            asm("vmovdqu %[m], %[t]\n\tvpsrlw %[sh], %[t], %[t]"
                : [t] "=x"(t)
                : [m] "m"(*reinterpret_cast<const __m256i*>(blk + 32 * j)), [sh] "i"(2 * gl - 1));
          asm("vpand %[six], %[t], %[t]\n\t"
              "vpshufb %[dup], %[t], %[t]\n\t"
              "vpaddb %[add], %[t], %[t]\n\t"
              "vpshufb %[t], %[aw], %[t]\n\t"
              "vpmovsxbw %[v], %[u]\n\t"
              "vpmaddwd %[t], %[u], %[t]\n\t"
              "vpaddd %[t], %[c], %[c]"
              : [c] "+x"(c[0][jj]), [t] "+x"(t), [u] "=&x"(u)
              : [six] "x"(six), [dup] "x"(dup), [add] "x"(add), [aw] "x"(aw[0]),
                [v] "m"(*reinterpret_cast<const __m128i*>(vg + (j / 2) * 32 + (j % 2) * 16)));
        }
        continue;
      }
      QK_UNROLL
      for (int jj = 0; jj < NJ; ++jj) {
        const int j = 4 * half + jj;
        const __m256i m = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 32 * j));
        const __m256i i2 = _mm256_and_si256(gl ? _mm256_srli_epi16(m, 2 * gl - 1) : _mm256_slli_epi16(m, 1), six);
        const __m256i ctrl = _mm256_add_epi8(_mm256_shuffle_epi8(i2, dup), add);
        const __m256i v = _mm256_cvtepi8_epi16(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(vg + (j / 2) * 32 + (j % 2) * 16)));
        QK_UNROLL
        for (int r = 0; r < MR; ++r) {
          // c += madd(v, pick(aw)) as one asm block: as intrinsics GCC 12 reassociated the int32
          // sums of the unrolled group loop, kept the products of a block on the stack and added
          // them in a tree (8 stack stores per 64 accumulations).
          __m256i t;
          asm("vpshufb %[ctrl], %[aw], %[t]\n\t"
              "vpmaddwd %[t], %[v], %[t]\n\t"
              "vpaddd %[t], %[c], %[c]"
              : [c] "+x"(c[r][jj]), [t] "=&x"(t)
              : [ctrl] "x"(ctrl), [aw] "x"(aw[r]), [v] "x"(v));
        }
      }
    }
  }
  QK_UNROLL
  for (int r = 0; r < MR; ++r)
    QK_UNROLL
    for (int jj = 0; jj < NJ; ++jj)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc[r] + half * 32 + 8 * jj), c[r][jj]);
}

}  // namespace

void gemm_s24_float_avx2(const S24Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  const int64_t nblk = round_up(g.K, kS24BlockK) / kS24BlockK, pb = s24_panel_bytes(g.K, g.values_bf16 ? 2 : 4);
  drive<2, float>(m0, m1, p0, p1, g.w, pb, [&](auto R, int64_t m, const uint8_t* wp, float acc[][kPanelN]) {
    const float* x = static_cast<const float*>(g.a) + m * g.lda;
    ymm_column_blocks<R>([&](auto NJ, int half) {
      if (g.values_bf16)
        gemm_f32sp24f32_mrxnj8_avx2<R, NJ, true>(x, g.lda, wp, nblk, acc, half);
      else
        gemm_f32sp24f32_mrxnj8_avx2<R, NJ, false>(x, g.lda, wp, nblk, acc, half);
    });
  }, s24_epilogue<false>(g));
}

void gemm_s24_i8_avx2(const S24Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  const int64_t nblk = round_up(g.K, kS24BlockK) / kS24BlockK;
  drive<2, int32_t>(m0, m1, p0, p1, g.w, s24_panel_bytes(g.K, 1), [&](auto R, int64_t m, const uint8_t* wp,
                                                                      int32_t acc[][kPanelN]) {
    ymm_column_blocks<R>([&](auto NJ, int half) {
      gemm_s16sp24s32_mrxnj8_avx2<R, NJ>(static_cast<const int16_t*>(g.a) + m * g.lda, g.lda, wp, nblk, acc, half);
    });
  }, s24_epilogue<true>(g));
}

}  // namespace qk
