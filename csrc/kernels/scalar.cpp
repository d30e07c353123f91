// Portable scalar kernels: the last fallback, and the plainest statement of each packed layout.
#include "epilogue.h"
#include "kernels.h"

namespace qk {
namespace {

void quant_row_f32_scalar(const float* x, int64_t K, int8_t* q, float* scale) {
  quant_row_scalar([x](int64_t k) { return x[k]; }, K, q, scale);
}

void quant_row_bf16_scalar(const uint16_t* x, int64_t K, int8_t* q, float* scale) {
  quant_row_scalar([x](int64_t k) { return bf16_to_f32(x[k]); }, K, q, scale);
}

// Signed activations (a_u8 = false), so no colsum compensation is needed.
void gemm_w8a8_scalar(const W8A8Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  const int64_t K4 = round_up(g.K, 4) / 4, pb = w8a8_panel_bytes(g.K);
  for (int64_t p = p0; p < p1; ++p) {
    const int8_t* wp = g.w + p * pb;
    const int64_t cols = panel_cols(g.N, p);
    for (int64_t m = m0; m < m1; ++m) {
      const int8_t* a = reinterpret_cast<const int8_t*>(g.a + m * g.lda);
      int32_t acc[kPanelN] = {0};
      for (int64_t k4 = 0; k4 < K4; ++k4)
        for (int64_t n = 0; n < kPanelN; ++n)
          for (int j = 0; j < 4; ++j)
            acc[n] += int32_t(a[4 * k4 + j]) * int32_t(wp[k4 * 256 + n * 4 + j]);
      epilogue_w8a8(acc, g.a_scale[m], g.w_scale + p * kPanelN, g.bias ? g.bias + p * kPanelN : nullptr,
                    cols, out_row(g.out, g.ldo, m, p * kPanelN, g.out_bf16), g.out_bf16);
    }
  }
}

void gemm_w8a16_scalar(const W8A16Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  for (int64_t p = p0; p < p1; ++p) {
    const int8_t* wp = g.w + p * w8a16_panel_bytes(g.K);
    const int64_t cols = panel_cols(g.N, p);
    for (int64_t m = m0; m < m1; ++m) {
      const float* x = g.x + m * g.ldx;
      float acc[kPanelN] = {0};
      for (int64_t k = 0; k < g.K; ++k)
        for (int64_t n = 0; n < kPanelN; ++n) acc[n] += x[k] * float(wp[k * kPanelN + n]);
      epilogue_w8a16(acc, g.w_scale + p * kPanelN, g.bias ? g.bias + p * kPanelN : nullptr, cols,
                     out_row(g.out, g.ldo, m, p * kPanelN, g.out_bf16), g.out_bf16);
    }
  }
}

}  // namespace

const Kernels kScalarKernels = {Isa::scalar, false, quant_row_f32_scalar, quant_row_bf16_scalar,
                                gemm_w8a8_scalar, gemm_w8a16_scalar};

}  // namespace qk
