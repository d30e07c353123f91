// Autograd for the qkernels linear ops and the dequantize ops their backward uses (device-agnostic:
// they reach the CPU kernels or the Triton CUDA impls through the dispatcher).
//
// Every linear op y = op(x, weights...) has dL/dx = dL/dy @ W, W the dequantized weight [N, K] in
// fp32 (the weights are frozen: no gradient for them). The autograd kernels are C++ so that a call
// that needs no gradient costs one redispatch, not a trip through Python.
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>

namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

template <typename Sig>
c10::TypedOperatorHandle<Sig> op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

// ---- dequantized weights (CompositeImplicitAutograd: unpack op + ATen, on any device) ----------
Tensor dequantize_w8(const Tensor& w_packed, const Tensor& w_scale, int64_t N, int64_t K, bool act8) {
  static auto u8a8 = op<Tensor(const Tensor&, c10::SymInt, c10::SymInt)>("qkernels::unpack_w8a8");
  static auto u8a16 = op<Tensor(const Tensor&, c10::SymInt, c10::SymInt)>("qkernels::unpack_w8a16");
  const Tensor w = (act8 ? u8a8 : u8a16).call(w_packed, N, K);
  return w.to(at::kFloat) * w_scale.to(at::kFloat).unsqueeze(1);
}

// (u - zz) * scale per group: symmetric weights are stored as u = q + 8 with zz = 8.
Tensor dequantize_w4(const Tensor& w_packed, int64_t N, int64_t K, int64_t group_size) {
  static auto unpack = op<std::tuple<Tensor, Tensor, Tensor>(const Tensor&, c10::SymInt, c10::SymInt, c10::SymInt, bool)>(
      "qkernels::unpack_w4");
  auto [u2, scale, zz] = unpack.call(w_packed, N, K, group_size, false);
  const Tensor u = at::stack({u2.bitwise_and(0xF), u2.bitwise_right_shift(4)}, -1).reshape({N, -1}).slice(1, 0, K);
  const int64_t g = std::min(group_size, K);
  const Tensor q = u.to(at::kFloat) - zz.to(at::kFloat).repeat_interleave(g, 1).slice(1, 0, K);
  return q * scale.repeat_interleave(g, 1).slice(1, 0, K);
}

// The dense pruned weight (int8 values times their per-channel scale).
Tensor dequantize_s24(const Tensor& w_packed, const std::optional<Tensor>& w_scale, int64_t N, int64_t K,
                      at::ScalarType value_dtype) {
  static auto unpack = op<std::tuple<Tensor, Tensor>(const Tensor&, c10::SymInt, c10::SymInt, at::ScalarType)>(
      "qkernels::unpack_s24");
  auto [values, meta] = unpack.call(w_packed, N, K, value_dtype);
  const int64_t G = values.size(1) / 2;
  const Tensor m = meta.to(at::kLong);
  const Tensor nib = at::stack({m.bitwise_and(0xF), m.bitwise_right_shift(4)}, -1).reshape({N, -1}).slice(1, 0, G);
  const Tensor idx = at::stack({nib.bitwise_and(3), nib.bitwise_right_shift(2)}, -1);
  const Tensor dense = at::zeros({N, G, 4}, values.options()).scatter(-1, idx, values.reshape({N, G, 2}));
  Tensor w = dense.reshape({N, 4 * G}).slice(1, 0, K).to(at::kFloat);
  if (w_scale) w = w * w_scale->to(at::kFloat).unsqueeze(1);
  return w;
}

// ---- autograd: y = op(x, rest...), dL/dx = dL/dy @ W -------------------------------------------
// Spec: static op() (the typed op), static weight(saved tensors, non-tensor args, K).
Tensor input_grad(const Tensor& grad_y, const Tensor& w, at::ScalarType x_dtype) {
  return at::matmul(grad_y.to(at::kFloat), w).to(x_dtype);
}

void save_shape(AutogradContext* ctx, const Tensor& x) {
  ctx->saved_data["K"] = x.size(1);
  ctx->saved_data["dtype"] = static_cast<int64_t>(x.scalar_type());
}

Tensor finish(AutogradContext* ctx, const Tensor& grad_y, const Tensor& w) {
  return input_grad(grad_y, w, static_cast<at::ScalarType>(ctx->saved_data["dtype"].toInt()));
}

using W8Sig = Tensor(const Tensor&, const Tensor&, const Tensor&, const std::optional<Tensor>&, c10::SymInt);
using W4Sig = Tensor(const Tensor&, const Tensor&, const std::optional<Tensor>&, c10::SymInt, c10::SymInt);
using S24Sig = Tensor(const Tensor&, const Tensor&, const std::optional<Tensor>&, c10::SymInt, at::ScalarType);

