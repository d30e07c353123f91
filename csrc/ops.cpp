// The op layer: torch.library schemas for qkernels::*, CPU impls (at::Tensor <-> kernel table).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <cstring>
#include <optional>
#include <vector>

#include "kernels/kernels.h"

namespace {

using at::Tensor;

void check_cpu(const Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.device().is_cpu(), name, " must be a CPU tensor, got device ", t.device());
}

void check_float_input(const Tensor& x, const char* name) {
  TORCH_CHECK_TYPE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16 ||
                   x.scalar_type() == at::kHalf, name, " must be float32, bfloat16 or float16, got ",
                   x.scalar_type());
  TORCH_CHECK_VALUE(x.dim() == 2, name, " must be 2-D [M, K], got shape ", x.sizes());
}

// float16 activations: the kernels read fp32 or bf16, so an op on fp16 x runs on x.float()
// (exact) and its fp32 result is rounded once to fp16. Wraps an op whose first argument is x.
template <typename Sig, Sig* Op>
struct ViaFp32;
template <typename... Rest, Tensor (*Op)(const Tensor&, Rest...)>
struct ViaFp32<Tensor(const Tensor&, Rest...), Op> {
  static Tensor run(const Tensor& x, Rest... rest) {
    if (x.scalar_type() != at::kHalf) return Op(x, rest...);
    return Op(x.to(at::kFloat), rest...).to(at::kHalf);
  }
};
#define QK_FP16_VIA_FP32(fn) &ViaFp32<decltype(fn), fn>::run

const qk::Kernels& active() { return qk::kernels(qk::active_isa()); }

// Quantize each row m of x (fp32 or bf16, contiguous [M, K]) to int8 at dst + m * ld with its scale,
// then call after_row(m) while the row is still in cache.
template <typename AfterRow>
void quantize_rows(const qk::Kernels& kt, const Tensor& x, int8_t* dst, int64_t ld, float* scale,
                   AfterRow after_row) {
  const int64_t M = x.size(0), K = x.size(1);
  const bool bf16 = x.scalar_type() == at::kBFloat16;
  const void* xp = x.data_ptr();
  at::parallel_for(0, M, std::max<int64_t>(1, 16384 / std::max<int64_t>(K, 1)), [&](int64_t b, int64_t e) {
    for (int64_t m = b; m < e; ++m) {
      if (bf16)
        kt.quant_row_bf16(static_cast<const uint16_t*>(xp) + m * K, K, dst + m * ld, scale + m);
      else
        kt.quant_row_f32(static_cast<const float*>(xp) + m * K, K, dst + m * ld, scale + m);
      after_row(m);
    }
  });
}

// ---- quantize_per_token_int8(Tensor x) -> (Tensor q, Tensor scale) ----------------------------
std::tuple<Tensor, Tensor> quantize_per_token_int8_cpu(const Tensor& x_in) {
  check_cpu(x_in, "x");
  check_float_input(x_in, "x");
  const Tensor x = (x_in.scalar_type() == at::kHalf ? x_in.to(at::kFloat) : x_in).contiguous();
  const int64_t M = x.size(0), K = x.size(1);
  Tensor q = at::empty({M, K}, x.options().dtype(at::kChar));
  Tensor s = at::empty({M}, x.options().dtype(at::kFloat));
  if (M == 0) return {q, s};
  quantize_rows(active(), x, q.data_ptr<int8_t>(), K, s.data_ptr<float>(), [](int64_t) {});
  return {q, s};
}

// ---- packing ---------------------------------------------------------------------------------
Tensor check_weight_for_pack(const Tensor& w) {
  check_cpu(w, "w");
  TORCH_CHECK_TYPE(w.scalar_type() == at::kChar, "w must be int8, got ", w.scalar_type());
  TORCH_CHECK_VALUE(w.dim() == 2, "w must be 2-D [N, K], got shape ", w.sizes());
  TORCH_CHECK_VALUE(w.numel() == 0 || w.min().item<int8_t>() >= -127,
                    "w must hold values in [-127, 127] (symmetric int8); found -128");
  return w.contiguous();
}

Tensor pack_w8a8_cpu(const Tensor& w_in) {
  const Tensor w = check_weight_for_pack(w_in);
  const int64_t N = w.size(0), K = w.size(1), P = qk::round_up(N, qk::kPanelN) / qk::kPanelN;
  Tensor out = at::empty({P, qk::w8a8_panel_bytes(K)}, w.options());
  qk::pack_w8a8(w.data_ptr<int8_t>(), N, K, out.data_ptr<int8_t>());
  return out;
}

