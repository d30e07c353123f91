// AVX2 path (-mavx -mavx2 -mfma, no VNNI): int8 quantization, W8A8 (sign trick), W8A16, W4A8,
// W4A16; the 2:4 kernels are in sparse_avx2.cpp. The AVX-VNNI table reuses W8A16, W4A16 and quant.
#include <immintrin.h>

#include "driver.h"
#include "sparse.h"
#include "ymm_int8.h"

namespace qk {

// ---- per-row symmetric int8 quantization (contract in epilogue.h) ----------------------------
static inline __m256 load8(const float* x) { return _mm256_loadu_ps(x); }
static inline __m256 load8(const uint16_t* x) {
  __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}
static inline float to_f32(float v) { return v; }
static inline float to_f32(uint16_t v) { return bf16_to_f32(v); }

static inline float hmax8(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

template <typename T>
static void quant_row_avx2(const T* x, int64_t K, int8_t* q, float* scale) {
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 mx = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
  const int64_t K8 = K / 8 * 8;
  for (int64_t k = 0; k < K8; k += 8) {
    __m256 v = load8(x + k);
    mx = _mm256_max_ps(mx, _mm256_and_ps(v, absmask));
    bad = _mm256_add_ps(bad, _mm256_mul_ps(v, _mm256_setzero_ps()));
  }
  float amax = hmax8(mx);
  alignas(32) float b[8];
  _mm256_store_ps(b, bad);
  bool finite = true;
  for (int i = 0; i < 8; ++i) finite = finite && b[i] == 0.0f;
  for (int64_t k = K8; k < K; ++k) {
    float v = std::fabs(to_f32(x[k]));
    finite = finite && v <= FLT_MAX;
    amax = v > amax ? v : amax;
  }
  if (!finite) amax = nonfinite_amax([x](int64_t k) { return to_f32(x[k]); }, K);
  const float s = scale_from_amax(amax);
  *scale = s;
  if (!std::isfinite(s)) {
    std::memset(q, 0, K);
    return;
  }
  const __m256 vs = _mm256_set1_ps(s), lo = _mm256_set1_ps(-127.f), hi = _mm256_set1_ps(127.f);
  for (int64_t k = 0; k < K8; k += 8) {
    __m256 r = _mm256_round_ps(_mm256_div_ps(load8(x + k), vs),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    r = _mm256_min_ps(_mm256_max_ps(r, lo), hi);
    __m256i i32 = _mm256_cvtps_epi32(r);
    __m128i i16 = _mm_packs_epi32(_mm256_castsi256_si128(i32), _mm256_extracti128_si256(i32, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(q + k), _mm_packs_epi16(i16, i16));
  }
  for (int64_t k = K8; k < K; ++k) q[k] = quant_one(to_f32(x[k]), s);
}

void quant_row_f32_avx2(const float* x, int64_t K, int8_t* q, float* s) { quant_row_avx2(x, K, q, s); }
void quant_row_bf16_avx2(const uint16_t* x, int64_t K, int8_t* q, float* s) { quant_row_avx2(x, K, q, s); }

// ---- W8A8: gemm_x8s8s32_mrxnj8_ymm with the sign trick (signed activations) -------------------------
// vpmaddubsw needs u8 x s8 and saturates int16 pair sums, so |a| (u8, <= 128) x sign(w, a)
// (|w| <= 127): a pair sum is at most 2 * 128 * 127 = 32512 < 32767, exact for every int8
// activation and every weight in [-127, 127]; vpmaddwd(ones) widens to int32.
namespace {  // policies: internal linkage, so no inline member is shared with another path

struct SignTrickDot {
  static constexpr bool kU8 = false;
  __m256i ones = _mm256_set1_epi16(1);
  void operator()(__m256i& c, __m256i a, __m256i w) const {
    const __m256i p16 = _mm256_maddubs_epi16(_mm256_abs_epi8(a), _mm256_sign_epi8(w, a));
    c = _mm256_add_epi32(c, _mm256_madd_epi16(p16, ones));
  }
};

}  // namespace

static void gemm_w8a8_avx2(const W8A8Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  gemm_w8a8_ymm(g, m0, m1, p0, p1, SignTrickDot{});
}

// ---- W8A16 / W4A16, converted: fp32 weights in a per-thread scratch, 6 x 16 tiles ---------------
// The direct kernels (below) convert each weight in registers for the 1-4 rows of their tile, so at
// prefill the conversion, not the FMA, bounds them. From tuning().f32_convert_min_rows rows per task
// a task instead converts each panel once per chunk of up to kChunkK k values (never across a W4
// group) into four fp32 strips [kc][16] (columns 16j .. 16j + 15) and runs all its rows over them
// in 6 x 16 tiles: 12 accumulators, two weight loads and six broadcasts per 12 FMAs.
// The operations per output are the direct kernels': W8A16 one fp32 FMA chain over k in order,
// W4A16 one chain per group, then y = y + c * scale (no FMA). At a chunk boundary inside a chain the
// chain's value is stored and reloaded (exact), so a row's result is bit-identical in both kernels,
// whatever the batch.
constexpr int64_t kChunkK = 256;

// Rows of tile r at part / y + r * kPanelN (this strip's 16 columns). first: the chain starts at 0,
// else at part. last with a scale (W4A16 group end): y = y + c * scale; otherwise c goes to part.
template <int MR>
static QK_UKERNEL void gemm_f32f32f32_mrx16_avx2(const float* x, int64_t ldx, const float* ws, int64_t kc, float* part,
                                                 float* y, const float* scale, bool first, bool last) {
  __m256 c[MR][2];
  QK_UNROLL
  for (int r = 0; r < MR; ++r)
    QK_UNROLL
    for (int j = 0; j < 2; ++j) c[r][j] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(part + r * kPanelN + 8 * j);
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 w0 = _mm256_load_ps(ws + 16 * k), w1 = _mm256_load_ps(ws + 16 * k + 8);
    QK_UNROLL
    for (int r = 0; r < MR; ++r) {
      const __m256 b = _mm256_broadcast_ss(x + r * ldx + k);
      c[r][0] = _mm256_fmadd_ps(b, w0, c[r][0]);
      c[r][1] = _mm256_fmadd_ps(b, w1, c[r][1]);
    }
  }
  QK_UNROLL
  for (int r = 0; r < MR; ++r)
    QK_UNROLL
    for (int j = 0; j < 2; ++j) {
      if (last && scale) {
        float* yr = y + r * kPanelN + 8 * j;
        _mm256_storeu_ps(yr, _mm256_add_ps(_mm256_loadu_ps(yr), _mm256_mul_ps(c[r][j], _mm256_loadu_ps(scale + 8 * j))));
      } else {
        _mm256_storeu_ps(part + r * kPanelN + 8 * j, c[r][j]);
      }
    }
  sums_in_memory();
}

namespace {
// One per thread for both ops: the converted chunk, the chains crossing a chunk, the row sums.
struct F32Scratch {
  Buffer<float> w, part, y;
};
F32Scratch& f32_scratch() {
  thread_local F32Scratch s;
  return s;
}
}  // namespace

// Rows [m0, m1) x panels [p0, p1) over K k values in groups of gk (W8A16: one group, gk = K):
// convert(p, k0, k1, ws) writes k [k0, k1) of panel p as the four strips; scale(p, g) is group g's
// 64 scales (null for W8A16: the sums stay raw for its epilogue); epi(m, p, row sums).
template <typename Convert, typename Scale, typename Epi>
static void converted_panels(const float* x, int64_t ldx, int64_t m0, int64_t m1, int64_t p0, int64_t p1, int64_t K,
                             int64_t gk, Convert convert, Scale scale, Epi epi) {
  F32Scratch& s = f32_scratch();
  const int64_t rows = m1 - m0;
  float* ws = s.w.get(kChunkK * kPanelN);
  float* y = s.y.get(rows * kPanelN);
  // Chains that end in a group scale (W4A16) keep their partial sums apart from y; W8A16's go to y.
  float* part = scale(p0, 0) ? s.part.get(rows * kPanelN) : y;
  for (int64_t p = p0; p < p1; ++p) {
    std::fill(y, y + rows * kPanelN, 0.0f);
    for (int64_t g0 = 0; g0 < K; g0 += gk) {
      const float* sc = scale(p, g0 / gk);
      for (int64_t k0 = g0; k0 < g0 + gk; k0 += kChunkK) {
        const int64_t k1 = std::min(k0 + kChunkK, g0 + gk), kc = k1 - k0;
        convert(p, k0, k1, ws);
        const bool first = k0 == g0, last = k1 == g0 + gk;
        row_tiles<6>(m0, m1, [&](auto R, int64_t m) {
          for (int j = 0; j < 4; ++j)
            gemm_f32f32f32_mrx16_avx2<R>(x + m * ldx + k0, ldx, ws + j * kc * 16, kc, part + (m - m0) * kPanelN + 16 * j,
                                         y + (m - m0) * kPanelN + 16 * j, sc ? sc + 16 * j : nullptr, first, last);
        });
      }
    }
    for (int64_t m = m0; m < m1; ++m) epi(m, p, y + (m - m0) * kPanelN);
  }
}

// k [k0, k1) of a W8A16 panel ([k][64] int8) as fp32 strips.
static void convert_w8_f32(const int8_t* panel, int64_t k0, int64_t k1, float* ws) {
  const int64_t kc = k1 - k0;
  for (int64_t k = k0; k < k1; ++k)
    QK_UNROLL
    for (int j = 0; j < 4; ++j) {
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(panel + k * kPanelN + 16 * j));
      float* dst = ws + j * kc * 16 + (k - k0) * 16;
      _mm256_store_ps(dst, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)));
      _mm256_store_ps(dst + 8, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(v, 8))));
    }
}

