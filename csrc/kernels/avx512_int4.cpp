// AVX-512 VNNI path, int4 grouped weights: W4A8 (vpdpbusd, u4 weights x s8 activations) and
// W4A16 (vpermps / vpermt2ps nibble tables + fp32 FMA), each with a decode kernel that walks
// several panels in lockstep.
#include "avx512.h"

namespace qk {
namespace {

// ---- W4A8: gemm_s8u4s32_mrx64_avx512vnni -----------------------------------------------------
// One k8 step of a group (8 k x 64 columns = 256 bytes = 4 zmm, layout in kernels.h):
//   v_j = [n0: k0|k4, k1|k5, k2|k6, k3|k7 | n1: ... | n15]   (j = 0..3: columns 16j .. 16j+15)
//   lo_j = v_j & 0x0f = u8 [16 n x k0..3],  hi_j = v_j >> 4 & 0x0f = u8 [16 n x k4..7]
//   for each row r: b0 = bcast(a[r][k0..3]), b1 = bcast(a[r][k4..7]) (two registers), then
//   c[r][j] += vpdpbusd(lo_j, b0) + vpdpbusd(hi_j, b1) for j = 0..3.
// The weights are the unsigned operand and the int8 activations the signed one, so no shift of
// the activations is needed; u - zz is applied per group through the row's group sum:
// acc = c - zz * asum. The step's 8 unpacked vectors stay in registers while the rows go by, so
// each activation pair is loaded once per step (a memory-broadcast operand on every vpdpbusd
// instead made 52 loads per 48 dot products, and the load ports, not the dot products, set the
// pace: 0.73x of this form in a single-core microbenchmark on Zen 5). Registers: MR x 4 int32
// accumulators + 8 unpacked + 2 broadcasts + the mask, so MR <= 5 (20 + 11 zmm). The driver uses
// MR = 4: 5 measured alike on Zen 5 (0.94-1.06x across M = 8-512), and 4 divides the row chunks of
// parallel_tiles and every power-of-two batch without a short last tile.
// After each group the accumulators go through the contract's fp32 step into y (in L1).
template <int MR>
QK_UKERNEL void gemm_s8u4s32_mrx64_avx512vnni(const int8_t* a, int64_t lda, const int32_t* asum, const uint8_t* wp,
                         int64_t G, int64_t gk, float y[][kPanelN]) {
  const int64_t pf = tuning().prefetch_distance;
  const __m512i m4 = _mm512_set1_epi8(0x0f);
  QK_UNROLL
  for (int r = 0; r < MR; ++r)
    QK_UNROLL
    for (int j = 0; j < 4; ++j) _mm512_storeu_ps(y[r] + 16 * j, _mm512_setzero_ps());
  for (int64_t grp = 0; grp < G; ++grp) {
    const uint8_t* blk = wp + grp * w4_group_bytes(gk);
    const int8_t* ag = a + grp * gk;
    __m512i c[MR][4];
    QK_UNROLL
    for (int r = 0; r < MR; ++r)
      QK_UNROLL
      for (int j = 0; j < 4; ++j) c[r][j] = _mm512_setzero_si512();
    for (int64_t k8 = 0; k8 < gk / 8; ++k8) {
      const uint8_t* w = blk + k8 * 256;
      prefetch_lines(w, pf, 256);  // one 256-byte k step
      __m512i lo[4], hi[4];
      QK_UNROLL
      for (int j = 0; j < 4; ++j) {
        const __m512i v = _mm512_loadu_si512(w + 64 * j);
        lo[j] = _mm512_and_si512(v, m4);
        hi[j] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
      }
      QK_UNROLL
      for (int r = 0; r < MR; ++r) {
        const __m512i b0 = bcast4(ag + r * lda + 8 * k8), b1 = bcast4(ag + r * lda + 8 * k8 + 4);
        QK_UNROLL
        for (int j = 0; j < 4; ++j) {
          dpbusd(c[r][j], lo[j], b0);
          dpbusd(c[r][j], hi[j], b1);
        }
      }
    }
    const float* scale = reinterpret_cast<const float*>(blk + 32 * gk);
    const uint8_t* zz = blk + 32 * gk + 4 * kPanelN;
    QK_UNROLL
    for (int j = 0; j < 4; ++j) {
      const __m512 s = _mm512_loadu_ps(scale + 16 * j);
      const __m512i z = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(zz + 16 * j)));
      QK_UNROLL
      for (int r = 0; r < MR; ++r) {
        const __m512i corr = _mm512_mullo_epi32(z, _mm512_set1_epi32(asum[r * G + grp]));
        const __m512 t = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(c[r][j], corr)), s);
        _mm512_storeu_ps(y[r] + 16 * j, _mm512_add_ps(_mm512_loadu_ps(y[r] + 16 * j), t));
      }
    }
    sums_in_memory();
  }
}

