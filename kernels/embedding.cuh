// Token embedding lookup and its gradient.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

namespace anvil::kernels {

// out (n, dim) f32 = table[ids - first] for ids in [first, first + rows), zero otherwise
// (a vocabulary shard); table (rows, dim) bf16 bits. An id outside [0, vocab) sets
// *bad_id (device int32, may be null) to 1 and writes zeros.
void embedding_forward(float* out, const std::int32_t* ids, const std::uint16_t* table,
                       std::int64_t n, std::int64_t rows, std::int64_t dim, std::int64_t first,
                       std::int64_t vocab, std::int32_t* bad_id, cudaStream_t stream);
// dtable (vocab, dim) += scatter of dout (n, dim) by ids. Deterministic, no float atomics:
// each table row adds its tokens in token order, in chunks (embedding.cu), in the order the
// CPU backend uses. workspace: embedding_backward_workspace_bytes.
std::size_t embedding_backward_workspace_bytes(std::int64_t n, std::int64_t dim);
void embedding_backward(float* dtable, const float* dout, const std::int32_t* ids,
                        std::int64_t n, std::int64_t vocab, std::int64_t dim, void* workspace,
                        cudaStream_t stream);

}  // namespace anvil::kernels
