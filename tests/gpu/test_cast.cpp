#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "cast.cuh"
#include "core/dtype.h"
#include "cuda_check.cuh"
#include "gpu_test_util.h"

namespace anvil {

// The GPU cast must agree bit for bit with the CPU conversion (both round to nearest even).
TEST(GpuCast, F32ToBf16MatchesCpu) {
  ANVIL_REQUIRE_GPU();
  const std::int64_t n = 1'000'003;  // not a multiple of the block size
  std::vector<float> host(n);
  std::mt19937 rng(std::random_device{}());
  std::normal_distribution<float> dist(0.0f, 3.0f);
  for (auto& v : host) v = dist(rng);
  float* d_src = nullptr;
  std::uint16_t* d_dst = nullptr;
  float* d_back = nullptr;
  CUDA_CHECK(cudaMalloc(&d_src, n * sizeof(float)));
  CUDA_CHECK(cudaMalloc(&d_dst, n * sizeof(std::uint16_t)));
  CUDA_CHECK(cudaMalloc(&d_back, n * sizeof(float)));
  CUDA_CHECK(cudaMemcpy(d_src, host.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  kernels::cast_f32_to_bf16(d_dst, d_src, n, nullptr);
  kernels::cast_bf16_to_f32(d_back, d_dst, n, nullptr);
  std::vector<std::uint16_t> bf(n);
  std::vector<float> back(n);
  CUDA_CHECK(cudaMemcpy(bf.data(), d_dst, n * 2, cudaMemcpyDeviceToHost));
  CUDA_CHECK(cudaMemcpy(back.data(), d_back, n * 4, cudaMemcpyDeviceToHost));
  for (std::int64_t i = 0; i < n; ++i) {
    ASSERT_EQ(bf[i], f32_to_bf16(host[i])) << "i=" << i;
    ASSERT_EQ(back[i], bf16_to_f32(bf[i])) << "i=" << i;
  }
  cudaFree(d_src);
  cudaFree(d_dst);
  cudaFree(d_back);
}

}  // namespace anvil