// ---- W4A16: gemm_f32u4f32_mrxnp64_avx512 -------------------------------------------------------
// Same 256-byte k8 step; each k's 16-column fp32 vector of (u - zz) comes from a table lookup, and
// c += bcast(x[k]) * (u - zz): products of x with a small exact integer, so terms never cancel and
// Inf / NaN propagate as in the exact sum; per group y += c * scale.
//   zz = 8 in every column of the group block (symmetric weights, GPTQ's symmetric zero point):
//     vpermps reads the low 4 bits of each dword, so (v >> shift) indexes the table {-8, .., 7}
//     directly (k0..3: shift 0, 8, 16, 24; k4..7: 4, 12, 20, 28).
//   other zero points: the nibbles of 4 k are masked to bytes and offset by 16 - zz per column in
//     one byte add (e = u - zz + 16 in [1, 31]); vpermt2ps reads the low 5 bits, so (e >> 8i)
//     picks e - 16 from the 32-entry table {-16, .., 15}.
// Tiles: MR rows x NP panels with MR * NP * 4 fp32 accumulators (<= 24 zmm): MR = 6, NP = 1 for
// prefill; MR = 1, NP = 6 panels in lockstep for decode (6 weight streams per core in flight, see
// gemm_s8u4s32_1xnp64_avx512vnni below for why).
inline bool zz_all_8(const uint8_t* zz) {
  return _mm512_cmpneq_epi8_mask(_mm512_loadu_si512(zz), _mm512_set1_epi8(8)) == 0;
}

