// AVX-512 VNNI path, avx512_bf16 extension (flags: the path's plus -mavx512bf16): W8A16 and W4A16
// on bf16 activations with vdpbf16ps.
//
// Integer weights are exact in bf16 (int8 values, and u - zz in [-15, 15]), so a bf16 dot of bf16
// activations with them multiplies exactly and sums in fp32: the fp32 kernels' contract, at twice
// the multiply rate of fp32 FMA. Weights become bf16 pair vectors (per k pair, 16 columns, each
// dword = bf16 w[n][k] low | bf16 w[n][k + 1] high), multiplied with the dword x[k] | x[k + 1]
// of each row broadcast. Two ways to get them, one arithmetic:
//   - direct (tasks of fewer than tuning().bf16_dot_min_rows rows: small batches, row splits, and
//     decode when tuning().bf16_dot_min_batch is 1): each weight is converted in registers as it
//     streams in; M = 1 walks 4 panels in lockstep;
//   - converted (more rows): a task converts each panel once per chunk of tuning().bf16_dot_chunk_k
//     K values (W4A16: whole groups) into a scratch of pair vectors (256 bytes per k pair) and
//     runs all its rows over it in 6 x 64 tiles, so the conversion is amortized over M.
// Sums, in both: per chunk (W8A16) or group (W4A16) an fp32 register sum over the k pairs in
// order, then added to the row's fp32 sum (times the group scale for W4A16, no FMA). The sequence
// of operations per output is the same in both, so a row's result does not depend on M or on the
// batch it is in.
#include "avx512.h"

namespace qk {
namespace {

// c += dot2(bf16 w, bf16 x[0..1] broadcast from memory), kept in its register (see dpbusd).
inline void dpbf16_bcast(__m512& c, __m512i w, const uint16_t* x2) {
  asm("vdpbf16ps %2%{1to16%}, %1, %0" : "+v"(c) : "v"(w), "m"(*reinterpret_cast<const int32_t*>(x2)));
}

// c += dot2(bf16 w, bf16 pair xb) with xb a register (bcast4 of x[k], x[k+1]): one broadcast load
// serves a row's vectors (the memory-broadcast form above loads once per instruction: Zen 5,
// 6 x 64 tiles, 0.82x -> 1.0x torch bf16 F.linear at M = 128 / 512, 4096 x 4096).
inline void dpbf16(__m512& c, __m512i w, __m512i xb) {
  asm("vdpbf16ps %2, %1, %0" : "+v"(c) : "v"(w), "v"(xb));
}

// ---- weights to bf16 pair vectors ------------------------------------------------------------------
// bf16 bits of small integers held as fp32: the high half (exact: at most 8 significant bits).
inline __m512i pair_bf16(__m512 lo, __m512 hi) {
  return _mm512_mask_blend_epi16(0xAAAAAAAAu, _mm512_srli_epi32(_mm512_castps_si512(lo), 16), _mm512_castps_si512(hi));
}
inline __m512 i8_to_f32(const int8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}

// W8A16 panel rows k and k + 1 ([k][64] int8; `pair` false: row k + 1 is past K and counts as 0)
// as 4 pair vectors (columns 16j .. 16j + 15).
inline void w8_pair(const int8_t* row, bool pair, __m512i w[4]) {
  QK_UNROLL
  for (int j = 0; j < 4; ++j)
    w[j] = pair_bf16(i8_to_f32(row + 16 * j), pair ? i8_to_f32(row + kPanelN + 16 * j) : _mm512_setzero_ps());
}

// The W4 table: bf16 (i - 16) for i in [0, 32), for vpermw.
inline __m512i w4_table() {
  alignas(64) uint16_t tab[32];
  for (int i = 0; i < 32; ++i) {
    const float f = float(i - 16);
    uint32_t b;
    std::memcpy(&b, &f, 4);
    tab[i] = uint16_t(b >> 16);
  }
  return _mm512_load_si512(tab);
}
// Per 16-column block j of a group block (see kernels.h) the word pair offset 16 - zz of each column.
inline void w4_zoff(const uint8_t* blk, int64_t gk, __m512i zoff[4]) {
  QK_UNROLL
  for (int j = 0; j < 4; ++j) {
    const __m512i z = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 32 * gk + 4 * kPanelN + 16 * j)));
    zoff[j] = _mm512_sub_epi32(_mm512_set1_epi32(0x00100010), _mm512_mullo_epi32(z, _mm512_set1_epi32(0x00010001)));
  }
}
// One 64-byte load of a k8 step (16 columns x 8 k) as the pair vectors of its k pairs 0..3: the low
// and high nibbles are two k quads; words (u_even, u_odd) of each pair are offset by 16 - zz and
// mapped through the table by vpermw.
inline void w4_k8(__m512i v, __m512i zoff, __m512i table, __m512i w[4]) {
  const __m512i m0f = _mm512_set1_epi8(0x0f), m00ff = _mm512_set1_epi32(0x00ff00ff);
  QK_UNROLL
  for (int half = 0; half < 2; ++half) {
    const __m512i u = _mm512_and_si512(half ? _mm512_srli_epi16(v, 4) : v, m0f);  // bytes u[k0..k3]
    const __m512i e = _mm512_and_si512(u, m00ff);                                // words u0, u2
    const __m512i o = _mm512_and_si512(_mm512_srli_epi32(u, 8), m00ff);          // words u1, u3
    const __m512i p01 = _mm512_mask_blend_epi16(0xAAAAAAAAu, e, _mm512_slli_epi32(o, 16));
    const __m512i p23 = _mm512_mask_blend_epi16(0xAAAAAAAAu, _mm512_srli_epi32(e, 16), o);
    w[2 * half] = _mm512_permutexvar_epi16(_mm512_add_epi16(p01, zoff), table);
    w[2 * half + 1] = _mm512_permutexvar_epi16(_mm512_add_epi16(p23, zoff), table);
  }
}

