// Weight quantization that runs once per layer (QuantLinear.from_float): the int4 per-group clipping
// search. ISA-independent C++ (built with the base flags, -ffp-contract=off), so each step rounds
// exactly as the torch expression of qkernels.formats.int4 / qkernels.reference does.
#include <cfloat>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels.h"

namespace qk {
namespace {

// 4 floats / 2 doubles as GCC vector extensions: SSE2 on x86-64, NEON on aarch64, no intrinsics.
typedef float v4f __attribute__((vector_size(16)));
typedef double v2d __attribute__((vector_size(16)));

// torch.round for |v| < 2^22 (always the case here: |x / s| <= 15 / ratio): adding 1.5 * 2^23
// leaves no fraction bits, so the sum rounds to the nearest integer, ties to even, as nearbyintf.
constexpr float kMagic = 12582912.0f;
inline float round_even(float v) { return (v + kMagic) - kMagic; }
inline v4f round_even(v4f v) { return (v + kMagic) - kMagic; }
inline float clampf(float v, float lo, float hi) { return std::min(std::max(v, lo), hi); }
inline v4f clampf(v4f v, v4f lo, v4f hi) {
  v = v < lo ? lo : v;
  return v > hi ? hi : v;
}

struct Candidate {
  float s, z;
};

// scale and zero point of ratio r for a group with amax (symmetric) or [lo, hi] (asymmetric),
// written as the torch expressions: (amax * r / 7).clamp_min(FLT_MIN); ((hi*r - lo*r) / 15)
// .clamp_min(FLT_MIN), z = (0 - round(lo * r / s)).clamp(0, 15).
inline Candidate candidate(bool symmetric, float amax, float lo, float hi, float r) {
  if (symmetric) return {std::max((amax * r) / 7.0f, FLT_MIN), 0.0f};
  const float s = std::max((hi * r - lo * r) / 15.0f, FLT_MIN);
  return {s, clampf(0.0f - round_even((lo * r) / s), 0.0f, 15.0f)};
}

// sum over the group of ((q - z) * s - x)^2, q = clamp(round(x / s) + z): each difference in fp32
// as torch computes it, squared (exactly) and summed in double over 4 lanes, then the lanes.
double group_error(const float* x, int64_t len, Candidate c, float qmin, float qmax) {
  const v4f s = {c.s, c.s, c.s, c.s}, z = {c.z, c.z, c.z, c.z};
  const v4f lo = {qmin, qmin, qmin, qmin}, hi = {qmax, qmax, qmax, qmax};
  v2d acc0 = {0.0, 0.0}, acc1 = {0.0, 0.0};
  int64_t k = 0;
  for (; k + 4 <= len; k += 4) {
    v4f xv;
    std::memcpy(&xv, x + k, sizeof xv);
    const v4f d = (clampf(round_even(xv / s) + z, lo, hi) - z) * s - xv;
    const v2d d0 = {d[0], d[1]}, d1 = {d[2], d[3]};
    acc0 += d0 * d0;
    acc1 += d1 * d1;
  }
  double err = (acc0[0] + acc1[0]) + (acc0[1] + acc1[1]);
  for (; k < len; ++k) {
    const double d = (clampf(round_even(x[k] / c.s) + c.z, qmin, qmax) - c.z) * c.s - x[k];
    err += d * d;
  }
  return err;
}

}  // namespace

void quantize_w4_clip_search(const float* w, int64_t rows, int64_t K, int64_t gk, bool symmetric,
                             const float* ratios, int n_ratios, uint8_t* qweight, float* scale,
                             int32_t* zero_point) {
  const int64_t G = (K + gk - 1) / gk, Kb = (K + 1) / 2;
  const float qmin = symmetric ? -8.0f : 0.0f, qmax = symmetric ? 7.0f : 15.0f;
  for (int64_t n = 0; n < rows; ++n) {
    const float* wr = w + n * K;
    uint8_t* qr = qweight + n * Kb;
    std::memset(qr, 0, Kb);
    for (int64_t g = 0; g < G; ++g) {
      const int64_t k0 = g * gk, len = std::min(gk, K - k0);  // a partial last group: the padding adds 0
      const float* x = wr + k0;
      float amax = 0.0f, lo = 0.0f, hi = 0.0f;
      for (int64_t k = 0; k < len; ++k) {
        amax = std::max(amax, std::fabs(x[k]));
        lo = std::min(lo, x[k]);
        hi = std::max(hi, x[k]);
      }
      Candidate best{0.0f, 0.0f};
      double best_err = 0.0;
      for (int i = 0; i < n_ratios; ++i) {
        const Candidate c = candidate(symmetric, amax, lo, hi, ratios[i]);
        const double err = group_error(x, len, c, qmin, qmax);
        if (i == 0 || err < best_err) {  // the first on ties
          best = c;
          best_err = err;
        }
      }
      for (int64_t k = 0; k < len; ++k) {  // the state_dict nibbles: element k in nibble k % 2 of byte k / 2
        const int q = static_cast<int>(clampf(round_even(x[k] / best.s) + best.z, qmin, qmax));
        qr[(k0 + k) >> 1] |= static_cast<uint8_t>((q & 0xF) << (((k0 + k) & 1) * 4));
      }
      scale[n * G + g] = best.s;
      if (zero_point) zero_point[n * G + g] = static_cast<int32_t>(best.z);
    }
  }
}

}  // namespace qk
