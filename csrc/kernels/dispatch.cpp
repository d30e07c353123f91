// The kernel table of each path built into this binary, in cpu_paths.def order.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#define QK_DECLARE_x86(name) extern const Kernels kernels_##name;
#define QK_TABLE_x86(name) &kernels_##name
#define QK_IF_x86(...) __VA_ARGS__
#define QK_ELSE_x86(...)
#else
#define QK_DECLARE_x86(name)
#define QK_TABLE_x86(name) nullptr
#define QK_IF_x86(...)
#define QK_ELSE_x86(...) __VA_ARGS__
#endif
#define QK_DECLARE_any(name) extern const Kernels kernels_##name;
#define QK_TABLE_any(name) &kernels_##name

namespace qk {

#define QK_PATH(name, arch, features, sources) QK_DECLARE_##arch(name)
#include "cpu_paths.def"
#undef QK_PATH

#define QK_EXTENSION(path, arch, name, features, sources) QK_DECLARE_EXT_##arch(path, name)
#define QK_DECLARE_EXT_x86(path, name) QK_IF_x86(extern const ExtKernels kernels_##path##_##name;)
#define QK_DECLARE_EXT_any(path, name) extern const ExtKernels kernels_##path##_##name;
#include "cpu_paths.def"
#undef QK_EXTENSION

const ExtKernels* ext_kernels(Isa isa) {
  static const ExtKernels* const tables[] = {
#define QK_EXTENSION(path, arch, name, features, sources) QK_EXT_TABLE_##arch(path, name),
#define QK_EXT_TABLE_x86(path, name) QK_IF_x86(&kernels_##path##_##name) QK_ELSE_x86(nullptr)
#define QK_EXT_TABLE_any(path, name) &kernels_##path##_##name
#include "cpu_paths.def"
#undef QK_EXTENSION
      nullptr};
  for (int e = 0; e < kNumExts; ++e)
    if (tables[e] && ext_supported(static_cast<Ext>(e), isa, cpu_info().features)) return tables[e];
  return nullptr;
}

namespace {
int64_t tune_env(const char* name, int64_t fallback) {  // a plain decimal number, else the fallback
  const char* v = std::getenv(name);
  if (!v || !*v || std::strlen(v) > 15) return fallback;
  for (const char* c = v; *c; ++c)
    if (*c < '0' || *c > '9') return fallback;  // qkernels/_ext.py warns about such values
  return std::strtoll(v, nullptr, 10);
}
}  // namespace

const TuningField kTuningFields[11] = {{"bf16_dot_min_batch", &Tuning::bf16_dot_min_batch},
                                      {"bf16_dot_min_rows", &Tuning::bf16_dot_min_rows},
                                      {"bf16_dot_chunk_k", &Tuning::bf16_dot_chunk_k},
                                      {"decode_panels", &Tuning::decode_panels},
                                      {"tile_rows", &Tuning::tile_rows},
                                      {"prefetch_distance", &Tuning::prefetch_distance},
                                      {"sparse_prefetch_distance", &Tuning::sparse_prefetch_distance},
                                      {"ymm_prefetch_distance", &Tuning::ymm_prefetch_distance},
                                      {"f32_convert_min_rows", &Tuning::f32_convert_min_rows},
                                      {"stream_chunk_k", &Tuning::stream_chunk_k},
                                      {"stream_max_rows", &Tuning::stream_max_rows}};

namespace {
int64_t valid_tuning(int64_t Tuning::*f, int64_t v) {  // each field's valid range
  if (f == &Tuning::bf16_dot_min_batch || f == &Tuning::f32_convert_min_rows) return std::max<int64_t>(1, v);
  if (f == &Tuning::bf16_dot_chunk_k) return std::max<int64_t>(2, v / 2 * 2);
  if (f == &Tuning::prefetch_distance || f == &Tuning::sparse_prefetch_distance ||
      f == &Tuning::ymm_prefetch_distance)
    return std::clamp<int64_t>(v, 0, 1 << 20) / 64 * 64;  // whole cache lines, at most 1 MiB ahead
  if (f == &Tuning::stream_chunk_k) return std::max<int64_t>(0, v) / 4 * 4;  // whole W8A8 k4 steps
  if (f == &Tuning::stream_max_rows) return std::clamp<int64_t>(v, 0, kStreamRows);
  return std::max<int64_t>(0, v);
}

Tuning& tuning_state() {
  static Tuning t = [] {
    Tuning r;
    // bf16 activations, measured on AMD Zen 4 (2 threads, 4096x4096): the bf16-dot kernels from
    // M = 8 on (1.3-2x the fp32 kernels there, 1.6-2.2x at M = 128-512); below, the fp32 kernels
    // (M = 1 from DRAM: 21 GB/s against 15-17 GB/s for the bf16 dot converting in registers).
    // Within them, a scratch conversion from 16 rows per task (W4A16 gains from 16 rows, W8A16
    // ties at 16-32 and gains from 48), K in chunks of 1024 (128-2048 measured alike). Intel
    // (Sapphire Rapids) is not measured yet and gets the same values.
    r.bf16_dot_min_batch = 8;
    r.bf16_dot_min_rows = 16;
    r.bf16_dot_chunk_k = 1024;
    // Decode panels in lockstep: each kernel's own width (4-8 streams per core) where it was tuned,
    // Intel Sapphire Rapids (there 4-8 streams read DRAM faster than one). On AMD Zen 5 (family 26)
    // and Zen 4 (family 25 with AVX-512; Zen 3, family 25 without it, runs no lockstep kernel) one
    // stream per core reads fastest. 2 threads, M = 1 from DRAM, 4096 x 4096 / 11008, one panel vs
    // the kernels' own widths: Zen 5, W4A8 39 / 40 vs 31 / 30 GB/s, W4A16 48 / 43 vs 42 / 38, 2:4
    // int8 38 / 39 vs 35 / 29, 2:4 f32 40 / 61 vs 33 / 55 (2 panels within 10% of one, 4 between);
    // Zen 4 (bench/tune.py, 7 rounds), W4A8 1.21x / 1.23x, W4A16 1.13x / 1.23x, W4A16 on bf16 x
    // 1.13x / 1.21x, 2:4 int8 1.09x / 1.24x, 2:4 f32 1.08x / 1.04x (2 and 4 panels 0.92-1.13x).
    const CpuInfo& cpu = cpu_info();
    const bool amd = cpu.vendor == "AuthenticAMD";
    const bool zen4 = amd && cpu.family == 25 && (cpu.features & feature_bit(Feature::avx512f));
    r.decode_panels = amd && (cpu.family >= 26 || zen4) ? 1 : 0;
    // Software prefetch distance in each panel stream (M = 1 from DRAM; prefill reads hot panels, for
    // which it changes nothing measurable). Sapphire Rapids: 4 KiB best for the int8 kernels (1-2
    // KiB left W8A16 ~30% slower); W4A8 alike at 2-8 KiB, ~10% slower at 1 KiB and with none. The 2:4
    // kernels read more bytes per k step: 8 KiB best (2-16 KiB tried, 4 and 16 KiB ~5% slower).
    // Zen 4 (one panel per core, bench/tune.py, 2 threads, 4096 x 4096 / 11008, 3 sweeps of 5, 7 and
    // 9 rounds): the 2:4 kernels read fastest with no software prefetch, none vs 8 KiB 2:4 int8
    // 1.07x-1.28x, 2:4 f32 1.06x-1.10x, 2:4 bf16 1.12x / 1.22x (4 KiB in between: 1.00x-1.19x for
    // int8); the dense kernels keep 4 KiB (none: W4A16 0.78x / 0.80x, the others 0.93x-1.09x).
    r.tile_rows = 0;
    r.prefetch_distance = 4096;
    r.sparse_prefetch_distance = zen4 ? 0 : 8192;
    // The 256-bit paths' M = 1 W4A8 tile (one panel stream per core). AMD Zen 3 (family 25 model 1,
    // avx2), 2 threads, K = 4096, N = 32768 from DRAM, the kernels alone (the second run with
    // csrc/bench/decode_stream.cpp, the first with an earlier copy of it), medians of 4 alternating
    // runs: none 2.41 ms, 8 / 16 / 32 KiB ahead 1.24x / 1.31x / 1.23x; a second run, 16
    // KiB vs none in ABBA order, 6 each: 2.31 vs 2.62 ms, 1.14x. The W8A8 tile read at the
    // one-stream probe's rate without prefetch, and no distance beat that. Intel hosts without
    // AVX-512 are not measured and get the same value. The W8A16 decode tile (one line per k) and
    // the 256-bit 2:4 int8 decode tile (sparse_prefetch_distance, 20 lines per block) prefetch too:
    // Zen 3, 2 threads, 4096 x 11008 from DRAM through the modules, the distance switched between
    // interleaved blocks in one process, 3 processes: W8A16 16 KiB vs none 1.04x / 1.16x / 1.24x,
    // 2:4 int8 8 KiB vs none 1.07x / 1.17x / 1.23x (docs/kernels.md has the C++ sweep).
    r.ymm_prefetch_distance = 16384;
    // fp32 W8A16 / W4A16 on the 256-bit paths, converted weights from 8 rows per task. AMD Zen 3
    // (family 25 model 1, avx2 path), 2 threads, hot weights, converted vs direct: M = 4 W8A16
    // 0.88-0.91x, W4A16 1.12-1.30x; M = 8 1.0x / 1.08x; M = 16 0.93-1.16x / 1.26-1.28x; M = 32
    // 1.12x / 1.25x; M = 128 1.30x / 1.28x (4096 x 4096 and 4096 x 11008).
    r.f32_convert_min_rows = 8;
    // Small batches on the 256-bit paths' W8A8, W4A8, 2:4 and direct fp32 W8A16 / W4A16 tiles
    // (drive_streamed in driver.h): K in chunks of 2048 that all the task's row tiles pass over
    // while the next is prefetched, for 2-16 rows. AMD Zen 3 (family 25 model 1, avx2), 2 threads,
    // the W8A8 tile alone, K = 4096, N = 32768 from DRAM (134 MB), medians of 9 alternating runs
    // against walking all of K per tile: M = 2 1.2x, M = 4 1.6x, M = 8 1.3-1.4x, M = 16 1.1-1.2x,
    // M = 32 1.0x (hence 16 rows); through the modules the streamed kinds gain up to 1.95x at
    // M = 2-16 (docs/kernels.md). The AVX-512 paths do not stream; other hosts running the 256-bit
    // paths are not measured and get the same values.
    r.stream_chunk_k = 2048;
    r.stream_max_rows = 16;
    for (const TuningField& f : kTuningFields) {
      std::string var = "QKERNELS_TUNE_";
      for (const char* c = f.name; *c; ++c) var += char(*c >= 'a' && *c <= 'z' ? *c - 'a' + 'A' : *c);
      r.*f.field = valid_tuning(f.field, tune_env(var.c_str(), r.*f.field));
    }
    return r;
  }();
  return t;
}
}  // namespace

const Tuning& tuning() { return tuning_state(); }

std::optional<int64_t> set_tuning(const char* name, int64_t value) {
  for (const TuningField& f : kTuningFields)
    if (std::strcmp(f.name, name) == 0) return tuning_state().*f.field = valid_tuning(f.field, value);
  return std::nullopt;
}

const Kernels& kernels(Isa isa) {
  static const Kernels* const tables[] = {
#define QK_PATH(name, arch, features, sources) QK_TABLE_##arch(name),
#include "cpu_paths.def"
#undef QK_PATH
  };
  return *tables[static_cast<int>(isa)];  // callers pass supported (hence built) paths only
}

}  // namespace qk
