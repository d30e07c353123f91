// What the CPU op files (int8.cpp, int4.cpp, sparse24.cpp) share: argument checks, the packed
// layout check, activation preparation (per-token int8 rows, fp32 rows), the (row chunk x panel)
// task split, and the float16 wrapper. The op layer is the only code that sees torch tensors.
#pragma once
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "../kernels/kernels.h"

namespace qk_ops {

using at::Tensor;

void check_cpu(const Tensor& t, const char* name);
// x: 2-D [M, K], float32 / bfloat16 / float16.
void check_float_input(const Tensor& x, const char* name);
int64_t checked_n(int64_t N);
// An optional fp32 [N] (bias) or a required one (scales).
void check_vector(const std::optional<Tensor>& t, int64_t N, const char* name);
// The packed weight is the CPU layout `layout` names and has its shape for N outputs and K inputs.
void check_packed(const Tensor& wp, const std::string& layout, qk::Layout expect, int64_t N, int64_t K,
                  int64_t group_size = 0, int64_t esize = 0);
// A new packed tensor of `layout`'s shape (int8 for the int8 layouts, uint8 otherwise).
Tensor empty_packed(qk::Layout layout, const Tensor& like, int64_t N, int64_t K, int64_t group_size = 0,
                    int64_t esize = 0);
// int4 group geometry with its checks (K limit, group_size a multiple of 8 unless it covers K).
qk::W4Geom w4_geometry(int64_t K, int64_t group_size);

inline const qk::Kernels& active() { return qk::kernels(qk::active_isa()); }

// The bf16-dot kernel of the active path for activations x, or nullptr: the path has the extension
// on this CPU, x is bf16, there is no input_scale (its product with x is not a bf16 value) and M
// reaches tuning().bf16_dot_min_batch (below it the fp32 kernels, which convert each weight in
// registers with fewer instructions, decode faster; both keep the same contract and bound).
template <typename Args>
using GemmFn = void (*)(const Args&, int64_t, int64_t, int64_t, int64_t);
template <typename Args>
GemmFn<Args> bf16_dot_kernel(const Tensor& x, bool input_scale, GemmFn<Args> qk::ExtKernels::*entry) {
  if (x.scalar_type() != at::kBFloat16 || input_scale || x.size(0) < qk::tuning().bf16_dot_min_batch) return nullptr;
  const qk::ExtKernels* ext = qk::ext_kernels(qk::active_isa());
  return ext ? ext->*entry : nullptr;
}

// The calibrated activation preparation (SmoothQuant / AWQ / static scales): x times a per-input-
// channel scale (input_scale fp32 [K], null: none) and, for int8 activations, one static
// per-tensor scale instead of each row's amax / 127 (static_scale > 0; 0: dynamic).
struct ActPrep {
  const float* input_scale = nullptr;
  float static_scale = 0.0f;
  bool plain() const { return input_scale == nullptr && static_scale == 0.0f; }
};
// Checks input_scale (fp32 [K], finite) and act_scale (fp32 [1], finite, > 0; only when
// int8_acts) and returns the preparation; `hold` keeps a contiguous input_scale alive.
ActPrep act_prep(const std::optional<Tensor>& input_scale, const std::optional<Tensor>& act_scale, int64_t K,
                 bool int8_acts, Tensor& hold);
// One row of x (fp32 or bf16) times input_scale, then int8 with the static scale: q = clamp(
// nearbyint(v / s), -127, 127), the row's scale s (NaN when the row holds a NaN, whose q are 0).
void quant_row_prepared(const qk::Kernels& kt, const void* x, bool bf16, int64_t K, const ActPrep& prep,
                        float* tmp, int8_t* dst, float* scale);

// An int8 activation row (already at its place in a padded buffer) as a kernel reads it: with
// to_u8 each byte + 128 (u8; the kernels compensate with the weights' column sums), then padded
// from K to Kp with the byte of a = 0.
void finish_int8_row(uint8_t* row, int64_t K, int64_t Kp, bool to_u8);

// Quantize each row m of x (fp32 or bf16, contiguous [M, K]) to int8 at dst + m * ld with its
// scale, then call after_row(m) while the row is still in cache. With a preparation (input_scale,
// static scale) the row is scaled into a row buffer on the way (quant_row_prepared).
template <typename AfterRow>
void quantize_rows(const qk::Kernels& kt, const Tensor& x, int8_t* dst, int64_t ld, float* scale,
                   AfterRow after_row, const ActPrep& prep = ActPrep{}) {
  const int64_t M = x.size(0), K = x.size(1);
  const bool bf16 = x.scalar_type() == at::kBFloat16;
  const void* xp = x.data_ptr();
  const size_t esize = bf16 ? 2 : 4;
  at::parallel_for(0, M, std::max<int64_t>(1, 16384 / std::max<int64_t>(K, 1)), [&](int64_t b, int64_t e) {
    std::vector<float> tmp(prep.plain() ? 0 : K);
    for (int64_t m = b; m < e; ++m) {
      const void* row = static_cast<const char*>(xp) + m * K * esize;
      if (!prep.plain())
        quant_row_prepared(kt, row, bf16, K, prep, tmp.data(), dst + m * ld, scale + m);
      else if (bf16)
        kt.quant_row_bf16(static_cast<const uint16_t*>(row), K, dst + m * ld, scale + m);
      else
        kt.quant_row_f32(static_cast<const float*>(row), K, dst + m * ld, scale + m);
      after_row(m);
    }
  });
}

// Float activations (fp32 or bf16, [M, K]) as fp32 rows [M, Kp] padded with zeros, one pass per row.
// With input_scale (fp32 [K]) each value is multiplied by its channel's scale in the same pass.
Tensor float_rows(const Tensor& x, int64_t Kp, const float* input_scale = nullptr);
// bf16 activations [M, K] as rows of Kp >= K values padded with zeros (x itself when Kp = K).
Tensor bf16_rows(const Tensor& x, int64_t Kp);

// Tasks are (row chunk, panel range) pairs; each output element is computed by exactly one task
// with a fixed reduction order, so results depend neither on the thread count nor on the split.
// A task keeps its panel hot in cache across all its rows, so rows are split only when there are
// too few panels to give every thread several tasks.
template <typename F>
void parallel_tiles(int64_t M, int64_t P, F&& f) {
  constexpr int64_t kMr = 12;  // a multiple of every microkernel's MR (6, 4, 2, 1)
  const int64_t want = 4 * at::get_num_threads();
  int64_t mchunks = P >= want ? 1 : std::min((want + P - 1) / P, (M + kMr - 1) / kMr);
  const int64_t mc = qk::round_up((M + mchunks - 1) / mchunks, kMr);
  mchunks = (M + mc - 1) / mc;
  at::parallel_for(0, mchunks * P, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e;) {  // consecutive panels of one row chunk go in one call
      const int64_t c = t / P, p = t % P, pe = std::min(P, p + (e - t));
      f(c * mc, std::min(M, (c + 1) * mc), p, pe);
      t += pe - p;
    }
  });
}

