// Bench-only Python module _qkprobes (bench/probes.py builds it on first use; never installed):
// the DRAM read-bandwidth probe and the per-path instruction ceilings the bench's "% of limit"
// columns divide by. Takes sizes, never pointers: it allocates and reads its own buffer.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "kernels/cpu.h"

namespace py = pybind11;

#if defined(__x86_64__) || defined(__i386__)
#define QK_PROBE_x86(name) {#name, &qk_bench::peak_int8_##name, &qk_bench::peak_f32_##name},
#define QK_DECLARE_x86(name) double peak_int8_##name(); double peak_f32_##name();
#else
#define QK_PROBE_x86(name)
#define QK_DECLARE_x86(name)
#endif
#define QK_PROBE_any(name) {#name, &qk_bench::peak_int8_##name, &qk_bench::peak_f32_##name},
#define QK_DECLARE_any(name) double peak_int8_##name(); double peak_f32_##name();

namespace qk_bench {
#define QK_PATH(name, arch, features, sources) QK_DECLARE_##arch(name)
#include "kernels/cpu_paths.def"
#undef QK_PATH

namespace {

struct Probe {
  const char* path;
  double (*int8)();
  double (*f32)();
};
const Probe kProbes[] = {
#define QK_PATH(name, arch, features, sources) QK_PROBE_##arch(name)
#include "kernels/cpu_paths.def"
#undef QK_PATH
};

// Sums n words walking `streams` sub-ranges in lockstep, one 64-byte line of each in turn, so that
// many sequential streams are in flight per core (as the lockstep decode kernels do). The ranges
// are 33 lines shorter than an equal split: with 2^k-byte spacing every stream would map to the
// same cache sets and DRAM banks (on Zen 4, 4 and 8 such streams read at half the rate of 6), while
// the kernels' panels are never a power of two apart (64 columns x K bytes plus scales).
uint64_t read_streams(const uint64_t* p, int64_t n, int streams) {
  const int64_t per = (n / streams / 8 - (streams > 1 ? 33 : 0)) * 8;
  uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  for (int64_t i = 0; i < per; i += 8)
    for (int s = 0; s < streams; ++s) {
      const uint64_t* q = p + s * per + i;
      __builtin_prefetch(q + 512, 0, 3);  // 4 KiB ahead in each stream, like the GEMM panels
      a0 += q[0] + q[4];
      a1 += q[1] + q[5];
      a2 += q[2] + q[6];
      a3 += q[3] + q[7];
    }
  return a0 + a1 + a2 + a3;
}

// Best-of-`reps` GB/s of reading `nbytes` split over `threads` threads.
double read_gbs(int64_t nbytes, int threads, int streams, int reps) {
  if (nbytes < (1 << 20) || threads < 1 || streams < 1 || reps < 1)
    throw std::invalid_argument("read_gbs: need nbytes >= 1 MiB and threads, streams, reps >= 1");
  const int64_t n = nbytes / 8;
  std::vector<uint64_t> buf(n, 1);
  const int64_t step = n / threads;
  double best = 0.0;
  std::vector<uint64_t> sink(threads);
  for (int r = 0; r < reps; ++r) {
    std::vector<std::thread> ts;
    const auto t0 = std::chrono::steady_clock::now();
    for (int t = 0; t < threads; ++t)
      ts.emplace_back([&, t] { sink[t] = read_streams(buf.data() + t * step, step, streams); });
    for (auto& th : ts) th.join();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, double(step * threads * 8) / s / 1e9);
  }
  volatile uint64_t keep = 0;
  for (uint64_t v : sink) keep = keep + v;
  return best;
}

std::pair<double, double> peaks(const std::string& path) {
  qk::Isa isa;
  if (!qk::isa_from_name(path, &isa)) throw py::value_error("unknown CPU path '" + path + "'");
  const auto ok = qk::supported_paths(qk::cpu_info().features);
  if (std::find(ok.begin(), ok.end(), isa) == ok.end())
    throw py::value_error("this CPU cannot run path '" + path + "'");
  for (const Probe& p : kProbes)
    if (path == p.path) return {p.int8(), p.f32()};
  throw py::value_error("path '" + path + "' has no probe in this build");
}

}  // namespace
}  // namespace qk_bench

PYBIND11_MODULE(_qkprobes, m) {
  m.doc() = "qkernels bench-only probes (memory read bandwidth, instruction ceilings)";
  m.def("read_gbs", [](int64_t nbytes, int threads, int streams, int reps) {
    py::gil_scoped_release nogil;
    return qk_bench::read_gbs(nbytes, threads, streams, reps);
  }, py::arg("nbytes"), py::arg("threads"), py::arg("streams") = 1, py::arg("reps") = 7,
     "best GB/s of a streaming read of nbytes over `threads` threads, `streams` lockstep streams each");
  m.def("peaks", [](const std::string& path) {
    py::gil_scoped_release nogil;
    return qk_bench::peaks(path);
  }, py::arg("path"), "single-thread (int8 ops/s, fp32 flops/s) ceilings of a CPU path's instructions");
}
