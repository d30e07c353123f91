// AVX-512 VNNI path kernels (flags from cpu_paths.def): quant, W8A8, W8A16, W4A8, W4A16.
#include <immintrin.h>

#include <algorithm>

#include "driver.h"
#include "sparse.h"
#include "kernels.h"
// Software prefetch distance (bytes ahead in the panel stream) for M=1 decode from DRAM; 4 KiB
// measured best here for both kernels (1-2 KiB left W8A16 ~30% slower); the W4 kernels use the
// same (W4A8: 1, 2, 4 and 8 KiB and none measured, 2-8 KiB alike, 1 KiB and none ~10% slower).
#ifndef QK_PF8
#define QK_PF8 4096
#endif
#ifndef QK_PF16
#define QK_PF16 4096
#endif


namespace qk {
namespace {

// ---- per-row symmetric int8 quantization (contract in epilogue.h) ----------------------------
inline __m512 load16_f32(const float* x, __mmask16 m) { return _mm512_maskz_loadu_ps(m, x); }
inline __m512 load16_f32(const uint16_t* x, __mmask16 m) {
  __m512i v = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, x));
  return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}
inline __mmask16 tail_mask(int64_t left) {
  return left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1);
}

template <typename T>
void quant_row_avx512(const T* x, int64_t K, int8_t* q, float* scale) {
  const __m512 absmask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
  __m512 mx = _mm512_setzero_ps(), bad = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; k += 16) {
    __m512 v = load16_f32(x + k, tail_mask(K - k));
    mx = _mm512_max_ps(mx, _mm512_and_ps(v, absmask));
    bad = _mm512_add_ps(bad, _mm512_mul_ps(v, _mm512_setzero_ps()));  // NaN iff any NaN/Inf
  }
  float amax = _mm512_reduce_max_ps(mx);
  if (_mm512_reduce_add_ps(bad) != 0.0f || !(amax <= FLT_MAX)) {
    if constexpr (sizeof(T) == 4)
      amax = nonfinite_amax([x](int64_t k) { return float(x[k]); }, K);
    else
      amax = nonfinite_amax([x](int64_t k) { return bf16_to_f32(x[k]); }, K);
  }
  const float s = scale_from_amax(amax);
  *scale = s;
  if (!std::isfinite(s)) {
    std::memset(q, 0, K);
    return;
  }
  const __m512 vs = _mm512_set1_ps(s), lo = _mm512_set1_ps(-127.f), hi = _mm512_set1_ps(127.f);
  for (int64_t k = 0; k < K; k += 16) {
    const __mmask16 m = tail_mask(K - k);
    __m512 r = _mm512_roundscale_ps(_mm512_div_ps(load16_f32(x + k, m), vs),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    r = _mm512_min_ps(_mm512_max_ps(r, lo), hi);
    _mm512_mask_cvtepi32_storeu_epi8(q + k, m, _mm512_cvtps_epi32(r));
  }
}

void quant_row_f32_avx512(const float* x, int64_t K, int8_t* q, float* s) { quant_row_avx512(x, K, q, s); }
void quant_row_bf16_avx512(const uint16_t* x, int64_t K, int8_t* q, float* s) { quant_row_avx512(x, K, q, s); }

// ---- W8A8: gemm_u8s8s32_MRx64_avx512vnni ----------------------------------------------------
// One k4 step of a panel (4 k values x 64 columns = 256 bytes = 4 zmm):
//   w0 = [n0k0..n0k3 | n1k0..n1k3 | ... | n15k0..n15k3]  w1 = n16..31, w2 = n32..47, w3 = n48..63
//   for each row r: b = broadcast(u8 a[r][4k4 .. 4k4+3]) and c[r][j] += vpdpbusd(b, wj)
//   c[r][0..3] hold rows r's 64 int32 sums: MR x 4 accumulators (MR <= 6 -> 24 zmm).
// a is s8 + 128 (u8), so c = sum(a*w) + colsum; colsum (= 128 * sum_k w) sits after the panel.
// c += dot4(u8 b, s8 w). The intrinsic's tied accumulator makes GCC copy (and spill) all 24
// accumulators every iteration; a "+v" asm operand keeps each one pinned in its register.
inline void dpbusd(__m512i& c, __m512i b, __m512i w) {
  asm("vpdpbusd %2, %1, %0" : "+v"(c) : "v"(b), "v"(w));
}

