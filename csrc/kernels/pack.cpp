// Weight prepacking into the ISA-independent panel layouts described in kernels.h.
#include <cstring>

#include "kernels.h"

namespace qk {

static const char* const kLayoutNames[] = {"int8_w8a8_panels", "int8_w8a16_panels", "int4_panels",
                                           "sparse24_panels"};
static_assert(sizeof(kLayoutNames) / sizeof(kLayoutNames[0]) == static_cast<int>(Layout::count_), "names");

const char* layout_name(Layout layout) { return kLayoutNames[static_cast<int>(layout)]; }

bool layout_from_name(const char* name, Layout* out) {
  for (int i = 0; i < static_cast<int>(Layout::count_); ++i)
    if (std::strcmp(name, kLayoutNames[i]) == 0) {
      *out = static_cast<Layout>(i);
      return true;
    }
  return false;
}

W4Geom w4_geometry(int64_t K, int64_t group_size) {
  const int64_t G = (K + group_size - 1) / group_size;
  if (G <= 1) return {1, round_up(K, 8)};
  return {G, group_size};
}

PackedShape packed_shape(Layout layout, int64_t N, int64_t K, int64_t group_size, int64_t esize) {
  const int64_t P = round_up(N, kPanelN) / kPanelN;
  switch (layout) {
    case Layout::int8_w8a8_panels: return {P, w8a8_panel_bytes(K)};
    case Layout::int8_w8a16_panels: return {P, w8a16_panel_bytes(K)};
    case Layout::int4_panels: {
      const W4Geom g = w4_geometry(K, group_size);
      return {P, w4_panel_bytes(g.G, g.gk)};
    }
    default: return {P, s24_panel_bytes(K, esize)};
  }
}

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

// Byte offset of (k, n) in a W4 group block, and whether it is the high nibble.
static inline int64_t w4_byte(int64_t kk, int64_t n) { return (kk / 8) * 256 + n * 4 + (kk % 4); }
static inline int w4_shift(int64_t kk) { return (kk % 8) >= 4 ? 4 : 0; }

// qweight nibble k of row n (element k in nibble k % 2 of byte k / 2) as the unsigned u the kernels
// read: symmetric two's complement q becomes u = q + 8 = nibble ^ 8.
static inline uint8_t nibble(const uint8_t* row, int64_t k) { return (row[k / 2] >> (4 * (k % 2))) & 0xf; }

void pack_w4(const uint8_t* qweight, const float* scale, const int32_t* zero_point, int64_t N, int64_t K,
             int64_t G, int64_t gk, uint8_t* out) {
  const int64_t P = round_up(N, kPanelN) / kPanelN, gb = w4_group_bytes(gk), Kh = (K + 1) / 2;
  const uint8_t flip = zero_point ? 0 : 8;
  std::memset(out, 0, P * G * gb);
  for (int64_t n = 0; n < N; ++n) {
    const int64_t p = n / kPanelN, c = n % kPanelN;
    for (int64_t g = 0; g < G; ++g) {
      uint8_t* blk = out + (p * G + g) * gb;
      const int64_t k0 = g * gk, k1 = k0 + gk < K ? k0 + gk : K;
      for (int64_t k = k0; k < k1; ++k)
        blk[w4_byte(k - k0, c)] |= static_cast<uint8_t>((nibble(qweight + n * Kh, k) ^ flip) << w4_shift(k - k0));
      std::memcpy(blk + 32 * gk + 4 * c, scale + n * G + g, 4);
      blk[32 * gk + 4 * kPanelN + c] = zero_point ? static_cast<uint8_t>(zero_point[n * G + g]) : 8;
    }
  }
}

void unpack_w4(const uint8_t* packed, int64_t N, int64_t K, int64_t G, int64_t gk, bool symmetric,
               uint8_t* qweight, float* scale, int32_t* zero_point) {
  const int64_t gb = w4_group_bytes(gk), Kh = (K + 1) / 2;
  const uint8_t flip = symmetric ? 8 : 0;
  std::memset(qweight, 0, N * Kh);
  for (int64_t n = 0; n < N; ++n) {
    const int64_t p = n / kPanelN, c = n % kPanelN;
    for (int64_t g = 0; g < G; ++g) {
      const uint8_t* blk = packed + (p * G + g) * gb;
      const int64_t k0 = g * gk, k1 = k0 + gk < K ? k0 + gk : K;
      for (int64_t k = k0; k < k1; ++k) {
        const uint8_t u = (blk[w4_byte(k - k0, c)] >> w4_shift(k - k0)) & 0xf;
        qweight[n * Kh + k / 2] |= static_cast<uint8_t>((u ^ flip) << (4 * (k % 2)));
      }
      std::memcpy(scale + n * G + g, blk + 32 * gk + 4 * c, 4);
      if (zero_point) zero_point[n * G + g] = blk[32 * gk + 4 * kPanelN + c];
    }
  }
}

// Byte offset, inside a 2:4 block, of value t (0: v0, 1: v1) of column c in group g.
static inline int64_t s24_value_offset(int64_t g, int64_t c, int t, int64_t esize) {
  const int64_t base = 4 * kPanelN + (g * 4 + c / 16) * 32 * esize;
  if (esize == 4) return base + (t * 16 + c % 16) * 4;   // planar v0[16], v1[16]
  return base + ((c % 16) * 2 + t) * esize;              // pairs
}

void pack_s24(const void* values, const uint8_t* meta, int64_t N, int64_t K, int64_t esize, uint8_t* out) {
  const int64_t P = round_up(N, kPanelN) / kPanelN, pb = s24_panel_bytes(K, esize);
  const int64_t G = round_up(K, 4) / 4, vrow = 2 * G * esize, mrow = (G + 1) / 2;
  std::memset(out, 0, P * pb);
  const uint8_t* v = static_cast<const uint8_t*>(values);
  for (int64_t n = 0; n < N; ++n) {
    const int64_t c = n % kPanelN;
    for (int64_t g = 0; g < G; ++g) {
      uint8_t* blk = out + (n / kPanelN) * pb + (g / 8) * s24_block_bytes(esize);
      const int64_t gl = g % 8;
      const uint32_t nib = (meta[n * mrow + g / 2] >> (4 * (g % 2))) & 0xf;
      uint32_t m;
      std::memcpy(&m, blk + 4 * c, 4);
      m |= ((nib & 3) << (2 * gl)) | ((nib >> 2) << (16 + 2 * gl));
      std::memcpy(blk + 4 * c, &m, 4);
      for (int t = 0; t < 2; ++t)
        std::memcpy(blk + s24_value_offset(gl, c, t, esize), v + n * vrow + (2 * g + t) * esize, esize);
    }
    if (esize == 1) {  // int8: the column's 128 * sum of values after the last block (mod 2^32,
                       // as the kernels' int32 sums; exact within kMaxK_s24_w8a8)
      uint32_t s = 0;
      for (int64_t i = 0; i < 2 * G; ++i) s += uint32_t(int32_t(static_cast<const int8_t*>(values)[n * vrow + i]));
      s *= 128u;
      std::memcpy(out + (n / kPanelN) * pb + pb - 4 * kPanelN + 4 * c, &s, 4);
    }
  }
}

void unpack_s24(const uint8_t* packed, int64_t N, int64_t K, int64_t esize, void* values, uint8_t* meta) {
  const int64_t pb = s24_panel_bytes(K, esize);
  const int64_t G = round_up(K, 4) / 4, vrow = 2 * G * esize, mrow = (G + 1) / 2;
  uint8_t* v = static_cast<uint8_t*>(values);
  std::memset(meta, 0, N * mrow);
  for (int64_t n = 0; n < N; ++n) {
    const int64_t c = n % kPanelN;
    for (int64_t g = 0; g < G; ++g) {
      const uint8_t* blk = packed + (n / kPanelN) * pb + (g / 8) * s24_block_bytes(esize);
      const int64_t gl = g % 8;
      uint32_t m;
      std::memcpy(&m, blk + 4 * c, 4);
      const uint32_t nib = ((m >> (2 * gl)) & 3) | (((m >> (16 + 2 * gl)) & 3) << 2);
      meta[n * mrow + g / 2] |= static_cast<uint8_t>(nib << (4 * (g % 2)));
      for (int t = 0; t < 2; ++t)
        std::memcpy(v + n * vrow + (2 * g + t) * esize, blk + s24_value_offset(gl, c, t, esize), esize);
    }
  }
}

}  // namespace qk
