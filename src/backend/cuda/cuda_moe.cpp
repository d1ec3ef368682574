// CudaBackend: the mixture-of-experts ops, one kernels/moe.cu launcher each (UNRUN on a GPU;
// tested under the emulation tier). The expert GEMMs themselves are the model's loop over
// experts calling the linear ops (model/llama.cpp).
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_moe_args.h"
#include "core/error.h"
#include "moe.cuh"

namespace anvil::backend {

void CudaBackend::moe_route(const float* logits, i64 n, i64 experts, i64 k, bool norm_topk, const MoeRoute& r) {
  kernels::moe_route(logits, n, narrow(experts, "experts"), narrow(k, "top_k"), norm_topk, route_buffers(r),
                     stream_);
}

void CudaBackend::moe_gather(float* xs, const float* x, const MoeRoute& r, i64 n, i64 k, i64 c) {
  kernels::moe_gather(xs, x, route_buffers(r), n, narrow(k, "top_k"), c, stream_);
}

void CudaBackend::moe_combine(float* y, const float* ye, const MoeRoute& r, i64 n, i64 k, i64 c) {
  kernels::moe_combine(y, ye, route_buffers(r), n, narrow(k, "top_k"), c, stream_);
}

void CudaBackend::moe_combine_backward(float* dweight, float* d_ye, const float* dy, const float* ye,
                                       const MoeRoute& r, i64 n, i64 k, i64 c) {
  kernels::moe_combine_backward(dweight, d_ye, dy, ye, route_buffers(r), n, narrow(k, "top_k"), c, stream_);
}

void CudaBackend::moe_scatter(float* dx, const float* dxs, const MoeRoute& r, i64 n, i64 k, i64 c) {
  kernels::moe_scatter(dx, dxs, route_buffers(r), n, narrow(k, "top_k"), c, stream_);
}

void CudaBackend::moe_router_backward(float* d_logits, const float* dweight, const MoeRoute& r, i64 n,
                                      i64 experts, i64 k, bool norm_topk, const double* aux_grad) {
  kernels::moe_router_backward(d_logits, dweight, route_buffers(r), n, narrow(experts, "experts"),
                               narrow(k, "top_k"), norm_topk, aux_grad, stream_);
}

void CudaBackend::moe_aux_accumulate(double* count, double* prob_sum, const MoeRoute& r, i64 n, i64 experts,
                                     i64 k) {
  kernels::moe_aux_accumulate(count, prob_sum, route_buffers(r), n, narrow(experts, "experts"),
                              narrow(k, "top_k"), stream_);
}

void CudaBackend::moe_residual_add(float* y, const float* x, i64 n) {
  kernels::moe_residual_add(y, x, n, stream_);
}

}  // namespace anvil::backend