// ---- the shared tail: register sums into the rows' fp32 sums ----------------------------------
// y[t] += c[t] (scale null) or y[t] = y[t] + c[t] * scale (W4A16 group), t = q * MR + r.
template <int T>
inline void add_sums(__m512 (&c)[T][4], const float* const* scale, int MR, float* y, int64_t ldy) {
  QK_UNROLL
  for (int t = 0; t < T; ++t)
    QK_UNROLL
    for (int j = 0; j < 4; ++j) {
      float* yt = y + t * ldy + 16 * j;
      const __m512 v = scale ? _mm512_mul_ps(c[t][j], _mm512_loadu_ps(scale[t / MR] + 16 * j)) : c[t][j];
      _mm512_storeu_ps(yt, _mm512_add_ps(_mm512_loadu_ps(yt), v));
    }
}

// ---- converted: MR rows over a chunk of pair vectors --------------------------------------------
// ng groups of kk2 k pairs each (W8A16: one group, the chunk), back to back in wb and in x; after
// each group y[r] += c (scale null) or y[r] = y[r] + c * scale (scale of group i at scale +
// i * scale_stride floats).
template <int MR>
QK_UKERNEL void gemm_bf16bf16f32_mrx64_avx512bf16(const uint16_t* x, int64_t ldx, const uint16_t* wb, int64_t ng,
                                                  int64_t kk2, const float* scale, int64_t scale_stride, float* y,
                                                  int64_t ldy) {
  for (int64_t i = 0; i < ng; ++i, x += 2 * kk2, wb += kk2 * 128) {
    __m512 c[MR][4];
    QK_UNROLL
    for (int r = 0; r < MR; ++r)
      QK_UNROLL
      for (int j = 0; j < 4; ++j) c[r][j] = _mm512_setzero_ps();
    for (int64_t kk = 0; kk < kk2; ++kk) {
      const uint16_t* w = wb + kk * 128;
      __m512i wv[4];
      QK_UNROLL
      for (int j = 0; j < 4; ++j) wv[j] = _mm512_load_si512(w + 32 * j);
      QK_UNROLL
      for (int r = 0; r < MR; ++r) {
        const __m512i xb = bcast4(x + r * ldx + 2 * kk);
        QK_UNROLL
        for (int j = 0; j < 4; ++j) dpbf16(c[r][j], wv[j], xb);
      }
    }
    const float* sc[1] = {scale ? scale + i * scale_stride : nullptr};
    add_sums<MR>(c, scale ? sc : nullptr, MR, y, ldy);
    sums_in_memory();
  }
}

