// CUDA_CHECK: the CUDA member of anvil's check-macro family (see core/error.h).
#pragma once

#include <cuda_runtime.h>

#include "core/error.h"

#define CUDA_CHECK(expr)                                                             \
  do {                                                                               \
    const cudaError_t anvil_cuda_status_ = (expr);                                   \
    if (anvil_cuda_status_ != cudaSuccess)                                           \
      ::anvil::throw_internal_error(__FILE__, __LINE__, #expr " failed: ",           \
                                    cudaGetErrorString(anvil_cuda_status_));         \
  } while (0)
