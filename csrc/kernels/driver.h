// The row x panel loop every ISA's GEMM shares: a microkernel fills int32/fp32 accumulators for
// up to MR rows of one 64-column panel, then the shared epilogue (epilogue.h) writes them out.
#pragma once
#include <type_traits>

#include "epilogue.h"
#include "kernels.h"

namespace qk {
namespace {  // per translation unit: each ISA instantiates its own copy with its own flags

// uk(mr, a_rows, lda, panel, K4, acc) computes acc[r][n] = sum_k a[r][k] * w[n][k] exactly
// (shift compensation included) for r < mr.
template <int MR, typename Ukernel>
inline void drive_w8a8(const W8A8Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1, Ukernel uk) {
  const int64_t K4 = round_up(g.K, 4) / 4, pb = w8a8_panel_bytes(g.K);
  alignas(64) int32_t acc[MR][kPanelN];
  for (int64_t p = p0; p < p1; ++p) {
    const int8_t* wp = g.w + p * pb;
    const int64_t cols = panel_cols(g.N, p);
    for (int64_t m = m0; m < m1; m += MR) {
      const int mr = int(m1 - m < MR ? m1 - m : MR);
      uk(mr, g.a + m * g.lda, g.lda, wp, K4, acc);
      for (int r = 0; r < mr; ++r)
        epilogue_w8a8(acc[r], g.a_scale[m + r], g.w_scale + p * kPanelN,
                      g.bias ? g.bias + p * kPanelN : nullptr, cols,
                      out_row(g.out, g.ldo, m + r, p * kPanelN, g.out_bf16), g.out_bf16);
    }
  }
}

// uk(mr, x_rows, ldx, panel, K, acc) computes acc[r][n] = sum_k x[r][k] * w[n][k] in fp32.
template <int MR, typename Ukernel>
inline void drive_w8a16(const W8A16Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1, Ukernel uk) {
  alignas(64) float acc[MR][kPanelN];
  for (int64_t p = p0; p < p1; ++p) {
    const int8_t* wp = g.w + p * w8a16_panel_bytes(g.K);
    const int64_t cols = panel_cols(g.N, p);
    for (int64_t m = m0; m < m1; m += MR) {
      const int mr = int(m1 - m < MR ? m1 - m : MR);
      uk(mr, g.x + m * g.ldx, g.ldx, wp, g.K, acc);
      for (int r = 0; r < mr; ++r)
        epilogue_w8a16(acc[r], g.w_scale + p * kPanelN, g.bias ? g.bias + p * kPanelN : nullptr,
                       cols, out_row(g.out, g.ldo, m + r, p * kPanelN, g.out_bf16), g.out_bf16);
    }
  }
}

// uk(mr, m, panel, acc) computes acc[r][n] = the per-group fp32 sum y of row m + r (see W4Args)
// for r < mr; the epilogue then applies a_scale (W4A8 only), bias and the output cast.
template <int MR, bool A8, typename Ukernel>
inline void drive_w4(const W4Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1, Ukernel uk) {
  alignas(64) float acc[MR][kPanelN];
  for (int64_t p = p0; p < p1; ++p) {
    const uint8_t* wp = g.w + p * w4_panel_bytes(g.G, g.gk);
    const int64_t cols = panel_cols(g.N, p);
    for (int64_t m = m0; m < m1; m += MR) {
      const int mr = int(m1 - m < MR ? m1 - m : MR);
      uk(mr, m, wp, acc);
      for (int r = 0; r < mr; ++r)
        epilogue_w4(acc[r], A8 ? g.a_scale + m + r : nullptr, g.bias ? g.bias + p * kPanelN : nullptr,
                    cols, out_row(g.out, g.ldo, m + r, p * kPanelN, g.out_bf16), g.out_bf16);
    }
  }
}

// uk(mr, m, panel, acc) fills acc[r][n] for rows m + r < m + mr of one 2:4 panel: fp32 sums
// (float values) or exact int32 sums (I8); the epilogue adds bias / applies the W8A8 scales.
template <int MR, bool I8, typename Ukernel>
inline void drive_s24(const S24Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1, Ukernel uk) {
  using Acc = std::conditional_t<I8, int32_t, float>;
  alignas(64) Acc acc[MR][kPanelN];
  const int64_t pb = s24_panel_bytes(g.K, I8 ? 1 : (g.values_bf16 ? 2 : 4));
  for (int64_t p = p0; p < p1; ++p) {
    const uint8_t* wp = g.w + p * pb;
    const int64_t cols = panel_cols(g.N, p);
    const float* bias = g.bias ? g.bias + p * kPanelN : nullptr;
    for (int64_t m = m0; m < m1; m += MR) {
      const int mr = int(m1 - m < MR ? m1 - m : MR);
      uk(mr, m, wp, acc);
      for (int r = 0; r < mr; ++r) {
        void* out = out_row(g.out, g.ldo, m + r, p * kPanelN, g.out_bf16);
        if constexpr (I8)
          epilogue_w8a8(acc[r], g.a_scale[m + r], g.w_scale + p * kPanelN, bias, cols, out, g.out_bf16);
        else
          epilogue_w4(acc[r], nullptr, bias, cols, out, g.out_bf16);
      }
    }
  }
}

// Shared by every ISA's W4 kernels: one group's correction and fp32 accumulation, in the
// contract's order: y = y + float(acc - zz * asum) * scale (no FMA: -ffp-contract=off).
inline void w4a8_group_scalar(const int32_t* acc, int32_t asum, const uint8_t* zz, const float* scale,
                              float* y, int64_t count) {
  for (int64_t n = 0; n < count; ++n) {
    const float t = static_cast<float>(acc[n] - int32_t(zz[n]) * asum) * scale[n];
    y[n] = y[n] + t;
  }
}

}  // namespace
}  // namespace qk