// k [k0, k1) (multiples of 8, within the group) of a W4 group block as fp32 strips of u - zz.
static void convert_w4_f32(const uint8_t* blk, int64_t gk, int64_t k0, int64_t k1, float* ws) {
  const int64_t kc = k1 - k0;
  const __m256i m4 = _mm256_set1_epi32(0x0f);
  __m256i zz[8];
  QK_UNROLL
  for (int i = 0; i < 8; ++i)
    zz[i] = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk + 32 * gk + 4 * kPanelN + 8 * i)));
  for (int64_t k8 = k0 / 8; k8 < k1 / 8; ++k8)
    QK_UNROLL
    for (int i = 0; i < 8; ++i) {  // columns 8i .. 8i + 7: strip i / 2, half i % 2
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + k8 * 256 + 32 * i));
      float* dst = ws + (i / 2) * kc * 16 + (8 * k8 - k0) * 16 + (i % 2) * 8;
      QK_UNROLL
      for (int kk = 0; kk < 8; ++kk) {
        const int sh = kk < 4 ? 8 * kk : 8 * (kk - 4) + 4;
        const __m256i q = _mm256_sub_epi32(_mm256_and_si256(sh ? _mm256_srli_epi32(v, sh) : v, m4), zz[i]);
        _mm256_store_ps(dst + kk * 16, _mm256_cvtepi32_ps(q));
      }
    }
}

