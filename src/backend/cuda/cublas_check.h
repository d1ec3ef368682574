// CUBLAS_CHECK: the cuBLAS / cuBLASLt member of anvil's check-macro family (core/error.h).
// Both libraries report a cublasStatus_t.
#pragma once

#include <cublas_api.h>

#include "backend/cuda/blas_api.h"

#include "core/error.h"

#define CUBLAS_CHECK(expr)                                                                     \
  do {                                                                                         \
    const cublasStatus_t anvil_cublas_status_ = (expr);                                        \
    if (anvil_cublas_status_ != CUBLAS_STATUS_SUCCESS)                                         \
      ::anvil::throw_internal_error(                                                           \
          __FILE__, __LINE__, #expr " failed: ", ::anvil::backend::blas_api().cublasGetStatusString(anvil_cublas_status_)); \
  } while (0)
