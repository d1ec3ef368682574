#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

// Skips the current test, saying why, when this machine has no usable CUDA device.
#define ANVIL_REQUIRE_GPU()                                                        \
  do {                                                                             \
    int anvil_gpu_count_ = 0;                                                      \
    const cudaError_t anvil_gpu_status_ = cudaGetDeviceCount(&anvil_gpu_count_);   \
    if (anvil_gpu_status_ != cudaSuccess || anvil_gpu_count_ == 0)                 \
      GTEST_SKIP() << "no CUDA device: " << cudaGetErrorString(anvil_gpu_status_); \
  } while (0)
