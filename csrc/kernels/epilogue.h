// Shared scalar pieces every ISA uses: bf16 rounding, the quantization contract, GEMM epilogues.
// All kernel TUs build with -ffp-contract=off so these match the PyTorch reference bit for bit.
#pragma once
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace qk {
// Anonymous: every ISA translation unit gets its own copy compiled with its own flags, so the
// linker can never hand an AVX-512 build of a helper to the scalar path.
namespace {

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even, NaN stays a quiet NaN (as torch's float -> bfloat16 cast).
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

// Quantization contract (qkernels.reference.quantize_per_token_int8):
//   scale = max(amax / 127, FLT_MIN); q = clamp(round_half_even(x / scale), -127, 127).
//   A row holding NaN (or Inf) gets scale NaN (or Inf) and q = 0, so every output that uses
//   the row is NaN, never silent garbage.
inline float scale_from_amax(float amax) {
  float s = amax / 127.0f;
  if (s < FLT_MIN) s = FLT_MIN;  // all-zero row; NaN compares false and stays NaN
  return s;
}

// Exact amax of a row known to hold a non-finite value: NaN wins over Inf (like torch.amax).
template <typename Load>
inline float nonfinite_amax(Load load, int64_t K) {
  bool inf = false;
  for (int64_t k = 0; k < K; ++k) {
    float v = load(k);
    if (std::isnan(v)) return NAN;
    if (std::isinf(v)) inf = true;
  }
  return inf ? INFINITY : 0.0f;
}

inline int8_t quant_one(float x, float s) {
  float r = std::nearbyint(x / s);  // default rounding mode: half to even
  r = r < -127.0f ? -127.0f : (r > 127.0f ? 127.0f : r);
  return static_cast<int8_t>(r);
}

template <typename Load>
inline void quant_row_scalar(Load load, int64_t K, int8_t* q, float* scale) {
  float amax = 0.0f;
  bool finite = true;
  for (int64_t k = 0; k < K; ++k) {
    float v = std::fabs(load(k));
    if (!(v <= FLT_MAX)) finite = false;
    amax = v > amax ? v : amax;
  }
  if (!finite) amax = nonfinite_amax(load, K);
  float s = scale_from_amax(amax);
  *scale = s;
  if (!std::isfinite(s)) {
    std::memset(q, 0, K);
    return;
  }
  for (int64_t k = 0; k < K; ++k) q[k] = quant_one(load(k), s);
}

// out[n] = ((float)acc[n] * a_scale) * w_scale[n] + bias[n], for n < count.
inline void epilogue_w8a8(const int32_t* acc, float a_scale, const float* w_scale,
                          const float* bias, int64_t count, void* out, bool out_bf16) {
  for (int64_t n = 0; n < count; ++n) {
    float v = static_cast<float>(acc[n]) * a_scale;
    v = v * w_scale[n];
    if (bias) v = v + bias[n];
    if (out_bf16)
      static_cast<uint16_t*>(out)[n] = f32_to_bf16(v);
    else
      static_cast<float*>(out)[n] = v;
  }
}

// out[n] = acc[n] * w_scale[n] + bias[n]
inline void epilogue_w8a16(const float* acc, const float* w_scale, const float* bias,
                           int64_t count, void* out, bool out_bf16) {
  for (int64_t n = 0; n < count; ++n) {
    float v = acc[n] * w_scale[n];
    if (bias) v = v + bias[n];
    if (out_bf16)
      static_cast<uint16_t*>(out)[n] = f32_to_bf16(v);
    else
      static_cast<float*>(out)[n] = v;
  }
}

// W4: out[n] = y[n] * a_scale + bias[n] (a_scale only for W4A8).
inline void epilogue_w4(const float* y, const float* a_scale, const float* bias, int64_t count,
                        void* out, bool out_bf16) {
  for (int64_t n = 0; n < count; ++n) {
    float v = y[n];
    if (a_scale) v = v * *a_scale;
    if (bias) v = v + bias[n];
    if (out_bf16)
      static_cast<uint16_t*>(out)[n] = f32_to_bf16(v);
    else
      static_cast<float*>(out)[n] = v;
  }
}

inline void* out_row(void* out, int64_t ldo, int64_t m, int64_t n0, bool bf16) {
  return bf16 ? static_cast<void*>(static_cast<uint16_t*>(out) + m * ldo + n0)
              : static_cast<void*>(static_cast<float*>(out) + m * ldo + n0);
}

inline int64_t panel_cols(int64_t N, int64_t p) {
  int64_t c = N - p * 64;
  return c < 64 ? c : 64;
}

}  // namespace
}  // namespace qk
