// SwiGLU (see swiglu.cuh), elementwise, with the CPU backend's expressions: silu(g) =
// g / (1 + exp(-g)) as PyTorch computes it, d silu/dg = s (1 + g (1 - s)), s = sigmoid(g).
#include "swiglu.cuh"

#include "cuda_check.cuh"
#include "launch.cuh"

namespace anvil::kernels {

namespace {

constexpr int kThreads = 256;

__global__ void swiglu_forward_kernel(float* h, const float* gate, const float* up,
                                      std::int64_t n) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    h[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

__global__ void swiglu_backward_kernel(float* dgate, float* dup, const float* dh,
                                       const float* gate, const float* up, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const float g = gate[i];
    const float e1 = 1.0f + expf(-g);
    const float s = 1.0f / e1;
    dgate[i] = dh[i] * up[i] * s * (1.0f + g * (1.0f - s));
    dup[i] = dh[i] * (g / e1);
  }
}

// Grid-stride loops: any n, one launch shape.
int grid_for(std::int64_t n) {
  const std::int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < 65536 ? blocks : 65536);
}

}  // namespace

void swiglu_forward(float* h, const float* gate, const float* up, std::int64_t n,
                    cudaStream_t stream) {
  ANVIL_CHECK(n >= 0, "swiglu: n = ", n);
  if (n == 0) return;
  ANVIL_CHECK(h && gate && up, "swiglu_forward: null buffer");
  launch(swiglu_forward_kernel, grid_for(n), kThreads, 0, stream, h, gate, up, n);
}

void swiglu_backward(float* dgate, float* dup, const float* dh, const float* gate,
                     const float* up, std::int64_t n, cudaStream_t stream) {
  ANVIL_CHECK(n >= 0, "swiglu: n = ", n);
  if (n == 0) return;
  ANVIL_CHECK(dgate && dup && dh && gate && up, "swiglu_backward: null buffer");
  ANVIL_CHECK(dgate != gate && dgate != up && dup != gate && dup != up,
              "swiglu_backward: gradients may not alias the inputs");
  launch(swiglu_backward_kernel, grid_for(n), kThreads, 0, stream, dgate, dup, dh, gate, up, n);
}

}  // namespace anvil::kernels