template <int MR, int NP, bool ZZ8>
QK_UKERNEL void gemm_f32u4f32_group_avx512(const float* xg, int64_t ldx, const uint8_t* const* blk, int64_t gk, float y[][kPanelN]) {
  const int64_t pf = tuning().prefetch_distance;
  const __m512 tlo = ZZ8 ? _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7)
                         : _mm512_setr_ps(-16, -15, -14, -13, -12, -11, -10, -9, -8, -7, -6, -5, -4, -3, -2, -1);
  const __m512 thi = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  alignas(64) int32_t zoff[NP][kPanelN];  // per column, 4 bytes of 16 - zz
  if constexpr (!ZZ8)
    QK_UNROLL
    for (int q = 0; q < NP; ++q)
      QK_UNROLL
      for (int j = 0; j < 4; ++j) {
        const __m512i z = _mm512_cvtepu8_epi32(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk[q] + 32 * gk + 4 * kPanelN + 16 * j)));
        _mm512_store_si512(zoff[q] + 16 * j, _mm512_sub_epi32(_mm512_set1_epi32(0x10101010),
                                                              _mm512_mullo_epi32(z, _mm512_set1_epi32(0x01010101))));
      }
  __m512 c[MR * NP][4];
  QK_UNROLL
  for (int t = 0; t < MR * NP; ++t)
    QK_UNROLL
    for (int j = 0; j < 4; ++j) c[t][j] = _mm512_setzero_ps();
  for (int64_t k8 = 0; k8 < gk / 8; ++k8) {
    const float* xk = xg + 8 * k8;
    QK_UNROLL
    for (int q = 0; q < NP; ++q) prefetch_lines(blk[q] + k8 * 256, pf, 256);  // one 256-byte k step
    if constexpr (ZZ8 && MR > 1) {
      // k = 8 k8 + t in order (t = 4 half + kk: nibble half of byte kk of each dword, the index
      // v >> (8 kk + 4 half)). Each row's x[k] is broadcast into a register once for its NP * 4
      // vectors: a memory-broadcast operand on every FMA (the form below) made one load per FMA
      // and ran at 0.81x of this in a single-core microbenchmark on Zen 5 (6 x 64 tile); through
      // the op, 1.12-1.36x at M = 8-512. Decode (MR = 1) keeps the form below: with 6 panels in
      // lockstep this one measured 0.91-0.96x there (one panel: 1.00-1.08x), and at one panel on
      // Zen 4 0.92x (hot, one thread, N = 512: 13.2-13.3 vs 14.2-14.5 GB/s).
#pragma GCC unroll 8
      for (int t = 0; t < 8; ++t) {
        __m512 xb[MR];
        QK_UNROLL
        for (int r = 0; r < MR; ++r) xb[r] = _mm512_set1_ps(xk[r * ldx + t]);
        const int sh = 8 * (t & 3) + 4 * (t >> 2);
        QK_UNROLL
        for (int q = 0; q < NP; ++q)
          QK_UNROLL
          for (int j = 0; j < 4; ++j) {
            const __m512i v = _mm512_loadu_si512(blk[q] + k8 * 256 + 64 * j);
            const __m512 u = _mm512_permutexvar_ps(sh ? _mm512_srli_epi32(v, sh) : v, tlo);
            QK_UNROLL
            for (int r = 0; r < MR; ++r) fma_reg(c[r * NP + q][j], u, xb[r]);
          }
      }
    } else {
      // Two halves of 4 k (low nibbles k0..3, high nibbles k4..7); within one, k outer and the
      // 4 column vectors inner, so MR * 4 accumulators are in flight. With other zero points the
      // offset nibbles e of a half take 4 registers, which leaves none for 6 row broadcasts
      // (storing e and reading it back per use instead ran at 0.85-0.93x).
      QK_UNROLL
      for (int q = 0; q < NP; ++q) {
        const uint8_t* w = blk[q] + k8 * 256;
#pragma GCC unroll 2
        for (int half = 0; half < 2; ++half) {
          __m512i e[4];
          QK_UNROLL
          for (int j = 0; j < 4; ++j) {
            const __m512i v = _mm512_loadu_si512(w + 64 * j);
            if constexpr (ZZ8)
              e[j] = half ? _mm512_srli_epi32(v, 4) : v;
            else
              e[j] = _mm512_add_epi8(_mm512_and_si512(half ? _mm512_srli_epi16(v, 4) : v, _mm512_set1_epi8(0x0f)),
                                     _mm512_load_si512(zoff[q] + 16 * j));
          }
#pragma GCC unroll 4
          for (int kk = 0; kk < 4; ++kk) {
#pragma GCC unroll 4
            for (int j = 0; j < 4; ++j) {
              const __m512i idx = kk ? _mm512_srli_epi32(e[j], 8 * kk) : e[j];
              const __m512 u = ZZ8 ? _mm512_permutexvar_ps(idx, tlo) : _mm512_permutex2var_ps(tlo, idx, thi);
              QK_UNROLL
              for (int r = 0; r < MR; ++r) fma_bcast(c[r * NP + q][j], u, xk + r * ldx + 4 * half + kk);
            }
          }
        }
      }
    }
  }
  QK_UNROLL
  for (int q = 0; q < NP; ++q) {
    const float* scale = reinterpret_cast<const float*>(blk[q] + 32 * gk);
    QK_UNROLL
    for (int j = 0; j < 4; ++j) {
      const __m512 s = _mm512_loadu_ps(scale + 16 * j);
      QK_UNROLL
      for (int r = 0; r < MR; ++r) {
        float* yr = y[q * MR + r] + 16 * j;
        _mm512_storeu_ps(yr, _mm512_add_ps(_mm512_loadu_ps(yr), _mm512_mul_ps(c[r * NP + q][j], s)));
      }
    }
  }
}

