// CPU feature detection (CPUID + XGETBV), path selection and the active path; tables from
// cpu_paths.def. Compiled without ISA flags: it must run on every CPU.
#include "cpu.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <sstream>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define QK_X86 1
#else
#define QK_X86 0
#endif

namespace qk {
namespace {

enum class OsState { NONE, YMM, ZMM, TILE };

struct FeatureSpec {
  const char* name;
  unsigned leaf, sub;
  int reg;  // 0..3: eax, ebx, ecx, edx
  unsigned bit;
  OsState os;
};

constexpr FeatureSpec kFeatures[] = {
#define QK_FEATURE(name, flag, leaf, sub, reg, bit, os) \
  {#name, leaf, sub, #reg[1] - 'a', bit, OsState::os},
#include "cpu_paths.def"
#undef QK_FEATURE
};

struct PathSpec {
  const char* name;
  const char* features;  // space-separated feature names
  bool built;
};

const PathSpec kPaths[] = {
#define QK_ARCH_x86 QK_X86
#define QK_ARCH_any 1
#define QK_PATH(name, arch, features, sources) {#name, features, QK_ARCH_##arch},
#include "cpu_paths.def"
#undef QK_PATH
};

struct ExtSpec {
  const char* name;
  Isa path;
  const char* features;  // beyond the path's own
  bool built;
};

const ExtSpec kExts[] = {
#define QK_EXTENSION(path, arch, name, features, sources) {#name, Isa::path, features, QK_ARCH_##arch},
#include "cpu_paths.def"
#undef QK_EXTENSION
};

static_assert(sizeof(kFeatures) / sizeof(kFeatures[0]) == kNumFeatures, "feature table");
constexpr bool leaves_read() {
  for (const FeatureSpec& f : kFeatures)
    if (!((f.leaf == 1 && f.sub == 0) || (f.leaf == 7 && f.sub <= 1)) || f.reg < 0 || f.reg > 3) return false;
  return true;
}
static_assert(leaves_read(), "cpu_paths.def: read_cpuid reads leaves 1, 7.0 and 7.1 only");
static_assert(sizeof(kPaths) / sizeof(kPaths[0]) == kNumPaths, "path table");

FeatureSet parse_features(const char* list) {
  FeatureSet r = 0;
  std::istringstream words(list);
  std::string w;
  while (words >> w) {
    Feature f;
    if (!feature_from_name(w, &f)) std::abort();  // a typo in cpu_paths.def
    r |= feature_bit(f);
  }
  return r;
}

// Each path's required features, parsed once from its space-separated list.
const FeatureSet* required_table() {
  static const std::vector<FeatureSet> req = [] {
    std::vector<FeatureSet> r(kNumPaths, 0);
    for (int p = 0; p < kNumPaths; ++p) r[p] = parse_features(kPaths[p].features);
    return r;
  }();
  return req.data();
}

// Each extension's features on top of its path's.
const FeatureSet* ext_table() {
  static const std::vector<FeatureSet> req = [] {
    std::vector<FeatureSet> r(kNumExts + 1, 0);
    for (int e = 0; e < kNumExts; ++e) {
      if (kExts[e].built != kPaths[static_cast<int>(kExts[e].path)].built) std::abort();  // arch mismatch
      r[e] = parse_features(kExts[e].features) | required_table()[static_cast<int>(kExts[e].path)];
    }
    return r;
  }();
  return req.data();
}

bool os_saves(OsState s, uint64_t xcr0) {
  switch (s) {
    case OsState::NONE: return true;
    case OsState::YMM: return (xcr0 & 0x6) == 0x6;
    case OsState::ZMM: return (xcr0 & 0xe6) == 0xe6;
    case OsState::TILE: return (xcr0 & 0x60000) == 0x60000;
  }
  return false;
}

#if QK_X86
CpuidWords read_cpuid(std::string* vendor, std::string* model) {
  CpuidWords w;
  unsigned a, b, c, d;
  __cpuid(0, a, b, c, d);
  w.max_leaf = a;
  char v[13] = {0};
  std::memcpy(v, &b, 4);
  std::memcpy(v + 4, &d, 4);
  std::memcpy(v + 8, &c, 4);
  *vendor = v;
  __cpuid(1, a, b, c, d);
  w.leaf1[0] = a, w.leaf1[1] = b, w.leaf1[2] = c, w.leaf1[3] = d;
  if (c & (1u << 27)) {  // OSXSAVE: the OS manages XCR0, so XGETBV is allowed
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    w.xcr0 = (uint64_t(hi) << 32) | lo;
  }
  if (w.max_leaf >= 7) {
    __cpuid_count(7, 0, a, b, c, d);
    const unsigned max_sub = a;
    w.leaf7[0] = a, w.leaf7[1] = b, w.leaf7[2] = c, w.leaf7[3] = d;
    if (max_sub >= 1) {
      __cpuid_count(7, 1, a, b, c, d);
      w.leaf7_1[0] = a, w.leaf7_1[1] = b, w.leaf7_1[2] = c, w.leaf7_1[3] = d;
    }
  }
  char brand[49] = {0};
  __cpuid(0x80000000, a, b, c, d);
  if (a >= 0x80000004)
    for (unsigned i = 0; i < 3; ++i) {
      __cpuid(0x80000002 + i, a, b, c, d);
      const unsigned r[4] = {a, b, c, d};
      std::memcpy(brand + 16 * i, r, 16);
    }
  std::string m = brand;
  const size_t s = m.find_first_not_of(' '), e = m.find_last_not_of(' ');
  *model = s == std::string::npos ? "" : m.substr(s, e - s + 1);
  return w;
}
#endif

std::atomic<int> g_active{-1};

}  // namespace

void family_model_from_cpuid(uint32_t eax, int* family, int* model) {
  const int base_family = int(eax >> 8 & 0xf), base_model = int(eax >> 4 & 0xf);
  *family = base_family == 0xf ? base_family + int(eax >> 20 & 0xff) : base_family;
  *model = base_family == 0x6 || base_family == 0xf ? base_model + (int(eax >> 16 & 0xf) << 4) : base_model;
}

const char* feature_name(Feature f) { return kFeatures[static_cast<int>(f)].name; }

bool feature_from_name(const std::string& name, Feature* out) {
  for (int i = 0; i < kNumFeatures; ++i)
    if (name == kFeatures[i].name) {
      *out = static_cast<Feature>(i);
      return true;
    }
  return false;
}

const char* isa_name(Isa isa) { return kPaths[static_cast<int>(isa)].name; }

bool isa_from_name(const std::string& name, Isa* out) {
  for (int i = 0; i < kNumPaths; ++i)
    if (name == kPaths[i].name) {
      *out = static_cast<Isa>(i);
      return true;
    }
  return false;
}

FeatureSet features_from_cpuid(const CpuidWords& w) {
  FeatureSet fs = 0;
  for (int i = 0; i < kNumFeatures; ++i) {
    const FeatureSpec& f = kFeatures[i];
    if (f.leaf > w.max_leaf || !os_saves(f.os, w.xcr0)) continue;
    const uint32_t* leaf = f.leaf == 1 ? w.leaf1 : f.sub == 0 ? w.leaf7 : w.leaf7_1;
    if ((leaf[f.reg] >> f.bit) & 1u) fs |= FeatureSet(1) << i;
  }
  return fs;
}

bool path_built(Isa isa) { return kPaths[static_cast<int>(isa)].built; }

const char* ext_name(Ext e) { return kExts[static_cast<int>(e)].name; }

bool ext_supported(Ext e, Isa isa, FeatureSet features) {
  const ExtSpec& x = kExts[static_cast<int>(e)];
  const FeatureSet need = ext_table()[static_cast<int>(e)];
  return x.path == isa && x.built && (need & features) == need;
}

std::vector<Feature> missing_features(Isa isa, FeatureSet features) {
  std::vector<Feature> out;
  const FeatureSet need = required_table()[static_cast<int>(isa)];
  for (int i = 0; i < kNumFeatures; ++i)
    if ((need >> i & 1) && !(features >> i & 1)) out.push_back(static_cast<Feature>(i));
  return out;
}

std::vector<Isa> supported_paths(FeatureSet features) {
  std::vector<Isa> out;
  for (int p = 0; p < kNumPaths; ++p) {
    const FeatureSet need = required_table()[p];
    if (kPaths[p].built && (need & features) == need) out.push_back(static_cast<Isa>(p));
  }
  return out;
}

const CpuInfo& cpu_info() {
  static const CpuInfo info = [] {
    CpuInfo ci;
#if QK_X86
    const CpuidWords w = read_cpuid(&ci.vendor, &ci.model);
    ci.features = features_from_cpuid(w);
    family_model_from_cpuid(w.leaf1[0], &ci.family, &ci.model_id);
#else
    ci.vendor = "unknown (not x86)";
#endif
    // QKERNELS_DISABLE_CPU_FEATURES=a,b: treat these features as absent (unknown names are
    // ignored here; the Python layer warns about them). Lets any host act as a smaller CPU.
    if (const char* env = std::getenv("QKERNELS_DISABLE_CPU_FEATURES")) {
      std::string list(env);
      for (char& ch : list) ch = ch == ',' ? ' ' : ch;
      std::istringstream words(list);
      std::string w;
      Feature f;
      while (words >> w)
        if (feature_from_name(w, &f)) {
          ci.disabled |= feature_bit(f) & ci.features;
          ci.features &= ~feature_bit(f);
        }
    }
    return ci;
  }();
  return info;
}

Isa default_isa() { return supported_paths(cpu_info().features).front(); }

Isa active_isa() {
  int v = g_active.load(std::memory_order_relaxed);
  if (v < 0) {
    v = static_cast<int>(default_isa());
    g_active.store(v, std::memory_order_relaxed);
  }
  return static_cast<Isa>(v);
}

bool set_active_isa(Isa isa) {
  if (!path_built(isa) || !missing_features(isa, cpu_info().features).empty()) return false;
  g_active.store(static_cast<int>(isa), std::memory_order_relaxed);
  return true;
}

}  // namespace qk