// Runs a packed-panel GEMM over row chunks x panels into out [M, N]; g is the kernel's argument
// struct with everything but the weight, bias and output filled in.
template <typename Args>
void run_panels(void (*gemm)(const Args&, int64_t, int64_t, int64_t, int64_t), Args g, const Tensor& w_packed,
                const std::optional<Tensor>& bias, Tensor& out) {
  const Tensor wp = w_packed.contiguous();
  std::optional<Tensor> b;
  if (bias) b = bias->contiguous();
  g.w = static_cast<decltype(g.w)>(wp.data_ptr());
  g.bias = b ? b->data_ptr<float>() : nullptr;
  g.out = out.data_ptr();
  g.ldo = out.size(1);
  g.out_bf16 = out.scalar_type() == at::kBFloat16;
  parallel_tiles(out.size(0), wp.size(0), [&](int64_t m0, int64_t m1, int64_t p0, int64_t p1) { gemm(g, m0, m1, p0, p1); });
}

// float16 activations: the kernels read fp32 or bf16, so an op on fp16 x runs on x.float() (exact)
// and its fp32 result is rounded once to fp16. Wraps an op whose first argument is x.
template <typename Sig, Sig* Op>
struct ViaFp32;
template <typename... Rest, Tensor (*Op)(const Tensor&, Rest...)>
struct ViaFp32<Tensor(const Tensor&, Rest...), Op> {
  static Tensor run(const Tensor& x, Rest... rest) {
    if (x.scalar_type() != at::kHalf) return Op(x, rest...);
    return Op(x.to(at::kFloat), rest...).to(at::kHalf);
  }
};
#define QK_FP16_VIA_FP32(fn) &::qk_ops::ViaFp32<decltype(fn), fn>::run

}  // namespace qk_ops
