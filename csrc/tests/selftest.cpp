// Torch-free self-test of the kernel library: every path this CPU supports against plain loops
// (integer contracts bit-exact, float ones within a relative bound). The Python suite is the real
// test; this one exists so a cross build (scripts/cross_aarch64.sh, run under qemu) checks the
// kernels it ships without torch. Exit status 0 = all passed.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "../kernels/kernels.h"

namespace {

uint32_t g_state = 12345;
int rnd(int lo, int hi) {  // inclusive, deterministic
  g_state = g_state * 1664525u + 1013904223u;
  return lo + int((g_state >> 8) % uint32_t(hi - lo + 1));
}

int g_fail = 0;
void expect(bool ok, const char* path, const char* what) {
  if (!ok) {
    std::printf("FAIL %s: %s\n", path, what);
    ++g_fail;
  }
}

void test_w8a8(const qk::Kernels& kt, const char* path, int64_t M, int64_t K, int64_t N) {
  const int64_t Kp = qk::round_up(K, 4), P = qk::round_up(N, qk::kPanelN) / qk::kPanelN;
  std::vector<int8_t> w(N * K), a(M * K), packed(P * qk::w8a8_panel_bytes(K));
  for (auto& v : w) v = int8_t(rnd(-127, 127));
  for (auto& v : a) v = int8_t(rnd(-127, 127));
  qk::pack_w8a8(w.data(), N, K, packed.data());
  std::vector<uint8_t> abuf(M * Kp, kt.a_u8 ? 0x80 : 0);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k) abuf[m * Kp + k] = uint8_t(a[m * K + k]) ^ (kt.a_u8 ? 0x80 : 0);
  std::vector<float> as(M, 1.f), ws(N, 1.f), out(M * N);
  qk::W8A8Args g{abuf.data(), Kp, as.data(), packed.data(), K, N, ws.data(), nullptr, out.data(), N, false};
  kt.gemm_w8a8(g, 0, M, 0, P);
  bool ok = true;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      int64_t s = 0;
      for (int64_t k = 0; k < K; ++k) s += int64_t(a[m * K + k]) * w[n * K + k];
      ok = ok && out[m * N + n] == float(s);
    }
  expect(ok, path, "W8A8 differs from the exact integer sum");
}

void test_w4(const qk::Kernels& kt, const char* path, int64_t M, int64_t K, int64_t N, int64_t gk) {
  const int64_t G = (K + gk - 1) / gk, Kp = G * gk, P = qk::round_up(N, qk::kPanelN) / qk::kPanelN;
  std::vector<uint8_t> u(N * K), qw(N * ((K + 1) / 2), 0), packed(P * qk::w4_panel_bytes(G, gk));
  std::vector<int32_t> zz(N * G);
  std::vector<float> scale(N * G, 1.f);
  for (int64_t i = 0; i < N * K; ++i) {
    u[i] = uint8_t(rnd(0, 15));
    qw[(i / K) * ((K + 1) / 2) + (i % K) / 2] |= uint8_t(u[i] << (4 * ((i % K) % 2)));
  }
  for (auto& v : zz) v = rnd(0, 15);
  qk::pack_w4(qw.data(), scale.data(), zz.data(), N, K, G, gk, packed.data());
  std::vector<int8_t> a(M * Kp, 0);
  std::vector<float> x(M * Kp, 0.f), as(M, 1.f), out(M * N), outf(M * N);
  std::vector<int32_t> asum(M * G, 0);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k) {
      a[m * Kp + k] = int8_t(rnd(-127, 127));
      x[m * Kp + k] = float(rnd(-1000, 1000)) / 64.f;
      asum[m * G + k / gk] += a[m * Kp + k];
    }
  qk::W4Args g8{a.data(), Kp, as.data(), asum.data(), packed.data(), G, gk, N, nullptr, out.data(), N, false};
  kt.gemm_w4a8(g8, 0, M, 0, P);
  qk::W4Args g16{x.data(), Kp, nullptr, nullptr, packed.data(), G, gk, N, nullptr, outf.data(), N, false};
  kt.gemm_w4a16(g16, 0, M, 0, P);
  bool ok8 = true, ok16 = true;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      int64_t s = 0;  // |s| < 2^24 here: every fp32 partial sum of the contract is exact
      double sf = 0.0, mag = 0.0;
      for (int64_t k = 0; k < K; ++k) {
        const int w = int(u[n * K + k]) - zz[n * G + k / gk];
        s += int64_t(a[m * Kp + k]) * w;
        sf += double(x[m * Kp + k]) * w;
        mag += std::fabs(double(x[m * Kp + k]) * w);
      }
      ok8 = ok8 && out[m * N + n] == float(s);
      ok16 = ok16 && std::fabs(outf[m * N + n] - sf) <= 2.0 * (K + 2) * 1.2e-7 * mag + 1e-30;
    }
  expect(ok8, path, "W4A8 differs from the exact integer sum");
  expect(ok16, path, "W4A16 outside the fp32 summation bound");
}