Tensor pack_w8a16_cpu(const Tensor& w_in) {
  const Tensor w = check_weight_for_pack(w_in);
  const int64_t N = w.size(0), K = w.size(1), P = qk::round_up(N, qk::kPanelN) / qk::kPanelN;
  Tensor out = at::empty({P, qk::w8a16_panel_bytes(K)}, w.options());
  qk::pack_w8a16(w.data_ptr<int8_t>(), N, K, out.data_ptr<int8_t>());
  return out;
}

template <void (*Unpack)(const int8_t*, int64_t, int64_t, int8_t*), int64_t (*PanelBytes)(int64_t)>
Tensor unpack_cpu(const Tensor& packed_in, int64_t N, int64_t K) {
  check_cpu(packed_in, "w_packed");
  TORCH_CHECK_VALUE(N >= 1 && K >= 1, "N and K must be >= 1, got N=", N, " K=", K);
  const Tensor packed = packed_in.contiguous();
  TORCH_CHECK_TYPE(packed.scalar_type() == at::kChar, "w_packed must be int8, got ", packed.scalar_type());
  const int64_t P = qk::round_up(N, qk::kPanelN) / qk::kPanelN;
  TORCH_CHECK_VALUE(packed.dim() == 2 && packed.size(0) == P && packed.size(1) == PanelBytes(K),
                    "w_packed has shape ", packed.sizes(), " but N=", N, ", K=", K, " need [", P, ", ",
                    PanelBytes(K), "]");
  Tensor w = at::empty({N, K}, packed.options());
  Unpack(packed.data_ptr<int8_t>(), N, K, w.data_ptr<int8_t>());
  return w;
}

// ---- GEMMs -----------------------------------------------------------------------------------
void check_epilogue(const Tensor& w_scale, const std::optional<Tensor>& bias, int64_t N) {
  check_cpu(w_scale, "w_scale");
  TORCH_CHECK_TYPE(w_scale.scalar_type() == at::kFloat, "w_scale must be float32, got ", w_scale.scalar_type());
  TORCH_CHECK_VALUE(w_scale.dim() == 1 && w_scale.size(0) == N, "w_scale must have shape [", N, "], got ", w_scale.sizes());
  if (bias) {
    check_cpu(*bias, "bias");
    TORCH_CHECK_TYPE(bias->scalar_type() == at::kFloat, "bias must be float32, got ", bias->scalar_type());
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == N, "bias must have shape [", N, "], got ", bias->sizes());
  }
}

void check_packed(const Tensor& wp, int64_t N, int64_t panel_bytes, at::ScalarType dtype = at::kChar) {
  check_cpu(wp, "w_packed");
  TORCH_CHECK_TYPE(wp.scalar_type() == dtype, "w_packed must be ", dtype, ", got ", wp.scalar_type());
  const int64_t P = qk::round_up(N, qk::kPanelN) / qk::kPanelN;
  TORCH_CHECK_VALUE(wp.dim() == 2 && wp.size(0) == P && wp.size(1) == panel_bytes,
                    "w_packed has shape ", wp.sizes(), " but N=", N, " and this K need [", P, ", ",
                    panel_bytes, "]; pack it with the matching qkernels::pack_* op");
}

// The weight side of every W8A8 op: exact-int32 K limit, packed layout, scales and bias.
void check_w8a8_weights(const Tensor& w_packed, const Tensor& w_scale, const std::optional<Tensor>& bias,
                        int64_t K, int64_t N) {
  TORCH_CHECK_VALUE(K <= qk::kMaxK_w8a8, "K (in_features) must be <= ", qk::kMaxK_w8a8,
                    " for exact int32 accumulation, got ", K);
  check_packed(w_packed, N, qk::w8a8_panel_bytes(K));
  check_epilogue(w_scale, bias, N);
}

// Tasks are (row chunk, panel) pairs; each output element is computed by exactly one task with
// a fixed reduction order, so results do not depend on the thread count or on the split.
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

int64_t checked_n(int64_t N) {
  TORCH_CHECK_VALUE(N >= 1, "N (out_features) must be >= 1, got ", N);
  return N;
}

// Turn one int8 activation row (already at its place in the padded buffer) into what the active
// W8A8 kernel reads: +128 (u8) for vpdpbusd paths, and zero padding up to Kp.
void finish_a_row(const qk::Kernels& kt, uint8_t* row, int64_t K, int64_t Kp) {
  const uint8_t flip = kt.a_u8 ? 0x80 : 0x00;
  if (flip)
    for (int64_t k = 0; k < K; ++k) row[k] ^= flip;
  for (int64_t k = K; k < Kp; ++k) row[k] = flip;
}

