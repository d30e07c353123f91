// Standalone single-thread timing of the torch-free kernels (no Python, no ATen): GOP/s per ISA of
// W8A8 and W4A8 (g128) on the same M x K x N, best of 9 calls each (weights hot in cache when they fit).
// Build: cmake -S . -B build/cpp -G Ninja && cmake --build build/cpp --target qk_ukernel_bench
// Usage: qk_ukernel_bench [M K N]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "../kernels/kernels.h"

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
  const int64_t Kp = qk::round_up(K, 4), P = qk::round_up(N, 64) / 64;
  const int64_t gk = 128, G = qk::round_up(K, gk) / gk, Kp4 = G * gk;
  std::vector<int8_t> w(N * K);
  for (auto& v : w) v = int8_t(rand() % 255 - 127);
  std::vector<int8_t> packed(P * qk::w8a8_panel_bytes(K));
  qk::pack_w8a8(w.data(), N, K, packed.data());
  std::vector<uint8_t> qw(N * ((K + 1) / 2));
  for (auto& v : qw) v = uint8_t(rand());
  std::vector<float> scale(N * G, 0.01f);
  std::vector<uint8_t> p4(P * qk::w4_panel_bytes(G, gk));
  qk::pack_w4(qw.data(), scale.data(), nullptr, N, K, G, gk, p4.data());
  std::vector<uint8_t> a(M * (Kp > Kp4 ? Kp : Kp4), 1);
  std::vector<int32_t> asum(M * G, 0);
  std::vector<float> as(M, 1.f), ws(N, 1.f), out(M * N);
  const double ops = 2.0 * M * N * K;
  for (qk::Isa isa : qk::supported_paths(qk::cpu_info().features)) {
    const qk::Kernels& kt = qk::kernels(isa);
    const qk::W8A8Args g8{a.data(), Kp, as.data(), packed.data(), K, N, ws.data(), nullptr, out.data(), N, false};
    const qk::W4Args g4{a.data(), Kp4, as.data(), asum.data(), p4.data(), G, gk, N, nullptr, out.data(), N, false};
    const double t8 = best_of([&] { kt.gemm_w8a8(g8, 0, M, 0, P); });
    const double t4 = best_of([&] { kt.gemm_w4a8(g4, 0, M, 0, P); });
    printf("%-12s M=%ld K=%ld N=%ld  W8A8 %.4f ms %.1f GOP/s  W4A8 g128 %.4f ms %.1f GOP/s (1 thread)\n",
           qk::isa_name(isa), M, K, N, t8 * 1e3, ops / t8 / 1e9, t4 * 1e3, ops / t4 / 1e9);
  }
}
