// Autograd for the qkernels linear ops, and the dequantize ops their backward uses (device-agnostic:
// the unpack ops reach the CPU kernels or the Triton CUDA impls through the dispatcher).
//
// Every linear op y = op(x, weights...) has dL/dx = dL/dy @ W, W the dequantized weight [N, K] in
// fp32 (the weights are frozen: no gradient for them). The autograd kernels are C++ so that a call
// that needs no gradient costs one redispatch (records_graph below), not a trip through Python.
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <string_view>
#include <type_traits>

namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

template <typename Sig>
c10::TypedOperatorHandle<Sig> op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

// ---- dequantized weights (CompositeImplicitAutograd: unpack op + ATen, on any device) ----------
Tensor dequantize_int8(const Tensor& w_packed, std::string_view layout, const Tensor& w_scale, int64_t N, int64_t K) {
  static auto unpack = op<Tensor(const Tensor&, std::string_view, c10::SymInt, c10::SymInt)>("qkernels::unpack_int8");
  return unpack.call(w_packed, layout, N, K).to(at::kFloat) * w_scale.to(at::kFloat).unsqueeze(1);
}

// (u - zz) * scale per group: symmetric weights are stored as u = q + 8 with zz = 8.
Tensor dequantize_int4(const Tensor& w_packed, std::string_view layout, int64_t N, int64_t K, int64_t group_size) {
  static auto unpack =
      op<std::tuple<Tensor, Tensor, Tensor>(const Tensor&, std::string_view, c10::SymInt, c10::SymInt, c10::SymInt, bool)>(
          "qkernels::unpack_int4");
  auto [u2, scale, zz] = unpack.call(w_packed, layout, N, K, group_size, false);
  const Tensor u = at::stack({u2.bitwise_and(0xF), u2.bitwise_right_shift(4)}, -1).reshape({N, -1}).slice(1, 0, K);
  const int64_t g = std::min(group_size, K);
  const Tensor q = u.to(at::kFloat) - zz.to(at::kFloat).repeat_interleave(g, 1).slice(1, 0, K);
  return q * scale.repeat_interleave(g, 1).slice(1, 0, K);
}

// The dense pruned weight (int8 values times their per-channel scale).
Tensor dequantize_sparse24(const Tensor& w_packed, std::string_view layout, const std::optional<Tensor>& w_scale,
                           int64_t N, int64_t K, at::ScalarType value_dtype) {
  static auto unpack = op<std::tuple<Tensor, Tensor>(const Tensor&, std::string_view, c10::SymInt, c10::SymInt,
                                                     at::ScalarType)>("qkernels::unpack_sparse24");
  auto [values, meta] = unpack.call(w_packed, layout, N, K, value_dtype);
  const int64_t G = values.size(1) / 2;
  const Tensor m = meta.to(at::kLong);
  const Tensor nib = at::stack({m.bitwise_and(0xF), m.bitwise_right_shift(4)}, -1).reshape({N, -1}).slice(1, 0, G);
  const Tensor idx = at::stack({nib.bitwise_and(3), nib.bitwise_right_shift(2)}, -1);
  const Tensor dense = at::zeros({N, G, 4}, values.options()).scatter(-1, idx, values.reshape({N, G, 2}));
  Tensor w = dense.reshape({N, 4 * G}).slice(1, 0, K).to(at::kFloat);
  if (w_scale) w = w * w_scale->to(at::kFloat).unsqueeze(1);
  return w;
}

// ---- autograd: y = op(x, w_packed, layout, rest...), dL/dx = dL/dy @ W --------------------------
void save_common(AutogradContext* ctx, const Tensor& x, std::string_view layout, int64_t N) {
  ctx->saved_data["K"] = x.size(1);
  ctx->saved_data["N"] = N;
  ctx->saved_data["dtype"] = static_cast<int64_t>(x.scalar_type());
  ctx->saved_data["layout"] = std::string(layout);
}

