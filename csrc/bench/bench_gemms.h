// Random packed weights and constant inputs for the torch-free kernel timers (qk_ukernel_bench,
// qk_decode_stream): one N x K layer as W8A8 panels, as W4 g128 panels and as 2:4 int8 panels
// (random kept positions), M rows of activations (all `a_value`, so the W4A8 group sums are zero;
// the 2:4 kernel's int16 rows likewise; a kernel that reads u8 rows reads the first Ks bytes of
// each), and the argument structs of the three GEMMs.
#pragma once
#include <cstdlib>
#include <vector>

#include "../kernels/kernels.h"

struct BenchGemms {
  int64_t M, K, N, P, gk = 128, G;
  std::vector<int8_t> p8;
  std::vector<uint8_t> p4, a, ps24;
  std::vector<int16_t> a16;
  std::vector<int32_t> asum;
  std::vector<float> a_scale, w_scale, scale, out;
  qk::W8A8Args w8a8;
  qk::W4Args w4a8;
  qk::S24Args s24i8;

  BenchGemms(const BenchGemms&) = delete;  // the argument structs point into this object
  BenchGemms(int64_t M_, int64_t K_, int64_t N_, uint8_t a_value)
      : M(M_), K(K_), N(N_), P(qk::round_up(N_, 64) / 64), G(qk::round_up(K_, 128) / 128) {
    std::vector<int8_t> w(N * K);
    for (auto& v : w) v = int8_t(rand() % 255 - 127);
    p8.resize(P * qk::w8a8_panel_bytes(K));
    qk::pack_w8a8(w.data(), N, K, p8.data());
    std::vector<uint8_t> qw(N * ((K + 1) / 2));
    for (auto& v : qw) v = uint8_t(rand());
    scale.assign(N * G, 0.01f);
    p4.resize(P * qk::w4_panel_bytes(G, gk));
    qk::pack_w4(qw.data(), scale.data(), nullptr, N, K, G, gk, p4.data());
    const int64_t K4 = qk::round_up(K, 4), Kg = G * gk, Ks = qk::round_up(K, qk::kS24BlockK);
    std::vector<int8_t> v24(N * (K4 / 2));
    for (auto& v : v24) v = int8_t(rand() % 255 - 127);
    std::vector<uint8_t> meta(N * ((K4 + 7) / 8));
    static const uint8_t kPairs[6] = {0 | 1 << 2, 0 | 2 << 2, 0 | 3 << 2, 1 | 2 << 2, 1 | 3 << 2, 2 | 3 << 2};
    for (auto& m : meta) m = uint8_t(kPairs[rand() % 6] | kPairs[rand() % 6] << 4);
    ps24.resize(P * qk::s24_panel_bytes(K, 1));
    qk::pack_s24(v24.data(), meta.data(), N, K, 1, ps24.data());
    a16.assign(M * Ks, int16_t(a_value));
    a.assign(M * (K4 > Kg ? K4 : Kg), a_value);
    asum.assign(M * G, 0);
    a_scale.assign(M, 1.f);
    w_scale.assign(N, 1.f);
    out.assign(M * N, 0.f);
    w8a8 = {a.data(), K4, a_scale.data(), p8.data(), K, N, w_scale.data(), nullptr, out.data(), N, false};
    w4a8 = {a.data(), Kg, a_scale.data(), asum.data(), p4.data(), G, gk, N, nullptr, out.data(), N, false};
    s24i8 = {a16.data(), Ks, a_scale.data(), ps24.data(), K, N, false, w_scale.data(), nullptr, out.data(), N, false};
  }
};
