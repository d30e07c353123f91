// CPU features and kernel paths (torch-free), generated from cpu_paths.def: detection, the pure
// selection function, and the path that runs now.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace qk {

enum class Feature : int {
#define QK_FEATURE(name, flag, leaf, sub, reg, bit, os) name,
#include "cpu_paths.def"
#undef QK_FEATURE
  count_
};
using FeatureSet = uint64_t;  // bit i = Feature(i)
constexpr int kNumFeatures = static_cast<int>(Feature::count_);
static_assert(kNumFeatures <= 64, "FeatureSet holds at most 64 features");
constexpr FeatureSet feature_bit(Feature f) { return FeatureSet(1) << static_cast<int>(f); }

// Kernel paths in order of preference (the enum order is the order of cpu_paths.def).
enum class Isa : int {
#define QK_PATH(name, arch, features, sources) name,
#include "cpu_paths.def"
#undef QK_PATH
  count_
};
constexpr int kNumPaths = static_cast<int>(Isa::count_);

// Optional kernels of a path (QK_EXTENSION lines), in cpu_paths.def order.
enum class Ext : int {
#define QK_EXTENSION(path, arch, name, features, sources) name,
#include "cpu_paths.def"
#undef QK_EXTENSION
  count_
};
constexpr int kNumExts = static_cast<int>(Ext::count_);

const char* feature_name(Feature f);
bool feature_from_name(const std::string& name, Feature* out);
const char* isa_name(Isa isa);
bool isa_from_name(const std::string& name, Isa* out);

// The raw CPUID words detection reads, so that decoding them is a pure function too.
// Leaves hold {eax, ebx, ecx, edx}.
struct CpuidWords {
  uint32_t max_leaf = 0;  // leaf 0 eax
  uint32_t leaf1[4] = {0, 0, 0, 0};
  uint32_t leaf7[4] = {0, 0, 0, 0};     // subleaf 0
  uint32_t leaf7_1[4] = {0, 0, 0, 0};   // subleaf 1
  uint64_t xcr0 = 0;  // XGETBV(0); 0 when the OS has not enabled XSAVE (OSXSAVE clear)
};
FeatureSet features_from_cpuid(const CpuidWords& w);
// Display family and model of CPUID leaf 1 eax (extended fields folded in as Intel and AMD define
// them), e.g. 26 / 2 for AMD Zen 5, 6 / 143 for Intel Sapphire Rapids.
void family_model_from_cpuid(uint32_t leaf1_eax, int* family, int* model);

// Pure selection: the paths a CPU with `features` can run, best first (the last is scalar), and
// the features of `isa` that `features` lacks. Built-in-this-binary paths only.
std::vector<Isa> supported_paths(FeatureSet features);
std::vector<Feature> missing_features(Isa isa, FeatureSet features);
bool path_built(Isa isa);  // false for paths of another architecture (e.g. AVX-512 on aarch64)
const char* ext_name(Ext e);
// Pure: whether path `isa` may call extension e's kernels on a CPU with `features` (e belongs to
// isa, is built, and `features` hold both the path's and the extension's).
bool ext_supported(Ext e, Isa isa, FeatureSet features);

// This machine.
struct CpuInfo {
  std::string vendor, model;
  int family = 0, model_id = 0;  // family_model_from_cpuid (0 when not x86)
  FeatureSet features = 0;  // detected, minus `disabled`
  FeatureSet disabled = 0;  // detected but turned off by QKERNELS_DISABLE_CPU_FEATURES
};
const CpuInfo& cpu_info();  // detected once (CPUID + XGETBV)
Isa default_isa();          // supported_paths(cpu_info().features)[0]
Isa active_isa();           // the path that runs now (default_isa() until set_active_isa)
// Selects `isa` if this CPU supports it; otherwise leaves the active path alone and returns false.
bool set_active_isa(Isa isa);

}  // namespace qk
