#include "decode.cuh"

#include <cmath>

#include "cuda_check.cuh"
#include "launch.cuh"

namespace anvil::kernels {

namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;

// Block-wide reductions in a fixed order (shuffle tree, then the warps in order); every
// thread of the block calls them and gets the result. `red` is kWarps floats of shared memory.
__device__ float block_max(float v, float* red) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
  __syncthreads();
  float r = red[0];
  for (int w = 1; w < kWarps; ++w) r = fmaxf(r, red[w]);
  __syncthreads();  // `red` is reused by the next reduction
  return r;
}

__device__ float block_sum(float v, float* red) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
  __syncthreads();
  float r = red[0];
  for (int w = 1; w < kWarps; ++w) r += red[w];
  __syncthreads();
  return r;
}

// One block per query head: scores over the cache into `probs`, softmax, then each thread
// owns output dimensions and walks the positions in order (as the CPU backend does).
__global__ void attention_decode_kernel(float* out, const float* q, const float* k, const float* v,
                                        std::int64_t len, std::int64_t group, std::int64_t D,
                                        std::int64_t KV, float scale, float* probs) {
  float* q_head = dynamic_shared<float>();  // (D)
  ANVIL_SHARED(float, red, kWarps);
  const std::int64_t h = blockIdx.x;
  const std::int64_t off = (h / group) * D;
  for (std::int64_t d = threadIdx.x; d < D; d += blockDim.x) q_head[d] = q[h * D + d];
  __syncthreads();

  float* p = probs + h * len;
  float mx = -INFINITY;
  for (std::int64_t j = threadIdx.x; j < len; j += blockDim.x) {
    const float* kj = k + j * KV + off;
    float s = 0.0f;
    for (std::int64_t d = 0; d < D; ++d) s += q_head[d] * kj[d];
    p[j] = s * scale;
    mx = fmaxf(mx, p[j]);
  }
  mx = block_max(mx, red);
  float sum = 0.0f;
  for (std::int64_t j = threadIdx.x; j < len; j += blockDim.x) {
    const float e = expf(p[j] - mx);
    p[j] = e;
    sum += e;
  }
  sum = block_sum(sum, red);  // its barriers also publish every p[j] to the whole block

  for (std::int64_t d = threadIdx.x; d < D; d += blockDim.x) {
    float acc = 0.0f;
    for (std::int64_t j = 0; j < len; ++j) acc += (p[j] / sum) * v[j * KV + off + d];
    out[h * D + d] = acc;
  }
}

}  // namespace

std::size_t attention_decode_workspace_bytes(std::int64_t len, std::int64_t n_heads) {
  ANVIL_CHECK(len >= 0 && n_heads >= 0, "decode workspace for len ", len, ", ", n_heads, " heads");
  return static_cast<std::size_t>(len * n_heads) * sizeof(float);
}

void attention_decode(float* out, const float* q, const float* k_cache, const float* v_cache,
                      std::int64_t len, std::int64_t n_heads, std::int64_t n_kv_heads,
                      std::int64_t head_dim, void* workspace, cudaStream_t stream) {
  ANVIL_CHECK(len > 0 && head_dim > 0 && n_kv_heads > 0 && n_heads > 0 &&
                  n_heads % n_kv_heads == 0 && n_heads < 65536,
              "decode attention shape: len=", len, " H=", n_heads, " Hkv=", n_kv_heads,
              " D=", head_dim);
  ANVIL_CHECK(static_cast<std::size_t>(head_dim) * sizeof(float) <= 48 * 1024, "decode head_dim ",
              head_dim, " too large");
  ANVIL_CHECK(workspace, "attention_decode: null workspace");
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  launch(attention_decode_kernel, static_cast<unsigned>(n_heads), kThreads,
         static_cast<std::size_t>(head_dim) * sizeof(float), stream, out, q, k_cache, v_cache, len,
         n_heads / n_kv_heads, head_dim, n_kv_heads * head_dim, scale,
         static_cast<float*>(workspace));
}

}  // namespace anvil::kernels