// GEMM on prepared activations abuf [M, Kp] into out [M, N].
void run_w8a8(const qk::Kernels& kt, const Tensor& abuf, const Tensor& a_scale, const Tensor& w_packed,
              const Tensor& w_scale, const std::optional<Tensor>& bias, int64_t K, int64_t N,
              Tensor& out) {
  const Tensor ws = w_scale.contiguous(), wp = w_packed.contiguous();
  std::optional<Tensor> b;
  if (bias) b = bias->contiguous();
  const int64_t M = abuf.size(0);
  qk::W8A8Args g{abuf.data_ptr<uint8_t>(), abuf.size(1), a_scale.data_ptr<float>(), wp.data_ptr<int8_t>(),
                 K, N, ws.data_ptr<float>(), b ? b->data_ptr<float>() : nullptr, out.data_ptr(), N,
                 out.scalar_type() == at::kBFloat16};
  parallel_tiles(M, wp.size(0), [&](int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
    kt.gemm_w8a8(g, m0, m1, p0, p1);
  });
}

Tensor w8a8_gemm_cpu(const Tensor& a_in, const Tensor& a_scale_in, const Tensor& w_packed,
                     const Tensor& w_scale, const std::optional<Tensor>& bias, int64_t N,
                     at::ScalarType out_dtype) {
  check_cpu(a_in, "a");
  TORCH_CHECK_TYPE(a_in.scalar_type() == at::kChar, "a must be int8, got ", a_in.scalar_type());
  TORCH_CHECK_VALUE(a_in.dim() == 2, "a must be 2-D [M, K], got shape ", a_in.sizes());
  TORCH_CHECK_TYPE(out_dtype == at::kFloat || out_dtype == at::kBFloat16 || out_dtype == at::kHalf,
                   "out_dtype must be float32, bfloat16 or float16, got ", out_dtype);
  checked_n(N);
  const int64_t M = a_in.size(0), K = a_in.size(1), Kp = qk::round_up(K, 4);
  check_cpu(a_scale_in, "a_scale");
  TORCH_CHECK_VALUE(a_scale_in.dim() == 1 && a_scale_in.size(0) == M && a_scale_in.scalar_type() == at::kFloat,
                    "a_scale must be float32 of shape [", M, "], got ", a_scale_in.scalar_type(), " ", a_scale_in.sizes());
  check_w8a8_weights(w_packed, w_scale, bias, K, N);
  if (out_dtype == at::kHalf)  // fp32 epilogue, rounded once to fp16 (as the reference)
    return w8a8_gemm_cpu(a_in, a_scale_in, w_packed, w_scale, bias, N, at::kFloat).to(at::kHalf);
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
      finish_a_row(kt, dst + m * Kp, K, Kp);
    }
  });
  run_w8a8(kt, abuf, a_scale_in.contiguous(), w_packed, w_scale, bias, K, N, out);
  return out;
}

// Fused dynamic W8A8 linear: per-token quantization straight into the GEMM's padded activation
// buffer, then the GEMM; one dispatch and no intermediate int8 tensor. Same numbers as
// quantize_per_token_int8 followed by w8a8_gemm.
Tensor w8a8_linear_cpu(const Tensor& x_in, const Tensor& w_packed, const Tensor& w_scale,
                       const std::optional<Tensor>& bias, int64_t N) {
  check_cpu(x_in, "x");
  check_float_input(x_in, "x");
  checked_n(N);
  const int64_t M = x_in.size(0), K = x_in.size(1), Kp = qk::round_up(K, 4);
  check_w8a8_weights(w_packed, w_scale, bias, K, N);
  Tensor out = at::empty({M, N}, x_in.options());
  if (M == 0) return out;
  const qk::Kernels& kt = active();
  const Tensor x = x_in.contiguous();
  Tensor abuf = at::empty({M, Kp}, x.options().dtype(at::kByte));
  Tensor a_scale = at::empty({M}, x.options().dtype(at::kFloat));
  uint8_t* dst = abuf.data_ptr<uint8_t>();
  quantize_rows(kt, x, reinterpret_cast<int8_t*>(dst), Kp, a_scale.data_ptr<float>(),
                [&](int64_t m) { finish_a_row(kt, dst + m * Kp, K, Kp); });
  run_w8a8(kt, abuf, a_scale, w_packed, w_scale, bias, K, N, out);
  return out;
}

