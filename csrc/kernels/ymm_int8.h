// 256-bit integer-dot GEMMs shared by the AVX2 and AVX-VNNI paths: each translation unit
// instantiates them with its own dot-product policy and its own flags (W8A8 and W4A8), plus the
// AVX2 kernels the AVX-VNNI table reuses.
#pragma once
#include <immintrin.h>

#include "driver.h"
#include "ymm.h"

namespace qk {
void quant_row_f32_avx2(const float* x, int64_t K, int8_t* q, float* scale);
void quant_row_bf16_avx2(const uint16_t* x, int64_t K, int8_t* q, float* scale);
void gemm_w8a16_avx2(const W8A16Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1);
void gemm_w4a16_avx2(const W4Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1);

namespace {

// A dot-product policy: dot(c, b, w) adds, per int32 lane, the 4 products of the lane's bytes of b
// (activations, broadcast) and w (weights); kU8 says whether the activations are u8 (s8 + 128,
// compensated by the panel's column sums) or s8.
//   AVX2 (no VNNI): |a| (u8) x sign(w, a) through vpmaddubsw + vpmaddwd, exact for every s8 a and
//                   |w| <= 127 (pair sums <= 2 * 128 * 127 < 32767).
//   AVX-VNNI:       {vex} vpdpbusd on u8 a.
// W4A8's policies also have kChainSteps (gemm_s8u4s32_mrxnj8_ymm's form of the k loop) and either
// pair(c, u0, s0, u1, s1): c += dot(u0, s0) + dot(u1, s1) with u0, u1 <= 15 (kChainSteps 1), or
// additionally chain(p, u0, s0, u1, s1) and widen(c32, p, first) (int16 chains over kChainSteps k8
// steps, for tiles of more than one row).

// gemm_x8s8s32_mrxnj8_ymm: NJ ymm of [8 n x 4 k] per k4 step, from column 32 * half: MR = 2 rows x
// half a panel (NJ = 4: 8 accumulators + 4 weight registers + broadcasts of the 16 ymm), or one row
// x the whole panel (NJ = 8; decode: each weight line is read once, in order, where two half-panel
// passes read every 256-byte k4 row twice, the second time from L2 at best). k4 steps [k4b, k4e) of
// K4 (drive_streamed's chunks): the sums start from zero at k4b = 0, else from acc, and the column
// sums come off at k4e = K4; pf's lines are touched evenly over the steps.
template <int MR, int NJ, typename Dot>
QK_UKERNEL void gemm_x8s8s32_mrxnj8_ymm(const uint8_t* a, int64_t lda, const int8_t* wp, int64_t K4, int64_t k4b,
                                        int64_t k4e, int32_t acc[][kPanelN], int half, Dot dot, PrefetchShare pf) {
  __m256i c[MR][NJ];
  QK_UNROLL
  for (int r = 0; r < MR; ++r)
    QK_UNROLL
    for (int j = 0; j < NJ; ++j)
      c[r][j] = k4b == 0 ? _mm256_setzero_si256()
                         : _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc[r] + half * 32 + 8 * j));
  const int8_t* wh = wp + half * 128;
  SpreadPrefetch ahead(pf.p, pf.lines, k4e - k4b);
  for (int64_t k4 = k4b; k4 < k4e; ++k4) {
    if constexpr (MR > 1) ahead.step();
    const __m256i* wk = reinterpret_cast<const __m256i*>(wh + k4 * 256);
    __m256i wv[NJ];
    QK_UNROLL
    for (int j = 0; j < NJ; ++j) wv[j] = _mm256_loadu_si256(wk + j);
    QK_UNROLL
    for (int r = 0; r < MR; ++r) {
      int32_t a4;
      std::memcpy(&a4, a + r * lda + 4 * k4, 4);
      const __m256i b = _mm256_set1_epi32(a4);
      QK_UNROLL
      for (int j = 0; j < NJ; ++j) dot(c[r][j], b, wv[j]);
    }
  }
  const int32_t* colsum = reinterpret_cast<const int32_t*>(wp + K4 * 256) + half * 32;
  QK_UNROLL
  for (int j = 0; j < NJ; ++j) {
    const __m256i cs = Dot::kU8 && k4e == K4
                           ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(colsum + 8 * j))
                           : _mm256_setzero_si256();
    QK_UNROLL
    for (int r = 0; r < MR; ++r)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc[r] + half * 32 + 8 * j), _mm256_sub_epi32(c[r][j], cs));
  }
}

