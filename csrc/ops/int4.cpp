// CPU impls of the int4 grouped ops: packing the state_dict nibbles into the int4 panel layout,
// W4A8 (per-token int8 activations, exact per-group int32) and W4A16 (fp32 accumulation).
#include <vector>

#include "common.h"

namespace qk_ops {
namespace {

void check_int4_layout(std::string_view layout) {
  TORCH_CHECK_VALUE(layout == qk::layout_name(qk::Layout::int4_panels), "layout: the CPU int4 layout is '",
                    qk::layout_name(qk::Layout::int4_panels), "', got '", layout, "'");
}

// qweight: uint8 [N, ceil(K/2)], element 2j in the low nibble of byte j (qkernels.formats.int4):
// two's complement q in [-8, 7] when symmetric (zero_point None), else q in [0, 15] with an int32
// zero_point [N, G] in [0, 15]. scale: fp32 [N, G].
Tensor pack_int4_cpu(const Tensor& qweight_in, const Tensor& scale_in, const std::optional<Tensor>& zp_in, int64_t K,
                     int64_t group_size, std::string_view layout) {
  check_int4_layout(layout);
  check_cpu(qweight_in, "qweight");
  const qk::W4Geom geo = w4_geometry(K, group_size);
  TORCH_CHECK_TYPE(qweight_in.scalar_type() == at::kByte, "qweight must be uint8 (two int4 per byte), got ",
                   qweight_in.scalar_type());
  TORCH_CHECK_VALUE(qweight_in.dim() == 2 && qweight_in.size(0) >= 1 && qweight_in.size(1) == (K + 1) / 2,
                    "qweight must have shape [N, ", (K + 1) / 2, "] for K=", K, ", got ", qweight_in.sizes());
  const int64_t N = qweight_in.size(0), G = geo.G;
  check_cpu(scale_in, "scale");
  TORCH_CHECK_TYPE(scale_in.scalar_type() == at::kFloat, "scale must be float32, got ", scale_in.scalar_type());
  TORCH_CHECK_VALUE(scale_in.dim() == 2 && scale_in.size(0) == N && scale_in.size(1) == G,
                    "scale must have shape [", N, ", ", G, "], got ", scale_in.sizes());
  Tensor zp;
  if (zp_in) {
    check_cpu(*zp_in, "zero_point");
    TORCH_CHECK_TYPE(zp_in->scalar_type() == at::kInt, "zero_point must be int32, got ", zp_in->scalar_type());
    TORCH_CHECK_VALUE(zp_in->dim() == 2 && zp_in->size(0) == N && zp_in->size(1) == G,
                      "zero_point must have shape [", N, ", ", G, "], got ", zp_in->sizes());
    zp = zp_in->contiguous();
    TORCH_CHECK_VALUE(zp.min().item<int32_t>() >= 0 && zp.max().item<int32_t>() <= 15,
                      "zero_point must hold values in [0, 15] (asymmetric int4)");
  }
  const Tensor qw = qweight_in.contiguous(), sc = scale_in.contiguous();
  Tensor out = empty_packed(qk::Layout::int4_panels, qw, N, K, group_size);
  qk::pack_w4(qw.data_ptr<uint8_t>(), sc.data_ptr<float>(), zp_in ? zp.data_ptr<int32_t>() : nullptr, N, K, G,
              geo.gk, out.data_ptr<uint8_t>());
  return out;
}

std::tuple<Tensor, Tensor, Tensor> unpack_int4_cpu(const Tensor& packed, std::string_view layout, int64_t N, int64_t K,
                                                   int64_t group_size, bool symmetric) {
  check_int4_layout(layout);
  checked_n(N);
  const qk::W4Geom geo = w4_geometry(K, group_size);
  check_packed(packed, std::string(layout), qk::Layout::int4_panels, N, K, group_size);
  Tensor qweight = at::empty({N, (K + 1) / 2}, packed.options());
  Tensor scale = at::empty({N, geo.G}, packed.options().dtype(at::kFloat));
  Tensor zp = at::zeros({N, geo.G}, packed.options().dtype(at::kInt));
  qk::unpack_w4(packed.contiguous().data_ptr<uint8_t>(), N, K, geo.G, geo.gk, symmetric, qweight.data_ptr<uint8_t>(),
                scale.data_ptr<float>(), symmetric ? nullptr : zp.data_ptr<int32_t>());
  return {qweight, scale, zp};
}

// The int4 clipping search of QuantLinear.from_float over row chunks: w fp32 [N, K] (finite; the
// caller checks) -> (qweight uint8 [N, ceil(K/2)] nibbles as pack_int4 takes them, scale fp32
// [N, G], zero_point int32 [N, G], zeros if symmetric).
std::tuple<Tensor, Tensor, Tensor> quantize_int4_weight_cpu(const Tensor& w_in, int64_t group_size, bool symmetric,
                                                            at::ArrayRef<double> clip_ratios) {
  check_cpu(w_in, "w");
  TORCH_CHECK_TYPE(w_in.scalar_type() == at::kFloat, "w must be float32, got ", w_in.scalar_type());
  TORCH_CHECK_VALUE(w_in.dim() == 2, "w must be 2-D [N, K], got ", w_in.sizes());
  TORCH_CHECK_VALUE(group_size >= 1, "group_size must be >= 1, got ", group_size);
  TORCH_CHECK_VALUE(!clip_ratios.empty(), "clip_ratios must not be empty");
  const Tensor w = w_in.contiguous();
  const int64_t N = w.size(0), K = w.size(1), G = K == 0 ? 0 : (K + group_size - 1) / group_size;
  Tensor q = at::empty({N, (K + 1) / 2}, w.options().dtype(at::kByte));
  Tensor scale = at::empty({N, G}, w.options());
  Tensor zp = at::zeros({N, G}, w.options().dtype(at::kInt));
  std::vector<float> ratios(clip_ratios.begin(), clip_ratios.end());  // torch multiplies in fp32 too
  if (N == 0 || K == 0) return {q, scale, zp};
  const float* wp = w.data_ptr<float>();
  at::parallel_for(0, N, std::max<int64_t>(1, 65536 / K), [&](int64_t b, int64_t e) {
    qk::quantize_w4_clip_search(wp + b * K, e - b, K, group_size, symmetric, ratios.data(),
                                static_cast<int>(ratios.size()), q.data_ptr<uint8_t>() + b * ((K + 1) / 2),
                                scale.data_ptr<float>() + b * G, symmetric ? nullptr : zp.data_ptr<int32_t>() + b * G);
  });
  return {q, scale, zp};
}

// The W4 ops' common start: input and weight checks, the [M, N] output, the group geometry.
qk::W4Geom begin_w4(const Tensor& x, const Tensor& w_packed, std::string_view layout,
                    const std::optional<Tensor>& bias, int64_t N, int64_t group_size, Tensor& out) {
  check_float_input(x, "x");
  checked_n(N);
  const qk::W4Geom geo = w4_geometry(x.size(1), group_size);
  check_packed(w_packed, std::string(layout), qk::Layout::int4_panels, N, x.size(1), group_size);
  check_vector(bias, N, "bias");
  out = at::empty({x.size(0), N}, x.options());
  return geo;
}

// W4A8: per-token int8 activations (quantize_per_token_int8's numbers) x int4 grouped weights.
Tensor w4a8_linear_cpu(const Tensor& x_in, const Tensor& w_packed, std::string_view layout,
                       const std::optional<Tensor>& bias, int64_t N, int64_t group_size, const std::optional<Tensor>& input_scale, const std::optional<Tensor>& act_scale) {
  Tensor out;
  const qk::W4Geom geo = begin_w4(x_in, w_packed, layout, bias, N, group_size, out);
  const int64_t M = x_in.size(0), K = x_in.size(1);
  Tensor hold;
  const ActPrep prep = act_prep(input_scale, act_scale, K, true, hold);
  if (M == 0) return out;
  const qk::Kernels& kt = active();
  const Tensor x = x_in.contiguous();
  const int64_t Kp = geo.Kp(), G = geo.G, gk = geo.gk;
  Tensor abuf = at::empty({M, Kp}, x.options().dtype(at::kChar));
  Tensor a_scale = at::empty({M}, x.options().dtype(at::kFloat));
  Tensor asum = at::empty({M, G}, x.options().dtype(at::kInt));
  int8_t* a = abuf.data_ptr<int8_t>();
  int32_t* as = asum.data_ptr<int32_t>();
  quantize_rows(kt, x, a, Kp, a_scale.data_ptr<float>(), [&](int64_t m) {  // pad, and each group's sum
    int8_t* row = a + m * Kp;
    std::memset(row + K, 0, Kp - K);
    for (int64_t g = 0; g < G; ++g) {
      int32_t s = 0;
      for (int64_t k = g * gk; k < (g + 1) * gk; ++k) s += row[k];
      as[m * G + g] = s;
    }
  }, prep);
  qk::W4Args g{a, Kp, a_scale.data_ptr<float>(), as, nullptr, G, gk, N, nullptr, nullptr, 0, false};
  run_panels(kt.gemm_w4a8, g, w_packed, bias, out);
  return out;
}

// W4A16: float activations x int4 grouped weights, fp32 accumulation of x * (u - zz) per group.
Tensor w4a16_linear_cpu(const Tensor& x_in, const Tensor& w_packed, std::string_view layout,
                        const std::optional<Tensor>& bias, int64_t N, int64_t group_size, const std::optional<Tensor>& input_scale, const std::optional<Tensor>& act_scale) {
  Tensor out;
  const qk::W4Geom geo = begin_w4(x_in, w_packed, layout, bias, N, group_size, out);
  Tensor hold;
  const ActPrep prep = act_prep(input_scale, act_scale, x_in.size(1), false, hold);
  if (x_in.size(0) == 0) return out;
  if (auto gemm = bf16_dot_kernel(x_in, prep.input_scale, &qk::ExtKernels::gemm_w4a16_bf16)) {
    const Tensor xb = bf16_rows(x_in, geo.Kp());
    qk::W4Args g{xb.data_ptr(), geo.Kp(), nullptr, nullptr, nullptr, geo.G, geo.gk, N, nullptr, nullptr, 0, false};
    run_panels(gemm, g, w_packed, bias, out);
    return out;
  }
  const Tensor xbuf = float_rows(x_in, geo.Kp(), prep.input_scale);
  qk::W4Args g{xbuf.data_ptr<float>(), geo.Kp(), nullptr, nullptr, nullptr, geo.G, geo.gk, N, nullptr, nullptr, 0, false};
  run_panels(active().gemm_w4a16, g, w_packed, bias, out);
  return out;
}

}  // namespace
}  // namespace qk_ops

TORCH_LIBRARY_IMPL(qkernels, CPU, m) {
  using namespace qk_ops;
  m.impl("pack_int4", &pack_int4_cpu);
  m.impl("unpack_int4", &unpack_int4_cpu);
  m.impl("quantize_int4_weight", &quantize_int4_weight_cpu);
  m.impl("w4a8_linear", QK_FP16_VIA_FP32(w4a8_linear_cpu));
  m.impl("w4a16_linear", QK_FP16_VIA_FP32(w4a16_linear_cpu));
}