Tensor w8a16_gemm_cpu(const Tensor& x_in, const Tensor& w_packed, const Tensor& w_scale,
                      const std::optional<Tensor>& bias, int64_t N) {
  check_cpu(x_in, "x");
  check_float_input(x_in, "x");
  checked_n(N);
  const int64_t M = x_in.size(0), K = x_in.size(1);
  check_packed(w_packed, N, qk::w8a16_panel_bytes(K));
  check_epilogue(w_scale, bias, N);
  Tensor out = at::empty({M, N}, x_in.options());
  if (M == 0) return out;
  const Tensor x = x_in.to(at::kFloat).contiguous();
  const Tensor ws = w_scale.contiguous(), wp = w_packed.contiguous();
  std::optional<Tensor> b;
  if (bias) b = bias->contiguous();
  const qk::Kernels& kt = active();
  qk::W8A16Args g{x.data_ptr<float>(), K, wp.data_ptr<int8_t>(), K, N, ws.data_ptr<float>(),
                  b ? b->data_ptr<float>() : nullptr, out.data_ptr(), N,
                  x_in.scalar_type() == at::kBFloat16};
  parallel_tiles(M, wp.size(0), [&](int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
    kt.gemm_w8a16(g, m0, m1, p0, p1);
  });
  return out;
}

// Float activations (fp32 or bf16, [M, K]) as fp32 rows [M, Kp] padded with zeros, one pass per
// row; after_row(m, row) runs while the row is still in cache.
template <typename AfterRow>
Tensor float_rows(const Tensor& x_in, int64_t Kp, AfterRow after_row) {
  const Tensor x = x_in.contiguous();
  const int64_t M = x.size(0), K = x.size(1);
  const bool bf16 = x.scalar_type() == at::kBFloat16;
  Tensor buf = at::empty({M, Kp}, x.options().dtype(at::kFloat));
  float* out = buf.data_ptr<float>();
  const void* xp = x.data_ptr();
  at::parallel_for(0, M, std::max<int64_t>(1, 16384 / Kp), [&](int64_t b, int64_t e) {
    for (int64_t m = b; m < e; ++m) {
      float* row = out + m * Kp;
      if (bf16) {
        const uint16_t* src = static_cast<const uint16_t*>(xp) + m * K;
        for (int64_t k = 0; k < K; ++k) {
          const uint32_t bits = uint32_t(src[k]) << 16;
          std::memcpy(row + k, &bits, 4);
        }
      } else {
        std::memcpy(row, static_cast<const float*>(xp) + m * K, K * sizeof(float));
      }
      std::memset(row + K, 0, (Kp - K) * sizeof(float));
      after_row(m, row);
    }
  });
  return buf;
}

// ---- int4 grouped (W4A8 / W4A16) ------------------------------------------------------------------
// Group geometry: G groups of group_size along K (the last may be partial); one group (per-channel,
// or group_size >= K) is K rounded up to 8. Kernels step 8 k at a time, hence group_size % 8 == 0.
struct W4Geom {
  int64_t G, gk;
  int64_t Kp() const { return G * gk; }
};

W4Geom w4_geometry(int64_t K, int64_t group_size) {
  TORCH_CHECK_VALUE(K >= 1, "K (in_features) must be >= 1, got ", K);
  TORCH_CHECK_VALUE(group_size >= 1, "group_size must be >= 1, got ", group_size);
  TORCH_CHECK_VALUE(K <= qk::kMaxK_w4a8, "K (in_features) must be <= ", qk::kMaxK_w4a8,
                    " for exact int32 accumulation, got ", K);
  const int64_t G = (K + group_size - 1) / group_size;
  if (G == 1) return {1, qk::round_up(K, 8)};
  TORCH_CHECK_VALUE(group_size % 8 == 0, "group_size must be a multiple of 8 for int4 weights (or >= K=",
                    K, " for one group per row), got ", group_size);
  return {G, group_size};
}