template <int MR>
inline void ukernel_w8a8(const uint8_t* a, int64_t lda, const int8_t* wp, int64_t K4,
                         int32_t acc[][kPanelN]) {
  __m512i c[MR][4];
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < 4; ++j) c[r][j] = _mm512_setzero_si512();
  for (int64_t k4 = 0; k4 < K4; ++k4) {
    const int8_t* w = wp + k4 * 256;
    _mm_prefetch(reinterpret_cast<const char*>(w) + QK_PF8, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(w) + QK_PF8 + 64, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(w) + QK_PF8 + 128, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(w) + QK_PF8 + 192, _MM_HINT_T0);
    const __m512i w0 = _mm512_loadu_si512(w), w1 = _mm512_loadu_si512(w + 64);
    const __m512i w2 = _mm512_loadu_si512(w + 128), w3 = _mm512_loadu_si512(w + 192);
    for (int r = 0; r < MR; ++r) {
      int32_t a4;
      std::memcpy(&a4, a + r * lda + 4 * k4, 4);
      const __m512i b = _mm512_set1_epi32(a4);
      dpbusd(c[r][0], b, w0);
      dpbusd(c[r][1], b, w1);
      dpbusd(c[r][2], b, w2);
      dpbusd(c[r][3], b, w3);
    }
  }
  const int32_t* colsum = reinterpret_cast<const int32_t*>(wp + K4 * 256);
  for (int j = 0; j < 4; ++j) {
    const __m512i cs = _mm512_loadu_si512(colsum + 16 * j);
    for (int r = 0; r < MR; ++r) _mm512_storeu_si512(acc[r] + 16 * j, _mm512_sub_epi32(c[r][j], cs));
  }
}

void gemm_w8a8_avx512(const W8A8Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  drive_w8a8<6>(g, m0, m1, p0, p1, [](int mr, const uint8_t* a, int64_t lda, const int8_t* wp,
                                      int64_t K4, int32_t acc[][kPanelN]) {
    switch (mr) {
      case 1: ukernel_w8a8<1>(a, lda, wp, K4, acc); break;
      case 2: ukernel_w8a8<2>(a, lda, wp, K4, acc); break;
      case 3: ukernel_w8a8<3>(a, lda, wp, K4, acc); break;
      case 4: ukernel_w8a8<4>(a, lda, wp, K4, acc); break;
      case 5: ukernel_w8a8<5>(a, lda, wp, K4, acc); break;
      default: ukernel_w8a8<6>(a, lda, wp, K4, acc); break;
    }
  });
}

// ---- W8A16: gemm_f32s8f32_MRx64_avx512 --------------------------------------------------------
// Per k: the panel row w[k][0..63] (64 bytes) widens to 4 zmm of fp32 (w0..w3), shared by the
// MR rows: c[r][j] += broadcast(x[r][k]) * wj. MR x 4 fp32 accumulators (MR <= 6).
template <int MR>
inline void ukernel_w8a16(const float* x, int64_t ldx, const int8_t* wp, int64_t K,
                          float acc[][kPanelN]) {
  __m512 c[MR][4];
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < 4; ++j) c[r][j] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    const int8_t* w = wp + k * kPanelN;
    _mm_prefetch(reinterpret_cast<const char*>(w) + QK_PF16, _MM_HINT_T0);
    __m512 wv[4];
    for (int j = 0; j < 4; ++j)
      wv[j] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 16 * j))));
    for (int r = 0; r < MR; ++r) {
      const __m512 b = _mm512_set1_ps(x[r * ldx + k]);
      for (int j = 0; j < 4; ++j) c[r][j] = _mm512_fmadd_ps(b, wv[j], c[r][j]);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < 4; ++j) _mm512_storeu_ps(acc[r] + 16 * j, c[r][j]);
}

void gemm_w8a16_avx512(const W8A16Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  drive_w8a16<6>(g, m0, m1, p0, p1, [](int mr, const float* x, int64_t ldx, const int8_t* wp,
                                       int64_t K, float acc[][kPanelN]) {
    switch (mr) {
      case 1: ukernel_w8a16<1>(x, ldx, wp, K, acc); break;
      case 2: ukernel_w8a16<2>(x, ldx, wp, K, acc); break;
      case 3: ukernel_w8a16<3>(x, ldx, wp, K, acc); break;
      case 4: ukernel_w8a16<4>(x, ldx, wp, K, acc); break;
      case 5: ukernel_w8a16<5>(x, ldx, wp, K, acc); break;
      default: ukernel_w8a16<6>(x, ldx, wp, K, acc); break;
    }
  });
}