// w8a8_linear / w8a16_gemm / s24_w8a8_linear: (x, w_packed, w_scale, bias, N)
template <int Kind>  // 0: W8A8, 1: W8A16, 2: 2:4 int8
struct ScaledFn : public torch::autograd::Function<ScaledFn<Kind>> {
  static const char* name() {
    return Kind == 0 ? "qkernels::w8a8_linear" : Kind == 1 ? "qkernels::w8a16_gemm" : "qkernels::s24_w8a8_linear";
  }
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& w_packed, const Tensor& w_scale,
                        const std::optional<Tensor>& bias, int64_t N) {
    static auto f = op<W8Sig>(name());
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({w_packed, w_scale});
    ctx->saved_data["N"] = N;
    save_shape(ctx, x);
    return f.call(x, w_packed, w_scale, bias, N);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const int64_t N = ctx->saved_data["N"].toInt(), K = ctx->saved_data["K"].toInt();
    const Tensor w = Kind == 2 ? dequantize_s24(s[0], s[1], N, K, at::kChar) : dequantize_w8(s[0], s[1], N, K, Kind == 0);
    return {finish(ctx, grads[0], w), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

// w4a8_linear / w4a16_gemm: (x, w_packed, bias, N, group_size)
template <bool A8>
struct W4Fn : public torch::autograd::Function<W4Fn<A8>> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& w_packed,
                        const std::optional<Tensor>& bias, int64_t N, int64_t group_size) {
    static auto f = op<W4Sig>(A8 ? "qkernels::w4a8_linear" : "qkernels::w4a16_gemm");
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({w_packed});
    ctx->saved_data["N"] = N;
    ctx->saved_data["group_size"] = group_size;
    save_shape(ctx, x);
    return f.call(x, w_packed, bias, N, group_size);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const Tensor w = dequantize_w4(ctx->get_saved_variables()[0], ctx->saved_data["N"].toInt(),
                                   ctx->saved_data["K"].toInt(), ctx->saved_data["group_size"].toInt());
    return {finish(ctx, grads[0], w), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

// s24_linear: (x, w_packed, bias, N, value_dtype)
struct S24Fn : public torch::autograd::Function<S24Fn> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& w_packed,
                        const std::optional<Tensor>& bias, int64_t N, at::ScalarType value_dtype) {
    static auto f = op<S24Sig>("qkernels::s24_linear");
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({w_packed});
    ctx->saved_data["N"] = N;
    ctx->saved_data["value_dtype"] = static_cast<int64_t>(value_dtype);
    save_shape(ctx, x);
    return f.call(x, w_packed, bias, N, value_dtype);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const Tensor w = dequantize_s24(ctx->get_saved_variables()[0], std::nullopt, ctx->saved_data["N"].toInt(),
                                    ctx->saved_data["K"].toInt(),
                                    static_cast<at::ScalarType>(ctx->saved_data["value_dtype"].toInt()));
    return {finish(ctx, grads[0], w), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

template <int Kind>
Tensor scaled_autograd(const Tensor& x, const Tensor& w_packed, const Tensor& w_scale,
                       const std::optional<Tensor>& bias, int64_t N) {
  return ScaledFn<Kind>::apply(x, w_packed, w_scale, bias, N);
}

template <bool A8>
Tensor w4_autograd(const Tensor& x, const Tensor& w_packed, const std::optional<Tensor>& bias, int64_t N,
                   int64_t group_size) {
  return W4Fn<A8>::apply(x, w_packed, bias, N, group_size);
}

Tensor s24_autograd(const Tensor& x, const Tensor& w_packed, const std::optional<Tensor>& bias, int64_t N,
                    at::ScalarType value_dtype) {
  return S24Fn::apply(x, w_packed, bias, N, value_dtype);
}

}  // namespace

TORCH_LIBRARY_IMPL(qkernels, CompositeImplicitAutograd, m) {
  m.impl("dequantize_w8", &dequantize_w8);
  m.impl("dequantize_w4", &dequantize_w4);
  m.impl("dequantize_s24", &dequantize_s24);
}

TORCH_LIBRARY_IMPL(qkernels, Autograd, m) {
  m.impl("w8a8_linear", &scaled_autograd<0>);
  m.impl("w8a16_gemm", &scaled_autograd<1>);
  m.impl("s24_w8a8_linear", &scaled_autograd<2>);
  m.impl("w4a8_linear", &w4_autograd<true>);
  m.impl("w4a16_gemm", &w4_autograd<false>);
  m.impl("s24_linear", &s24_autograd);
}