// qweight: uint8 [N, ceil(K/2)], element 2j in the low nibble of byte j (qkernels.reference.pack_int4):
// two's complement q in [-8, 7] when symmetric (zero_point None), else q in [0, 15] with an int32
// zero_point [N, G] in [0, 15]. scale: fp32 [N, G].
Tensor pack_w4_cpu(const Tensor& qweight_in, const Tensor& scale_in, const std::optional<Tensor>& zp_in,
                   int64_t K, int64_t group_size) {
  check_cpu(qweight_in, "qweight");
  const W4Geom geo = w4_geometry(K, group_size);
  TORCH_CHECK_TYPE(qweight_in.scalar_type() == at::kByte, "qweight must be uint8 (two int4 per byte), got ",
                   qweight_in.scalar_type());
  TORCH_CHECK_VALUE(qweight_in.dim() == 2 && qweight_in.size(0) >= 1 && qweight_in.size(1) == (K + 1) / 2,
                    "qweight must have shape [N, ", (K + 1) / 2, "] for K=", K, ", got ", qweight_in.sizes());
  const int64_t N = qweight_in.size(0), G = geo.G;
  check_cpu(scale_in, "scale");
  TORCH_CHECK_TYPE(scale_in.scalar_type() == at::kFloat, "scale must be float32, got ", scale_in.scalar_type());
  TORCH_CHECK_VALUE(scale_in.dim() == 2 && scale_in.size(0) == N && scale_in.size(1) == G,
                    "scale must have shape [", N, ", ", G, "], got ", scale_in.sizes());
  const Tensor qw = qweight_in.contiguous(), sc = scale_in.contiguous();
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
  std::vector<uint8_t> u(N * K), zz(N * G, 8);
  const uint8_t* q = qw.data_ptr<uint8_t>();
  const int64_t Kh = (K + 1) / 2;
  const uint8_t flip = zp_in ? 0 : 8;  // symmetric: u = q + 8 = (two's complement nibble) ^ 8
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) u[n * K + k] = ((q[n * Kh + k / 2] >> (4 * (k % 2))) & 0xf) ^ flip;
  if (zp_in) {
    const int32_t* z = zp.data_ptr<int32_t>();
    for (int64_t i = 0; i < N * G; ++i) zz[i] = static_cast<uint8_t>(z[i]);
  }
  const int64_t P = qk::round_up(N, qk::kPanelN) / qk::kPanelN;
  Tensor out = at::empty({P, qk::w4_panel_bytes(G, geo.gk)}, qw.options());
  qk::pack_w4(u.data(), sc.data_ptr<float>(), zz.data(), N, K, G, geo.gk, out.data_ptr<uint8_t>());
  return out;
}

std::tuple<Tensor, Tensor, Tensor> unpack_w4_cpu(const Tensor& packed_in, int64_t N, int64_t K,
                                                 int64_t group_size, bool symmetric) {
  checked_n(N);
  const W4Geom geo = w4_geometry(K, group_size);
  check_packed(packed_in, N, qk::w4_panel_bytes(geo.G, geo.gk), at::kByte);
  const Tensor packed = packed_in.contiguous();
  const int64_t G = geo.G, Kh = (K + 1) / 2;
  std::vector<uint8_t> u(N * K), zz(N * G);
  Tensor scale = at::empty({N, G}, packed.options().dtype(at::kFloat));
  qk::unpack_w4(packed.data_ptr<uint8_t>(), N, K, G, geo.gk, u.data(), scale.data_ptr<float>(), zz.data());
  Tensor qweight = at::zeros({N, Kh}, packed.options());
  Tensor zp = at::zeros({N, G}, packed.options().dtype(at::kInt));
  uint8_t* q = qweight.data_ptr<uint8_t>();
  const uint8_t flip = symmetric ? 8 : 0;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) q[n * Kh + k / 2] |= ((u[n * K + k] ^ flip) & 0xf) << (4 * (k % 2));
  if (!symmetric) {
    int32_t* z = zp.data_ptr<int32_t>();
    for (int64_t i = 0; i < N * G; ++i) z[i] = zz[i];
  }
  return {qweight, scale, zp};
}

// Weight-side checks of the W4 GEMMs; returns the group geometry.
W4Geom check_w4_weights(const Tensor& w_packed, const std::optional<Tensor>& bias, int64_t K, int64_t N,
                        int64_t group_size) {
  checked_n(N);
  const W4Geom geo = w4_geometry(K, group_size);
  check_packed(w_packed, N, qk::w4_panel_bytes(geo.G, geo.gk), at::kByte);
  if (bias) {
    check_cpu(*bias, "bias");
    TORCH_CHECK_TYPE(bias->scalar_type() == at::kFloat, "bias must be float32, got ", bias->scalar_type());
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == N, "bias must have shape [", N, "], got ", bias->sizes());
  }
  return geo;
}

