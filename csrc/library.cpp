// qkernels._C: the op schemas (every torch.ops.qkernels op, defined once here; CPU impls in ops/,
// CUDA impls in qkernels/triton_kernels, autograd in ops/autograd.cpp) and the Python bindings of
// the feature model, the kernel limits and the packed-layout geometry. Bindings are for setup,
// never hot paths.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/library.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "kernels/kernels.h"

TORCH_LIBRARY(qkernels, m) {
  // int8: per-token quantization, weights in a packed layout (qkernels.formats), W8A8 / W8A16.
  m.def("quantize_per_token_int8(Tensor x) -> (Tensor, Tensor)");
  m.def("pack_int8(Tensor w, str layout) -> Tensor");
  m.def("unpack_int8(Tensor w_packed, str layout, SymInt N, SymInt K) -> Tensor");
  m.def("w8a8_gemm(Tensor a, Tensor a_scale, Tensor w_packed, str layout, Tensor w_scale, Tensor? bias, "
        "SymInt N, ScalarType out_dtype) -> Tensor");
  // input_scale: x * input_scale per input channel (SmoothQuant / AWQ); act_scale: a static per-tensor
  // int8 activation scale (A8 ops only) instead of each row's amax / 127.
  m.def("w8a8_linear(Tensor x, Tensor w_packed, str layout, Tensor w_scale, Tensor? bias, SymInt N, Tensor? input_scale=None, Tensor? act_scale=None) -> Tensor");
  m.def("w8a16_linear(Tensor x, Tensor w_packed, str layout, Tensor w_scale, Tensor? bias, SymInt N, Tensor? input_scale=None, Tensor? act_scale=None) -> Tensor");
  m.def("dequantize_int8(Tensor w_packed, str layout, Tensor w_scale, SymInt N, SymInt K) -> Tensor");
  // int4 grouped: W4A8 / W4A16.
  m.def("pack_int4(Tensor qweight, Tensor scale, Tensor? zero_point, SymInt K, SymInt group_size, str layout) "
        "-> Tensor");
  m.def("unpack_int4(Tensor w_packed, str layout, SymInt N, SymInt K, SymInt group_size, bool symmetric) "
        "-> (Tensor, Tensor, Tensor)");
  m.def("quantize_int4_weight(Tensor w, SymInt group_size, bool symmetric, float[] clip_ratios) "
        "-> (Tensor, Tensor, Tensor)");
  m.def("w4a8_linear(Tensor x, Tensor w_packed, str layout, Tensor? bias, SymInt N, SymInt group_size, Tensor? input_scale=None, Tensor? act_scale=None) -> Tensor");
  m.def("w4a16_linear(Tensor x, Tensor w_packed, str layout, Tensor? bias, SymInt N, SymInt group_size, Tensor? input_scale=None, Tensor? act_scale=None) -> Tensor");
  m.def("dequantize_int4(Tensor w_packed, str layout, SymInt N, SymInt K, SymInt group_size) -> Tensor");
  // 2:4 sparse: float values, or int8 values with per-token int8 activations.
  m.def("pack_sparse24(Tensor values, Tensor meta, SymInt K, str layout) -> Tensor");
  m.def("unpack_sparse24(Tensor w_packed, str layout, SymInt N, SymInt K, ScalarType dtype) -> (Tensor, Tensor)");
  m.def("s24_linear(Tensor x, Tensor w_packed, str layout, Tensor? bias, SymInt N, ScalarType value_dtype) -> Tensor");
  m.def("s24_w8a8_linear(Tensor x, Tensor w_packed, str layout, Tensor w_scale, Tensor? bias, SymInt N, Tensor? input_scale=None, Tensor? act_scale=None) -> Tensor");
  m.def("dequantize_sparse24(Tensor w_packed, str layout, Tensor? w_scale, SymInt N, SymInt K, "
        "ScalarType value_dtype) -> Tensor");
}

namespace py = pybind11;

