// Torch-free kernel interface: packed-layout constants and the per-path kernel table.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>

#include "cpu.h"

namespace qk {

// Every inline helper a kernel translation unit sees has internal linkage (static, or an
// anonymous namespace): TUs are compiled with different ISA flags, and the linker must never
// pick an AVX-512 copy of a shared helper for the scalar path.

// Largest K (in_features) each integer contract accumulates exactly in int32. The op layer checks
// them and Python reads them (qkernels._C.max_in_features) to reject such layers at construction.
//   W8A8:     the u8 paths sum (a + 128) * w:             255 * 127 * K < 2^31
//   W4A8:     sum a * u and zz * sum a:                    128 * 15 * K < 2^31
//   2:4 int8: K / 2 products of at most 128 * 127
constexpr int64_t kMaxK_w8a8 = 66000;
constexpr int64_t kMaxK_w4a8 = 1000000;
constexpr int64_t kMaxK_s24_w8a8 = 200000;

// Packed weights: columns in panels of kPanelN. Both layouts are ISA-independent, so a
// weight packed once runs on every ISA path.
constexpr int64_t kPanelN = 64;
static inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// W8A8 panel p (columns 64p .. 64p+63), K padded to Kp = round_up(K, 4):
//   bytes [0, Kp*64):       for k4 in [0, Kp/4): for n in [0, 64): w[64p+n][4k4 .. 4k4+3]
//   bytes [Kp*64, +256):    int32 colsum[n] = 128 * sum_k w[64p+n][k]   (VNNI u8 compensation)
// Padding (k >= K or n >= N) is zero. Weights must lie in [-127, 127] (AVX2 sign trick).
static inline int64_t w8a8_panel_bytes(int64_t K) { return round_up(K, 4) * kPanelN + 4 * kPanelN; }
// W8A16 panel p: for k in [0, K): for n in [0, 64): w[64p+n][k]   (int8, zero padding in n)
static inline int64_t w8a16_panel_bytes(int64_t K) { return K * kPanelN; }

void pack_w8a8(const int8_t* w, int64_t N, int64_t K, int8_t* out);
void pack_w8a16(const int8_t* w, int64_t N, int64_t K, int8_t* out);
// Inverses: the plain int8 [N, K] weight back from a packed buffer (state_dict, reference path).
void unpack_w8a8(const int8_t* packed, int64_t N, int64_t K, int8_t* w);
void unpack_w8a16(const int8_t* packed, int64_t N, int64_t K, int8_t* w);

// ---- Packed layouts: each CPU layout's tag and its one geometry ----------------------------------
// The op layer allocates and validates packed tensors with packed_shape, and Python reads the
// same numbers through qkernels._C (qkernels.formats), so no other place computes them.
enum class Layout : int { int8_w8a8_panels, int8_w8a16_panels, int4_panels, sparse24_panels, count_ };
const char* layout_name(Layout layout);
bool layout_from_name(const char* name, Layout* out);
// int4 groups along K: G groups of gk values (gk a multiple of 8; one group per row is K rounded up
// to 8). The caller checks group_size (>= 1; a multiple of 8 unless it covers all of K).
struct W4Geom {
  int64_t G, gk;
  int64_t Kp() const { return G * gk; }
};
W4Geom w4_geometry(int64_t K, int64_t group_size);
// [panels, bytes per panel] of a packed weight of N outputs and K inputs; group_size is used by
// int4_panels, esize (bytes per 2:4 value: 4, 2 or 1) by sparse24_panels.
struct PackedShape {
  int64_t rows, cols;
};
PackedShape packed_shape(Layout layout, int64_t N, int64_t K, int64_t group_size, int64_t esize);

// Inputs to the W8A8 GEMM on a range of rows x panels.
struct W8A8Args {
  const uint8_t* a;      // [M][lda] activations padded to Kp; int8, or int8+128 when Kernels::a_u8
  int64_t lda;           // = Kp
  const float* a_scale;  // [M]
  const int8_t* w;       // packed panels (w8a8 layout)
  int64_t K;             // logical K (Kp = round_up(K, 4))
  int64_t N;
  const float* w_scale;  // [N]
  const float* bias;     // [N] or nullptr
  void* out;             // [M][ldo] fp32 or bf16
  int64_t ldo;
  bool out_bf16;
};

struct W8A16Args {
  const void* x;         // [M][ldx] fp32 activations (bf16, ldx even, for ExtKernels::gemm_w8a16_bf16)
  int64_t ldx;
  const int8_t* w;       // packed panels (w8a16 layout)
  int64_t K, N;
  const float* w_scale;
  const float* bias;
  void* out;
  int64_t ldo;
  bool out_bf16;
};

// W4 (int4 grouped) panel p (columns 64p .. 64p+63). K is split into G groups of gk values
// (gk a multiple of 8; K padded with zeros to Kp = G * gk). Stored per weight: the unsigned
// nibble u in [0, 15] and per (column, group) the integer zz it is offset by, so that
// w = (u - zz) * scale (symmetric int4 q in [-8, 7]: u = q + 8, zz = 8; asymmetric: u = q, zz = zp).
// For each group g (w4_group_bytes(gk) bytes, groups back to back):
//   bytes [0, 32*gk):      for k8 in [0, gk/8): for n in [0, 64): 4 bytes, byte j =
//                          u[n][8k8 + j] | u[n][8k8 + 4 + j] << 4   (low nibbles: k 0-3, high: 4-7)
//   bytes [32*gk, +256):   fp32 scale[n]
//   bytes [.., +64):       u8 zz[n]
// So one 64-byte load is 16 columns x 8 k: (v & 0x0f) and (v >> 4 & 0x0f) are two vpdpbusd-ready
// u8 [16 n x 4 k] operands. Padding holds u = 0 (the activations there are 0 too); padded
// columns have scale 0 and zz 0.
static inline int64_t w4_group_bytes(int64_t gk) { return gk * 32 + 4 * kPanelN + kPanelN; }
static inline int64_t w4_panel_bytes(int64_t G, int64_t gk) { return G * w4_group_bytes(gk); }
// qweight: [N][ceil(K/2)] bytes, element k in nibble k % 2 of byte k / 2 (the state_dict format):
// two's complement q in [-8, 7] when zero_point is null (stored as u = q + 8 with zz = 8), else
// unsigned q in [0, 15] with zero_point [N][G] in [0, 15] (u = q, zz = zero point). scale: [N][G].
void pack_w4(const uint8_t* qweight, const float* scale, const int32_t* zero_point, int64_t N, int64_t K,
             int64_t G, int64_t gk, uint8_t* out);
// Inverse; zero_point may be null (symmetric).
void unpack_w4(const uint8_t* packed, int64_t N, int64_t K, int64_t G, int64_t gk, bool symmetric,
               uint8_t* qweight, float* scale, int32_t* zero_point);

// The int4 per-group clipping search of QuantLinear.from_float (qkernels.formats.int4 defines it):
// rows x K fp32 weights (finite), groups of gk along K (the last may be partial); for each group
// and each of n_ratios clip ratios the candidate scale / zero point, q = clamp(round(x / s) + z),
// and the squared error sum((q - z) * s - x)^2 accumulated in double; the least error wins (the
// first on ties). Writes the state_dict nibbles qweight [rows][ceil(K/2)] (pack_w4's input),
// scale [rows][G] and zero_point [rows][G] (null: symmetric).
void quantize_w4_clip_search(const float* w, int64_t rows, int64_t K, int64_t gk, bool symmetric,
                             const float* ratios, int n_ratios, uint8_t* qweight, float* scale,
                             int32_t* zero_point);

// Inputs to the W4A8 / W4A16 GEMMs. Rows are padded to Kp with zeros.
//   W4A8:  a = int8 activations [M][Kp], asum[m][g] = sum of row m's group g (int32), a_scale[M]
//          y[m][n] = fp32 sum over g (in order) of float(acc_g) * scale[n][g], then
//          out = y * a_scale[m] + bias[n]; acc_g = sum_k a[m][k] * (u[n][k] - zz[n][g]) exact.
//   W4A16: x = fp32 activations [M][Kp] (asum unused)
//          out = sum_g (sum_k x * (u - zz)) * scale + bias in fp32: each product is of x with the
//          small integer u - zz, so large terms never cancel and Inf / NaN propagate as in the
//          exact sum (fp32, not bit-exact; the reference states the bound).
struct W4Args {
  const void* a;          // int8 (W4A8), fp32 (W4A16) or bf16 (ExtKernels::gemm_w4a16_bf16) rows, stride lda
  int64_t lda;            // = Kp
  const float* a_scale;   // [M] (W4A8 only)
  const int32_t* asum;    // [M][G] (W4A8 only)
  const uint8_t* w;       // packed panels (w4 layout)
  int64_t G, gk, N;
  const float* bias;
  void* out;
  int64_t ldo;
  bool out_bf16;
};

// 2:4 sparse panel p (64 columns). K is padded to Kp = round_up(K, 32): blocks of 32 k (8 groups
// of 4). Per block (s24_block_bytes(esize) bytes, blocks back to back):
//   bytes [0, 256):   u32 meta[n] for n in [0, 64): bits 2g..2g+1 = i0 of group g, bits
//                     16+2g..16+2g+1 = i1 of group g (g = 0..7; i0 < i1 the kept positions)
//   then for g in [0, 8): for j in [0, 4) (columns 16j .. 16j+15), 32 * esize bytes:
//     fp32 values:      v0[16] then v1[16]            (two vectors: one FMA each)
//     bf16 / int8:      16 pairs (v0, v1)             (one dword / word per column)
// int8 values only, after the last block: int32 colsum[64] = 128 * (sum of column n's values), which
// compensates kernels that read u8 activations a + 128 (Kernels::s24_a_u8).
// A shift of meta puts a group's index in the low bits of each lane, where vpermps (fp32 lanes,
// activation window of 4 broadcast to every 128-bit quad), vpermw (int16 lanes, window of 4
// broadcast to every qword) and vpshufb (bytes, window of 4 broadcast to every dword) gather the
// activations. Padding: values 0, meta 0.
constexpr int64_t kS24BlockK = 32;
static inline int64_t s24_block_bytes(int64_t esize) { return 4 * kPanelN + 8 * 4 * 32 * esize; }
static inline int64_t s24_panel_bytes(int64_t K, int64_t esize) {
  return round_up(K, kS24BlockK) / kS24BlockK * s24_block_bytes(esize) + (esize == 1 ? 4 * kPanelN : 0);
}
// values: [N][Kp4/2] (Kp4 = round_up(K, 4)) of esize bytes each, meta: [N][ceil(Kp4/8)] uint8
// (qkernels.reference.sparse format: group g in byte g/2, nibble g%2, i0 | i1 << 2).
void pack_s24(const void* values, const uint8_t* meta, int64_t N, int64_t K, int64_t esize, uint8_t* out);
void unpack_s24(const uint8_t* packed, int64_t N, int64_t K, int64_t esize, void* values, uint8_t* meta);

// Inputs to the 2:4 GEMMs: activations padded to Kp = round_up(K, 32) with zeros.
//   float: x fp32 [M][Kp], values fp32 or bf16 (values_bf16): out = sum_k x * w + bias (fp32)
//   int8:  a int16 [M][Kp] (int8 activations widened), or where Kernels::s24_a_u8 uint8 [M][Kp]
//          (a + 128, padding 128); values int8: exact int32 acc, then the W8A8 epilogue
//          ((float)acc * a_scale) * w_scale + bias
struct S24Args {
  const void* a;
  int64_t lda;
  const float* a_scale;  // int8 only
  const uint8_t* w;
  int64_t K, N;
  bool values_bf16;      // float only
  const float* w_scale;  // int8 only
  const float* bias;
  void* out;
  int64_t ldo;
  bool out_bf16;
};

struct Kernels {
  Isa isa;
  bool a_u8;  // the W8A8 kernel wants activations shifted to u8 (vpdpbusd); colsum compensates
  bool s24_a_u8;  // the 2:4 int8 kernel reads u8 rows a + 128 (vpshufb picks bytes; the panel's colsum
                  // compensates), else int16 rows
  // Symmetric int8 quantization of one row (see quant_row_ref in epilogue.h for the contract).
  void (*quant_row_f32)(const float* x, int64_t K, int8_t* q, float* scale);
  void (*quant_row_bf16)(const uint16_t* x, int64_t K, int8_t* q, float* scale);
  // Rows [m0, m1) x panels [p0, p1).
  void (*gemm_w8a8)(const W8A8Args& a, int64_t m0, int64_t m1, int64_t p0, int64_t p1);
  void (*gemm_w8a16)(const W8A16Args& a, int64_t m0, int64_t m1, int64_t p0, int64_t p1);
  void (*gemm_w4a8)(const W4Args& a, int64_t m0, int64_t m1, int64_t p0, int64_t p1);
  void (*gemm_w4a16)(const W4Args& a, int64_t m0, int64_t m1, int64_t p0, int64_t p1);
  void (*gemm_s24_float)(const S24Args& a, int64_t m0, int64_t m1, int64_t p0, int64_t p1);
  void (*gemm_s24_i8)(const S24Args& a, int64_t m0, int64_t m1, int64_t p0, int64_t p1);
};

// The table of a path built into this binary (path_built(isa)); each is defined in the path's own
// translation units as kernels_<name>, compiled with the flags of its features (cpu_paths.def).
const Kernels& kernels(Isa isa);

// A path extension's kernels (QK_EXTENSION in cpu_paths.def); a null entry is one it lacks.
//   bf16 dot (avx512_bf16): W8A16 / W4A16 on bf16 activation rows (padded with zeros to an even
//   K, Kp for W4), weights converted to bf16 (int8 and u - zz are exact in bf16) and multiplied by
//   vdpbf16ps: exact products, fp32 sums. Same contracts and bounds as the fp32 kernels
//   (reference.w8a16_gemm / w4a16_gemm): fp32 sums of exact products (denormal inputs and sums
//   flush to zero, far inside the bounds' absolute term). The op layer sends bf16 x there from
//   tuning().bf16_dot_min_batch rows on.
struct ExtKernels {
  Ext ext;
  void (*gemm_w8a16_bf16)(const W8A16Args& a, int64_t m0, int64_t m1, int64_t p0, int64_t p1);
  void (*gemm_w4a16_bf16)(const W4Args& a, int64_t m0, int64_t m1, int64_t p0, int64_t p1);
};
// Tuning choices of this process, made at run time from cpu_info() (never from the build machine);
// QKERNELS_TUNE_<NAME> (e.g. QKERNELS_TUNE_BF16_DOT_MIN_ROWS=1) overrides one, for measuring, and
// set_tuning changes one between calls (the bench's and an autotune's sweeps).
constexpr int64_t kStreamRows = 32;  // the most rows drive_streamed (driver.h) holds sums for
struct Tuning {
  int64_t bf16_dot_min_batch; // bf16 x: the bf16-dot kernels from this M on, the path's fp32 kernels
                              // below (1: every M, so a row's result never depends on its batch)
  int64_t bf16_dot_min_rows;  // bf16-dot kernels: tasks of this many rows convert weights into a
                              // scratch once per chunk; fewer rows convert them in registers
  int64_t bf16_dot_chunk_k;   // K values per chunk (even; W4: whole groups). Part of the W8A16 sum
                              // order (per-chunk partial sums), the same for every M
  int64_t decode_panels;      // M = 1: at most this many panels (weight streams) walked in lockstep
                              // per core (0: each kernel's own width, 4-8); not part of any sum order
  int64_t tile_rows;          // prefill: at most this many rows per register tile (0: each kernel's
                              // own height, 2-6); rows never share a sum
  int64_t prefetch_distance;  // AVX-512 dense kernels: bytes ahead in each panel stream that a
                              // software prefetch touches (multiple of 64; 0: none issued)
  int64_t sparse_prefetch_distance;  // the same for the AVX-512 2:4 kernels and the 256-bit paths'
                                     // M = 1 2:4 int8 tile
  int64_t ymm_prefetch_distance;  // the same for the M = 1 W4A8 and W8A16 tiles of the 256-bit paths
                                  // (avx2, avx_vnni)
  int64_t f32_convert_min_rows;  // fp32 W8A16 / W4A16 on the 256-bit paths (avx2, avx_vnni): tasks of
                                 // this many rows convert weights into an fp32 scratch once per chunk
                                 // and run 6 x 16 FMA tiles over it; not part of any sum order
  int64_t stream_chunk_k;   // 256-bit paths' W8A8, W4A8, 2:4, direct fp32 W8A16 / W4A16
                            // (drive_streamed): K per chunk (whole steps: k4, W4 groups, 2:4
                            // blocks; at least one) that all row tiles of a small task pass over
                            // while the next chunk is prefetched (0: off)
  int64_t stream_max_rows;  // ... for tasks of 2 to this many rows (at most kStreamRows, 32); neither
                            // is part of any sum order
};
const Tuning& tuning();
// The fields by name (lower case, as in cpu_info()['tuning'] and QKERNELS_TUNE_<NAME>).
struct TuningField {
  const char* name;
  int64_t Tuning::*field;
};
extern const TuningField kTuningFields[11];
// Sets one field (clamped to its valid range) and returns the value taken; nullopt for an unknown
// name. Not while kernels run.
std::optional<int64_t> set_tuning(const char* name, int64_t value);

// The extension kernels path `isa` may use on this CPU (ext_supported with cpu_info().features),
// or nullptr.
const ExtKernels* ext_kernels(Isa isa);

}  // namespace qk