// Runs a packed-panel GEMM (W4 or 2:4 args) over row chunks x panels into out [M, N].
template <typename Args>
void run_panels(void (*gemm)(const Args&, int64_t, int64_t, int64_t, int64_t), Args g, const Tensor& w_packed,
                const std::optional<Tensor>& bias, int64_t M, Tensor& out) {
  const Tensor wp = w_packed.contiguous();
  std::optional<Tensor> b;
  if (bias) b = bias->contiguous();
  g.w = wp.data_ptr<uint8_t>();
  g.bias = b ? b->data_ptr<float>() : nullptr;
  g.out = out.data_ptr();
  g.ldo = out.size(1);
  g.out_bf16 = out.scalar_type() == at::kBFloat16;
  parallel_tiles(M, wp.size(0), [&](int64_t m0, int64_t m1, int64_t p0, int64_t p1) { gemm(g, m0, m1, p0, p1); });
}

// The W4 ops' common start: input and weight checks, the [M, N] output, the group geometry.
W4Geom begin_w4(const Tensor& x, const Tensor& w_packed, const std::optional<Tensor>& bias, int64_t N,
                int64_t group_size, Tensor& out) {
  check_cpu(x, "x");
  check_float_input(x, "x");
  const W4Geom geo = check_w4_weights(w_packed, bias, x.size(1), N, group_size);
  out = at::empty({x.size(0), N}, x.options());
  return geo;
}

// W4A8: per-token int8 activations (quantize_per_token_int8's numbers) x int4 grouped weights.
Tensor w4a8_linear_cpu(const Tensor& x_in, const Tensor& w_packed, const std::optional<Tensor>& bias,
                       int64_t N, int64_t group_size) {
  Tensor out;
  const W4Geom geo = begin_w4(x_in, w_packed, bias, N, group_size, out);
  const int64_t M = x_in.size(0), K = x_in.size(1);
  if (M == 0) return out;
  const qk::Kernels& kt = active();
  const Tensor x = x_in.contiguous();
  const int64_t Kp = geo.Kp(), G = geo.G, gk = geo.gk;
  Tensor abuf = at::empty({M, Kp}, x.options().dtype(at::kChar));
  Tensor a_scale = at::empty({M}, x.options().dtype(at::kFloat));
  Tensor asum = at::empty({M, G}, x.options().dtype(at::kInt));
  int8_t* a = abuf.data_ptr<int8_t>();
  int32_t* as = asum.data_ptr<int32_t>();
  quantize_rows(kt, x, a, Kp, a_scale.data_ptr<float>(), [&](int64_t m) {
    int8_t* row = a + m * Kp;
    std::memset(row + K, 0, Kp - K);
    for (int64_t g = 0; g < G; ++g) {
      int32_t s = 0;
      for (int64_t k = g * gk; k < (g + 1) * gk; ++k) s += row[k];
      as[m * G + g] = s;
    }
  });
  qk::W4Args g{a, Kp, a_scale.data_ptr<float>(), as, nullptr, G, gk, N, nullptr, nullptr, N, false};
  run_panels(kt.gemm_w4a8, g, w_packed, bias, M, out);
  return out;
}

// W4A16: float activations x int4 grouped weights, fp32 accumulation of x * (u - zz) per group.
Tensor w4a16_gemm_cpu(const Tensor& x_in, const Tensor& w_packed, const std::optional<Tensor>& bias,
                      int64_t N, int64_t group_size) {
  Tensor out;
  const W4Geom geo = begin_w4(x_in, w_packed, bias, N, group_size, out);
  if (x_in.size(0) == 0) return out;
  const Tensor xbuf = float_rows(x_in, geo.Kp(), [](int64_t, const float*) {});  // fp32, zero padded
  qk::W4Args g{xbuf.data_ptr<float>(), geo.Kp(), nullptr, nullptr, nullptr, geo.G, geo.gk, N, nullptr, nullptr, N, false};
  run_panels(active().gemm_w4a16, g, w_packed, bias, x_in.size(0), out);
  return out;
}

// ---- 2:4 sparse (float values, int8 values) -------------------------------------------------------
int64_t s24_esize(at::ScalarType t, const char* what, bool allow_int8) {
  if (t == at::kFloat) return 4;
  if (t == at::kBFloat16) return 2;
  TORCH_CHECK_TYPE(allow_int8 && t == at::kChar, what, " must be float32, bfloat16", allow_int8 ? " or int8" : "",
                   ", got ", t);
  return 1;
}

// values [N, Kp4/2] (Kp4 = round_up(K, 4)), meta uint8 [N, ceil(Kp4/8)] (qkernels.reference.sparse).
Tensor pack_s24_cpu(const Tensor& values_in, const Tensor& meta_in, int64_t K) {
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
  const int64_t P = qk::round_up(N, qk::kPanelN) / qk::kPanelN;
  Tensor out = at::empty({P, qk::s24_panel_bytes(K, esize)}, meta.options());
  qk::pack_s24(values.data_ptr(), mp, N, K, esize, out.data_ptr<uint8_t>());
  return out;
}