// ---- W8A16: gemm_f32s8f32_mrxnj8_avx2 -----------------------------------------------------------
// NJ ymm of columns per k from column 32 * half: MR <= 2 rows x half a panel (NJ = 4: 8
// accumulators), or at M = 1 one row x the whole panel (NJ = 8), so the decode stream reads each
// 64-byte panel row once. Per k: the panel row's bytes widen to NJ ymm fp32;
// c[r][j] += broadcast(x[r][k]) * wj.
template <int MR, int NJ>
static QK_UKERNEL void gemm_f32s8f32_mrxnj8_avx2(const float* x, int64_t ldx, const int8_t* wp, int64_t k0, int64_t k1,
                                                 float acc[][kPanelN], int half, PrefetchShare pf_next) {
  __m256 c[MR][NJ];
  QK_UNROLL
  for (int r = 0; r < MR; ++r)
    QK_UNROLL
    for (int j = 0; j < NJ; ++j) c[r][j] = k0 == 0 ? _mm256_setzero_ps() : _mm256_loadu_ps(acc[r] + half * 32 + 8 * j);
  if constexpr (MR == 1) {
    const int64_t pf = tuning().ymm_prefetch_distance;
    for (int64_t k = k0; k < k1; ++k) {
      const int8_t* w = wp + k * kPanelN + half * 32;
      prefetch_lines(w, pf, kPanelN);  // the panel row pf bytes ahead
      // One asm block per column block: as intrinsics GCC 12 loaded all 8 weight vectors first,
      // ran out of registers and kept one accumulator on the stack, so every k waited on a store
      // and a reload of it (4.4 multiply-adds per cycle on Zen 3, one thread).
      using i64u = int64_t __attribute__((may_alias, aligned(1)));
      const __m256 b = _mm256_broadcast_ss(x + k);
      QK_UNROLL
      for (int j = 0; j < NJ; ++j) {
        __m256 t;
        asm("vpmovsxbd %[w], %[t]\n\t"
            "vcvtdq2ps %[t], %[t]\n\t"
            "vfmadd231ps %[t], %[b], %[c]"
            : [c] "+x"(c[0][j]), [t] "=&x"(t)
            : [w] "m"(*reinterpret_cast<const i64u*>(w + 8 * j)), [b] "x"(b));
      }
    }
  } else {
    const auto at = [&](int64_t k) __attribute__((always_inline)) {
      const int8_t* w = wp + k * kPanelN + half * 32;
      __m256 wv[NJ];
      QK_UNROLL
      for (int j = 0; j < NJ; ++j)
        wv[j] = _mm256_cvtepi32_ps(
            _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(w + 8 * j))));
      QK_UNROLL
      for (int r = 0; r < MR; ++r) {
        const __m256 b = _mm256_broadcast_ss(x + r * ldx + k);
        QK_UNROLL
        for (int j = 0; j < NJ; ++j) c[r][j] = _mm256_fmadd_ps(b, wv[j], c[r][j]);
      }
    };
    // one prefetch step per 4 k (a k is one 64-byte line of the panel here), the loop unrolled so
    // that no k tests whether a step is due
    SpreadPrefetch ahead(pf_next.p, pf_next.lines, (k1 - k0) / 4);
    int64_t k = k0;
    for (; k + 4 <= k1; k += 4) {
      ahead.step();
      QK_UNROLL
      for (int kk = 0; kk < 4; ++kk) at(k + kk);
    }
    for (; k < k1; ++k) at(k);
  }
  QK_UNROLL
  for (int r = 0; r < MR; ++r)
    QK_UNROLL
    for (int j = 0; j < NJ; ++j) _mm256_storeu_ps(acc[r] + half * 32 + 8 * j, c[r][j]);
}