void test_s24_i8(const qk::Kernels& kt, const char* path, int64_t M, int64_t K, int64_t N) {
  const int64_t G = (K + 3) / 4, Kp = qk::round_up(K, qk::kS24BlockK), P = qk::round_up(N, qk::kPanelN) / qk::kPanelN;
  std::vector<int8_t> values(N * 2 * G);
  std::vector<uint8_t> meta(N * ((G + 1) / 2), 0), packed(P * qk::s24_panel_bytes(K, 1));
  std::vector<int> i0(N * G), i1(N * G);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t g = 0; g < G; ++g) {
      const int p = rnd(0, 2), q = rnd(p + 1, 3);
      i0[n * G + g] = p, i1[n * G + g] = q;
      meta[n * ((G + 1) / 2) + g / 2] |= uint8_t((p | q << 2) << (4 * (g % 2)));
      values[n * 2 * G + 2 * g] = int8_t(rnd(-127, 127));
      values[n * 2 * G + 2 * g + 1] = int8_t(rnd(-127, 127));
    }
  qk::pack_s24(values.data(), meta.data(), N, K, 1, packed.data());
  std::vector<int16_t> a(M * Kp, 0);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k) a[m * Kp + k] = int16_t(rnd(-127, 127));
  std::vector<uint8_t> a8(M * Kp);  // the u8 form (a + 128) for kernels that read it
  for (int64_t i = 0; i < M * Kp; ++i) a8[i] = uint8_t(a[i] + 128);
  std::vector<float> as(M, 1.f), ws(N, 1.f), out(M * N);
  qk::S24Args g{kt.s24_a_u8 ? static_cast<const void*>(a8.data()) : a.data(), Kp, as.data(), packed.data(), K, N,
                false, ws.data(), nullptr, out.data(), N, false};
  kt.gemm_s24_i8(g, 0, M, 0, P);
  bool ok = true;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      int64_t s = 0;
      for (int64_t gq = 0; gq < G; ++gq) {
        const int64_t k0 = 4 * gq + i0[n * G + gq], k1 = 4 * gq + i1[n * G + gq];
        if (k0 < K) s += int64_t(values[n * 2 * G + 2 * gq]) * a[m * Kp + k0];
        if (k1 < K) s += int64_t(values[n * 2 * G + 2 * gq + 1]) * a[m * Kp + k1];
      }
      ok = ok && out[m * N + n] == float(s);
    }
  expect(ok, path, "2:4 int8 differs from the exact integer sum");
}

}  // namespace

int main() {
  const auto paths = qk::supported_paths(qk::cpu_info().features);
  for (qk::Isa isa : paths) {
    const char* name = qk::isa_name(isa);
    const qk::Kernels& kt = qk::kernels(isa);
    for (int64_t M : {1, 7})
      for (int64_t K : {1, 67, 300}) {
        for (int64_t N : {1, 70}) {
          test_w8a8(kt, name, M, K, N);
          test_w4(kt, name, M, K, N, 32);
          test_s24_i8(kt, name, M, K, N);
        }
      }
    std::printf("selftest: path %s %s\n", name, g_fail ? "FAILED" : "ok");
  }
  return g_fail ? 1 : 0;
}