std::tuple<Tensor, Tensor> unpack_s24_cpu(const Tensor& packed_in, int64_t N, int64_t K, at::ScalarType dtype) {
  checked_n(N);
  TORCH_CHECK_VALUE(K >= 1, "K (in_features) must be >= 1, got ", K);
  const int64_t esize = s24_esize(dtype, "dtype", true);
  check_packed(packed_in, N, qk::s24_panel_bytes(K, esize), at::kByte);
  const Tensor packed = packed_in.contiguous();
  const int64_t G = qk::round_up(K, 4) / 4;
  Tensor values = at::empty({N, 2 * G}, packed.options().dtype(dtype));
  Tensor meta = at::empty({N, (G + 1) / 2}, packed.options());
  qk::unpack_s24(packed.data_ptr<uint8_t>(), N, K, esize, values.data_ptr(), meta.data_ptr<uint8_t>());
  return {values, meta};
}

// The 2:4 ops' common start: input and weight checks and the [M, N] output.
void begin_s24(const Tensor& x, const Tensor& w_packed, const std::optional<Tensor>& bias, int64_t N,
               int64_t esize, Tensor& out) {
  check_cpu(x, "x");
  check_float_input(x, "x");
  checked_n(N);
  check_packed(w_packed, N, qk::s24_panel_bytes(x.size(1), esize), at::kByte);
  if (bias) {
    check_cpu(*bias, "bias");
    TORCH_CHECK_TYPE(bias->scalar_type() == at::kFloat, "bias must be float32, got ", bias->scalar_type());
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == N, "bias must have shape [", N, "], got ", bias->sizes());
  }
  out = at::empty({x.size(0), N}, x.options());
}

// Float 2:4: x (fp32 / bf16) x values (fp32 / bf16), fp32 accumulation.
Tensor s24_linear_cpu(const Tensor& x_in, const Tensor& w_packed, const std::optional<Tensor>& bias, int64_t N,
                      at::ScalarType value_dtype) {
  Tensor out;
  begin_s24(x_in, w_packed, bias, N, s24_esize(value_dtype, "value_dtype", false), out);
  const int64_t M = x_in.size(0), K = x_in.size(1), Kp = qk::round_up(K, qk::kS24BlockK);
  if (M == 0) return out;
  const Tensor xbuf = float_rows(x_in, Kp, [](int64_t, const float*) {});
  qk::S24Args g{xbuf.data_ptr<float>(), Kp, nullptr, nullptr, K, N, value_dtype == at::kBFloat16, nullptr,
                nullptr, nullptr, N, false};
  run_panels(active().gemm_s24_float, g, w_packed, bias, M, out);
  return out;
}

// int8 2:4 with dynamic per-token int8 activations (quantize_per_token_int8's numbers), fused.
Tensor s24_w8a8_linear_cpu(const Tensor& x_in, const Tensor& w_packed, const Tensor& w_scale,
                           const std::optional<Tensor>& bias, int64_t N) {
  Tensor out;
  begin_s24(x_in, w_packed, bias, N, 1, out);
  check_epilogue(w_scale, bias, N);
  const int64_t M = x_in.size(0), K = x_in.size(1), Kp = qk::round_up(K, qk::kS24BlockK);
  TORCH_CHECK_VALUE(K <= qk::kMaxK_s24_w8a8, "K (in_features) must be <= ", qk::kMaxK_s24_w8a8,
                    " for exact int32 accumulation, got ", K);
  if (M == 0) return out;
  const qk::Kernels& kt = active();
  const Tensor x = x_in.contiguous();
  Tensor a8 = at::empty({M, K}, x.options().dtype(at::kChar));
  Tensor a16 = at::empty({M, Kp}, x.options().dtype(at::kShort));
  Tensor a_scale = at::empty({M}, x.options().dtype(at::kFloat));
  int8_t* q = a8.data_ptr<int8_t>();
  int16_t* w16 = a16.data_ptr<int16_t>();
  quantize_rows(kt, x, q, K, a_scale.data_ptr<float>(), [&](int64_t m) {
    for (int64_t k = 0; k < K; ++k) w16[m * Kp + k] = q[m * K + k];
    for (int64_t k = K; k < Kp; ++k) w16[m * Kp + k] = 0;
  });
  const Tensor ws = w_scale.contiguous();
  qk::S24Args g{w16, Kp, a_scale.data_ptr<float>(), nullptr, K, N, false, ws.data_ptr<float>(), nullptr,
                nullptr, N, false};
  run_panels(kt.gemm_s24_i8, g, w_packed, bias, M, out);
  return out;
}

}  // namespace