void gemm_w8a16_avx2(const W8A16Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  if (m1 - m0 >= tuning().f32_convert_min_rows) {
    const int64_t pb = w8a16_panel_bytes(g.K);
    converted_panels(static_cast<const float*>(g.x), g.ldx, m0, m1, p0, p1, g.K, g.K,
                     [&](int64_t p, int64_t k0, int64_t k1, float* ws) { convert_w8_f32(g.w + p * pb, k0, k1, ws); },
                     [](int64_t, int64_t) -> const float* { return nullptr; }, w8a16_epilogue(g));
    return;
  }
  // direct tiles (1 to f32_convert_min_rows - 1 rows) over drive_streamed: steps are k (64 bytes)
  drive_streamed<2, float>(m0, m1, p0, p1, g.w, w8a16_panel_bytes(g.K), g.K, kPanelN, stream_chunk_steps(1),
                           [&](auto R, int64_t m, const uint8_t* wp, float acc[][kPanelN], int64_t s0, int64_t s1,
                               PrefetchShare pf) {
    const float* x = static_cast<const float*>(g.x) + m * g.ldx;
    ymm_column_blocks<R>([&](auto NJ, int half) {
      gemm_f32s8f32_mrxnj8_avx2<R, NJ>(x, g.ldx, reinterpret_cast<const int8_t*>(wp), s0, s1, acc, half,
                                       pf.part(half, kPanelN / (8 * NJ)));
    });
  }, w8a16_epilogue(g));
}

