// CPU impls of the 2:4 sparse ops: packing values + metadata into the 2:4 panel layout, float 2:4
// (fp32 accumulation) and int8 2:4 with per-token int8 activations (exact int32, W8A8 epilogue).
#include "common.h"

namespace qk_ops {
namespace {

void check_s24_layout(std::string_view layout) {
  TORCH_CHECK_VALUE(layout == qk::layout_name(qk::Layout::sparse24_panels), "layout: the CPU 2:4 layout is '",
                    qk::layout_name(qk::Layout::sparse24_panels), "', got '", layout, "'");
}

int64_t s24_esize(at::ScalarType t, const char* what, bool allow_int8) {
  if (t == at::kFloat) return 4;
  if (t == at::kBFloat16) return 2;
  TORCH_CHECK_TYPE(allow_int8 && t == at::kChar, what, " must be float32, bfloat16", allow_int8 ? " or int8" : "",
                   ", got ", t);
  return 1;
}

// values [N, Kp4/2] (Kp4 = round_up(K, 4)), meta uint8 [N, ceil(Kp4/8)] (qkernels.formats.sparse24).
Tensor pack_sparse24_cpu(const Tensor& values_in, const Tensor& meta_in, int64_t K, std::string_view layout) {
  check_s24_layout(layout);
  check_cpu(values_in, "values");
  check_cpu(meta_in, "meta");
  TORCH_CHECK_VALUE(K >= 1, "K (in_features) must be >= 1, got ", K);
  const int64_t esize = s24_esize(values_in.scalar_type(), "values", true);
  const int64_t G = qk::round_up(K, 4) / 4;
  TORCH_CHECK_VALUE(values_in.dim() == 2 && values_in.size(0) >= 1 && values_in.size(1) == 2 * G,
                    "values must have shape [N, ", 2 * G, "] for K=", K, ", got ", values_in.sizes());
  const int64_t N = values_in.size(0);
  TORCH_CHECK_TYPE(meta_in.scalar_type() == at::kByte, "meta must be uint8, got ", meta_in.scalar_type());
  TORCH_CHECK_VALUE(meta_in.dim() == 2 && meta_in.size(0) == N && meta_in.size(1) == (G + 1) / 2,
                    "meta must have shape [", N, ", ", (G + 1) / 2, "], got ", meta_in.sizes());
  const Tensor values = values_in.contiguous(), meta = meta_in.contiguous();
  const uint8_t* mp = meta.data_ptr<uint8_t>();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t g = 0; g < G; ++g) {
      const int nib = (mp[n * ((G + 1) / 2) + g / 2] >> (4 * (g % 2))) & 0xf;
      TORCH_CHECK_VALUE((nib & 3) < (nib >> 2), "meta: group ", g, " of row ", n,
                        " must name two positions i0 < i1, got i0=", nib & 3, " i1=", nib >> 2);
    }
  Tensor out = empty_packed(qk::Layout::sparse24_panels, meta, N, K, 0, esize);
  qk::pack_s24(values.data_ptr(), mp, N, K, esize, out.data_ptr<uint8_t>());
  return out;
}

std::tuple<Tensor, Tensor> unpack_sparse24_cpu(const Tensor& packed, std::string_view layout, int64_t N, int64_t K,
                                               at::ScalarType dtype) {
  check_s24_layout(layout);
  checked_n(N);
  TORCH_CHECK_VALUE(K >= 1, "K (in_features) must be >= 1, got ", K);
  const int64_t esize = s24_esize(dtype, "dtype", true);
  check_packed(packed, std::string(layout), qk::Layout::sparse24_panels, N, K, 0, esize);
  const int64_t G = qk::round_up(K, 4) / 4;
  Tensor values = at::empty({N, 2 * G}, packed.options().dtype(dtype));
  Tensor meta = at::empty({N, (G + 1) / 2}, packed.options());
  qk::unpack_s24(packed.contiguous().data_ptr<uint8_t>(), N, K, esize, values.data_ptr(), meta.data_ptr<uint8_t>());
  return {values, meta};
}

// The 2:4 ops' common start: input and weight checks and the [M, N] output.
void begin_s24(const Tensor& x, const Tensor& w_packed, std::string_view layout, const std::optional<Tensor>& bias,
               int64_t N, int64_t esize, Tensor& out) {
  check_float_input(x, "x");
  checked_n(N);
  check_packed(w_packed, std::string(layout), qk::Layout::sparse24_panels, N, x.size(1), 0, esize);
  check_vector(bias, N, "bias");
  out = at::empty({x.size(0), N}, x.options());
}

// Float 2:4: x (fp32 / bf16) x values (fp32 / bf16), fp32 accumulation.
Tensor s24_linear_cpu(const Tensor& x_in, const Tensor& w_packed, std::string_view layout,
                      const std::optional<Tensor>& bias, int64_t N, at::ScalarType value_dtype) {
  Tensor out;
  begin_s24(x_in, w_packed, layout, bias, N, s24_esize(value_dtype, "value_dtype", false), out);
  const int64_t M = x_in.size(0), K = x_in.size(1), Kp = qk::round_up(K, qk::kS24BlockK);
  if (M == 0) return out;
  const Tensor xbuf = float_rows(x_in, Kp);
  qk::S24Args g{xbuf.data_ptr<float>(), Kp, nullptr, nullptr, K, N, value_dtype == at::kBFloat16, nullptr,
                nullptr, nullptr, 0, false};
  run_panels(active().gemm_s24_float, g, w_packed, bias, out);
  return out;
}

// int8 2:4 with dynamic per-token int8 activations (quantize_per_token_int8's numbers), fused.
Tensor s24_w8a8_linear_cpu(const Tensor& x_in, const Tensor& w_packed, std::string_view layout, const Tensor& w_scale,
                           const std::optional<Tensor>& bias, int64_t N, const std::optional<Tensor>& input_scale, const std::optional<Tensor>& act_scale) {
  Tensor out;
  begin_s24(x_in, w_packed, layout, bias, N, 1, out);
  check_vector(w_scale, N, "w_scale");
  const int64_t M = x_in.size(0), K = x_in.size(1), Kp = qk::round_up(K, qk::kS24BlockK);
  Tensor hold;
  const ActPrep prep = act_prep(input_scale, act_scale, K, true, hold);
  TORCH_CHECK_VALUE(K <= qk::kMaxK_s24_w8a8, "K (in_features) must be <= ", qk::kMaxK_s24_w8a8,
                    " for exact int32 accumulation, got ", K);
  if (M == 0) return out;
  const qk::Kernels& kt = active();
  const Tensor x = x_in.contiguous();
  Tensor a_scale = at::empty({M}, x.options().dtype(at::kFloat));
  Tensor abuf;  // the kernel's activation rows [M, Kp]: u8 (a + 128) or int16
  if (kt.s24_a_u8) {
    abuf = at::empty({M, Kp}, x.options().dtype(at::kByte));
    uint8_t* dst = abuf.data_ptr<uint8_t>();
    quantize_rows(kt, x, reinterpret_cast<int8_t*>(dst), Kp, a_scale.data_ptr<float>(),
                  [&](int64_t m) { finish_int8_row(dst + m * Kp, K, Kp, true); }, prep);
  } else {
    Tensor a8 = at::empty({M, K}, x.options().dtype(at::kChar));
    abuf = at::empty({M, Kp}, x.options().dtype(at::kShort));
    int8_t* q = a8.data_ptr<int8_t>();
    int16_t* w16 = abuf.data_ptr<int16_t>();
    quantize_rows(kt, x, q, K, a_scale.data_ptr<float>(), [&](int64_t m) {  // widened to int16, padded
      for (int64_t k = 0; k < K; ++k) w16[m * Kp + k] = q[m * K + k];
      for (int64_t k = K; k < Kp; ++k) w16[m * Kp + k] = 0;
    }, prep);
  }
  const Tensor ws = w_scale.contiguous();
  qk::S24Args g{abuf.data_ptr(), Kp, a_scale.data_ptr<float>(), nullptr, K, N, false, ws.data_ptr<float>(), nullptr,
                nullptr, 0, false};
  run_panels(kt.gemm_s24_i8, g, w_packed, bias, out);
  return out;
}

}  // namespace
}  // namespace qk_ops

TORCH_LIBRARY_IMPL(qkernels, CPU, m) {
  using namespace qk_ops;
  m.impl("pack_sparse24", &pack_sparse24_cpu);
  m.impl("unpack_sparse24", &unpack_sparse24_cpu);
  m.impl("s24_linear", QK_FP16_VIA_FP32(s24_linear_cpu));
  m.impl("s24_w8a8_linear", QK_FP16_VIA_FP32(s24_w8a8_linear_cpu));
}
