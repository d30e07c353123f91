// AVX-512 VNNI path, int8 (flags from cpu_paths.def): per-row int8 quantization, W8A8 (vpdpbusd on
// u8-shifted activations), W8A16 (fp32 FMA); and the path's kernel table (int4 kernels in
// avx512_int4.cpp, 2:4 in sparse_avx512.cpp).
#include "avx512.h"

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

// ---- W8A8: gemm_u8s8s32_mrx64_avx512vnni ----------------------------------------------------
// One k4 step of a panel (4 k values x 64 columns = 256 bytes = 4 zmm):
//   w0 = [n0k0..n0k3 | n1k0..n1k3 | ... | n15k0..n15k3]  w1 = n16..31, w2 = n32..47, w3 = n48..63
//   for each row r: b = broadcast(u8 a[r][4k4 .. 4k4+3]) and c[r][j] += vpdpbusd(b, wj)
//   c[r][0..3] hold rows r's 64 int32 sums: MR x 4 accumulators (MR <= 6 -> 24 zmm).
// a is s8 + 128 (u8), so c = sum(a*w) + colsum; colsum (= 128 * sum_k w) sits after the panel.
template <int MR>
QK_UKERNEL void gemm_u8s8s32_mrx64_avx512vnni(const uint8_t* a, int64_t lda, const int8_t* wp, int64_t K4,
                         int32_t acc[][kPanelN]) {
  const int64_t pf = tuning().prefetch_distance;
  __m512i c[MR][4];
  QK_UNROLL
  for (int r = 0; r < MR; ++r)
    QK_UNROLL
    for (int j = 0; j < 4; ++j) c[r][j] = _mm512_setzero_si512();
  for (int64_t k4 = 0; k4 < K4; ++k4) {
    const int8_t* w = wp + k4 * 256;
    prefetch_lines(w, pf, 256);  // one 256-byte k step
    const __m512i w0 = _mm512_loadu_si512(w), w1 = _mm512_loadu_si512(w + 64);
    const __m512i w2 = _mm512_loadu_si512(w + 128), w3 = _mm512_loadu_si512(w + 192);
    QK_UNROLL
    for (int r = 0; r < MR; ++r) {
      const __m512i b = bcast4(a + r * lda + 4 * k4);
      dpbusd(c[r][0], b, w0);
      dpbusd(c[r][1], b, w1);
      dpbusd(c[r][2], b, w2);
      dpbusd(c[r][3], b, w3);
    }
  }
  const int32_t* colsum = reinterpret_cast<const int32_t*>(wp + K4 * 256);
  QK_UNROLL
  for (int j = 0; j < 4; ++j) {
    const __m512i cs = _mm512_loadu_si512(colsum + 16 * j);
    QK_UNROLL
    for (int r = 0; r < MR; ++r) _mm512_storeu_si512(acc[r] + 16 * j, _mm512_sub_epi32(c[r][j], cs));
  }
}

void gemm_w8a8_avx512(const W8A8Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  const int64_t K4 = round_up(g.K, 4) / 4;
  drive<6, int32_t>(m0, m1, p0, p1, g.w, w8a8_panel_bytes(g.K), [&](auto R, int64_t m, const uint8_t* wp,
                                                                    int32_t acc[][kPanelN]) {
    gemm_u8s8s32_mrx64_avx512vnni<R>(g.a + m * g.lda, g.lda, reinterpret_cast<const int8_t*>(wp), K4, acc);
  }, w8a8_epilogue(g));
}

// ---- W8A16: gemm_f32s8f32_mrx64_avx512 --------------------------------------------------------
// Per k: the panel row w[k][0..63] (64 bytes) widens to 4 zmm of fp32 (w0..w3), shared by the
// MR rows: c[r][j] += broadcast(x[r][k]) * wj. MR x 4 fp32 accumulators (MR <= 6).
template <int MR>
QK_UKERNEL void gemm_f32s8f32_mrx64_avx512(const float* x, int64_t ldx, const int8_t* wp, int64_t K,
                          float acc[][kPanelN]) {
  const int64_t pf = tuning().prefetch_distance;
  __m512 c[MR][4];
  QK_UNROLL
  for (int r = 0; r < MR; ++r)
    QK_UNROLL
    for (int j = 0; j < 4; ++j) c[r][j] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    const int8_t* w = wp + k * kPanelN;
    prefetch_lines(w, pf, 64);
    __m512 wv[4];
    QK_UNROLL
    for (int j = 0; j < 4; ++j)
      wv[j] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 16 * j))));
    QK_UNROLL
    for (int r = 0; r < MR; ++r) {
      const __m512 b = _mm512_set1_ps(x[r * ldx + k]);
      QK_UNROLL
      for (int j = 0; j < 4; ++j) c[r][j] = _mm512_fmadd_ps(b, wv[j], c[r][j]);
    }
  }
  QK_UNROLL
  for (int r = 0; r < MR; ++r)
    QK_UNROLL
    for (int j = 0; j < 4; ++j) _mm512_storeu_ps(acc[r] + 16 * j, c[r][j]);
}

void gemm_w8a16_avx512(const W8A16Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  drive<6, float>(m0, m1, p0, p1, g.w, w8a16_panel_bytes(g.K), [&](auto R, int64_t m, const uint8_t* wp,
                                                                   float acc[][kPanelN]) {
    gemm_f32s8f32_mrx64_avx512<R>(static_cast<const float*>(g.x) + m * g.ldx, g.ldx, reinterpret_cast<const int8_t*>(wp), g.K, acc);
  }, w8a16_epilogue(g));
}

}  // namespace

extern const Kernels kernels_avx512_vnni = {Isa::avx512_vnni, true, false, quant_row_f32_avx512,
                                            quant_row_bf16_avx512, gemm_w8a8_avx512, gemm_w8a16_avx512,
                                            gemm_w4a8_avx512, gemm_w4a16_avx512, gemm_s24_float_avx512,
                                            gemm_s24_i8_avx512};

}  // namespace qk
