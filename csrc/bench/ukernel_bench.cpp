// Standalone single-thread timing of the torch-free kernels (no Python, no ATen): GOP/s per ISA.
// Build: cmake -S . -B build/cpp -G Ninja && cmake --build build/cpp --target qk_ukernel_bench
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "../kernels/kernels.h"

int main(int argc, char** argv) {
  const int64_t M = argc > 1 ? atol(argv[1]) : 128, K = argc > 2 ? atol(argv[2]) : 4096,
                N = argc > 3 ? atol(argv[3]) : 4096;
  const int64_t Kp = qk::round_up(K, 4), P = qk::round_up(N, 64) / 64;
  std::vector<int8_t> w(N * K);
  for (auto& v : w) v = int8_t(rand() % 255 - 127);
  std::vector<int8_t> packed(P * qk::w8a8_panel_bytes(K));
  qk::pack_w8a8(w.data(), N, K, packed.data());
  std::vector<uint8_t> a(M * Kp, 1);
  std::vector<float> as(M, 1.f), ws(N, 1.f), out(M * N);
  for (qk::Isa isa : qk::supported_paths(qk::cpu_info().features)) {
    const qk::Kernels& kt = qk::kernels(isa);
    qk::W8A8Args g{a.data(), Kp, as.data(), packed.data(), K, N, ws.data(), nullptr, out.data(), N, false};
    double best = 1e30;
    for (int rep = 0; rep < 5; ++rep) {
      auto t0 = std::chrono::steady_clock::now();
      kt.gemm_w8a8(g, 0, M, 0, P);
      double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      best = s < best ? s : best;
    }
    printf("%-12s M=%ld K=%ld N=%ld  %.3f ms  %.1f GOP/s (1 thread)\n", qk::isa_name(isa), M, K, N,
           best * 1e3, 2.0 * M * N * K / best / 1e9);
  }
}
