// Bench only. Throughput of one vector instruction: 12 independent accumulator chains, fully unrolled, so
// the loop is bound by issue rate, not latency. Used for the bench's "% of peak" column.
#pragma once
#include <chrono>
#include <cstdint>

namespace qk {
namespace {

// step(c, a, b) issues one instruction c = op(c, a, b); returns instructions per second.
template <typename V, typename Step>
inline double instr_per_second(Step step) {
  V c0{}, c1{}, c2{}, c3{}, c4{}, c5{}, c6{}, c7{}, c8{}, c9{}, c10{}, c11{};
  V a{}, b{};
  constexpr int64_t kIters = 4000000;
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < kIters; ++i) {
      step(c0, a, b); step(c1, a, b); step(c2, a, b); step(c3, a, b);
      step(c4, a, b); step(c5, a, b); step(c6, a, b); step(c7, a, b);
      step(c8, a, b); step(c9, a, b); step(c10, a, b); step(c11, a, b);
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double r = 12.0 * kIters / s;
    best = r > best ? r : best;
  }
  asm volatile("" : : "v"(c0), "v"(c1), "v"(c2), "v"(c3), "v"(c4), "v"(c5));
  asm volatile("" : : "v"(c6), "v"(c7), "v"(c8), "v"(c9), "v"(c10), "v"(c11));
  return best;
}

}  // namespace
}  // namespace qk