namespace {

std::vector<std::string> names(const std::vector<qk::Isa>& paths) {
  std::vector<std::string> out;
  for (qk::Isa p : paths) out.push_back(qk::isa_name(p));
  return out;
}

std::vector<std::string> feature_names(qk::FeatureSet fs) {
  std::vector<std::string> out;
  for (int i = 0; i < qk::kNumFeatures; ++i)
    if (fs >> i & 1) out.push_back(qk::feature_name(static_cast<qk::Feature>(i)));
  return out;
}

qk::FeatureSet feature_set(const std::vector<std::string>& fs) {
  qk::FeatureSet out = 0;
  for (const std::string& f : fs) {
    qk::Feature id;
    if (!qk::feature_from_name(f, &id)) throw py::value_error("unknown CPU feature '" + f + "'");
    out |= qk::FeatureSet(1) << static_cast<int>(id);
  }
  return out;
}

qk::Isa path_id(const std::string& name) {
  qk::Isa isa;
  if (!qk::isa_from_name(name, &isa)) {
    std::string all;
    for (int i = 0; i < qk::kNumPaths; ++i) all += std::string(i ? ", " : "") + qk::isa_name(static_cast<qk::Isa>(i));
    throw py::value_error("unknown CPU path '" + name + "'; the paths are: " + all);
  }
  return isa;
}

// The features of `name` this CPU lacks ([] when it can run it), or ["(not built for this architecture)"].
std::vector<std::string> missing(const std::string& name, const std::vector<std::string>& features) {
  const qk::Isa isa = path_id(name);
  if (!qk::path_built(isa)) return {"(not built for this architecture)"};
  std::vector<std::string> out;
  for (qk::Feature f : qk::missing_features(isa, feature_set(features))) out.push_back(qk::feature_name(f));
  return out;
}

// Every extension cpu_paths.def defines, or (usable_only) those the active path uses on this CPU.
std::vector<std::string> extension_names(bool usable_only) {
  std::vector<std::string> out;
  for (int e = 0; e < qk::kNumExts; ++e)
    if (!usable_only || qk::ext_supported(static_cast<qk::Ext>(e), qk::active_isa(), qk::cpu_info().features))
      out.push_back(qk::ext_name(static_cast<qk::Ext>(e)));
  return out;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "qkernels native CPU kernels (ops are registered under torch.ops.qkernels)";
  m.def("feature_names", [] {
    std::vector<std::string> out;
    for (int i = 0; i < qk::kNumFeatures; ++i) out.push_back(qk::feature_name(static_cast<qk::Feature>(i)));
    return out;
  }, "every CPU feature the feature model knows (csrc/kernels/cpu_paths.def)");
  m.def("path_names", [] {
    std::vector<std::string> out;
    for (int i = 0; i < qk::kNumPaths; ++i) out.push_back(qk::isa_name(static_cast<qk::Isa>(i)));
    return out;
  }, "every kernel path, in order of preference");
  m.def("cpu_vendor", [] { return qk::cpu_info().vendor; });
  m.def("cpu_model", [] { return qk::cpu_info().model; });
  m.def("cpu_family_model", [] { return std::make_pair(qk::cpu_info().family, qk::cpu_info().model_id); },
        "display family and model numbers of this CPU (0, 0 when not x86)");
  m.def("family_model_from_cpuid", [](uint32_t eax) {
    int f, m;
    qk::family_model_from_cpuid(eax, &f, &m);
    return std::make_pair(f, m);
  }, py::arg("leaf1_eax"), "pure decoding of CPUID leaf 1 eax into display family and model");
  m.def("cpu_features", [] { return feature_names(qk::cpu_info().features); },
        "features of this CPU that the OS enables (CPUID + XGETBV), minus disabled ones");
  m.def("cpu_disabled_features", [] { return feature_names(qk::cpu_info().disabled); },
        "detected features turned off by QKERNELS_DISABLE_CPU_FEATURES");
  m.def("supported_paths", [](const std::vector<std::string>& features) {
    return names(qk::supported_paths(feature_set(features)));
  }, py::arg("features"), "pure selection: the paths a CPU with these features runs, best first");
  m.def("missing_features", &missing, py::arg("path"), py::arg("features"),
        "the features of `path` missing from `features`");
  m.def("features_from_cpuid", [](uint32_t max_leaf, std::vector<uint32_t> leaf1, std::vector<uint32_t> leaf7,
                                  std::vector<uint32_t> leaf7_1, uint64_t xcr0) {
    qk::CpuidWords w;
    w.max_leaf = max_leaf;
    if (leaf1.size() != 4 || leaf7.size() != 4 || leaf7_1.size() != 4)
      throw py::value_error("leaves are [eax, ebx, ecx, edx]");
    for (int i = 0; i < 4; ++i) w.leaf1[i] = leaf1[i], w.leaf7[i] = leaf7[i], w.leaf7_1[i] = leaf7_1[i];
    w.xcr0 = xcr0;
    return feature_names(qk::features_from_cpuid(w));
  }, "pure decoding of CPUID words (leaves as [eax, ebx, ecx, edx]) and XCR0 into feature names");
  m.def("cpu_extensions", [] { return extension_names(true); },
        "the extensions (cpu_paths.def QK_EXTENSION) the active path uses on this CPU");
  m.def("ext_names", [] { return extension_names(false); }, "every extension cpu_paths.def defines");
  m.def("tuning", [] {
    std::map<std::string, int64_t> r;
    for (const qk::TuningField& f : qk::kTuningFields) r[f.name] = qk::tuning().*f.field;
    return r;
  }, "the run-time tuning choices of this process (from cpu_info; QKERNELS_TUNE_* overrides)");
  m.def("set_tuning", [](const std::string& name, int64_t value) {
    const std::optional<int64_t> taken = qk::set_tuning(name.c_str(), value);
    if (!taken) throw py::value_error("unknown tuning choice " + name);
    return *taken;
  }, "sets one tuning choice for this process (clamped to its range; returns the value taken); for "
     "the bench and measured autotuning, never while kernels run");
  m.def("cpu_path", [] { return std::string(qk::isa_name(qk::active_isa())); }, "the path that runs now");
  m.def("set_cpu_path", [](const std::string& name) {
    const auto miss = missing(name, feature_names(qk::cpu_info().features));
    if (!miss.empty()) {
      std::string list;
      for (const auto& f : miss) list += (list.empty() ? "" : ", ") + f;
      throw py::value_error("CPU path '" + name + "' needs features this CPU (" + qk::cpu_info().model +
                            ") lacks: " + list);
    }
    qk::set_active_isa(path_id(name));
    return std::string(qk::isa_name(qk::active_isa()));
  }, py::arg("name"), "select a path; ValueError naming the missing features if this CPU cannot run it");
  m.def("cpu_layouts", [] {
    std::vector<std::string> out;
    for (int i = 0; i < static_cast<int>(qk::Layout::count_); ++i) out.push_back(qk::layout_name(static_cast<qk::Layout>(i)));
    return out;
  }, "the packed weight layouts of the CPU kernels");
  m.def("packed_shape", [](const std::string& layout, int64_t N, int64_t K, int64_t group_size, int64_t esize) {
    qk::Layout l;
    if (!qk::layout_from_name(layout.c_str(), &l)) throw py::value_error("unknown CPU layout '" + layout + "'");
    const qk::PackedShape s = qk::packed_shape(l, N, K, group_size, esize);
    return std::make_pair(s.rows, s.cols);
  }, py::arg("layout"), py::arg("N"), py::arg("K"), py::arg("group_size") = 0, py::arg("esize") = 0,
     "[panels, bytes per panel] of a packed CPU weight (csrc/kernels/kernels.h)");
  m.def("int4_groups", [](int64_t K, int64_t group_size) {
    const qk::W4Geom g = qk::w4_geometry(K, group_size);
    return std::make_pair(g.G, g.gk);
  }, py::arg("K"), py::arg("group_size"), "(groups, values per group after padding) of int4 weights");
  m.def("max_in_features", [] {
    return py::dict(py::arg("w8a8") = qk::kMaxK_w8a8, py::arg("w4a8") = qk::kMaxK_w4a8,
                    py::arg("s24_w8a8") = qk::kMaxK_s24_w8a8);
  }, "largest in_features each integer kernel accumulates exactly in int32");
}