TORCH_LIBRARY(qkernels, m) {
  m.def("quantize_per_token_int8(Tensor x) -> (Tensor, Tensor)");
  m.def("pack_w8a8(Tensor w) -> Tensor");
  m.def("pack_w8a16(Tensor w) -> Tensor");
  m.def("unpack_w8a8(Tensor w_packed, SymInt N, SymInt K) -> Tensor");
  m.def("unpack_w8a16(Tensor w_packed, SymInt N, SymInt K) -> Tensor");
  m.def("w8a8_gemm(Tensor a, Tensor a_scale, Tensor w_packed, Tensor w_scale, Tensor? bias, "
        "SymInt N, ScalarType out_dtype) -> Tensor");
  m.def("w8a8_linear(Tensor x, Tensor w_packed, Tensor w_scale, Tensor? bias, SymInt N) -> Tensor");
  m.def("w8a16_gemm(Tensor x, Tensor w_packed, Tensor w_scale, Tensor? bias, SymInt N) -> Tensor");
  m.def("pack_w4(Tensor qweight, Tensor scale, Tensor? zero_point, SymInt K, SymInt group_size) -> Tensor");
  m.def("unpack_w4(Tensor w_packed, SymInt N, SymInt K, SymInt group_size, bool symmetric) "
        "-> (Tensor, Tensor, Tensor)");
  m.def("w4a8_linear(Tensor x, Tensor w_packed, Tensor? bias, SymInt N, SymInt group_size) -> Tensor");
  m.def("w4a16_gemm(Tensor x, Tensor w_packed, Tensor? bias, SymInt N, SymInt group_size) -> Tensor");
  m.def("pack_s24(Tensor values, Tensor meta, SymInt K) -> Tensor");
  m.def("unpack_s24(Tensor w_packed, SymInt N, SymInt K, ScalarType dtype) -> (Tensor, Tensor)");
  m.def("s24_linear(Tensor x, Tensor w_packed, Tensor? bias, SymInt N, ScalarType value_dtype) -> Tensor");
  m.def("s24_w8a8_linear(Tensor x, Tensor w_packed, Tensor w_scale, Tensor? bias, SymInt N) -> Tensor");
  // The fp32 [N, K] weight each packed format stands for (csrc/autograd.cpp; any device).
  m.def("dequantize_w8(Tensor w_packed, Tensor w_scale, SymInt N, SymInt K, bool act8) -> Tensor");
  m.def("dequantize_w4(Tensor w_packed, SymInt N, SymInt K, SymInt group_size) -> Tensor");
  m.def("dequantize_s24(Tensor w_packed, Tensor? w_scale, SymInt N, SymInt K, ScalarType value_dtype) -> Tensor");
}

TORCH_LIBRARY_IMPL(qkernels, CPU, m) {
  m.impl("quantize_per_token_int8", &quantize_per_token_int8_cpu);
  m.impl("pack_w8a8", &pack_w8a8_cpu);
  m.impl("pack_w8a16", &pack_w8a16_cpu);
  m.impl("unpack_w8a8", &unpack_cpu<qk::unpack_w8a8, qk::w8a8_panel_bytes>);
  m.impl("unpack_w8a16", &unpack_cpu<qk::unpack_w8a16, qk::w8a16_panel_bytes>);
  m.impl("w8a8_gemm", &w8a8_gemm_cpu);
  m.impl("w8a8_linear", QK_FP16_VIA_FP32(w8a8_linear_cpu));
  m.impl("w8a16_gemm", QK_FP16_VIA_FP32(w8a16_gemm_cpu));
  m.impl("pack_w4", &pack_w4_cpu);
  m.impl("unpack_w4", &unpack_w4_cpu);
  m.impl("w4a8_linear", QK_FP16_VIA_FP32(w4a8_linear_cpu));
  m.impl("w4a16_gemm", QK_FP16_VIA_FP32(w4a16_gemm_cpu));
  m.impl("pack_s24", &pack_s24_cpu);
  m.impl("unpack_s24", &unpack_s24_cpu);
  m.impl("s24_linear", QK_FP16_VIA_FP32(s24_linear_cpu));
  m.impl("s24_w8a8_linear", QK_FP16_VIA_FP32(s24_w8a8_linear_cpu));
}
