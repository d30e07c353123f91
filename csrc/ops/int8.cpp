// CPU impls of the int8 ops: per-token quantization, int8 weight packing (W8A8 / W8A16 panel
// layouts), W8A8 (exact int32, fused with the activation quantization) and W8A16 GEMMs.
#include "common.h"

namespace qk_ops {
namespace {

// ---- quantize_per_token_int8(Tensor x) -> (Tensor q, Tensor scale) ----------------------------
std::tuple<Tensor, Tensor> quantize_per_token_int8_cpu(const Tensor& x_in) {
  check_float_input(x_in, "x");
  const Tensor x = (x_in.scalar_type() == at::kHalf ? x_in.to(at::kFloat) : x_in).contiguous();
  const int64_t M = x.size(0), K = x.size(1);
  Tensor q = at::empty({M, K}, x.options().dtype(at::kChar));
  Tensor s = at::empty({M}, x.options().dtype(at::kFloat));
  if (M == 0) return {q, s};
  quantize_rows(active(), x, q.data_ptr<int8_t>(), K, s.data_ptr<float>(), [](int64_t) {});
  return {q, s};
}

// ---- packing: the int8 layouts, W8A8 panels (u8 compensation sums) or W8A16 panels -------------
qk::Layout int8_layout(std::string_view layout) {
  qk::Layout l;
  TORCH_CHECK_VALUE(qk::layout_from_name(std::string(layout).c_str(), &l) &&
                        (l == qk::Layout::int8_w8a8_panels || l == qk::Layout::int8_w8a16_panels),
                    "layout: the CPU int8 layouts are 'int8_w8a8_panels' and 'int8_w8a16_panels', got '", layout, "'");
  return l;
}

Tensor pack_int8_cpu(const Tensor& w_in, std::string_view layout) {
  const qk::Layout l = int8_layout(layout);
  check_cpu(w_in, "w");
  TORCH_CHECK_TYPE(w_in.scalar_type() == at::kChar, "w must be int8, got ", w_in.scalar_type());
  TORCH_CHECK_VALUE(w_in.dim() == 2 && w_in.size(0) >= 1 && w_in.size(1) >= 1, "w must be 2-D [N, K], got shape ",
                    w_in.sizes());
  TORCH_CHECK_VALUE(w_in.min().item<int8_t>() >= -127, "w must hold values in [-127, 127] (symmetric int8); found -128");
  const Tensor w = w_in.contiguous();
  const int64_t N = w.size(0), K = w.size(1);
  Tensor out = empty_packed(l, w, N, K);
  (l == qk::Layout::int8_w8a8_panels ? qk::pack_w8a8 : qk::pack_w8a16)(w.data_ptr<int8_t>(), N, K,
                                                                         out.data_ptr<int8_t>());
  return out;
}

Tensor unpack_int8_cpu(const Tensor& packed, std::string_view layout, int64_t N, int64_t K) {
  const qk::Layout l = int8_layout(layout);
  TORCH_CHECK_VALUE(N >= 1 && K >= 1, "N and K must be >= 1, got N=", N, " K=", K);
  check_packed(packed, std::string(layout), l, N, K);
  Tensor w = at::empty({N, K}, packed.options());
  (l == qk::Layout::int8_w8a8_panels ? qk::unpack_w8a8 : qk::unpack_w8a16)(packed.contiguous().data_ptr<int8_t>(),
                                                                             N, K, w.data_ptr<int8_t>());
  return w;
}

// ---- W8A8 -----------------------------------------------------------------------------------------
// The weight side of every W8A8 op: exact-int32 K limit, packed layout, scales and bias.
void check_w8a8_weights(const Tensor& w_packed, std::string_view layout, const Tensor& w_scale,
                        const std::optional<Tensor>& bias, int64_t K, int64_t N) {
  checked_n(N);
  TORCH_CHECK_VALUE(K <= qk::kMaxK_w8a8, "K (in_features) must be <= ", qk::kMaxK_w8a8,
                    " for exact int32 accumulation, got ", K);
  check_packed(w_packed, std::string(layout), qk::Layout::int8_w8a8_panels, N, K);
  check_vector(w_scale, N, "w_scale");
  check_vector(bias, N, "bias");
}

// GEMM on prepared activations abuf [M, Kp] into out [M, N].
void run_w8a8(const qk::Kernels& kt, const Tensor& abuf, const Tensor& a_scale, const Tensor& w_packed,
              const Tensor& w_scale, const std::optional<Tensor>& bias, int64_t K, Tensor& out) {
  const Tensor ws = w_scale.contiguous();
  qk::W8A8Args g{abuf.data_ptr<uint8_t>(), abuf.size(1), a_scale.data_ptr<float>(), nullptr, K, out.size(1),
                 ws.data_ptr<float>(), nullptr, nullptr, 0, false};
  run_panels(kt.gemm_w8a8, g, w_packed, bias, out);
}

Tensor w8a8_gemm_cpu(const Tensor& a_in, const Tensor& a_scale_in, const Tensor& w_packed, std::string_view layout,
                     const Tensor& w_scale, const std::optional<Tensor>& bias, int64_t N, at::ScalarType out_dtype) {
  check_cpu(a_in, "a");
  TORCH_CHECK_TYPE(a_in.scalar_type() == at::kChar, "a must be int8, got ", a_in.scalar_type());
  TORCH_CHECK_VALUE(a_in.dim() == 2, "a must be 2-D [M, K], got shape ", a_in.sizes());
  TORCH_CHECK_TYPE(out_dtype == at::kFloat || out_dtype == at::kBFloat16 || out_dtype == at::kHalf,
                   "out_dtype must be float32, bfloat16 or float16, got ", out_dtype);
  const int64_t M = a_in.size(0), K = a_in.size(1), Kp = qk::round_up(K, 4);
  check_cpu(a_scale_in, "a_scale");
  TORCH_CHECK_VALUE(a_scale_in.dim() == 1 && a_scale_in.size(0) == M && a_scale_in.scalar_type() == at::kFloat,
                    "a_scale must be float32 of shape [", M, "], got ", a_scale_in.scalar_type(), " ", a_scale_in.sizes());
  check_w8a8_weights(w_packed, layout, w_scale, bias, K, N);
  if (out_dtype == at::kHalf)  // fp32 epilogue, rounded once to fp16 (as the reference)
    return w8a8_gemm_cpu(a_in, a_scale_in, w_packed, layout, w_scale, bias, N, at::kFloat).to(at::kHalf);
  Tensor out = at::empty({M, N}, a_in.options().dtype(out_dtype));
  if (M == 0) return out;
  const qk::Kernels& kt = active();
  const Tensor a = a_in.contiguous();
  // Activations padded to Kp (and shifted to u8 for vpdpbusd); zero weights cover the padding.
  Tensor abuf = at::empty({M, Kp}, a.options().dtype(at::kByte));
  const int8_t* src = a.data_ptr<int8_t>();
  uint8_t* dst = abuf.data_ptr<uint8_t>();
  at::parallel_for(0, M, std::max<int64_t>(1, 65536 / Kp), [&](int64_t b0, int64_t e0) {
    for (int64_t m = b0; m < e0; ++m) {
      std::memcpy(dst + m * Kp, src + m * K, K);
      finish_int8_row(dst + m * Kp, K, Kp, kt.a_u8);
    }
  });
  run_w8a8(kt, abuf, a_scale_in.contiguous(), w_packed, w_scale, bias, K, out);
  return out;
}

// Fused dynamic W8A8 linear: per-token quantization straight into the GEMM's padded activation
// buffer, then the GEMM; no intermediate int8 tensor. Same numbers as quantize_per_token_int8
// followed by w8a8_gemm.
Tensor w8a8_linear_cpu(const Tensor& x_in, const Tensor& w_packed, std::string_view layout, const Tensor& w_scale,
                       const std::optional<Tensor>& bias, int64_t N, const std::optional<Tensor>& input_scale, const std::optional<Tensor>& act_scale) {
  check_float_input(x_in, "x");
  const int64_t M = x_in.size(0), K = x_in.size(1), Kp = qk::round_up(K, 4);
  check_w8a8_weights(w_packed, layout, w_scale, bias, K, N);
  Tensor hold;
  const ActPrep prep = act_prep(input_scale, act_scale, K, true, hold);
  Tensor out = at::empty({M, N}, x_in.options());
  if (M == 0) return out;
  const qk::Kernels& kt = active();
  const Tensor x = x_in.contiguous();
  Tensor abuf = at::empty({M, Kp}, x.options().dtype(at::kByte));
  Tensor a_scale = at::empty({M}, x.options().dtype(at::kFloat));
  uint8_t* dst = abuf.data_ptr<uint8_t>();
  quantize_rows(kt, x, reinterpret_cast<int8_t*>(dst), Kp, a_scale.data_ptr<float>(),
                [&](int64_t m) { finish_int8_row(dst + m * Kp, K, Kp, kt.a_u8); }, prep);
  run_w8a8(kt, abuf, a_scale, w_packed, w_scale, bias, K, out);
  return out;
}

// ---- W8A16: fp32 accumulation over fp32 (or widened bf16) activations ------------------------------
Tensor w8a16_linear_cpu(const Tensor& x_in, const Tensor& w_packed, std::string_view layout, const Tensor& w_scale,
                        const std::optional<Tensor>& bias, int64_t N, const std::optional<Tensor>& input_scale, const std::optional<Tensor>& act_scale) {
  check_float_input(x_in, "x");
  checked_n(N);
  const int64_t M = x_in.size(0), K = x_in.size(1);
  check_packed(w_packed, std::string(layout), qk::Layout::int8_w8a16_panels, N, K);
  check_vector(w_scale, N, "w_scale");
  check_vector(bias, N, "bias");
  Tensor hold;
  const ActPrep prep = act_prep(input_scale, act_scale, K, false, hold);
  Tensor out = at::empty({M, N}, x_in.options());
  if (M == 0) return out;
  const Tensor ws = w_scale.contiguous();
  if (auto gemm = bf16_dot_kernel(x_in, prep.input_scale, &qk::ExtKernels::gemm_w8a16_bf16)) {
    const Tensor x = bf16_rows(x_in, qk::round_up(K, 2));  // bf16 rows of an even length
    qk::W8A16Args g{x.data_ptr(), x.size(1), nullptr, K, N, ws.data_ptr<float>(), nullptr, nullptr, 0, false};
    run_panels(gemm, g, w_packed, bias, out);
    return out;
  }
  // fp32 rows: x itself (fp32), or widened / scaled by input_scale in one pass
  const Tensor x = prep.input_scale ? float_rows(x_in, K, prep.input_scale) : x_in.to(at::kFloat).contiguous();
  qk::W8A16Args g{x.data_ptr<float>(), K, nullptr, K, N, ws.data_ptr<float>(), nullptr, nullptr, 0, false};
  run_panels(active().gemm_w8a16, g, w_packed, bias, out);
  return out;
}

}  // namespace
}  // namespace qk_ops

TORCH_LIBRARY_IMPL(qkernels, CPU, m) {
  using namespace qk_ops;
  m.impl("quantize_per_token_int8", &quantize_per_token_int8_cpu);
  m.impl("pack_int8", &pack_int8_cpu);
  m.impl("unpack_int8", &unpack_int8_cpu);
  m.impl("w8a8_gemm", &w8a8_gemm_cpu);
  m.impl("w8a8_linear", QK_FP16_VIA_FP32(w8a8_linear_cpu));
  m.impl("w8a16_linear", QK_FP16_VIA_FP32(w8a16_linear_cpu));
}
