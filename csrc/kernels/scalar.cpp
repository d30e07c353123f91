// Scalar path: plain C++ on the same packed layouts (kernels.h), one row at a time. The last
// fallback on x86, the only path elsewhere, and the plainest statement of each layout.
#include "driver.h"
#include "kernels.h"

namespace qk {
namespace {

void quant_row_f32_scalar(const float* x, int64_t K, int8_t* q, float* scale) {
  quant_row_scalar([x](int64_t k) { return x[k]; }, K, q, scale);
}

void quant_row_bf16_scalar(const uint16_t* x, int64_t K, int8_t* q, float* scale) {
  quant_row_scalar([x](int64_t k) { return bf16_to_f32(x[k]); }, K, q, scale);
}

// W8A8 with signed activations (a_u8 = false): no column-sum compensation.
void gemm_w8a8_scalar(const W8A8Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  const int64_t K4 = round_up(g.K, 4) / 4;
  drive<1, int32_t>(m0, m1, p0, p1, g.w, w8a8_panel_bytes(g.K), [&](auto, int64_t m, const uint8_t* w8,
                                                                    int32_t acc[][kPanelN]) {
    const int8_t* a = reinterpret_cast<const int8_t*>(g.a + m * g.lda);
    const int8_t* wp = reinterpret_cast<const int8_t*>(w8);
    for (int64_t n = 0; n < kPanelN; ++n) acc[0][n] = 0;
    for (int64_t k4 = 0; k4 < K4; ++k4)
      for (int64_t n = 0; n < kPanelN; ++n)
        for (int j = 0; j < 4; ++j) acc[0][n] += int32_t(a[4 * k4 + j]) * int32_t(wp[k4 * 256 + n * 4 + j]);
  }, w8a8_epilogue(g));
}

void gemm_w8a16_scalar(const W8A16Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  drive<1, float>(m0, m1, p0, p1, g.w, w8a16_panel_bytes(g.K), [&](auto, int64_t m, const uint8_t* w8,
                                                                   float acc[][kPanelN]) {
    const float* x = static_cast<const float*>(g.x) + m * g.ldx;
    const int8_t* wp = reinterpret_cast<const int8_t*>(w8);
    for (int64_t n = 0; n < kPanelN; ++n) acc[0][n] = 0.0f;
    for (int64_t k = 0; k < g.K; ++k)
      for (int64_t n = 0; n < kPanelN; ++n) acc[0][n] += x[k] * float(wp[k * kPanelN + n]);
  }, w8a16_epilogue(g));
}

// W4: u[k] of column n in a group block (layout in kernels.h).
inline int w4_u(const uint8_t* blk, int64_t kk, int64_t n) {
  const uint8_t b = blk[(kk / 8) * 256 + n * 4 + (kk % 4)];
  return (kk % 8) >= 4 ? b >> 4 : b & 0xf;
}

void gemm_w4a8_scalar(const W4Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  drive<1, float>(m0, m1, p0, p1, g.w, w4_panel_bytes(g.G, g.gk), [&](auto, int64_t m, const uint8_t* wp,
                                                                      float acc[][kPanelN]) {
    const int8_t* a = static_cast<const int8_t*>(g.a) + m * g.lda;
    for (int64_t n = 0; n < kPanelN; ++n) acc[0][n] = 0.0f;
    for (int64_t grp = 0; grp < g.G; ++grp) {
      const uint8_t* blk = wp + grp * w4_group_bytes(g.gk);
      int32_t c[kPanelN] = {0};
      for (int64_t kk = 0; kk < g.gk; ++kk)
        for (int64_t n = 0; n < kPanelN; ++n) c[n] += int32_t(a[grp * g.gk + kk]) * w4_u(blk, kk, n);
      w4a8_group_scalar(c, g.asum[m * g.G + grp], blk + 32 * g.gk + 4 * kPanelN,
                        reinterpret_cast<const float*>(blk + 32 * g.gk), acc[0], kPanelN);
    }
  }, w4_epilogue<true>(g));
}

void gemm_w4a16_scalar(const W4Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  drive<1, float>(m0, m1, p0, p1, g.w, w4_panel_bytes(g.G, g.gk), [&](auto, int64_t m, const uint8_t* wp,
                                                                      float acc[][kPanelN]) {
    const float* x = static_cast<const float*>(g.a) + m * g.lda;
    for (int64_t n = 0; n < kPanelN; ++n) acc[0][n] = 0.0f;
    for (int64_t grp = 0; grp < g.G; ++grp) {
      const uint8_t* blk = wp + grp * w4_group_bytes(g.gk);
      const float* scale = reinterpret_cast<const float*>(blk + 32 * g.gk);
      const uint8_t* zz = blk + 32 * g.gk + 4 * kPanelN;
      float d[kPanelN] = {0};
      for (int64_t kk = 0; kk < g.gk; ++kk)
        for (int64_t n = 0; n < kPanelN; ++n) d[n] += x[grp * g.gk + kk] * float(w4_u(blk, kk, n) - zz[n]);
      for (int64_t n = 0; n < kPanelN; ++n) acc[0][n] += d[n] * scale[n];
    }
  }, w4_epilogue<false>(g));
}

// 2:4: the two kept positions of group gl (0..7) of a block's column c, from its meta word.
inline void s24_idx(const uint8_t* blk, int64_t c, int gl, int* i0, int* i1) {
  uint32_t m;
  std::memcpy(&m, blk + 4 * c, 4);
  *i0 = (m >> (2 * gl)) & 3;
  *i1 = (m >> (16 + 2 * gl)) & 3;
}

void gemm_s24_float_scalar(const S24Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  const int64_t esize = g.values_bf16 ? 2 : 4, nblk = round_up(g.K, kS24BlockK) / kS24BlockK;
  drive<1, float>(m0, m1, p0, p1, g.w, s24_panel_bytes(g.K, esize), [&](auto, int64_t m, const uint8_t* wp,
                                                                        float acc[][kPanelN]) {
    const float* x = static_cast<const float*>(g.a) + m * g.lda;
    for (int64_t c = 0; c < kPanelN; ++c) acc[0][c] = 0.0f;
    for (int64_t b = 0; b < nblk; ++b) {
      const uint8_t* blk = wp + b * s24_block_bytes(esize);
      for (int gl = 0; gl < 8; ++gl)
        for (int64_t c = 0; c < kPanelN; ++c) {
          int i[2];
          s24_idx(blk, c, gl, &i[0], &i[1]);
          for (int t = 0; t < 2; ++t) {
            const uint8_t* vp = blk + 4 * kPanelN + (gl * 4 + c / 16) * 32 * esize;
            float v;
            if (esize == 4) {
              std::memcpy(&v, vp + (t * 16 + c % 16) * 4, 4);
            } else {
              uint16_t h;
              std::memcpy(&h, vp + ((c % 16) * 2 + t) * 2, 2);
              v = bf16_to_f32(h);
            }
            acc[0][c] += v * x[b * kS24BlockK + 4 * gl + i[t]];
          }
        }
    }
  }, s24_epilogue<false>(g));
}

void gemm_s24_i8_scalar(const S24Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  const int64_t nblk = round_up(g.K, kS24BlockK) / kS24BlockK;
  drive<1, int32_t>(m0, m1, p0, p1, g.w, s24_panel_bytes(g.K, 1), [&](auto, int64_t m, const uint8_t* wp,
                                                                      int32_t acc[][kPanelN]) {
    const int16_t* a = static_cast<const int16_t*>(g.a) + m * g.lda;
    for (int64_t c = 0; c < kPanelN; ++c) acc[0][c] = 0;
    for (int64_t b = 0; b < nblk; ++b) {
      const uint8_t* blk = wp + b * s24_block_bytes(1);
      for (int gl = 0; gl < 8; ++gl)
        for (int64_t c = 0; c < kPanelN; ++c) {
          int i[2];
          s24_idx(blk, c, gl, &i[0], &i[1]);
          const int8_t* vp = reinterpret_cast<const int8_t*>(blk + 4 * kPanelN + (gl * 4 + c / 16) * 32);
          for (int t = 0; t < 2; ++t) acc[0][c] += int32_t(vp[(c % 16) * 2 + t]) * a[b * kS24BlockK + 4 * gl + i[t]];
        }
    }
  }, s24_epilogue<true>(g));
}

}  // namespace

extern const Kernels kernels_scalar = {Isa::scalar, false, false, quant_row_f32_scalar, quant_row_bf16_scalar,
                                       gemm_w8a8_scalar, gemm_w8a16_scalar, gemm_w4a8_scalar,
                                       gemm_w4a16_scalar, gemm_s24_float_scalar, gemm_s24_i8_scalar};

}  // namespace qk