// ---- W4A8: gemm_u4s8f32_MRx64_avx512vnni -----------------------------------------------------
// One k8 step of a group (8 k x 64 columns = 256 bytes = 4 zmm, layout in kernels.h):
//   v_j = [n0: k0|k4, k1|k5, k2|k6, k3|k7 | n1: ... | n15]   (j = 0..3: columns 16j .. 16j+15)
//   lo = v_j & 0x0f = u8 [16 n x k0..3],  hi = v_j >> 4 & 0x0f = u8 [16 n x k4..7]
//   for each row r: c[r][j] += vpdpbusd(lo, bcast(a[r][k0..3])) + vpdpbusd(hi, bcast(a[r][k4..7]))
// The weights are the unsigned operand and the int8 activations the signed one (broadcast from
// memory), so no shift of the activations is needed; u - zz is applied per group through the
// row's group sum: acc = c - zz * asum. MR x 4 int32 accumulators (MR <= 6 -> 24 zmm) + 3 temps.
// After each group the accumulators go through the contract's fp32 step into y (in L1).
inline void dpbusd_bcast(__m512i& c, __m512i w, const int8_t* a4) {
  asm("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(c) : "v"(w), "m"(*reinterpret_cast<const int32_t*>(a4)));
}

template <int MR>
inline void ukernel_w4a8(const int8_t* a, int64_t lda, const int32_t* asum, const uint8_t* wp,
                         int64_t G, int64_t gk, float y[][kPanelN]) {
  const __m512i m4 = _mm512_set1_epi8(0x0f);
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < 4; ++j) _mm512_storeu_ps(y[r] + 16 * j, _mm512_setzero_ps());
  for (int64_t grp = 0; grp < G; ++grp) {
    const uint8_t* blk = wp + grp * w4_group_bytes(gk);
    const int8_t* ag = a + grp * gk;
    __m512i c[MR][4];
    for (int r = 0; r < MR; ++r)
      for (int j = 0; j < 4; ++j) c[r][j] = _mm512_setzero_si512();
    for (int64_t k8 = 0; k8 < gk / 8; ++k8) {
      const uint8_t* w = blk + k8 * 256;
      for (int l = 0; l < 4; ++l)
        _mm_prefetch(reinterpret_cast<const char*>(w) + QK_PF8 + 64 * l, _MM_HINT_T0);
      for (int j = 0; j < 4; ++j) {
        const __m512i v = _mm512_loadu_si512(w + 64 * j);
        const __m512i lo = _mm512_and_si512(v, m4);
        const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
        for (int r = 0; r < MR; ++r) {
          dpbusd_bcast(c[r][j], lo, ag + r * lda + 8 * k8);
          dpbusd_bcast(c[r][j], hi, ag + r * lda + 8 * k8 + 4);
        }
      }
    }
    const float* scale = reinterpret_cast<const float*>(blk + 32 * gk);
    const uint8_t* zz = blk + 32 * gk + 4 * kPanelN;
    for (int j = 0; j < 4; ++j) {
      const __m512 s = _mm512_loadu_ps(scale + 16 * j);
      const __m512i z = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(zz + 16 * j)));
      for (int r = 0; r < MR; ++r) {
        const __m512i corr = _mm512_mullo_epi32(z, _mm512_set1_epi32(asum[r * G + grp]));
        const __m512 t = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(c[r][j], corr)), s);
        _mm512_storeu_ps(y[r] + 16 * j, _mm512_add_ps(_mm512_loadu_ps(y[r] + 16 * j), t));
      }
    }
  }
}

// ---- W4A16: gemm_u4f32f32_MRx64_avx512 -------------------------------------------------------
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
// ukernel_w4a8_m1 below for why).
// c += u * bcast(x[k]) with the broadcast from memory; asm pins the accumulator (as dpbusd above).
inline void fma_bcast(__m512& c, __m512 u, const float* x) {
  asm("vfmadd231ps %2%{1to16%}, %1, %0" : "+v"(c) : "v"(u), "m"(*x));
}

