// qkernels._C: importing it registers the ops; the pybind functions are for setup, never hot paths.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "kernels/kernels.h"

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
  m.def("max_in_features", [] {
    return py::dict(py::arg("w8a8") = qk::kMaxK_w8a8, py::arg("w4a8") = qk::kMaxK_w4a8,
                    py::arg("s24_w8a8") = qk::kMaxK_s24_w8a8);
  }, "largest in_features each integer kernel accumulates exactly in int32");
}
