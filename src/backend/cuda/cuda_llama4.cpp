// CudaBackend: Llama 4's ops, one kernels/llama4.cu launcher each (UNRUN on a GPU; tested
// under the emulation tier against backend/llama4_ops.h's host loops).
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_moe_args.h"
#include "core/error.h"
#include "llama4.cuh"

namespace anvil::backend {

void CudaBackend::llama4_pairs_split(float* out, const float* in, i64 rows, i64 head_dim) {
  kernels::llama4_pairs_split(out, in, rows, head_dim, stream_);
}

void CudaBackend::llama4_pairs_join(float* out, const float* in, i64 rows, i64 head_dim) {
  kernels::llama4_pairs_join(out, in, rows, head_dim, stream_);
}

void CudaBackend::llama4_temperature(float* x, const std::int32_t* pos, i64 n, i64 width, float floor_scale,
                                     float attn_scale) {
  kernels::llama4_temperature(x, pos, n, width, floor_scale, attn_scale, stream_);
}

void CudaBackend::llama4_route_scores(const float* logits, const MoeRoute& r, i64 n, i64 experts, i64 k) {
  kernels::llama4_route_scores(logits, route_buffers(r), n, narrow(experts, "experts"), narrow(k, "top_k"),
                               stream_);
}

void CudaBackend::llama4_scale_rows(float* xs, const MoeRoute& r, i64 n, i64 k, i64 c) {
  kernels::llama4_scale_rows(xs, route_buffers(r), n, narrow(k, "top_k"), c, stream_);
}

void CudaBackend::llama4_scale_backward(float* dscore, float* d_xs, const float* x, const MoeRoute& r, i64 n,
                                        i64 k, i64 c) {
  kernels::llama4_scale_backward(dscore, d_xs, x, route_buffers(r), n, narrow(k, "top_k"), c, stream_);
}

void CudaBackend::llama4_router_backward(float* d_logits, const float* dscore, const MoeRoute& r, i64 n,
                                         i64 experts, i64 k) {
  kernels::llama4_router_backward(d_logits, dscore, route_buffers(r), n, narrow(experts, "experts"),
                                  narrow(k, "top_k"), stream_);
}

}  // namespace anvil::backend