// ---- W4A8: gemm_s8u4s32_mrxnj8_ymm, u4 x s8 through vpmaddubsw in int16 chains ----------------
namespace {

struct U8S8DotAvx2 {
  // Each vpmaddubsw lane is a pair sum of at most 2 * 15 * 128 = 3840, so 4 k8 steps (8 of them,
  // <= 30720 < 32767) add in int16 exactly before one widening vpmaddwd: the same int32 sums as one
  // vpmaddwd per vpmaddubsw, with 9 multiplies per 4 x 64 products instead of 16.
  static constexpr int kChainSteps = 4;
  alignas(32) static constexpr int16_t kOnes[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
  // p (int16 lanes) += maddubs(u0, s0) + maddubs(u1, s1), one asm block (as intrinsics GCC 12
  // interleaves the chains of the tile and runs out of registers).
  void chain(__m256i& p, __m256i u0, __m256i s0, __m256i u1, __m256i s1) const {
    __m256i t;
    asm("vpmaddubsw %[s0], %[u0], %[t]\n\t"
        "vpaddw %[t], %[p], %[p]\n\t"
        "vpmaddubsw %[s1], %[u1], %[t]\n\t"
        "vpaddw %[t], %[p], %[p]"
        : [p] "+x"(p), [t] "=&x"(t)
        : [u0] "x"(u0), [s0] "x"(s0), [u1] "x"(u1), [s1] "x"(s1));
  }
  // The decode tile's step (M = 1): the two int16 pair sums (each <= 3840) add in int16 before one
  // widening vpmaddwd, 3 multiplies per 8 x 8 products instead of 4, the same int32 sums. One asm
  // block with the ones in memory: as intrinsics, GCC 12 interleaved the 8 pairs of the decode tile
  // and kept 3-4 of its 8 accumulators on the stack.
  void pair(__m256i& c, __m256i u0, __m256i s0, __m256i u1, __m256i s1) const {
    asm("vpmaddubsw %[s0], %[u0], %[u0]\n\t"
        "vpmaddubsw %[s1], %[u1], %[u1]\n\t"
        "vpaddw %[u1], %[u0], %[u0]\n\t"
        "vpmaddwd %[ones], %[u0], %[u0]\n\t"
        "vpaddd %[u0], %[c], %[c]"
        : [c] "+x"(c), [u0] "+x"(u0), [u1] "+x"(u1)
        : [s0] "x"(s0), [s1] "x"(s1), [ones] "m"(kOnes));
  }
  // c[0..8) (int32, in memory) = [c +] the pair sums of p's int16 lanes.
  void widen(int32_t* c, __m256i p, bool first) const {
    __m256i& m = *reinterpret_cast<__m256i*>(c);
    if (first)
      asm("vpmaddwd %[ones], %[p], %[p]\n\tvmovdqa %[p], %[m]" : [m] "=m"(m), [p] "+x"(p) : [ones] "m"(kOnes));
    else
      asm("vpmaddwd %[ones], %[p], %[p]\n\tvpaddd %[m], %[p], %[p]\n\tvmovdqa %[p], %[m]"
          : [m] "+m"(m), [p] "+x"(p) : [ones] "m"(kOnes));
  }
};

}  // namespace

static void gemm_w4a8_avx2(const W4Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  gemm_w4a8_ymm(g, m0, m1, p0, p1, U8S8DotAvx2{});
}

// ---- W4A16: gemm_f32u4f32_mrxnj8_avx2 ---------------------------------------------------------
// Columns col0 .. col0 + 8 NJ - 1 of a panel. Per k of a k8 step, each of the NJ ymm gives
// u = (v >> shift) & 0x0f for 8 columns; u - zz (int32, exact) converts to fp32 and
// c[r][j] += bcast(x[r][k]) * (u - zz); per group y += c * scale. Products of x with the small
// integer u - zz: no cancellation, Inf / NaN propagate as in the exact sum. The conversion (4
// instructions per 8 weights) is shared by the MR rows of the tile: 3-4 rows x 16 columns from 3
// rows on, 2 rows x 32 columns, one row x 64 (at most 8 accumulators: 16 ymm in all).
template <int MR, int NJ>
static QK_UKERNEL void gemm_f32u4f32_mrxnj8_avx2(const float* x, int64_t ldx, const uint8_t* wp, int64_t g0, int64_t g1,
                                                 int64_t gk, float y[][kPanelN], int col0, PrefetchShare pf_next) {
  const __m256i m4 = _mm256_set1_epi32(0x0f);
  if (g0 == 0)
    QK_UNROLL
    for (int r = 0; r < MR; ++r)
      QK_UNROLL
      for (int j = 0; j < NJ; ++j) _mm256_storeu_ps(y[r] + col0 + 8 * j, _mm256_setzero_ps());
  SpreadPrefetch ahead(pf_next.p, pf_next.lines, (g1 - g0) * (gk / 8));
  for (int64_t grp = g0; grp < g1; ++grp) {
    const uint8_t* blk = wp + grp * w4_group_bytes(gk);
    const float* xg = x + grp * gk;
    const uint8_t* zzp = blk + 32 * gk + 4 * kPanelN + col0;
    __m256 c[MR][NJ];
    QK_UNROLL
    for (int r = 0; r < MR; ++r)
      QK_UNROLL
      for (int j = 0; j < NJ; ++j) c[r][j] = _mm256_setzero_ps();
    alignas(32) int32_t zz[8 * NJ];
    QK_UNROLL
    for (int j = 0; j < NJ; ++j)
      _mm256_store_si256(reinterpret_cast<__m256i*>(zz + 8 * j),
                         _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(zzp + 8 * j))));
    for (int64_t k8 = 0; k8 < gk / 8; ++k8) {
      if constexpr (MR > 1) ahead.step();
      const __m256i* w = reinterpret_cast<const __m256i*>(blk + k8 * 256 + col0 * 4);
#pragma GCC unroll 8
      for (int kk = 0; kk < 8; ++kk) {
        const int sh = kk < 4 ? 8 * kk : 8 * (kk - 4) + 4;
        __m256 b[MR];
        QK_UNROLL
        for (int r = 0; r < MR; ++r) b[r] = _mm256_broadcast_ss(xg + r * ldx + 8 * k8 + kk);
        QK_UNROLL
        for (int j = 0; j < NJ; ++j) {  // v and zz are re-read from L1: 16 ymm are few
          const __m256i v = _mm256_loadu_si256(w + j);
          const __m256i q = _mm256_sub_epi32(_mm256_and_si256(sh ? _mm256_srli_epi32(v, sh) : v, m4),
                                             _mm256_load_si256(reinterpret_cast<const __m256i*>(zz + 8 * j)));
          const __m256 u = _mm256_cvtepi32_ps(q);
          QK_UNROLL
          for (int r = 0; r < MR; ++r) c[r][j] = _mm256_fmadd_ps(b[r], u, c[r][j]);
        }
      }
    }
    const float* scale = reinterpret_cast<const float*>(blk + 32 * gk) + col0;
    QK_UNROLL
    for (int j = 0; j < NJ; ++j) {
      const __m256 s = _mm256_loadu_ps(scale + 8 * j);
      QK_UNROLL
      for (int r = 0; r < MR; ++r) {
        float* yr = y[r] + col0 + 8 * j;
        _mm256_storeu_ps(yr, _mm256_add_ps(_mm256_loadu_ps(yr), _mm256_mul_ps(c[r][j], s)));
      }
    }
    sums_in_memory();
  }
}

