// qkernels._C: importing it registers the ops; the pybind functions are for setup, never hot paths.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>

#include "kernels/kernels.h"

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "qkernels native CPU kernels (ops are registered under torch.ops.qkernels)";
  m.def("cpu_isa", [] { return std::string(qk::isa_name(qk::active_isa())); },
        "ISA of the CPU path that runs now");
  m.def("detected_isa", [] { return std::string(qk::isa_name(qk::detect_isa())); },
        "best ISA this CPU supports");
  m.def("peak_ops_per_thread", [] {
    const qk::Kernels& k = qk::kernels(qk::active_isa());
    py::gil_scoped_release nogil;
    return std::make_pair(k.peak_int8_ops(), k.peak_f32_flops());
  }, "measured single-thread (int8 ops/s, fp32 flops/s) ceilings of the active path's instructions");
  m.def("read_sum_u64", [](uintptr_t ptr, int64_t n) {
    py::gil_scoped_release nogil;
    return qk::read_sum_u64(reinterpret_cast<const uint64_t*>(ptr), n);
  }, "sum n uint64 at address ptr (GIL released): the bench's memory read probe");
  m.def("set_cpu_isa", [](const std::string& name) {
    qk::Isa isa;
    if (!qk::isa_from_name(name.c_str(), &isa))
      throw py::value_error("QKERNELS_CPU_ISA: expected one of amx, avx512_vnni, avx_vnni, avx2, scalar; got '" + name + "'");
    qk::set_active_isa(isa);
    return std::string(qk::isa_name(qk::active_isa()));
  }, "cap the CPU path at `name` (never above what the CPU supports); returns the path now active");
}
