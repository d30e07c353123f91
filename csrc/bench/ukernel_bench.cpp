// Standalone single-thread timing of the torch-free kernels (no Python, no ATen): GOP/s per ISA of
// W8A8, W4A8 (g128) and 2:4 int8 on the same M x K x N, best of 9 calls each (weights hot in cache when
// they fit), with each one's weight read rate (the M = 1 kernels' ceiling from cache on one core).
// Build: cmake -S . -B build/cpp -G Ninja && cmake --build build/cpp --target qk_ukernel_bench
// Usage: qk_ukernel_bench [M K N]
#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "bench_gemms.h"

template <typename F>
static double best_of(F run) {
  double best = 1e30;
  for (int rep = 0; rep < 9; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    run();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = s < best ? s : best;
  }
  return best;
}

int main(int argc, char** argv) {
  const int64_t M = argc > 1 ? atol(argv[1]) : 128, K = argc > 2 ? atol(argv[2]) : 4096,
                N = argc > 3 ? atol(argv[3]) : 4096;
  const BenchGemms b(M, K, N, 1);
  const double ops = 2.0 * M * N * K;
  for (qk::Isa isa : qk::supported_paths(qk::cpu_info().features)) {
    const qk::Kernels& kt = qk::kernels(isa);
    const double t8 = best_of([&] { kt.gemm_w8a8(b.w8a8, 0, M, 0, b.P); });
    const double t4 = best_of([&] { kt.gemm_w4a8(b.w4a8, 0, M, 0, b.P); });
    const double ts = best_of([&] { kt.gemm_s24_i8(b.s24i8, 0, M, 0, b.P); });
    printf("%-12s M=%ld K=%ld N=%ld (1 thread)  W8A8 %.4f ms %.1f GOP/s %.1f GB/s  W4A8 g128 %.4f ms %.1f GOP/s "
           "%.1f GB/s  2:4 int8 %.4f ms %.1f GOP/s %.1f GB/s\n",
           qk::isa_name(isa), M, K, N, t8 * 1e3, ops / t8 / 1e9, b.p8.size() / t8 / 1e9, t4 * 1e3, ops / t4 / 1e9,
           b.p4.size() / t4 / 1e9, ts * 1e3, ops / ts / 1e9, b.ps24.size() / ts / 1e9);
  }
}