// W8A8 over drive_streamed: steps are k4 rows of the panel (256 bytes), in chunks of
// tuning().stream_chunk_k k; the half-panel passes of a tile split its prefetch share.
template <typename Dot>
inline void gemm_w8a8_ymm(const W8A8Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1, Dot dot) {
  const int64_t K4 = round_up(g.K, 4) / 4;
  drive_streamed<2, int32_t>(m0, m1, p0, p1, g.w, w8a8_panel_bytes(g.K), K4, 256, stream_chunk_steps(4),
                             [&](auto R, int64_t m, const uint8_t* wp, int32_t acc[][kPanelN], int64_t s0, int64_t s1,
                                 PrefetchShare pf) {
    ymm_column_blocks<R>([&](auto NJ, int half) {
      gemm_x8s8s32_mrxnj8_ymm<R, NJ>(g.a + m * g.lda, g.lda, reinterpret_cast<const int8_t*>(wp), K4, s0, s1, acc,
                                     half, dot, pf.part(half, kPanelN / (8 * NJ)));
    });
  }, w8a8_epilogue(g));
}

// gemm_s8u4s32_mrxnj8_ymm: NJ ymm of 8 columns from column 32 * half per call: MR = 2 rows x half a
// panel (NJ = 4), or at M = 1 one row x the whole panel (NJ = 8: each weight line read once, in
// order). One k8 step of a group (layout in kernels.h) is 8 ymm of [8 n x (k0|k4, k1|k5, k2|k6,
// k3|k7)]; lo = v & 0x0f and hi = v >> 4 & 0x0f are u8 [8 n x 4 k] operands. Per group the
// contract's step y += float(c - zz * asum) * scale goes to y in L1; groups [g0, g1) of G per call
// (drive_streamed's chunks: y starts from zero at g0 = 0), pf_next's lines touched evenly over the
// k8 steps. Two forms of the k loop:
//   - per k8 step, dot(c, u8 w, s8 a) adds 4-k dot products to int32 lanes (at M = 1 dot.pair, both
//     nibbles at once): 8 accumulators + v, lo, hi, mask, the rows' broadcasts. M = 1 on every
//     policy, and MR = 2 where Dot::kChainSteps is 1 (vpdpbusd).
//   - MR = 2 with Dot::kChainSteps = S > 1 (vpmaddubsw): per chunk of up to S k8 steps, one int16
//     chain per row and column block (dot.chain: p += maddubs(lo, a0..3) + maddubs(hi, a4..7),
//     exact while every int16 lane stays below 32767), then one widening dot.widen into the group's
//     int32 sums, which live in L1 (8 chains + 4 broadcasts + v, lo, hi + a temporary fill the 16
//     ymm): 2 S + 1 multiplies per 64 S products instead of 4 S (Zen 3, 1 thread, K = N = 4096:
//     1.27x at M = 32, 1.30x at M = 128). At M = 1, where the weights stream from L3 or DRAM, the
//     int32 sums in memory cost more than the multiplies save (about 0.9x), so it keeps dot.pair.
template <int MR, int NJ, typename Dot>
QK_UKERNEL void gemm_s8u4s32_mrxnj8_ymm(const int8_t* a, int64_t lda, const int32_t* asum, const uint8_t* wp,
                                        int64_t G, int64_t g0, int64_t g1, int64_t gk, float y[][kPanelN], int half,
                                        Dot dot, PrefetchShare pf_next) {
  const __m256i m4 = _mm256_set1_epi8(0x0f);
  const int64_t pf = MR == 1 ? tuning().ymm_prefetch_distance : 0;
  alignas(32) int32_t cs[MR][8 * NJ];  // the group's int32 sums of the chain form
  if (g0 == 0)
    QK_UNROLL
    for (int r = 0; r < MR; ++r)
      QK_UNROLL
      for (int j = 0; j < NJ; ++j) _mm256_storeu_ps(y[r] + half * 32 + 8 * j, _mm256_setzero_ps());
  SpreadPrefetch ahead(pf_next.p, pf_next.lines, (g1 - g0) * (gk / 8));
  for (int64_t grp = g0; grp < g1; ++grp) {
    const uint8_t* blk = wp + grp * w4_group_bytes(gk);
    const int8_t* ag = a + grp * gk;
    __m256i c[MR][NJ];
    QK_UNROLL
    for (int r = 0; r < MR; ++r)
      QK_UNROLL
      for (int j = 0; j < NJ; ++j) c[r][j] = _mm256_setzero_si256();
    if constexpr (MR > 1 && Dot::kChainSteps > 1) {
      constexpr int S = Dot::kChainSteps;
      for (int64_t k8 = 0; k8 < gk / 8; k8 += S) {
        const int64_t ns = std::min<int64_t>(S, gk / 8 - k8);
        __m256i p[MR][NJ];
        QK_UNROLL
        for (int r = 0; r < MR; ++r)
          QK_UNROLL
          for (int j = 0; j < NJ; ++j) p[r][j] = _mm256_setzero_si256();
        for (int64_t s = 0; s < ns; ++s) {
          ahead.step();
          const __m256i* w = reinterpret_cast<const __m256i*>(blk + (k8 + s) * 256 + half * 128);
          __m256i blo[MR], bhi[MR];
          QK_UNROLL
          for (int r = 0; r < MR; ++r) {
            blo[r] = bcast4(ag + r * lda + 8 * (k8 + s));
            bhi[r] = bcast4(ag + r * lda + 8 * (k8 + s) + 4);
          }
          QK_UNROLL
          for (int j = 0; j < NJ; ++j) {
            const __m256i v = _mm256_loadu_si256(w + j);
            const __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            QK_UNROLL
            for (int r = 0; r < MR; ++r) dot.chain(p[r][j], lo, blo[r], hi, bhi[r]);
          }
        }
        QK_UNROLL
        for (int r = 0; r < MR; ++r)
          QK_UNROLL
          for (int j = 0; j < NJ; ++j) dot.widen(cs[r] + 8 * j, p[r][j], k8 == 0);
      }
    } else {
      for (int64_t k8 = 0; k8 < gk / 8; ++k8) {
        const __m256i* w = reinterpret_cast<const __m256i*>(blk + k8 * 256 + half * 128);
        prefetch_lines(w, pf, 256);  // the k8 step pf bytes ahead (the W8A8 tile read as fast without)
        if constexpr (MR > 1) ahead.step();
        __m256i blo[MR], bhi[MR];
        QK_UNROLL
        for (int r = 0; r < MR; ++r) {
          int32_t a4[2];
          std::memcpy(a4, ag + r * lda + 8 * k8, 8);
          blo[r] = _mm256_set1_epi32(a4[0]);
          bhi[r] = _mm256_set1_epi32(a4[1]);
        }
        QK_UNROLL
        for (int j = 0; j < NJ; ++j) {
          const __m256i v = _mm256_loadu_si256(w + j);
          const __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
          QK_UNROLL
          for (int r = 0; r < MR; ++r) {
            if constexpr (MR == 1) {  // 15 ymm live: room for the policy's fused pair
              dot.pair(c[r][j], lo, blo[r], hi, bhi[r]);
            } else {
              dot(c[r][j], lo, blo[r]);
              dot(c[r][j], hi, bhi[r]);
            }
          }
        }
      }
    }
    const float* scale = reinterpret_cast<const float*>(blk + 32 * gk) + half * 32;
    const uint8_t* zz = blk + 32 * gk + 4 * kPanelN + half * 32;
    QK_UNROLL
    for (int j = 0; j < NJ; ++j) {
      const __m256 s = _mm256_loadu_ps(scale + 8 * j);
      const __m256i z = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(zz + 8 * j)));
      QK_UNROLL
      for (int r = 0; r < MR; ++r) {
        const __m256i corr = _mm256_mullo_epi32(z, _mm256_set1_epi32(asum[r * G + grp]));
        const __m256i cj =
            MR > 1 && Dot::kChainSteps > 1 ? _mm256_load_si256(reinterpret_cast<const __m256i*>(cs[r] + 8 * j)) : c[r][j];
        const __m256 t = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(cj, corr)), s);
        float* yr = y[r] + half * 32 + 8 * j;
        _mm256_storeu_ps(yr, _mm256_add_ps(_mm256_loadu_ps(yr), t));
      }
    }
    sums_in_memory();
  }
}

// W4A8 over drive_streamed: steps are groups, chunks whole groups (stream_chunk_k / gk of them).
template <typename Dot>
inline void gemm_w4a8_ymm(const W4Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1, Dot dot) {
  drive_streamed<2, float>(m0, m1, p0, p1, g.w, w4_panel_bytes(g.G, g.gk), g.G, w4_group_bytes(g.gk),
                           stream_chunk_steps(g.gk),
                           [&](auto R, int64_t m, const uint8_t* wp, float y[][kPanelN], int64_t s0, int64_t s1,
                               PrefetchShare pf) {
    const int8_t* a = static_cast<const int8_t*>(g.a) + m * g.lda;
    ymm_column_blocks<R>([&](auto NJ, int half) {
      gemm_s8u4s32_mrxnj8_ymm<R, NJ>(a, g.lda, g.asum + m * g.G, wp, g.G, s0, s1, g.gk, y, half, dot,
                                     pf.part(half, kPanelN / (8 * NJ)));
    });
  }, w4_epilogue<true>(g));
}

}  // namespace
}  // namespace qk