inline bool zz_all_8(const uint8_t* zz) {
  return _mm512_cmpneq_epi8_mask(_mm512_loadu_si512(zz), _mm512_set1_epi8(8)) == 0;
}

template <int MR, int NP, bool ZZ8>
inline void w4a16_group(const float* xg, int64_t ldx, const uint8_t* const* blk, int64_t gk, float y[][kPanelN]) {
  const __m512 tlo = ZZ8 ? _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7)
                         : _mm512_setr_ps(-16, -15, -14, -13, -12, -11, -10, -9, -8, -7, -6, -5, -4, -3, -2, -1);
  const __m512 thi = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  alignas(64) int32_t zoff[NP][kPanelN];  // per column, 4 bytes of 16 - zz
  if constexpr (!ZZ8)
    for (int q = 0; q < NP; ++q)
      for (int j = 0; j < 4; ++j) {
        const __m512i z = _mm512_cvtepu8_epi32(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk[q] + 32 * gk + 4 * kPanelN + 16 * j)));
        _mm512_store_si512(zoff[q] + 16 * j, _mm512_sub_epi32(_mm512_set1_epi32(0x10101010),
                                                              _mm512_mullo_epi32(z, _mm512_set1_epi32(0x01010101))));
      }
  __m512 c[MR * NP][4];
  for (int t = 0; t < MR * NP; ++t)
    for (int j = 0; j < 4; ++j) c[t][j] = _mm512_setzero_ps();
  for (int64_t k8 = 0; k8 < gk / 8; ++k8) {
    const float* xk = xg + 8 * k8;
    for (int q = 0; q < NP; ++q) {
      const uint8_t* w = blk[q] + k8 * 256;
      for (int l = 0; l < 4; ++l)
        _mm_prefetch(reinterpret_cast<const char*>(w) + QK_PF16 + 64 * l, _MM_HINT_T0);
      // Two halves of 4 k (low nibbles k0..3, high nibbles k4..7); within one, k outer and the
      // 4 column vectors inner, so MR * 4 accumulators are in flight.
#pragma GCC unroll 2
      for (int half = 0; half < 2; ++half) {
        __m512i e[4];
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
            for (int r = 0; r < MR; ++r) fma_bcast(c[r * NP + q][j], u, xk + r * ldx + 4 * half + kk);
          }
        }
      }
    }
  }
  for (int q = 0; q < NP; ++q) {
    const float* scale = reinterpret_cast<const float*>(blk[q] + 32 * gk);
    for (int j = 0; j < 4; ++j) {
      const __m512 s = _mm512_loadu_ps(scale + 16 * j);
      for (int r = 0; r < MR; ++r) {
        float* yr = y[q * MR + r] + 16 * j;
        _mm512_storeu_ps(yr, _mm512_add_ps(_mm512_loadu_ps(yr), _mm512_mul_ps(c[r * NP + q][j], s)));
      }
    }
  }
}

// MR rows of x times NP consecutive panels (pb bytes apart) into y[q * MR + r][64].
template <int MR, int NP>
inline void ukernel_w4a16(const float* x, int64_t ldx, const uint8_t* wp, int64_t pb, int64_t G, int64_t gk,
                          float y[][kPanelN]) {
  for (int t = 0; t < MR * NP; ++t)
    for (int j = 0; j < 4; ++j) _mm512_storeu_ps(y[t] + 16 * j, _mm512_setzero_ps());
  for (int64_t grp = 0; grp < G; ++grp) {
    const uint8_t* blk[NP];
    bool zz8 = true;
    for (int q = 0; q < NP; ++q) {
      blk[q] = wp + q * pb + grp * w4_group_bytes(gk);
      zz8 = zz8 && zz_all_8(blk[q] + 32 * gk + 4 * kPanelN);
    }
    if (zz8)
      w4a16_group<MR, NP, true>(x + grp * gk, ldx, blk, gk, y);
    else
      w4a16_group<MR, NP, false>(x + grp * gk, ldx, blk, gk, y);
  }
}

