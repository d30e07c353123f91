// Weight prepacking into the ISA-independent panel layouts described in kernels.h.
#include <cstring>

#include "kernels.h"

namespace qk {

void pack_w8a8(const int8_t* w, int64_t N, int64_t K, int8_t* out) {
  const int64_t Kp = round_up(K, 4), P = round_up(N, kPanelN) / kPanelN;
  const int64_t pb = w8a8_panel_bytes(K);
  std::memset(out, 0, P * pb);
  for (int64_t p = 0; p < P; ++p) {
    int8_t* dst = out + p * pb;
    int32_t colsum[kPanelN] = {0};
    for (int64_t n = 0; n < kPanelN && p * kPanelN + n < N; ++n) {
      const int8_t* row = w + (p * kPanelN + n) * K;
      int32_t s = 0;
      for (int64_t k = 0; k < K; ++k) {
        dst[(k / 4) * (kPanelN * 4) + n * 4 + (k % 4)] = row[k];
        s += row[k];
      }
      colsum[n] = 128 * s;
    }
    std::memcpy(dst + Kp * kPanelN, colsum, sizeof(colsum));
  }
}

void pack_w8a16(const int8_t* w, int64_t N, int64_t K, int8_t* out) {
  const int64_t P = round_up(N, kPanelN) / kPanelN;
  std::memset(out, 0, P * w8a16_panel_bytes(K));
  for (int64_t n = 0; n < N; ++n) {
    int8_t* dst = out + (n / kPanelN) * w8a16_panel_bytes(K) + (n % kPanelN);
    for (int64_t k = 0; k < K; ++k) dst[k * kPanelN] = w[n * K + k];
  }
}

void unpack_w8a8(const int8_t* packed, int64_t N, int64_t K, int8_t* w) {
  for (int64_t n = 0; n < N; ++n) {
    const int8_t* src = packed + (n / kPanelN) * w8a8_panel_bytes(K) + (n % kPanelN) * 4;
    for (int64_t k = 0; k < K; ++k) w[n * K + k] = src[(k / 4) * (kPanelN * 4) + (k % 4)];
  }
}

void unpack_w8a16(const int8_t* packed, int64_t N, int64_t K, int8_t* w) {
  for (int64_t n = 0; n < N; ++n) {
    const int8_t* src = packed + (n / kPanelN) * w8a16_panel_bytes(K) + (n % kPanelN);
    for (int64_t k = 0; k < K; ++k) w[n * K + k] = src[k * kPanelN];
  }
}

}  // namespace qk
