// Shared argument checks and activation preparation of the CPU op files (see common.h).
#include "common.h"

#include <cmath>
#include <limits>

namespace qk_ops {

void check_cpu(const Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.device().is_cpu(), name, " must be a CPU tensor, got device ", t.device());
}

void check_float_input(const Tensor& x, const char* name) {
  check_cpu(x, name);
  TORCH_CHECK_TYPE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16 ||
                   x.scalar_type() == at::kHalf, name, " must be float32, bfloat16 or float16, got ",
                   x.scalar_type());
  TORCH_CHECK_VALUE(x.dim() == 2, name, " must be 2-D [M, K], got shape ", x.sizes());
}

int64_t checked_n(int64_t N) {
  TORCH_CHECK_VALUE(N >= 1, "N (out_features) must be >= 1, got ", N);
  return N;
}

void check_vector(const std::optional<Tensor>& t, int64_t N, const char* name) {
  if (!t) return;
  check_cpu(*t, name);
  TORCH_CHECK_TYPE(t->scalar_type() == at::kFloat, name, " must be float32, got ", t->scalar_type());
  TORCH_CHECK_VALUE(t->dim() == 1 && t->size(0) == N, name, " must have shape [", N, "], got ", t->sizes());
}

void check_packed(const Tensor& wp, const std::string& layout, qk::Layout expect, int64_t N, int64_t K,
                  int64_t group_size, int64_t esize) {
  check_cpu(wp, "w_packed");
  TORCH_CHECK_VALUE(layout == qk::layout_name(expect), "layout: the CPU kernels of this op read '",
                    qk::layout_name(expect), "', got '", layout, "'");
  const auto want = expect == qk::Layout::int8_w8a8_panels || expect == qk::Layout::int8_w8a16_panels ? at::kChar
                                                                                                     : at::kByte;
  TORCH_CHECK_TYPE(wp.scalar_type() == want, "w_packed must be ", want, ", got ", wp.scalar_type());
  const qk::PackedShape s = qk::packed_shape(expect, N, K, group_size, esize);
  TORCH_CHECK_VALUE(wp.dim() == 2 && wp.size(0) == s.rows && wp.size(1) == s.cols, "w_packed has shape ",
                    wp.sizes(), " but ", layout, " for N=", N, ", K=", K, " is [", s.rows, ", ", s.cols,
                    "]; pack it with the matching qkernels::pack_* op");
}

Tensor empty_packed(qk::Layout layout, const Tensor& like, int64_t N, int64_t K, int64_t group_size,
                    int64_t esize) {
  const qk::PackedShape s = qk::packed_shape(layout, N, K, group_size, esize);
  const bool int8 = layout == qk::Layout::int8_w8a8_panels || layout == qk::Layout::int8_w8a16_panels;
  return at::empty({s.rows, s.cols}, like.options().dtype(int8 ? at::kChar : at::kByte));
}

qk::W4Geom w4_geometry(int64_t K, int64_t group_size) {
  TORCH_CHECK_VALUE(K >= 1, "K (in_features) must be >= 1, got ", K);
  TORCH_CHECK_VALUE(group_size >= 1, "group_size must be >= 1, got ", group_size);
  TORCH_CHECK_VALUE(K <= qk::kMaxK_w4a8, "K (in_features) must be <= ", qk::kMaxK_w4a8,
                    " for exact int32 accumulation, got ", K);
  const qk::W4Geom geo = qk::w4_geometry(K, group_size);
  TORCH_CHECK_VALUE(geo.G == 1 || group_size % 8 == 0, "group_size must be a multiple of 8 for int4 weights "
                    "(or >= K=", K, " for one group per row), got ", group_size);
  return geo;
}

Tensor float_rows(const Tensor& x_in, int64_t Kp, const float* input_scale) {
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
        if (input_scale)
          for (int64_t k = 0; k < K; ++k) row[k] *= input_scale[k];
      } else if (input_scale) {
        const float* src = static_cast<const float*>(xp) + m * K;
        for (int64_t k = 0; k < K; ++k) row[k] = src[k] * input_scale[k];
      } else {
        std::memcpy(row, static_cast<const float*>(xp) + m * K, K * sizeof(float));
      }
      std::memset(row + K, 0, (Kp - K) * sizeof(float));
    }
  });
  return buf;
}

Tensor bf16_rows(const Tensor& x, int64_t Kp) {
  if (x.size(1) == Kp) return x.contiguous();
  Tensor buf = at::zeros({x.size(0), Kp}, x.options());
  buf.narrow(1, 0, x.size(1)).copy_(x);
  return buf;
}

ActPrep act_prep(const std::optional<Tensor>& input_scale, const std::optional<Tensor>& act_scale, int64_t K,
                 bool int8_acts, Tensor& hold) {
  ActPrep prep;
  if (input_scale) {
    check_vector(input_scale, K, "input_scale");
    hold = input_scale->contiguous();
    prep.input_scale = hold.data_ptr<float>();
    for (int64_t k = 0; k < K; ++k)  // K reads, no allocation: cheap next to the GEMM
      TORCH_CHECK_VALUE(std::isfinite(prep.input_scale[k]), "input_scale must be finite");
  }
  if (act_scale) {
    TORCH_CHECK_VALUE(int8_acts, "act_scale (a static int8 activation scale) applies to int8 activations only; "
                      "this op keeps activations in float");
    check_vector(act_scale, 1, "act_scale");
    const float s = act_scale->item<float>();
    TORCH_CHECK_VALUE(std::isfinite(s) && s > 0.0f, "act_scale must be finite and > 0, got ", s);
    prep.static_scale = s;
  }
  return prep;
}

void quant_row_prepared(const qk::Kernels& kt, const void* x, bool bf16, int64_t K, const ActPrep& prep,
                        float* tmp, int8_t* dst, float* scale) {
  for (int64_t k = 0; k < K; ++k) {
    float v;
    if (bf16) {
      const uint32_t bits = uint32_t(static_cast<const uint16_t*>(x)[k]) << 16;
      std::memcpy(&v, &bits, 4);
    } else {
      v = static_cast<const float*>(x)[k];
    }
    tmp[k] = prep.input_scale ? v * prep.input_scale[k] : v;
  }
  if (prep.static_scale == 0.0f) {
    kt.quant_row_f32(tmp, K, dst, scale);
    return;
  }
  const float s = prep.static_scale;
  bool nan = false;
  for (int64_t k = 0; k < K; ++k) {
    const float v = tmp[k];
    if (v != v) {
      nan = true;
      dst[k] = 0;
      continue;
    }
    dst[k] = static_cast<int8_t>(std::min(std::max(std::nearbyint(v / s), -127.0f), 127.0f));
  }
  *scale = nan ? std::numeric_limits<float>::quiet_NaN() : s;
}

void finish_int8_row(uint8_t* row, int64_t K, int64_t Kp, bool to_u8) {
  const uint8_t flip = to_u8 ? 0x80 : 0x00;
  if (flip)
    for (int64_t k = 0; k < K; ++k) row[k] ^= flip;
  for (int64_t k = K; k < Kp; ++k) row[k] = flip;
}

}  // namespace qk_ops