// Rows [m0, m1) in tiles of 6 over ng converted groups (W8A16: one chunk) of kk2 k pairs; y row 0 is m0.
inline void rows_converted(const uint16_t* x, int64_t ldx, int64_t m0, int64_t m1, const uint16_t* wb, int64_t ng,
                           int64_t kk2, const float* scale, int64_t scale_stride, float* y) {
  row_tiles<6>(m0, m1, [&](auto R, int64_t m) {
    gemm_bf16bf16f32_mrx64_avx512bf16<R>(x + m * ldx, ldx, wb, ng, kk2, scale, scale_stride, y + (m - m0) * kPanelN,
                                         kPanelN);
  });
}

// ---- direct: MR rows x NP panels, weights converted in registers ---------------------------------
// W8A16 k pairs [k0, k1) of NP panels (pb bytes apart); y[q * MR + r] += the chunk's sums.
template <int MR, int NP>
QK_UKERNEL void gemm_bf16s8f32_mrxnp64_avx512bf16(const uint16_t* x, int64_t ldx, const int8_t* wp, int64_t pb,
                                                  int64_t k0, int64_t k1, int64_t K, float* y) {
  const int64_t pf = tuning().prefetch_distance;
  __m512 c[MR * NP][4];
  QK_UNROLL
  for (int t = 0; t < MR * NP; ++t)
    QK_UNROLL
    for (int j = 0; j < 4; ++j) c[t][j] = _mm512_setzero_ps();
  for (int64_t k = k0; k < k1; k += 2) {
    QK_UNROLL
    for (int q = 0; q < NP; ++q) {
      const int8_t* row = wp + q * pb + k * kPanelN;
      prefetch_lines(row, pf, 128);
      __m512i w[4];
      w8_pair(row, k + 1 < K, w);
      QK_UNROLL
      for (int r = 0; r < MR; ++r) {
        const __m512i xb = bcast4(x + r * ldx + k);
        QK_UNROLL
        for (int j = 0; j < 4; ++j) dpbf16(c[q * MR + r][j], w[j], xb);
      }
    }
  }
  add_sums<MR * NP>(c, nullptr, MR, y, kPanelN);
}

// W4A16 group `grp` of NP panels in lockstep; y[q * MR + r] = y + the group's sums * scale.
template <int MR, int NP>
QK_UKERNEL void gemm_bf16u4f32_mrxnp64_avx512bf16(const uint16_t* xg, int64_t ldx, const uint8_t* wp, int64_t pb,
                                                  int64_t grp, int64_t gk, float* y) {
  const int64_t pf = tuning().prefetch_distance;
  const int64_t gb = w4_group_bytes(gk);
  const __m512i table = w4_table();
  alignas(64) __m512i zoff[NP][4];  // read back per use: registers are for the sums
  const uint8_t* blk[NP];
  const float* scale[NP];
  QK_UNROLL
  for (int q = 0; q < NP; ++q) {
    blk[q] = wp + q * pb + grp * gb;
    scale[q] = reinterpret_cast<const float*>(blk[q] + 32 * gk);
    w4_zoff(blk[q], gk, zoff[q]);
  }
  __m512 c[MR * NP][4];
  QK_UNROLL
  for (int t = 0; t < MR * NP; ++t)
    QK_UNROLL
    for (int j = 0; j < 4; ++j) c[t][j] = _mm512_setzero_ps();
  for (int64_t k8 = 0; k8 < gk / 8; ++k8) {
    QK_UNROLL
    for (int q = 0; q < NP; ++q) {
      prefetch_lines(blk[q] + k8 * 256, pf, 256);  // one 256-byte k step
      QK_UNROLL
      for (int j = 0; j < 4; ++j) {
        __m512i w[4];
        w4_k8(_mm512_loadu_si512(blk[q] + k8 * 256 + 64 * j), zoff[q][j], table, w);
        QK_UNROLL
        for (int t = 0; t < 4; ++t)
          QK_UNROLL
          for (int r = 0; r < MR; ++r) dpbf16_bcast(c[q * MR + r][j], w[t], xg + r * ldx + 8 * k8 + 2 * t);
      }
    }
  }
  add_sums<MR * NP>(c, scale, MR, y, kPanelN);
}