// MR rows of x times NP consecutive panels (pb bytes apart) into y[q * MR + r][64]: group by group
// through the register tile gemm_f32u4f32_group_avx512.
template <int MR, int NP>
inline void gemm_f32u4f32_mrxnp64_avx512(const float* x, int64_t ldx, const uint8_t* wp, int64_t pb, int64_t G, int64_t gk,
                          float y[][kPanelN]) {
  QK_UNROLL
  for (int t = 0; t < MR * NP; ++t)
    QK_UNROLL
    for (int j = 0; j < 4; ++j) _mm512_storeu_ps(y[t] + 16 * j, _mm512_setzero_ps());
  for (int64_t grp = 0; grp < G; ++grp) {
    const uint8_t* blk[NP];
    bool zz8 = true;
    QK_UNROLL
    for (int q = 0; q < NP; ++q) {
      blk[q] = wp + q * pb + grp * w4_group_bytes(gk);
      zz8 = zz8 && zz_all_8(blk[q] + 32 * gk + 4 * kPanelN);
    }
    if (zz8)
      gemm_f32u4f32_group_avx512<MR, NP, true>(x + grp * gk, ldx, blk, gk, y);
    else
      gemm_f32u4f32_group_avx512<MR, NP, false>(x + grp * gk, ldx, blk, gk, y);
  }
}

// Decode (one row): NP panels in lockstep, one k8 step (256 bytes) of each in turn, so NP
// sequential weight streams are in flight at once. On the Sapphire Rapids VM one stream per core
// read DRAM at ~17 GB/s (2 cores) and 4-8 streams at ~25 GB/s; measured with 2, 4 and 8 panels and
// prefetch distances 0-8 KiB, 8 panels with 4 KiB read ~23 GB/s vs ~16 GB/s for one panel at a
// time. AMD Zen 4 / Zen 5 read faster with one (tuning().decode_panels, dispatch.cpp). NP x 4 int32
// accumulators (NP <= 8 -> 32 zmm, the 3 temporaries reuse them as it goes).
template <int NP>
QK_UKERNEL void gemm_s8u4s32_1xnp64_avx512vnni(const int8_t* a, const int32_t* asum, const uint8_t* wp, int64_t pb,
                            int64_t G, int64_t gk, float y[][kPanelN]) {
  const int64_t pf = tuning().prefetch_distance;
  const __m512i m4 = _mm512_set1_epi8(0x0f);
  QK_UNROLL
  for (int q = 0; q < NP; ++q)
    QK_UNROLL
    for (int j = 0; j < 4; ++j) _mm512_storeu_ps(y[q] + 16 * j, _mm512_setzero_ps());
  for (int64_t grp = 0; grp < G; ++grp) {
    const int8_t* ag = a + grp * gk;
    __m512i c[NP][4];
    QK_UNROLL
    for (int q = 0; q < NP; ++q)
      QK_UNROLL
      for (int j = 0; j < 4; ++j) c[q][j] = _mm512_setzero_si512();
    // Narrow (decode_panels 1-2): too few sums for two dependent vpdpbusd per step each, so the high
    // nibbles go to sums of their own (exact int32: any order), added at the group's end, and the
    // two activation quads are register broadcasts.
    constexpr bool narrow = NP <= 2;
    __m512i h[narrow ? NP : 1][4];
    if constexpr (narrow)
      QK_UNROLL
      for (int q = 0; q < NP; ++q)
        QK_UNROLL
        for (int j = 0; j < 4; ++j) h[q][j] = _mm512_setzero_si512();
    for (int64_t k8 = 0; k8 < gk / 8; ++k8) {
      [[maybe_unused]] const __m512i b0 = narrow ? bcast4(ag + 8 * k8) : _mm512_setzero_si512();
      [[maybe_unused]] const __m512i b1 = narrow ? bcast4(ag + 8 * k8 + 4) : _mm512_setzero_si512();
      QK_UNROLL
      for (int q = 0; q < NP; ++q) {
        const uint8_t* w = wp + q * pb + grp * w4_group_bytes(gk) + k8 * 256;
        prefetch_lines(w, pf, 256);  // one 256-byte k step
        QK_UNROLL
        for (int j = 0; j < 4; ++j) {
          const __m512i v = _mm512_loadu_si512(w + 64 * j);
          const __m512i lo = _mm512_and_si512(v, m4), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
          if constexpr (narrow) {
            dpbusd(c[q][j], lo, b0);
            dpbusd(h[q][j], hi, b1);
          } else {
            dpbusd_bcast(c[q][j], lo, ag + 8 * k8);
            dpbusd_bcast(c[q][j], hi, ag + 8 * k8 + 4);
          }
        }
      }
    }
    if constexpr (narrow)
      QK_UNROLL
      for (int q = 0; q < NP; ++q)
        QK_UNROLL
        for (int j = 0; j < 4; ++j) c[q][j] = _mm512_add_epi32(c[q][j], h[q][j]);
    QK_UNROLL
    for (int q = 0; q < NP; ++q) {
      const uint8_t* blk = wp + q * pb + grp * w4_group_bytes(gk);
      const float* scale = reinterpret_cast<const float*>(blk + 32 * gk);
      const uint8_t* zz = blk + 32 * gk + 4 * kPanelN;
      const __m512i as = _mm512_set1_epi32(asum[grp]);
      QK_UNROLL
      for (int j = 0; j < 4; ++j) {
        const __m512i z = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(zz + 16 * j)));
        const __m512 t = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(c[q][j], _mm512_mullo_epi32(z, as))),
                                       _mm512_loadu_ps(scale + 16 * j));
        _mm512_storeu_ps(y[q] + 16 * j, _mm512_add_ps(_mm512_loadu_ps(y[q] + 16 * j), t));
      }
    }
    sums_in_memory();
  }
}

}  // namespace