// dL/dx = (dL/dy @ W) * input_scale (the op computes with x * input_scale; a static act_scale's
// rounding passes the gradient straight through, as the dynamic one does).
variable_list input_grad(AutogradContext* ctx, const Tensor& grad_y, const Tensor& w, size_t n_args,
                         const Tensor& input_scale = Tensor()) {
  variable_list out(n_args);
  Tensor g = at::matmul(grad_y.to(at::kFloat), w);
  if (input_scale.defined()) g = g * input_scale.to(at::kFloat).unsqueeze(0);
  out[0] = g.to(static_cast<at::ScalarType>(ctx->saved_data["dtype"].toInt()));
  return out;
}

Tensor defined_or_empty(const std::optional<Tensor>& t) { return t ? *t : Tensor(); }

std::string layout_of(AutogradContext* ctx) { return ctx->saved_data["layout"].toStringRef(); }

using ScaledSig = Tensor(const Tensor&, const Tensor&, std::string_view, const Tensor&, const std::optional<Tensor>&,
                         c10::SymInt, const std::optional<Tensor>&, const std::optional<Tensor>&);
using W4Sig = Tensor(const Tensor&, const Tensor&, std::string_view, const std::optional<Tensor>&, c10::SymInt,
                     c10::SymInt, const std::optional<Tensor>&, const std::optional<Tensor>&);
using S24Sig = Tensor(const Tensor&, const Tensor&, std::string_view, const std::optional<Tensor>&, c10::SymInt,
                      at::ScalarType);

// w8a8_linear / w8a16_linear / s24_w8a8_linear: (x, w_packed, layout, w_scale, bias, N, input_scale, act_scale)
template <int Kind>  // 0: W8A8, 1: W8A16, 2: 2:4 int8
struct ScaledFn : public torch::autograd::Function<ScaledFn<Kind>> {
  static const c10::TypedOperatorHandle<ScaledSig>& kernel() {
    static const auto f = op<ScaledSig>(Kind == 0   ? "qkernels::w8a8_linear"
                                        : Kind == 1 ? "qkernels::w8a16_linear"
                                                    : "qkernels::s24_w8a8_linear");
    return f;
  }
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& w_packed, std::string_view layout,
                        const Tensor& w_scale, const std::optional<Tensor>& bias, int64_t N, const std::optional<Tensor>& input_scale, const std::optional<Tensor>& act_scale) {
    const auto& f = kernel();
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({w_packed, w_scale, defined_or_empty(input_scale)});
    save_common(ctx, x, layout, N);
    return f.call(x, w_packed, layout, w_scale, bias, N, input_scale, act_scale);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const int64_t N = ctx->saved_data["N"].toInt(), K = ctx->saved_data["K"].toInt();
    const std::string layout = layout_of(ctx);
    const Tensor w = Kind == 2 ? dequantize_sparse24(s[0], layout, s[1], N, K, at::kChar)
                               : dequantize_int8(s[0], layout, s[1], N, K);
    return input_grad(ctx, grads[0], w, 8, s[2]);
  }
};

// w4a8_linear / w4a16_linear: (x, w_packed, layout, bias, N, group_size, input_scale, act_scale)
template <bool A8>
struct W4Fn : public torch::autograd::Function<W4Fn<A8>> {
  static const c10::TypedOperatorHandle<W4Sig>& kernel() {
    static const auto f = op<W4Sig>(A8 ? "qkernels::w4a8_linear" : "qkernels::w4a16_linear");
    return f;
  }
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& w_packed, std::string_view layout,
                        const std::optional<Tensor>& bias, int64_t N, int64_t group_size, const std::optional<Tensor>& input_scale, const std::optional<Tensor>& act_scale) {
    const auto& f = kernel();
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({w_packed, defined_or_empty(input_scale)});
    ctx->saved_data["group_size"] = group_size;
    save_common(ctx, x, layout, N);
    return f.call(x, w_packed, layout, bias, N, group_size, input_scale, act_scale);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const Tensor w = dequantize_int4(s[0], layout_of(ctx), ctx->saved_data["N"].toInt(),
                                     ctx->saved_data["K"].toInt(), ctx->saved_data["group_size"].toInt());
    return input_grad(ctx, grads[0], w, 8, s[1]);
  }
};