void gemm_w4a16_avx2(const W4Args& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  if (m1 - m0 >= tuning().f32_convert_min_rows) {
    const int64_t pb = w4_panel_bytes(g.G, g.gk), gb = w4_group_bytes(g.gk);
    converted_panels(static_cast<const float*>(g.a), g.lda, m0, m1, p0, p1, g.G * g.gk, g.gk,
                     [&](int64_t p, int64_t k0, int64_t k1, float* ws) {
                       const int64_t grp = k0 / g.gk;
                       convert_w4_f32(g.w + p * pb + grp * gb, g.gk, k0 - grp * g.gk, k1 - grp * g.gk, ws);
                     },
                     [&](int64_t p, int64_t grp) {
                       return reinterpret_cast<const float*>(g.w + p * pb + grp * gb + 32 * g.gk);
                     },
                     w4_epilogue<false>(g));
    return;
  }
  // direct tiles (1 to f32_convert_min_rows - 1 rows) over drive_streamed: steps are groups
  drive_streamed<4, float>(m0, m1, p0, p1, g.w, w4_panel_bytes(g.G, g.gk), g.G, w4_group_bytes(g.gk),
                           stream_chunk_steps(g.gk),
                           [&](auto R, int64_t m, const uint8_t* wp, float y[][kPanelN], int64_t s0, int64_t s1,
                               PrefetchShare pf) {
    const float* x = static_cast<const float*>(g.a) + m * g.lda;
    // 16 columns per pass from 3 rows, 32 at 2; M = 1: the whole panel in one pass, each line read once
    constexpr int NJ = decltype(R)::value >= 3 ? 2 : decltype(R)::value == 2 ? 4 : 8, passes = kPanelN / (8 * NJ);
    for (int i = 0; i < passes; ++i)
      gemm_f32u4f32_mrxnj8_avx2<R, NJ>(x, g.lda, wp, s0, s1, g.gk, y, 8 * NJ * i, pf.part(i, passes));
  }, w4_epilogue<false>(g));
}

extern const Kernels kernels_avx2 = {Isa::avx2, false, true, quant_row_f32_avx2, quant_row_bf16_avx2,
                                     gemm_w8a8_avx2, gemm_w8a16_avx2, gemm_w4a8_avx2,
                                     gemm_w4a16_avx2, gemm_s24_float_avx2, gemm_s24_i8_avx2};

}  // namespace qk
