// cuBLAS and cuBLASLt, opened with dlopen when the first CUDA backend is made, not linked:
// loading cuBLASLt makes about 150 MiB of its pages resident at process start, which
// every CPU run of a CUDA build would otherwise pay (and the planner's memory plan would
// miss). Call sites read `blas_api().cublasLtMatmul(...)`: the members carry the libraries'
// own names (after cublas_v2.h's renames, e.g. cublasCreate -> cublasCreate_v2).
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>

namespace anvil::backend {

#define ANVIL_BLAS_FUNCTIONS(X)                                                          \
  X(cublasCreate) X(cublasDestroy) X(cublasSetStream) X(cublasSetMathMode)              \
  X(cublasSetWorkspace) X(cublasSgemm) X(cublasSgeam) X(cublasGetStatusString)
#define ANVIL_BLASLT_FUNCTIONS(X)                                                        \
  X(cublasLtCreate) X(cublasLtDestroy) X(cublasLtMatmul) X(cublasLtMatmulAlgoGetHeuristic) \
  X(cublasLtMatmulDescCreate) X(cublasLtMatmulDescDestroy) X(cublasLtMatmulDescSetAttribute) \
  X(cublasLtMatmulPreferenceCreate) X(cublasLtMatmulPreferenceDestroy)                  \
  X(cublasLtMatmulPreferenceSetAttribute) X(cublasLtMatrixLayoutCreate)                 \
  X(cublasLtMatrixLayoutDestroy)

struct BlasApi {
#define ANVIL_BLAS_MEMBER(name) decltype(&::name) name = nullptr;
  ANVIL_BLAS_FUNCTIONS(ANVIL_BLAS_MEMBER)
  ANVIL_BLASLT_FUNCTIONS(ANVIL_BLAS_MEMBER)
#undef ANVIL_BLAS_MEMBER
};

// Loads both libraries once (thread-safe); a user error naming the library and the loader's
// message when either is missing.
const BlasApi& blas_api();

}  // namespace anvil::backend