// s24_linear: (x, w_packed, layout, bias, N, value_dtype)
struct S24Fn : public torch::autograd::Function<S24Fn> {
  static const c10::TypedOperatorHandle<S24Sig>& kernel() {
    static const auto f = op<S24Sig>("qkernels::s24_linear");
    return f;
  }
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& w_packed, std::string_view layout,
                        const std::optional<Tensor>& bias, int64_t N, at::ScalarType value_dtype) {
    const auto& f = kernel();
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({w_packed});
    ctx->saved_data["value_dtype"] = static_cast<int64_t>(value_dtype);
    save_common(ctx, x, layout, N);
    return f.call(x, w_packed, layout, bias, N, value_dtype);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const Tensor w = dequantize_sparse24(ctx->get_saved_variables()[0], layout_of(ctx), std::nullopt,
                                         ctx->saved_data["N"].toInt(), ctx->saved_data["K"].toInt(),
                                         static_cast<at::ScalarType>(ctx->saved_data["value_dtype"].toInt()));
    return input_grad(ctx, grads[0], w, 6);
  }
};

// A call that records no graph (grad mode off, or no tensor argument requires grad: the weights
// are frozen buffers) goes straight to the kernel below autograd. Function::apply would build a node,
// a context and its saved data first and drop them (9 us per call on Zen 3, 1 thread: as much as a
// 512x512 layer's kernel).
template <typename... T>
bool records_graph(const T&... t) {
  if (!at::GradMode::is_enabled()) return false;
  auto req = [](const auto& v) {
    if constexpr (std::is_same_v<std::decay_t<decltype(v)>, Tensor>) return v.defined() && v.requires_grad();
    else return v.has_value() && v->defined() && v->requires_grad();
  };
  return (req(t) || ...);
}

template <int Kind>
Tensor scaled_autograd(const Tensor& x, const Tensor& w_packed, std::string_view layout, const Tensor& w_scale,
                       const std::optional<Tensor>& bias, int64_t N, const std::optional<Tensor>& input_scale, const std::optional<Tensor>& act_scale) {
  if (!records_graph(x, w_packed, w_scale, bias, input_scale, act_scale)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return ScaledFn<Kind>::kernel().call(x, w_packed, layout, w_scale, bias, N, input_scale, act_scale);
  }
  return ScaledFn<Kind>::apply(x, w_packed, layout, w_scale, bias, N, input_scale, act_scale);
}

template <bool A8>
Tensor w4_autograd(const Tensor& x, const Tensor& w_packed, std::string_view layout, const std::optional<Tensor>& bias,
                   int64_t N, int64_t group_size, const std::optional<Tensor>& input_scale, const std::optional<Tensor>& act_scale) {
  if (!records_graph(x, w_packed, bias, input_scale, act_scale)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return W4Fn<A8>::kernel().call(x, w_packed, layout, bias, N, group_size, input_scale, act_scale);
  }
  return W4Fn<A8>::apply(x, w_packed, layout, bias, N, group_size, input_scale, act_scale);
}

Tensor s24_autograd(const Tensor& x, const Tensor& w_packed, std::string_view layout, const std::optional<Tensor>& bias,
                    int64_t N, at::ScalarType value_dtype) {
  if (!records_graph(x, w_packed, bias)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return S24Fn::kernel().call(x, w_packed, layout, bias, N, value_dtype);
  }
  return S24Fn::apply(x, w_packed, layout, bias, N, value_dtype);
}

}  // namespace

TORCH_LIBRARY_IMPL(qkernels, CompositeImplicitAutograd, m) {
  m.impl("dequantize_int8", &dequantize_int8);
  m.impl("dequantize_int4", &dequantize_int4);
  m.impl("dequantize_sparse24", &dequantize_sparse24);
}

TORCH_LIBRARY_IMPL(qkernels, Autograd, m) {
  m.impl("w8a8_linear", &scaled_autograd<0>);
  m.impl("w8a16_linear", &scaled_autograd<1>);
  m.impl("s24_w8a8_linear", &scaled_autograd<2>);
  m.impl("w4a8_linear", &w4_autograd<true>);
  m.impl("w4a16_linear", &w4_autograd<false>);
  m.impl("s24_linear", &s24_autograd);
}
