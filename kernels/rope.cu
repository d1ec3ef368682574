// Rotary embedding (see rope.cuh): a thread per (token, head, pair), in place. The angle
// pos * inv_freq and its cos and sin are fp32, as HF (and the CPU backend) make them.
#include "rope.cuh"

#include "cuda_check.cuh"
#include "launch.cuh"

namespace anvil::kernels {

namespace {

constexpr int kThreads = 256;

__global__ void rope_kernel(float* x, const std::int32_t* pos, const float* inv_freq,
                            std::int64_t n, std::int64_t heads, std::int64_t half, float sign) {
  const std::int64_t total = n * heads * half;
  for (std::int64_t e = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
       e < total; e += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t i = e % half, th = e / half;  // th = token * heads + head
    const std::int64_t t = th / heads;
    const float angle = static_cast<float>(pos[t]) * inv_freq[i];
    float sn, cs;
    sincosf(angle, &sn, &cs);
    sn *= sign;
    float* xh = x + th * 2 * half;
    const float x1 = xh[i], x2 = xh[i + half];
    xh[i] = x1 * cs - x2 * sn;
    xh[i + half] = x2 * cs + x1 * sn;
  }
}

}  // namespace

void rope_apply(float* x, const std::int32_t* pos, const float* inv_freq, std::int64_t n,
                std::int64_t heads, std::int64_t head_dim, bool inverse, cudaStream_t stream) {
  ANVIL_CHECK(head_dim > 0 && head_dim % 2 == 0, "rope needs an even head_dim, got ", head_dim);
  ANVIL_CHECK(n >= 0 && heads > 0, "rope shape n = ", n, ", heads = ", heads);
  if (n == 0) return;
  ANVIL_CHECK(x && pos && inv_freq, "rope_apply: null buffer");
  const std::int64_t total = n * heads * (head_dim / 2);
  const std::int64_t blocks = (total + kThreads - 1) / kThreads;
  launch(rope_kernel, static_cast<int>(blocks < 65536 ? blocks : 65536), kThreads, 0, stream, x,
         pos, inv_freq, n, heads, head_dim / 2, inverse ? -1.0f : 1.0f);
}

}  // namespace anvil::kernels
