// Shared pieces of the GPU kernel benchmark (bench_gpu_kernels.cpp): device buffers, fresh
// random inputs (cuRAND Philox, seeded from the clock: never zeros, never the same run twice),
// CUDA-event timing (warm-up, then the median of many runs) and the cuBLASLt GEMM the
// benchmark times as its ceiling and as the LoRA layer's frozen base product.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>
#include <curand.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "cast.cuh"
#include "core/error.h"
#include "cuda_check.cuh"

namespace anvil::bench {

inline void cublas_check(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) throw_internal_error(__FILE__, __LINE__, what, " failed: cuBLAS status ", static_cast<int>(s));
}
inline void curand_check(curandStatus_t s, const char* what) {
  if (s != CURAND_STATUS_SUCCESS) throw_internal_error(__FILE__, __LINE__, what, " failed: cuRAND status ", static_cast<int>(s));
}

// One device allocation, freed with its owner.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(std::size_t bytes) : bytes_(bytes) {
    CUDA_CHECK(cudaMalloc(&p_, std::max<std::size_t>(bytes, 256)));
    CUDA_CHECK(cudaMemset(p_, 0, std::max<std::size_t>(bytes, 256)));
  }
  ~DeviceBuffer() { cudaFree(p_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <typename T>
  T* as() const { return static_cast<T*>(p_); }
  std::size_t bytes() const { return bytes_; }

 private:
  void* p_ = nullptr;
  std::size_t bytes_ = 0;
};

// Normal(0, std) f32 values and their bf16 casts, from one Philox generator per process.
class RandomFill {
 public:
  RandomFill(std::uint64_t seed, cudaStream_t stream) : stream_(stream) {
    curand_check(curandCreateGenerator(&gen_, CURAND_RNG_PSEUDO_PHILOX4_32_10), "curandCreateGenerator");
    curand_check(curandSetPseudoRandomGeneratorSeed(gen_, seed), "curandSetPseudoRandomGeneratorSeed");
    curand_check(curandSetStream(gen_, stream), "curandSetStream");
  }
  ~RandomFill() { curandDestroyGenerator(gen_); }
  RandomFill(const RandomFill&) = delete;
  RandomFill& operator=(const RandomFill&) = delete;

  // n must be even (cuRAND draws normals in pairs); every buffer here has an even size.
  void normal(float* x, std::int64_t n, float stddev) {
    ANVIL_CHECK(n % 2 == 0, "odd element count ", n);
    curand_check(curandGenerateNormal(gen_, x, static_cast<std::size_t>(n), 0.0f, stddev), "curandGenerateNormal");
  }
  // bf16 values through an f32 scratch of the same count.
  void normal_bf16(std::uint16_t* x, float* scratch, std::int64_t n, float stddev) {
    normal(scratch, n, stddev);
    kernels::cast_f32_to_bf16(x, scratch, n, stream_);
  }

 private:
  curandGenerator_t gen_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

struct Timing {
  double median_ms = 0, min_ms = 0, max_ms = 0;
  int reps = 0;
};

// Runs op() `warmup` times untimed, then `reps` times, each between its own pair of CUDA
// events on `stream`; `prepare()` runs before each timed call outside its events (e.g. the
// forward pass a timed backward consumes). One host sync at the end.
template <typename Op, typename Prepare>
Timing time_op(cudaStream_t stream, int warmup, int reps, Op&& op, Prepare&& prepare) {
  for (int i = 0; i < warmup; ++i) {
    prepare();
    op();
  }
  std::vector<cudaEvent_t> ev(2 * static_cast<std::size_t>(reps));
  for (cudaEvent_t& e : ev) CUDA_CHECK(cudaEventCreate(&e));
  for (int i = 0; i < reps; ++i) {
    prepare();
    CUDA_CHECK(cudaEventRecord(ev[2 * i], stream));
    op();
    CUDA_CHECK(cudaEventRecord(ev[2 * i + 1], stream));
  }
  CUDA_CHECK(cudaGetLastError());
  CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<double> ms(static_cast<std::size_t>(reps));
  for (int i = 0; i < reps; ++i) {
    float t = 0;
    CUDA_CHECK(cudaEventElapsedTime(&t, ev[2 * i], ev[2 * i + 1]));
    ms[i] = t;
  }
  for (cudaEvent_t e : ev) cudaEventDestroy(e);
  std::sort(ms.begin(), ms.end());
  Timing t;
  t.reps = reps;
  t.min_ms = ms.front();
  t.max_ms = ms.back();
  t.median_ms = reps % 2 ? ms[reps / 2] : 0.5 * (ms[reps / 2 - 1] + ms[reps / 2]);
  return t;
}
template <typename Op>
Timing time_op(cudaStream_t stream, int warmup, int reps, Op&& op) {
  return time_op(stream, warmup, reps, op, [] {});
}

// D(m, n) = alpha op(A) op(B) + beta C, column-major as cuBLAS sees it, C = D in place.
// The algorithm is chosen once (cuBLASLt's first heuristic) for the shape and reused.
class LtGemm {
 public:
  struct Shape {
    bool trans_a = false, trans_b = false;
    std::int64_t m = 0, n = 0, k = 0, lda = 0, ldb = 0, ldc = 0;
    cudaDataType_t ab_type = CUDA_R_16BF, c_type = CUDA_R_16BF;
  };
  LtGemm(cublasLtHandle_t handle, const Shape& s, void* workspace, std::size_t workspace_bytes)
      : handle_(handle), workspace_(workspace), workspace_bytes_(workspace_bytes) {
    cublas_check(cublasLtMatmulDescCreate(&desc_, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
    const cublasOperation_t ta = s.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, tb = s.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublas_check(cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)), "TRANSA");
    cublas_check(cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)), "TRANSB");
    // Stored shapes: op(A) is (m, k), so A is (k, m) when transposed.
    cublas_check(cublasLtMatrixLayoutCreate(&a_, s.ab_type, s.trans_a ? s.k : s.m, s.trans_a ? s.m : s.k, s.lda), "layout A");
    cublas_check(cublasLtMatrixLayoutCreate(&b_, s.ab_type, s.trans_b ? s.n : s.k, s.trans_b ? s.k : s.n, s.ldb), "layout B");
    cublas_check(cublasLtMatrixLayoutCreate(&c_, s.c_type, s.m, s.n, s.ldc), "layout C");
    cublasLtMatmulPreference_t pref = nullptr;
    cublas_check(cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate");
    const std::uint64_t ws = workspace_bytes_;
    cublas_check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)),
                 "workspace preference");
    int found = 0;
    const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(handle_, desc_, a_, b_, c_, c_, pref, 1, &algo_, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    cublas_check(st, "cublasLtMatmulAlgoGetHeuristic");
    ANVIL_CHECK(found > 0, "cuBLASLt has no algorithm for m ", s.m, " n ", s.n, " k ", s.k);
  }
  ~LtGemm() {
    cublasLtMatrixLayoutDestroy(a_);
    cublasLtMatrixLayoutDestroy(b_);
    cublasLtMatrixLayoutDestroy(c_);
    cublasLtMatmulDescDestroy(desc_);
  }
  LtGemm(const LtGemm&) = delete;
  LtGemm& operator=(const LtGemm&) = delete;

  void run(float alpha, const void* a, const void* b, float beta, void* c, cudaStream_t stream) const {
    cublas_check(cublasLtMatmul(handle_, desc_, &alpha, a, a_, b, b_, &beta, c, c_, c, c_, &algo_.algo, workspace_,
                                workspace_bytes_, stream),
                 "cublasLtMatmul");
  }

 private:
  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  std::size_t workspace_bytes_ = 0;
  cublasLtMatmulDesc_t desc_ = nullptr;
  cublasLtMatrixLayout_t a_ = nullptr, b_ = nullptr, c_ = nullptr;
  cublasLtMatmulHeuristicResult_t algo_{};
};

}  // namespace anvil::bench
