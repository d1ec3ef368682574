// Optimizer kernels over the flat fp32 adapter buffer: AdamW, the squared norm (for the
// global gradient norm) and scaling (for clipping).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cuda_runtime.h>

namespace anvil::kernels {

struct AdamwParams {
  float lr = 0.0f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weight_decay = 0.0f;
  std::int64_t step = 1;  // 1-based, for bias correction
};

// The per-step scalars of the CPU backend's AdamW, computed on the host in double and
// rounded to fp32 once, exactly as it does.
struct AdamwScalars {
  float decay = 1.0f;      // 1 - lr*wd
  float c1 = 0.0f;         // 1 - beta1
  float c2 = 0.0f;         // 1 - beta2
  float step_size = 0.0f;  // lr / (1 - beta1^t)
  float bc2_sqrt = 1.0f;   // sqrt(1 - beta2^t)
  float beta1 = 0.0f, beta2 = 0.0f, eps = 0.0f;
};
AdamwScalars adamw_scalars(const AdamwParams& a);

namespace detail {
// fp32 products and sums rounded one at a time, as the CPU backend (no FMA) rounds them:
// on the device the _rn intrinsics stop nvcc from fusing a multiply into an add.
__host__ __device__ inline float mul_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
__host__ __device__ inline float add_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
__host__ __device__ inline float sub_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
__host__ __device__ inline float div_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
__host__ __device__ inline float sqrt_rn(float a) {
#ifdef __CUDA_ARCH__
  return __fsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}
}  // namespace detail

// One element of the AdamW step (the kernel's body; also callable on the host, which is
// how it is tested against the CPU backend without a GPU):
//   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g g;  p = p decay - step_size m / (sqrt(v)/bc2_sqrt + eps).
__host__ __device__ inline void adamw_apply(float& p, float g, float& m, float& v,
                                            const AdamwScalars& s) {
  using namespace detail;
  const float mi = add_rn(mul_rn(s.beta1, m), mul_rn(s.c1, g));
  const float vi = add_rn(mul_rn(s.beta2, v), mul_rn(mul_rn(s.c2, g), g));
  m = mi;
  v = vi;
  const float denom = add_rn(div_rn(sqrt_rn(vi), s.bc2_sqrt), s.eps);
  p = sub_rn(mul_rn(p, s.decay), div_rn(mul_rn(s.step_size, mi), denom));
}

// The CPU backend's update, elementwise: m, v fp32 state.
void adamw_update(float* p, const float* g, float* m, float* v, std::int64_t n,
                  const AdamwParams& a, cudaStream_t stream);
// *out (device double) = sum of x^2, accumulated in double, deterministic (a fixed tree).
// workspace: sum_squares_workspace_bytes(n).
std::size_t sum_squares_workspace_bytes(std::int64_t n);
void sum_squares(double* out, const float* x, std::int64_t n, void* workspace,
                 cudaStream_t stream);
void scale(float* x, float s, std::int64_t n, cudaStream_t stream);

}  // namespace anvil::kernels
