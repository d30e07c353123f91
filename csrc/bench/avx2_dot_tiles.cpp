// Bench only: what an exact int8 dot costs on AVX2 (no VNNI), one thread, no torch.
//   cmake --build <dir> --target qk_avx2_dot_tiles && <dir>/qk_avx2_dot_tiles [K]
// Times the W8A8 register tile (MR rows x 8 NJ columns, 4 k per step; the loop of
// gemm_x8s8s32_mrxnj8_ymm) over one 64-column panel of K values for 512 rows, with two dot mixes:
//   exact: |a| (u8) x sign(w, a) -> vpmaddubsw, vpmaddwd(ones), vpaddd (qkernels' W8A8 on avx2):
//          pair sums <= 2 * 128 * 127, never saturate;
//   u8s8:  (a + 128) (u8) x w -> vpmaddubsw, vpmaddwd(ones), vpaddd: one instruction less per 32
//          products, but a pair sum can exceed 32767 and saturate (the mix onnxruntime's and
//          fbgemm's AVX2 u8 x s8 kernels use; fbgemm avoids saturation with 7-bit activations).
// Prints GOP/s per tile; the ratio exact / u8s8 bounds what an exact kernel can reach against a
// saturating one on the same core.
#include <immintrin.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#define UNR _Pragma("GCC unroll 16")

namespace {

struct Exact {
  static constexpr const char* name = "exact";
  __m256i ones = _mm256_set1_epi16(1);
  void operator()(__m256i& c, __m256i a, __m256i w) const {
    c = _mm256_add_epi32(c, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(a), _mm256_sign_epi8(w, a)), ones));
  }
};

struct U8S8 {
  static constexpr const char* name = "u8s8";
  __m256i ones = _mm256_set1_epi16(1);
  void operator()(__m256i& c, __m256i a, __m256i w) const {
    c = _mm256_add_epi32(c, _mm256_madd_epi16(_mm256_maddubs_epi16(a, w), ones));
  }
};

template <int MR, int NJ, typename Dot>
__attribute__((noinline)) void tile(const uint8_t* a, int64_t lda, const int8_t* w, int64_t K4, int32_t* out, Dot dot) {
  __m256i c[MR][NJ];
  UNR for (int r = 0; r < MR; ++r) UNR for (int j = 0; j < NJ; ++j) c[r][j] = _mm256_setzero_si256();
  for (int64_t k4 = 0; k4 < K4; ++k4) {
    const __m256i* wk = reinterpret_cast<const __m256i*>(w + k4 * 256);
    __m256i wv[NJ];
    UNR for (int j = 0; j < NJ; ++j) wv[j] = _mm256_loadu_si256(wk + j);
    UNR for (int r = 0; r < MR; ++r) {
      int32_t a4;
      std::memcpy(&a4, a + r * lda + 4 * k4, 4);
      const __m256i b = _mm256_set1_epi32(a4);
      UNR for (int j = 0; j < NJ; ++j) dot(c[r][j], b, wv[j]);
    }
  }
  UNR for (int r = 0; r < MR; ++r) UNR for (int j = 0; j < NJ; ++j)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + r * 64 + 8 * j), c[r][j]);
}

template <int MR, int NJ, typename Dot>
void run(int64_t K) {
  constexpr int64_t M = 512 / MR * MR;
  const int64_t K4 = K / 4;
  std::vector<int8_t> w(K4 * 256);
  std::vector<uint8_t> a(M * K);
  for (auto& v : w) v = int8_t(rand() % 255 - 127);
  for (auto& v : a) v = uint8_t(rand() % 256);
  std::vector<int32_t> out(MR * 64);
  double best = 1e30;
  for (int rep = 0; rep < 30; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t m = 0; m < M; m += MR)
      for (int h = 0; h < 64 / (8 * NJ); ++h)
        tile<MR, NJ>(a.data() + m * K, K, w.data() + h * NJ * 32, K4, out.data() + h * NJ * 8, Dot{});
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = s < best ? s : best;
  }
  std::printf("%-6s %d x %2d  K=%-5ld %6.1f GOP/s\n", Dot::name, MR, 8 * NJ, long(K), 2.0 * M * 64 * K / best / 1e9);
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t K = argc > 1 ? atol(argv[1]) : 256;
  run<2, 4, Exact>(K);
  run<2, 4, U8S8>(K);
  run<4, 2, Exact>(K);
  run<4, 2, U8S8>(K);
  run<1, 8, Exact>(K);
  run<1, 8, U8S8>(K);
  run<3, 4, U8S8>(K);
}
