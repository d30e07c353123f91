// The loops every path's GEMMs share: rows x 64-column panels with a compile-time tile height, the
// decode loop over panels in lockstep, and the epilogue of each op family (epilogue.h).
#pragma once
#include <algorithm>
#include <cstdlib>
#include <new>
#include <type_traits>
#include <utility>

#include "epilogue.h"
#include "kernels.h"

// Register tiles. A microkernel keeps its accumulators in arrays (c[MR][4], ...) that must become
// registers; GCC 12 does that only when the loops over the tile (trip count MR, NP or 4) are fully
// unrolled first and the kernel is optimized as its own function: inlined into drive()'s lambdas it
// kept W8A8's 24 accumulators on the stack (a load and a store around every vpdpbusd; 0.5x at
// M = 128). So every microkernel is QK_UKERNEL (one call per tile and panel run) and every loop over
// its tile is QK_UNROLL. scripts/check_kernel_lib.py checks the built library for such spills.
#define QK_UKERNEL __attribute__((noinline))
#define QK_UNROLL _Pragma("GCC unroll 16")

namespace qk {
namespace {  // per translation unit: each path instantiates its own copy with its own flags

// A microkernel that adds a pass (a group, a chunk) into row sums y in memory calls this after each
// pass's stores: y is then read back from L1 by the next pass. Without it GCC keeps the sums it just
// stored in registers until their next use and, short of registers in the hot loop in between,
// spills and reloads them around that loop (W4A8 4 x 64 on AVX-512: 39 stack accesses in the
// kernel -> 13, 1.02-1.14x at M = 32-512 on Zen 5).
inline void sums_in_memory() { asm volatile("" ::: "memory"); }

// Software prefetch (prefetcht0) of the `bytes` bytes `ahead` bytes past p, one touch per 64-byte
// line: the M = 1 kernels' weight streams, ahead = one of the tuning().*prefetch_distance choices
// (0: none). A prefetch never faults, so touching past the weights is harmless.
inline void prefetch_lines(const void* p, int64_t ahead, int64_t bytes) {
  if (!ahead) return;
  for (int64_t l = 0; l < bytes; l += 64) __builtin_prefetch(static_cast<const char*>(p) + ahead + l, 0, 3);
}

// Calls f(std::integral_constant<int, n>{}) for a run-time n in [1, MAX], so a row or panel count
// picks a compile-time tile size (the kernels are templates on it).
template <int MAX, typename F>
inline void with_tile(int n, F&& f) {
  if constexpr (MAX > 1)
    if (n < MAX) return with_tile<MAX - 1>(n, std::forward<F>(f));
  f(std::integral_constant<int, MAX>{});
}

// Rows [m0, m1) x panels [p0, p1): for each panel (panel_bytes apart from w), rows in tiles of at
// most tile_height(MR); uk(R, m, panel, acc) fills acc[r][0..64) for rows m .. m + R - 1 (R a compile-time
// constant), then epi(m + r, p, acc[r]) writes each row. One task keeps its panel hot in cache.
// Rows per tile of a kernel of compile-time height MR: MR, or tuning().tile_rows when that is set
// and smaller (a per-host choice; rows never share a sum, so no result depends on it).
inline int64_t tile_height(int64_t MR) {
  return tuning().tile_rows ? std::min<int64_t>(MR, tuning().tile_rows) : MR;
}

template <int MR, typename Acc, typename Ukernel, typename Epilogue>
inline void drive(int64_t m0, int64_t m1, int64_t p0, int64_t p1, const void* w, int64_t panel_bytes,
                  Ukernel uk, Epilogue epi) {
  alignas(64) Acc acc[MR][kPanelN];
  const int64_t height = tile_height(MR);
  for (int64_t p = p0; p < p1; ++p) {
    const uint8_t* wp = static_cast<const uint8_t*>(w) + p * panel_bytes;
    for (int64_t m = m0; m < m1; m += height) {
      const int mr = int(std::min<int64_t>(height, m1 - m));
      with_tile<MR>(mr, [&](auto R) { uk(R, m, wp, acc); });
      for (int r = 0; r < mr; ++r) epi(m + r, p, acc[r]);
    }
  }
}

// A software prefetch of `lines` consecutive 64-byte lines from p, spread evenly over a loop of
// `steps` steps: each step() touches the lines due by then (none at all when lines is 0).
struct SpreadPrefetch {
  const char* p;
  int64_t lines, steps, credit = 0;
  SpreadPrefetch(const void* from, int64_t n, int64_t over)
      : p(static_cast<const char*>(from)), lines(from ? n : 0), steps(std::max<int64_t>(over, 1)) {}
  // The prefetching path is marked unlikely, so it goes out of the caller's loop: without lines
  // (unstreamed calls) the loop keeps one untaken branch (a taken one cost W8A8 prefill 8-11%).
  void step() {
    credit += lines;
    if (__builtin_expect(credit >= steps, 0))
      do {
        __builtin_prefetch(p, 0, 3);
        p += 64;
        credit -= steps;
      } while (credit >= steps);
  }
};

// A share of a prefetch region: lines [i * n / parts, (i + 1) * n / parts) of the n lines at p
// (none for i >= parts).
struct PrefetchShare {
  const uint8_t* p;
  int64_t lines;
  PrefetchShare part(int64_t i, int64_t parts) const {
    if (i >= parts) return {nullptr, 0};
    const int64_t b = lines * i / parts, e = lines * (i + 1) / parts;
    return {p ? p + 64 * b : nullptr, e - b};
  }
};

// tuning().stream_chunk_k in steps of k_per_step k each (at least one step; 0: streaming off).
inline int64_t stream_chunk_steps(int64_t k_per_step) {
  const int64_t k = tuning().stream_chunk_k;
  return k ? std::max<int64_t>(1, k / k_per_step) : 0;
}

// Small batches whose weights come from memory. drive() walks all of K per row tile, so only the
// first tile over a panel reads it from memory, with one tile's rows of work to hide that behind.
// Here, for tasks of 2 .. tuning().stream_max_rows rows (at most kStreamRows), each panel's K goes
// in chunks of `chunk` steps (a panel is `steps` steps of step_bytes, then any tail): every row
// tile passes over a chunk, from L2 after the first pass, and each pass prefetches its share of the
// next chunk (the next panel's first after a panel's last), so the stream from memory overlaps with
// all the rows' work. uk(R, m, wp, acc, s0, s1, pf): steps [s0, s1) of rows m .. m + R - 1 into acc
// (from zero at s0 = 0, else adding to it; whatever ends the sum at s1 = steps), touching the lines
// of pf on the way (the tiles of 2 or more rows share the prefetch: one-row tiles, M = 1's and a
// task's short last, keep the M = 1 code as it was). Other tasks (one row, more rows, chunk = 0 or
// >= steps) run drive() with one chunk and no prefetch. The chunks change no sum's order, so no
// result depends on them.
template <int MR, typename Acc, typename Ukernel, typename Epilogue>
inline void drive_streamed(int64_t m0, int64_t m1, int64_t p0, int64_t p1, const void* w, int64_t panel_bytes,
                           int64_t steps, int64_t step_bytes, int64_t chunk, Ukernel uk, Epilogue epi) {
  const int64_t rows = m1 - m0;
  if (chunk <= 0 || chunk >= steps || rows < 2 || rows > std::min(kStreamRows, tuning().stream_max_rows)) {
    drive<MR, Acc>(m0, m1, p0, p1, w, panel_bytes, [&](auto R, int64_t m, const uint8_t* wp, Acc acc[][kPanelN]) {
      uk(R, m, wp, acc, int64_t(0), steps, PrefetchShare{nullptr, 0});
    }, epi);
    return;
  }
  alignas(64) Acc acc[kStreamRows][kPanelN];
  const int64_t height = tile_height(MR), tiles = (rows + height - 1) / height;
  const int64_t sharing = height == 1 ? 0 : tiles - (rows % height == 1);  // the tiles of 2+ rows
  for (int64_t p = p0; p < p1; ++p) {
    const uint8_t* wp = static_cast<const uint8_t*>(w) + p * panel_bytes;
    for (int64_t s0 = 0; s0 < steps; s0 += chunk) {
      const int64_t s1 = std::min(steps, s0 + chunk);
      const int64_t n0 = s1 < steps ? s1 : 0;  // the next chunk's first step, in this panel or the next
      const uint8_t* next = s1 < steps ? wp : p + 1 < p1 ? wp + panel_bytes : nullptr;
      const PrefetchShare pf{next ? next + n0 * step_bytes : nullptr,
                             next ? (std::min(steps, n0 + chunk) - n0) * step_bytes / 64 : 0};
      for (int64_t t = 0; t < tiles; ++t) {
        const int64_t m = m0 + t * height;
        with_tile<MR>(int(std::min<int64_t>(height, m1 - m)),
                      [&](auto R) { uk(R, m, wp, acc + (m - m0), s0, s1, pf.part(t, sharing)); });
      }
    }
    for (int64_t m = m0; m < m1; ++m) epi(m, p, acc[m - m0]);
  }
}

// Rows [m0, m1) in tiles of at most tile_height(MR): tile(R, m) with R a compile-time row count
// (for kernels that run their own panel loop around the rows).
template <int MR, typename Tile>
inline void row_tiles(int64_t m0, int64_t m1, Tile tile) {
  const int64_t height = tile_height(MR);
  for (int64_t m = m0; m < m1; m += height)
    with_tile<MR>(int(std::min<int64_t>(height, m1 - m)), [&](auto R) { tile(R, m); });
}

// The column blocks of a panel for the 256-bit tiles (8 columns per ymm): a tile of R rows calls
// f(NJ, half) per block of NJ ymm starting at column 32 * half (NJ a compile-time constant). One row
// takes the whole panel (NJ = 8: the decode stream reads each weight line once, in order; two
// half-panel passes read every line twice, the second time from L2 at best); more rows take half a
// panel per call (NJ = 4: 8 accumulators).
template <int R, typename F>
inline void ymm_column_blocks(F f) {
  constexpr int NJ = R == 1 ? 8 : 4;
  for (int half = 0; half < kPanelN / (8 * NJ); ++half) f(std::integral_constant<int, NJ>{}, half);
}

// Panels an M = 1 kernel of compile-time width NP walks at a time: NP, or tuning().decode_panels
// when that is set and smaller (the streams in flight per core are a per-host choice).
inline int64_t decode_width(int64_t NP) {
  return tuning().decode_panels ? std::min<int64_t>(NP, tuning().decode_panels) : NP;
}

// A growable per-thread buffer, 64-byte aligned (weight scratches and row sums of the kernels that
// convert a panel chunk once for all their rows).
template <typename T>
struct Buffer {
  T* p = nullptr;
  int64_t n = 0;
  Buffer() = default;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { std::free(p); }
  T* get(int64_t need) {
    if (need > n) {
      std::free(p);
      p = static_cast<T*>(std::aligned_alloc(64, round_up(need * int64_t(sizeof(T)), 64)));
      if (!p) throw std::bad_alloc();
      n = need;
    }
    return p;
  }
};

// Decode (one row): panels [p0, p1) in chunks of up to decode_width(NP) walked in lockstep by the
// kernel, so that many sequential weight streams per core are in flight; kernel(NPc, p, acc) fills
// acc[q] for panels p + q (NPc a compile-time constant), then epi(p + q, acc[q]).
template <int NP, typename Acc, typename Kernel, typename Epilogue>
inline void lockstep_panels(int64_t p0, int64_t p1, Kernel kernel, Epilogue epi) {
  alignas(64) Acc acc[NP][kPanelN];
  const int64_t width = decode_width(NP);
  for (int64_t p = p0; p < p1;) {
    const int np = int(std::min<int64_t>(width, p1 - p));
    with_tile<NP>(np, [&](auto n) { kernel(n, p, acc); });
    for (int q = 0; q < np; ++q) epi(p + q, acc[q]);
    p += np;
  }
}

// ---- epilogues of each family: (row m, panel p, accumulators of that row) -> out ------------------
inline auto w8a8_epilogue(const W8A8Args& g) {
  return [&g](int64_t m, int64_t p, const int32_t* acc) {
    epilogue_w8a8(acc, g.a_scale[m], g.w_scale + p * kPanelN, g.bias ? g.bias + p * kPanelN : nullptr,
                  panel_cols(g.N, p), out_row(g.out, g.ldo, m, p * kPanelN, g.out_bf16), g.out_bf16);
  };
}

inline auto w8a16_epilogue(const W8A16Args& g) {
  return [&g](int64_t m, int64_t p, const float* acc) {
    epilogue_w8a16(acc, g.w_scale + p * kPanelN, g.bias ? g.bias + p * kPanelN : nullptr, panel_cols(g.N, p),
                   out_row(g.out, g.ldo, m, p * kPanelN, g.out_bf16), g.out_bf16);
  };
}

// W4: y (the per-group fp32 sum) times a_scale (W4A8 only) plus bias.
template <bool A8>
inline auto w4_epilogue(const W4Args& g) {
  return [&g](int64_t m, int64_t p, const float* y) {
    epilogue_w4(y, A8 ? g.a_scale + m : nullptr, g.bias ? g.bias + p * kPanelN : nullptr, panel_cols(g.N, p),
                out_row(g.out, g.ldo, m, p * kPanelN, g.out_bf16), g.out_bf16);
  };
}

// 2:4: fp32 sums plus bias (float values), or the W8A8 epilogue of exact int32 sums (int8 values).
template <bool I8>
inline auto s24_epilogue(const S24Args& g) {
  return [&g](int64_t m, int64_t p, const std::conditional_t<I8, int32_t, float>* acc) {
    const float* bias = g.bias ? g.bias + p * kPanelN : nullptr;
    void* out = out_row(g.out, g.ldo, m, p * kPanelN, g.out_bf16);
    if constexpr (I8)
      epilogue_w8a8(acc, g.a_scale[m], g.w_scale + p * kPanelN, bias, panel_cols(g.N, p), out, g.out_bf16);
    else
      epilogue_w4(acc, nullptr, bias, panel_cols(g.N, p), out, g.out_bf16);
  };
}

// One W4A8 group's correction and fp32 accumulation, in the contract's order:
// y = y + float(acc - zz * asum) * scale (no FMA: -ffp-contract=off).
inline void w4a8_group_scalar(const int32_t* acc, int32_t asum, const uint8_t* zz, const float* scale,
                              float* y, int64_t count) {
  for (int64_t n = 0; n < count; ++n) {
    const float t = static_cast<float>(acc[n] - int32_t(zz[n]) * asum) * scale[n];
    y[n] = y[n] + t;
  }
}

}  // namespace
}  // namespace qk
