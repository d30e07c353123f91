// M = 1 W8A8, W4A8 (g128) and 2:4 int8 from DRAM through the torch-free kernels on the default CPU path, two
// threads splitting the panels, so a tuning choice (QKERNELS_TUNE_<NAME>, e.g.
// QKERNELS_TUNE_YMM_PREFETCH_DISTANCE) is timed without the modules' per-call work around it.
// Usage: qk_decode_stream [K N reps]; prints the best of 5 timings (ms) and the weight read rate.
// The weights come from DRAM only when they exceed the last-level cache (K = 4096, N = 32768: 134 MB
// of W8A8, 72 MB of W4A8, 84 MB of 2:4 int8); nothing is flushed between calls.
// Build: cmake --build <dir> --target qk_decode_stream
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "bench_gemms.h"

int main(int argc, char** argv) {
  const int64_t K = argc > 1 ? atol(argv[1]) : 4096, N = argc > 2 ? atol(argv[2]) : 32768,
                reps = argc > 3 ? atol(argv[3]) : 4;
  const qk::Isa isa = qk::default_isa();
  const qk::Kernels& kt = qk::kernels(isa);
  const BenchGemms b(1, K, N, 3);
  const int64_t P = b.P;
  static const char* const kNames[3] = {"W8A8", "W4A8", "2:4 i8"};
  for (int kind = 0; kind < 3; ++kind) {
    auto run = [&](int64_t p0, int64_t p1) {
      if (kind == 0) kt.gemm_w8a8(b.w8a8, 0, 1, p0, p1);
      else if (kind == 1) kt.gemm_w4a8(b.w4a8, 0, 1, p0, p1);
      else kt.gemm_s24_i8(b.s24i8, 0, 1, p0, p1);
    };
    double best = 1e30;
    for (int t = 0; t < 5; ++t) {
      auto t0 = std::chrono::steady_clock::now();
      for (int64_t r = 0; r < reps; ++r) {
        std::thread other([&] { run(0, P / 2); });
        run(P / 2, P);
        other.join();
      }
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
      best = s < best ? s : best;
    }
    const double bytes = double(kind == 0 ? b.p8.size() : kind == 1 ? b.p4.size() : b.ps24.size());
    printf("%-6s %-12s K=%ld N=%ld  %.3f ms  %.1f GB/s (2 threads)\n", kNames[kind], qk::isa_name(isa), K, N,
           best * 1e3, bytes / best / 1e9);
  }
}