void gemm_w4a8_avx512(const W4Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  const int64_t pb = w4_panel_bytes(g.G, g.gk);
  if (m1 - m0 == 1) {  // decode: 8 panels in lockstep
    const int8_t* a = static_cast<const int8_t*>(g.a) + m0 * g.lda;
    lockstep_panels<8, float>(p0, p1, [&](auto NP, int64_t p, float y[][kPanelN]) {
      gemm_s8u4s32_1xnp64_avx512vnni<NP>(a, g.asum + m0 * g.G, g.w + p * pb, pb, g.G, g.gk, y);
    }, [&, epi = w4_epilogue<true>(g)](int64_t p, const float* y) { epi(m0, p, y); });
    return;
  }
  drive<4, float>(m0, m1, p0, p1, g.w, pb, [&](auto R, int64_t m, const uint8_t* wp, float y[][kPanelN]) {
    gemm_s8u4s32_mrx64_avx512vnni<R>(static_cast<const int8_t*>(g.a) + m * g.lda, g.lda, g.asum + m * g.G, wp,
                                     g.G, g.gk, y);
  }, w4_epilogue<true>(g));
}

void gemm_w4a16_avx512(const W4Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  const int64_t pb = w4_panel_bytes(g.G, g.gk);
  if (m1 - m0 == 1) {  // decode: 6 panels in lockstep
    const float* x = static_cast<const float*>(g.a) + m0 * g.lda;
    lockstep_panels<6, float>(p0, p1, [&](auto NP, int64_t p, float y[][kPanelN]) {
      gemm_f32u4f32_mrxnp64_avx512<1, NP>(x, g.lda, g.w + p * pb, pb, g.G, g.gk, y);
    }, [&, epi = w4_epilogue<false>(g)](int64_t p, const float* y) { epi(m0, p, y); });
    return;
  }
  drive<6, float>(m0, m1, p0, p1, g.w, pb, [&](auto R, int64_t m, const uint8_t* wp, float y[][kPanelN]) {
    gemm_f32u4f32_mrxnp64_avx512<R, 1>(static_cast<const float*>(g.a) + m * g.lda, g.lda, wp, pb, g.G, g.gk, y);
  }, w4_epilogue<false>(g));
}

}  // namespace qk