// ---- per-thread buffers (Buffer in driver.h): the converted chunk and the task's row sums --------
struct Scratch {
  Buffer<uint16_t> wbuf;
  Buffer<float> ybuf;
  uint16_t* w = nullptr;
  float* y = nullptr;
  void size(int64_t wn, int64_t yn) {  // y zeroed
    w = wbuf.get(wn);
    y = ybuf.get(yn);
    std::fill(y, y + yn, 0.0f);
  }
};
inline Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

// Direct: panels [p0, p1), at M = 1 decode_width(kLockstep) at a time (run(np, p) with np <=
// kLockstep), else one at a time (np = 1); run adds the whole K of rows [m0, m1) into s.y (row sums
// [q * rows + r][64], zeroed here), then each row goes through the epilogue.
constexpr int kLockstep = 4;  // panels at M = 1 (4 x 4 sums leave registers for the conversion)
template <typename Run, typename Epi>
inline void direct_panels(int64_t m0, int64_t m1, int64_t p0, int64_t p1, Scratch& s, Run run, Epi epi) {
  const int64_t rows = m1 - m0;
  s.size(0, kLockstep * rows * kPanelN);
  const int64_t width = rows == 1 ? decode_width(kLockstep) : 1;
  for (int64_t p = p0; p < p1;) {
    const int np = int(std::min<int64_t>(width, p1 - p));
    std::fill(s.y, s.y + np * rows * kPanelN, 0.0f);
    run(np, p);
    for (int q = 0; q < np; ++q)
      for (int64_t m = m0; m < m1; ++m) epi(m, p + q, s.y + (q * rows + (m - m0)) * kPanelN);
    p += np;
  }
}

// ---- W8A16 ---------------------------------------------------------------------------------------
void convert_w8(const int8_t* panel, int64_t k0, int64_t k1, int64_t K, uint16_t* wb) {
  for (int64_t k = k0; k < k1; k += 2) {
    __m512i w[4];
    w8_pair(panel + k * kPanelN, k + 1 < K, w);
    QK_UNROLL
    for (int j = 0; j < 4; ++j) _mm512_store_si512(wb + (k - k0) / 2 * 128 + 32 * j, w[j]);
  }
}

void gemm_w8a16_bf16_avx512(const W8A16Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  const uint16_t* x = static_cast<const uint16_t*>(g.x);
  const int64_t K = g.K, K2 = round_up(K, 2), chunk = tuning().bf16_dot_chunk_k, pb = w8a16_panel_bytes(K);
  const int64_t rows = m1 - m0;
  auto epi = w8a16_epilogue(g);
  Scratch& s = scratch();
  if (rows < tuning().bf16_dot_min_rows) {  // direct
    direct_panels(m0, m1, p0, p1, s, [&](int np, int64_t p) {
      const int8_t* wp = g.w + p * pb;
      for (int64_t k0 = 0; k0 < K2; k0 += chunk) {
        const int64_t k1 = std::min(K2, k0 + chunk);
        if (rows == 1)
          with_tile<kLockstep>(np, [&](auto N) {
            gemm_bf16s8f32_mrxnp64_avx512bf16<1, N>(x + m0 * g.ldx, g.ldx, wp, pb, k0, k1, K, s.y);
          });
        else
          row_tiles<6>(m0, m1, [&](auto R, int64_t m) {
            gemm_bf16s8f32_mrxnp64_avx512bf16<R, 1>(x + m * g.ldx, g.ldx, wp, pb, k0, k1, K, s.y + (m - m0) * kPanelN);
          });
      }
    }, epi);
    return;
  }
  for (int64_t p = p0; p < p1; ++p) {  // converted
    const int8_t* panel = g.w + p * pb;
    s.size(std::min(K2, chunk) * kPanelN, rows * kPanelN);
    for (int64_t k0 = 0; k0 < K2; k0 += chunk) {
      const int64_t k1 = std::min(K2, k0 + chunk);
      convert_w8(panel, k0, std::min(k1, K), K, s.w);
      rows_converted(x + k0, g.ldx, m0, m1, s.w, 1, (k1 - k0) / 2, nullptr, 0, s.y);
    }
    for (int64_t m = m0; m < m1; ++m) epi(m, p, s.y + (m - m0) * kPanelN);
  }
}

