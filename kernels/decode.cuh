// Attention of one new query position over a KV cache (greedy decoding), fp32. The work
// is tiny (H x len x D), so one block per query head and no tensor cores.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cuda_runtime.h>

namespace anvil::kernels {

// Bytes of workspace attention_decode needs: the (n_heads, len) f32 probabilities.
std::size_t attention_decode_workspace_bytes(std::int64_t len, std::int64_t n_heads);
// q, out (n_heads * head_dim); k_cache, v_cache (len, n_kv_heads * head_dim). Query head h
// reads kv head h / (n_heads / n_kv_heads). Softmax scale 1/sqrt(head_dim).
void attention_decode(float* out, const float* q, const float* k_cache, const float* v_cache,
                      std::int64_t len, std::int64_t n_heads, std::int64_t n_kv_heads,
                      std::int64_t head_dim, void* workspace, cudaStream_t stream);

}  // namespace anvil::kernels