// Decode (one row): NP panels in lockstep, one k8 step (256 bytes) of each in turn, so NP
// sequential weight streams are in flight at once. On this project's VM one stream per core reads
// DRAM at ~17 GB/s (2 cores) and 4-8 streams at ~25 GB/s; measured with 2, 4 and 8 panels and
// prefetch distances 0-8 KiB, 8 panels with 4 KiB reads ~23 GB/s vs ~16 GB/s for one panel at a
// time. NP x 4 int32 accumulators (NP <= 8 -> 32 zmm, the 3 temporaries reuse them as it goes).
template <int NP>
inline void ukernel_w4a8_m1(const int8_t* a, const int32_t* asum, const uint8_t* wp, int64_t pb,
                            int64_t G, int64_t gk, float y[][kPanelN]) {
  const __m512i m4 = _mm512_set1_epi8(0x0f);
  for (int q = 0; q < NP; ++q)
    for (int j = 0; j < 4; ++j) _mm512_storeu_ps(y[q] + 16 * j, _mm512_setzero_ps());
  for (int64_t grp = 0; grp < G; ++grp) {
    const int8_t* ag = a + grp * gk;
    __m512i c[NP][4];
    for (int q = 0; q < NP; ++q)
      for (int j = 0; j < 4; ++j) c[q][j] = _mm512_setzero_si512();
    for (int64_t k8 = 0; k8 < gk / 8; ++k8) {
      for (int q = 0; q < NP; ++q) {
        const uint8_t* w = wp + q * pb + grp * w4_group_bytes(gk) + k8 * 256;
        for (int l = 0; l < 4; ++l)
          _mm_prefetch(reinterpret_cast<const char*>(w) + QK_PF8 + 64 * l, _MM_HINT_T0);
        for (int j = 0; j < 4; ++j) {
          const __m512i v = _mm512_loadu_si512(w + 64 * j);
          dpbusd_bcast(c[q][j], _mm512_and_si512(v, m4), ag + 8 * k8);
          dpbusd_bcast(c[q][j], _mm512_and_si512(_mm512_srli_epi16(v, 4), m4), ag + 8 * k8 + 4);
        }
      }
    }
    for (int q = 0; q < NP; ++q) {
      const uint8_t* blk = wp + q * pb + grp * w4_group_bytes(gk);
      const float* scale = reinterpret_cast<const float*>(blk + 32 * gk);
      const uint8_t* zz = blk + 32 * gk + 4 * kPanelN;
      const __m512i as = _mm512_set1_epi32(asum[grp]);
      for (int j = 0; j < 4; ++j) {
        const __m512i z = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(zz + 16 * j)));
        const __m512 t = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(c[q][j], _mm512_mullo_epi32(z, as))),
                                       _mm512_loadu_ps(scale + 16 * j));
        _mm512_storeu_ps(y[q] + 16 * j, _mm512_add_ps(_mm512_loadu_ps(y[q] + 16 * j), t));
      }
    }
  }
}

void gemm_w4a8_avx512(const W4Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  if (m1 - m0 == 1) {
    constexpr int NP = 8;
    alignas(64) float y[NP][kPanelN];
    const int64_t pb = w4_panel_bytes(g.G, g.gk);
    const int8_t* a = static_cast<const int8_t*>(g.a) + m0 * g.lda;
    const int32_t* as = static_cast<const int32_t*>(g.asum) + m0 * g.G;
    for (int64_t p = p0; p < p1;) {
      const int np = int(std::min<int64_t>(NP, p1 - p));
      const uint8_t* w = g.w + p * pb;
      switch (np) {
        case 8: ukernel_w4a8_m1<8>(a, as, w, pb, g.G, g.gk, y); break;
        case 7: ukernel_w4a8_m1<7>(a, as, w, pb, g.G, g.gk, y); break;
        case 6: ukernel_w4a8_m1<6>(a, as, w, pb, g.G, g.gk, y); break;
        case 5: ukernel_w4a8_m1<5>(a, as, w, pb, g.G, g.gk, y); break;
        case 4: ukernel_w4a8_m1<4>(a, as, w, pb, g.G, g.gk, y); break;
        case 3: ukernel_w4a8_m1<3>(a, as, w, pb, g.G, g.gk, y); break;
        case 2: ukernel_w4a8_m1<2>(a, as, w, pb, g.G, g.gk, y); break;
        default: ukernel_w4a8_m1<1>(a, as, w, pb, g.G, g.gk, y); break;
      }
      for (int q = 0; q < np; ++q)
        epilogue_w4(y[q], g.a_scale + m0, g.bias ? g.bias + (p + q) * kPanelN : nullptr, panel_cols(g.N, p + q),
                    out_row(g.out, g.ldo, m0, (p + q) * kPanelN, g.out_bf16), g.out_bf16);
      p += np;
    }
    return;
  }
  drive_w4<6, true>(g, m0, m1, p0, p1, [&g](int mr, int64_t m, const uint8_t* wp, float y[][kPanelN]) {
    const int8_t* a = static_cast<const int8_t*>(g.a) + m * g.lda;
    const int32_t* as = static_cast<const int32_t*>(g.asum) + m * g.G;
    switch (mr) {
      case 1: ukernel_w4a8<1>(a, g.lda, as, wp, g.G, g.gk, y); break;
      case 2: ukernel_w4a8<2>(a, g.lda, as, wp, g.G, g.gk, y); break;
      case 3: ukernel_w4a8<3>(a, g.lda, as, wp, g.G, g.gk, y); break;
      case 4: ukernel_w4a8<4>(a, g.lda, as, wp, g.G, g.gk, y); break;
      case 5: ukernel_w4a8<5>(a, g.lda, as, wp, g.G, g.gk, y); break;
      default: ukernel_w4a8<6>(a, g.lda, as, wp, g.G, g.gk, y); break;
    }
  });
}

