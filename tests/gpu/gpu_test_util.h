#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <iostream>
#include <random>
#include <vector>

// Skips the current test, saying why, when this machine has no usable CUDA device.
#define ANVIL_REQUIRE_GPU()                                                        \
  do {                                                                             \
    int anvil_gpu_count_ = 0;                                                      \
    const cudaError_t anvil_gpu_status_ = cudaGetDeviceCount(&anvil_gpu_count_);   \
    if (anvil_gpu_status_ != cudaSuccess || anvil_gpu_count_ == 0)                 \
      GTEST_SKIP() << "no CUDA device: " << cudaGetErrorString(anvil_gpu_status_); \
  } while (0)

namespace anvil::test {

// The random engine of one GPU test program: a fresh seed per run (printed, so a failure
// can be replayed by hand), never zeros.
inline std::mt19937_64& gpu_rng() {
  static std::mt19937_64 gen = [] {
    const auto seed = std::random_device{}();
    std::cout << "random seed " << seed << "\n";
    return std::mt19937_64(seed);
  }();
  return gen;
}

// n values drawn from N(0, stddev^2).
inline std::vector<float> gpu_normal(std::int64_t n, float stddev = 1.0f) {
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = dist(gpu_rng());
  return v;
}

}  // namespace anvil::test