// ---- W4A16 ---------------------------------------------------------------------------------------
void convert_w4(const uint8_t* blk, int64_t gk, uint16_t* wb) {
  const __m512i table = w4_table();
  __m512i zoff[4];
  w4_zoff(blk, gk, zoff);
  for (int64_t k8 = 0; k8 < gk / 8; ++k8) {
    QK_UNROLL
    for (int j = 0; j < 4; ++j) {
      __m512i w[4];
      w4_k8(_mm512_loadu_si512(blk + k8 * 256 + 64 * j), zoff[j], table, w);
      QK_UNROLL
      for (int t = 0; t < 4; ++t) _mm512_store_si512(wb + (4 * k8 + t) * 128 + 32 * j, w[t]);
    }
  }
}

void gemm_w4a16_bf16_avx512(const W4Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  const uint16_t* x = static_cast<const uint16_t*>(g.a);
  const int64_t pb = w4_panel_bytes(g.G, g.gk), gb = w4_group_bytes(g.gk), rows = m1 - m0;
  auto epi = w4_epilogue<false>(g);
  Scratch& s = scratch();
  if (rows < tuning().bf16_dot_min_rows) {  // direct
    direct_panels(m0, m1, p0, p1, s, [&](int np, int64_t p) {
      const uint8_t* wp = g.w + p * pb;
      for (int64_t grp = 0; grp < g.G; ++grp) {
        const uint16_t* xg = x + grp * g.gk;
        if (rows == 1)
          with_tile<kLockstep>(np, [&](auto N) {
            gemm_bf16u4f32_mrxnp64_avx512bf16<1, N>(xg + m0 * g.lda, g.lda, wp, pb, grp, g.gk, s.y);
          });
        else
          row_tiles<6>(m0, m1, [&](auto R, int64_t m) {
            gemm_bf16u4f32_mrxnp64_avx512bf16<R, 1>(xg + m * g.lda, g.lda, wp, pb, grp, g.gk, s.y + (m - m0) * kPanelN);
          });
      }
    }, epi);
    return;
  }
  const int64_t per_chunk = std::max<int64_t>(1, tuning().bf16_dot_chunk_k / g.gk);  // groups converted at a time
  for (int64_t p = p0; p < p1; ++p) {  // converted
    const uint8_t* panel = g.w + p * pb;
    s.size(std::min(per_chunk, g.G) * g.gk * kPanelN, rows * kPanelN);
    for (int64_t g0 = 0; g0 < g.G; g0 += per_chunk) {
      const int64_t g1 = std::min(g.G, g0 + per_chunk);
      for (int64_t q = g0; q < g1; ++q) convert_w4(panel + q * gb, g.gk, s.w + (q - g0) * g.gk * kPanelN);
      // each row tile goes through the chunk's groups in one call: the chunk stays in L2
      rows_converted(x + g0 * g.gk, g.lda, m0, m1, s.w, g1 - g0, g.gk / 2,
                     reinterpret_cast<const float*>(panel + g0 * gb + 32 * g.gk), gb / 4, s.y);
    }
    for (int64_t m = m0; m < m1; ++m) epi(m, p, s.y + (m - m0) * kPanelN);
  }
}

}  // namespace

extern const ExtKernels kernels_avx512_vnni_avx512_bf16 = {Ext::avx512_bf16, gemm_w8a16_bf16_avx512,
                                                           gemm_w4a16_bf16_avx512};

}  // namespace qk