void gemm_w4a16_avx512(const W4Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  const int64_t pb = w4_panel_bytes(g.G, g.gk);
  if (m1 - m0 == 1) {  // decode: NP panels in lockstep
    constexpr int NP = 6;
    alignas(64) float y[NP][kPanelN];
    const float* x = static_cast<const float*>(g.a) + m0 * g.lda;
    for (int64_t p = p0; p < p1;) {
      const int np = int(std::min<int64_t>(NP, p1 - p));
      const uint8_t* w = g.w + p * pb;
      switch (np) {
        case 6: ukernel_w4a16<1, 6>(x, g.lda, w, pb, g.G, g.gk, y); break;
        case 5: ukernel_w4a16<1, 5>(x, g.lda, w, pb, g.G, g.gk, y); break;
        case 4: ukernel_w4a16<1, 4>(x, g.lda, w, pb, g.G, g.gk, y); break;
        case 3: ukernel_w4a16<1, 3>(x, g.lda, w, pb, g.G, g.gk, y); break;
        case 2: ukernel_w4a16<1, 2>(x, g.lda, w, pb, g.G, g.gk, y); break;
        default: ukernel_w4a16<1, 1>(x, g.lda, w, pb, g.G, g.gk, y); break;
      }
      for (int q = 0; q < np; ++q)
        epilogue_w4(y[q], nullptr, g.bias ? g.bias + (p + q) * kPanelN : nullptr, panel_cols(g.N, p + q),
                    out_row(g.out, g.ldo, m0, (p + q) * kPanelN, g.out_bf16), g.out_bf16);
      p += np;
    }
    return;
  }
  drive_w4<6, false>(g, m0, m1, p0, p1, [&g, pb](int mr, int64_t m, const uint8_t* wp, float y[][kPanelN]) {
    const float* x = static_cast<const float*>(g.a) + m * g.lda;
    switch (mr) {
      case 1: ukernel_w4a16<1, 1>(x, g.lda, wp, pb, g.G, g.gk, y); break;
      case 2: ukernel_w4a16<2, 1>(x, g.lda, wp, pb, g.G, g.gk, y); break;
      case 3: ukernel_w4a16<3, 1>(x, g.lda, wp, pb, g.G, g.gk, y); break;
      case 4: ukernel_w4a16<4, 1>(x, g.lda, wp, pb, g.G, g.gk, y); break;
      case 5: ukernel_w4a16<5, 1>(x, g.lda, wp, pb, g.G, g.gk, y); break;
      default: ukernel_w4a16<6, 1>(x, g.lda, wp, pb, g.G, g.gk, y); break;
    }
  });
}

}  // namespace

extern const Kernels kernels_avx512_vnni = {Isa::avx512_vnni, true, quant_row_f32_avx512,
                                            quant_row_bf16_avx512, gemm_w8a8_avx512, gemm_w8a16_avx512,
                                            gemm_w4a8_avx512, gemm_w4a16_avx512, gemm_s24_float_avx512,
                                            gemm_s24_i8_avx512};

}  // namespace qk
