// CudaBackend: construction, device memory, weight placement, scratch, and the dense
// products: cuBLAS for the f32 gemm (export), cuBLASLt for products with bf16 weights.
#include "backend/cuda/cuda_backend.h"

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstring>
#include <string>

#include "attention.cuh"
#include "backend/cuda/blas_api.h"
#include "backend/cuda/cublas_check.h"
#include "bias.cuh"
#include "cast.cuh"
#include "core/dtype.h"
#include "core/error.h"
#include "cuda_check.cuh"
#include "cuda_wait.cuh"
#include "decode.cuh"
#include "embedding.cuh"
#include "lora.cuh"
#include "optim.cuh"
#include "quant/quant_state.h"

namespace anvil::backend {

int cuda_device_count() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err == cudaSuccess) return count;
  (void)cudaGetLastError();
  // No GPU, or no driver at all (a CPU node running the GPU build): the answer is 0. With
  // a driver installed, any other error is the machine's problem to report, not "no GPU"
  // (auto would quietly train on the CPU).
  int driver = 0, runtime = 0;
  (void)cudaDriverGetVersion(&driver);
  (void)cudaRuntimeGetVersion(&runtime);
  if (err == cudaErrorNoDevice || driver == 0) return 0;
  throw_user_error("CUDA cannot list the GPUs: ", cudaGetErrorName(err), " (", cudaGetErrorString(err),
                   "); driver supports CUDA ", driver / 1000, ".", driver % 1000 / 10, ", anvil's runtime is ",
                   runtime / 1000, ".", runtime % 1000 / 10,
                   " (check nvidia-smi, the driver version and, on NVSwitch systems, nvidia-fabricmanager)");
}

namespace {

// "GPU-8f1c2e3a-...": the spelling of nvidia-smi -L and CUDA_VISIBLE_DEVICES.
std::string uuid_text(const cudaUUID_t& id) {
  std::string uuid = "GPU-";
  for (int i = 0; i < 16; ++i) {
    char hex[3];
    std::snprintf(hex, sizeof hex, "%02x", static_cast<unsigned char>(id.bytes[i]));
    uuid += hex;
    if (i == 3 || i == 5 || i == 7 || i == 9) uuid += '-';
  }
  return uuid;
}

}  // namespace

std::vector<std::string> cuda_visible_gpus() {
  std::vector<std::string> out;
  const int count = cuda_device_count();
  for (int d = 0; d < count; ++d) {
    cudaDeviceProp prop{};
    CUDA_CHECK(cudaGetDeviceProperties(&prop, d));
    out.push_back(uuid_text(prop.uuid));
  }
  return out;
}

std::unique_ptr<Backend> make_cuda_backend(int device) {
  return std::make_unique<CudaBackend>(device);
}

i64 cuda_loss_rows(i64 V) {
  const i64 fit = static_cast<i64>(kLossLogitsBytes / sizeof(float)) / std::max<i64>(V, 1);
  return std::clamp<i64>(fit, 1, kCudaLossRows);
}

namespace {

// cudaMalloc that says what ran out: the run's shapes are the user's to change.
void* device_malloc(std::size_t bytes, int device) {
  void* p = nullptr;
  const cudaError_t status = cudaMalloc(&p, std::max<std::size_t>(bytes, 256));
  if (status == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    std::size_t free_bytes = 0, total_bytes = 0;
    (void)cudaMemGetInfo(&free_bytes, &total_bytes);
    throw_user_error("out of GPU memory on CUDA device ", device, ": ", bytes, " bytes asked, ",
                     free_bytes >> 20, " MiB free of ", total_bytes >> 20,
                     " MiB; use a smaller micro-batch or sequence length, or more ranks");
  }
  CUDA_CHECK(status);
  return p;
}

// The largest power of two (up to 256) that divides the address: cuBLASLt picks only
// algorithms that are valid for the alignment it is told.
i64 alignment_of(const void* p) {
  const auto u = reinterpret_cast<std::uintptr_t>(p);
  const std::uintptr_t low = u & (~u + 1);
  return low == 0 || low > 256 ? 256 : static_cast<i64>(low);
}

void check_placed(const TensorView& w, int rank, DType dtype, const char* what) {
  ANVIL_CHECK(w.shape.rank() == rank && w.dtype == dtype, what, " must be a ", rank, "-D ",
              dtype_name(dtype), " view from weight_place(), got ", w.shape.str(), " ",
              dtype_name(w.dtype));
}

}  // namespace

// ---- lifetime ----------------------------------------------------------------------------

CudaBackend::CudaBackend(int device) : device_(device) {
  const int count = cuda_device_count();
  if (device < 0 || device >= count)
    throw_user_error("CUDA device ", device, " does not exist: this process sees ", count,
                     " CUDA device(s)",
                     count == 0 ? " (no GPU, no driver, or CUDA_VISIBLE_DEVICES hides them)" : "");
  try {
    CUDA_CHECK(cudaSetDevice(device));
    // Non-blocking: the legacy default stream (used by libraries we do not control) never
    // serialises against our work.
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    CUBLAS_CHECK(blas_api().cublasLtCreate(&lt_));
    CUBLAS_CHECK(blas_api().cublasCreate(&blas_));
    CUBLAS_CHECK(blas_api().cublasSetStream(blas_, stream_));
    // The f32 gemm is export's merge: keep it fp32, never TF32.
    CUBLAS_CHECK(blas_api().cublasSetMathMode(blas_, CUBLAS_DEFAULT_MATH));
    blas_workspace_ = device_malloc(kCublasWorkspaceBytes, device_);
    // Shared by cuBLAS and cuBLASLt: both run in order on the one stream. Given to cuBLAS
    // so that it never allocates a workspace of its own in the step loop.
    CUBLAS_CHECK(blas_api().cublasSetWorkspace(blas_, blas_workspace_, kCublasWorkspaceBytes));
    scalars_ = static_cast<Scalars*>(device_malloc(sizeof(Scalars), device_));
    CUDA_CHECK(cudaMemsetAsync(scalars_, 0, sizeof(Scalars), stream_));
  } catch (...) {
    release();
    throw;
  }
}

CudaBackend::~CudaBackend() { release(); }

// Errors are ignored here: this runs in the destructor and on a failed construction.
void CudaBackend::release() noexcept {
  (void)cudaSetDevice(device_);
  if (stream_) (void)cudaStreamSynchronize(stream_);
  for (auto& entry : lt_plans_) {
    LtPlan& plan = entry.second;
    if (plan.a) (void)blas_api().cublasLtMatrixLayoutDestroy(plan.a);
    if (plan.b) (void)blas_api().cublasLtMatrixLayoutDestroy(plan.b);
    if (plan.c) (void)blas_api().cublasLtMatrixLayoutDestroy(plan.c);
    if (plan.op) (void)blas_api().cublasLtMatmulDescDestroy(plan.op);
  }
  lt_plans_.clear();
  for (void* w : weights_) (void)cudaFree(w);
  weights_.clear();
  quant_states_.clear();
  for (DeviceScratch* buf : {&stage_, &logits_, &loss_stats_, &attn_ws_, &decode_ws_, &lora_ws_,
                             &embed_ws_, &sumsq_ws_, &quant_panel_}) {
    if (buf->ptr) (void)cudaFree(buf->ptr);
    *buf = {};
  }
  if (scalars_) (void)cudaFree(scalars_);
  scalars_ = nullptr;
  if (blas_) (void)blas_api().cublasDestroy(blas_);
  blas_ = nullptr;
  if (blas_workspace_) (void)cudaFree(blas_workspace_);
  blas_workspace_ = nullptr;
  if (lt_) (void)blas_api().cublasLtDestroy(lt_);
  lt_ = nullptr;
  if (stream_) (void)cudaStreamDestroy(stream_);
  stream_ = nullptr;
}

// ---- scratch -----------------------------------------------------------------------------

void CudaBackend::reserve(const BackendLimits& l) {
  const i64 tokens = std::max<i64>(l.max_tokens, 1);
  const i64 width = std::max({l.max_width, l.hidden, i64{1}});
  const i64 loss_rows = std::min(cuda_loss_rows(l.vocab), tokens);
  const i64 staged = std::max(tokens * width, loss_rows * std::max(l.vocab, l.hidden));
  grow(stage_, static_cast<std::size_t>(staged) * sizeof(std::uint16_t));
  grow(logits_, static_cast<std::size_t>(loss_rows * std::max<i64>(l.vocab, 1)) * sizeof(float));
  grow(loss_stats_, static_cast<std::size_t>(loss_rows) * (2 * sizeof(double) + sizeof(float)));
  if (l.max_seq > 0 && l.max_heads > 0 && l.max_head_dim > 0) {
    const i64 batch = (tokens + l.max_seq - 1) / l.max_seq;
    ANVIL_CHECK(batch <= INT_MAX && l.max_seq <= INT_MAX && l.max_heads <= INT_MAX &&
                    l.max_head_dim <= INT_MAX,
                "attention limits beyond int");
    grow(attn_ws_, kernels::attention_backward_workspace_bytes(
                       static_cast<int>(batch), static_cast<int>(l.max_seq),
                       static_cast<int>(l.max_heads), static_cast<int>(l.max_head_dim)));
    grow(decode_ws_, kernels::attention_decode_workspace_bytes(l.max_seq, l.max_heads));
  }
  grow(lora_ws_, kernels::lora_backward_workspace_bytes(tokens, width, width, kCudaMaxLoraRank));
  grow(embed_ws_, kernels::embedding_backward_workspace_bytes(tokens, width));
  // The parameter count is not among the limits; the kernel's partials are capped, so the
  // workspace for a huge count is the most it ever needs.
  grow(sumsq_ws_, kernels::sum_squares_workspace_bytes(i64{1} << 40));
}

void* CudaBackend::grow(DeviceScratch& buf, std::size_t bytes) {
  if (buf.ptr && bytes <= buf.bytes) return buf.ptr;
  if (buf.ptr) {
    // Work already queued may still read the old buffer.
    cuda_stream_wait(stream_, "scratch grow");
    CUDA_CHECK(cudaFree(buf.ptr));
    buf = {};
  }
  buf.ptr = device_malloc(bytes, device_);
  buf.bytes = std::max<std::size_t>(bytes, 256);
  return buf.ptr;
}

const std::uint16_t* CudaBackend::stage_bf16(const float* x, i64 count) {
  auto* dst = static_cast<std::uint16_t*>(grow(stage_, static_cast<std::size_t>(count) * 2));
  kernels::cast_f32_to_bf16(dst, x, count, stream_);
  return dst;
}

// ---- memory ------------------------------------------------------------------------------

void* CudaBackend::memory_alloc(std::size_t bytes) {
  void* p = device_malloc(bytes, device_);  // cudaMalloc aligns to 256 bytes
  CUDA_CHECK(cudaMemsetAsync(p, 0, std::max<std::size_t>(bytes, 256), stream_));
  // Zero before any stream (a communicator's included) can touch it.
  cuda_stream_wait(stream_, "memory_alloc");
  return p;
}

void CudaBackend::memory_free(void* p) {
  if (!p) return;
  cuda_stream_wait(stream_, "memory_free");  // queued work may still use it
  CUDA_CHECK(cudaFree(p));
}

bool CudaBackend::is_device_memory(const void* p) const {
  cudaPointerAttributes a{};
  // Plain host memory is cudaMemoryTypeUnregistered (CUDA 11+), not an error.
  CUDA_CHECK(cudaPointerGetAttributes(&a, p));
  return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
}

void CudaBackend::copy(void* dst, const void* src, std::size_t bytes) {
  if (bytes == 0 || dst == src) return;
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
}

// Synchronous: the caller may reuse its host buffer as soon as this returns.
void CudaBackend::copy_from_host(void* dst, const void* host, std::size_t bytes) {
  if (bytes == 0) return;
  CUDA_CHECK(cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, stream_));
  cuda_stream_wait(stream_, "copy_from_host");
}

// Synchronous: the host buffer holds the data (after every op queued before) on return.
void CudaBackend::copy_to_host(void* host, const void* src, std::size_t bytes) {
  if (bytes == 0) return;
  CUDA_CHECK(cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, stream_));
  cuda_stream_wait(stream_, "copy_to_host");
}

void CudaBackend::fill_zero(void* dst, std::size_t bytes) {
  if (bytes == 0) return;
  CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, stream_));
}

void CudaBackend::synchronize() { cuda_stream_wait(stream_, "synchronize"); }

// "GPU-8f1c…, bus 0000:41:00.0": what nvidia-smi and CUDA_VISIBLE_DEVICES=GPU-… name.
std::string CudaBackend::device_identity() const {
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, device_));
  char bus[32];
  std::snprintf(bus, sizeof bus, "%04x:%02x:%02x.0", prop.pciDomainID, prop.pciBusID, prop.pciDeviceID);
  return str_cat(prop.name, " ", uuid_text(prop.uuid), ", bus ", bus);
}

// 2-D weights (linear layers, embedding, LM head) become bf16, what cuBLASLt and the
// embedding kernel read; 1-D weights (norms) become f32. A host view may be a misaligned
// mapped file, so it is read with memcpy and converted a chunk at a time.
TensorView CudaBackend::weight_place(const TensorView& w) {
  if (w.quant != nullptr) return quant_weight_place(w);
  const int rank = w.shape.rank();
  ANVIL_CHECK(rank == 1 || rank == 2, "weight_place takes 1-D or 2-D weights, got ", w.shape.str());
  ANVIL_CHECK(w.dtype == DType::dtype_f32 || w.dtype == DType::dtype_bf16,
              "weights must be f32 or bf16, got ", dtype_name(w.dtype));
  const DType to = rank == 2 ? DType::dtype_bf16 : DType::dtype_f32;
  const i64 n = w.numel();
  const std::size_t size_to = dtype_size(to);
  void* dst = device_malloc(static_cast<std::size_t>(n) * size_to, device_);
  weights_.push_back(dst);
  const auto* src = static_cast<const unsigned char*>(w.data);
  if (w.dtype == to) {
    copy_from_host(dst, src, static_cast<std::size_t>(n) * size_to);
    return TensorView{dst, to, w.shape};
  }
  constexpr i64 kChunk = i64{1} << 20;
  std::vector<std::uint16_t> bf16(to == DType::dtype_bf16 ? std::min(n, kChunk) : 0);
  std::vector<float> f32(to == DType::dtype_f32 ? std::min(n, kChunk) : 0);
  for (i64 i0 = 0; i0 < n; i0 += kChunk) {
    const i64 len = std::min(kChunk, n - i0);
    auto* out = static_cast<unsigned char*>(dst) + static_cast<std::size_t>(i0) * size_to;
    if (to == DType::dtype_bf16) {
      for (i64 i = 0; i < len; ++i) {
        float f;
        std::memcpy(&f, src + (i0 + i) * 4, 4);
        bf16[static_cast<std::size_t>(i)] = f32_to_bf16(f);
      }
      copy_from_host(out, bf16.data(), static_cast<std::size_t>(len) * size_to);
    } else {
      for (i64 i = 0; i < len; ++i) {
        std::uint16_t h;
        std::memcpy(&h, src + (i0 + i) * 2, 2);
        f32[static_cast<std::size_t>(i)] = bf16_to_f32(h);
      }
      copy_from_host(out, f32.data(), static_cast<std::size_t>(len) * size_to);
    }
  }
  return TensorView{dst, to, w.shape};
}

// ---- dense algebra -----------------------------------------------------------------------

// Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: cuBLAS gets B's buffer
// first, with the same transpose flags, and the sizes (n, m, k).
void CudaBackend::gemm(bool trans_a, bool trans_b, i64 m, i64 n, i64 k, float alpha, const float* a,
                       i64 lda, const float* b, i64 ldb, float beta, float* c, i64 ldc) {
  if (m == 0 || n == 0) return;
  ANVIL_CHECK(m > 0 && n > 0 && k >= 0, "gemm sizes ", m, " x ", n, " x ", k);
  ANVIL_CHECK(std::max({m, n, k, lda, ldb, ldc}) <= INT_MAX, "gemm dimension beyond BLAS int");
  const int mi = static_cast<int>(m), ni = static_cast<int>(n), ki = static_cast<int>(k);
  if (k == 0) {  // C = beta * C; cuBLAS wants lda >= 1 here
    if (beta == 0.0f) {
      CUDA_CHECK(cudaMemset2DAsync(c, static_cast<std::size_t>(ldc) * sizeof(float), 0,
                                   static_cast<std::size_t>(n) * sizeof(float),
                                   static_cast<std::size_t>(m), stream_));
    } else {
      const float zero = 0.0f;
      CUBLAS_CHECK(blas_api().cublasSgeam(blas_, CUBLAS_OP_N, CUBLAS_OP_N, ni, mi, &beta, c,
                               static_cast<int>(ldc), &zero, c, static_cast<int>(ldc), c,
                               static_cast<int>(ldc)));
    }
    return;
  }
  CUBLAS_CHECK(blas_api().cublasSgemm(
      blas_, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, ni, mi, ki,
      &alpha, b, static_cast<int>(ldb), a, static_cast<int>(lda), &beta, c, static_cast<int>(ldc)));
}

const CudaBackend::LtPlan& CudaBackend::lt_plan(const LtKey& key) {
  if (auto it = lt_plans_.find(key); it != lt_plans_.end()) return it->second;
  const bool trans_a = key[0] != 0;
  const i64 M = key[1], N = key[2], K = key[3], lda = key[4], ldb = key[5], ldd = key[6];
  LtPlan plan;
  cublasLtMatmulPreference_t pref = nullptr;
  try {
    CUBLAS_CHECK(blas_api().cublasLtMatmulDescCreate(&plan.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, op_b = CUBLAS_OP_N;
    CUBLAS_CHECK(
        blas_api().cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a)));
    CUBLAS_CHECK(
        blas_api().cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b)));
    // Layouts describe the stored matrices (before op): A is (K, M) when transposed.
    CUBLAS_CHECK(blas_api().cublasLtMatrixLayoutCreate(&plan.a, CUDA_R_16BF,
                                            static_cast<std::uint64_t>(trans_a ? K : M),
                                            static_cast<std::uint64_t>(trans_a ? M : K), lda));
    CUBLAS_CHECK(blas_api().cublasLtMatrixLayoutCreate(&plan.b, CUDA_R_16BF, static_cast<std::uint64_t>(K),
                                            static_cast<std::uint64_t>(N), ldb));
    CUBLAS_CHECK(blas_api().cublasLtMatrixLayoutCreate(&plan.c, CUDA_R_32F, static_cast<std::uint64_t>(M),
                                            static_cast<std::uint64_t>(N), ldd));
    CUBLAS_CHECK(blas_api().cublasLtMatmulPreferenceCreate(&pref));
    const std::uint64_t workspace = kCublasWorkspaceBytes;
    CUBLAS_CHECK(blas_api().cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof(workspace)));
    const std::uint32_t align_a = static_cast<std::uint32_t>(key[7]);
    const std::uint32_t align_b = static_cast<std::uint32_t>(key[8]);
    const std::uint32_t align_d = static_cast<std::uint32_t>(key[9]);
    CUBLAS_CHECK(blas_api().cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a, sizeof(align_a)));
    CUBLAS_CHECK(blas_api().cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b, sizeof(align_b)));
    CUBLAS_CHECK(blas_api().cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_d, sizeof(align_d)));
    CUBLAS_CHECK(blas_api().cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_d, sizeof(align_d)));
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    CUBLAS_CHECK(blas_api().cublasLtMatmulAlgoGetHeuristic(lt_, plan.op, plan.a, plan.b, plan.c, plan.c, pref,
                                                1, &result, &found));
    ANVIL_CHECK(found > 0, "cuBLASLt has no bf16 algorithm for M=", M, " N=", N, " K=", K);
    plan.algo = result.algo;
    CUBLAS_CHECK(blas_api().cublasLtMatmulPreferenceDestroy(pref));
  } catch (...) {
    if (pref) (void)blas_api().cublasLtMatmulPreferenceDestroy(pref);
    if (plan.a) (void)blas_api().cublasLtMatrixLayoutDestroy(plan.a);
    if (plan.b) (void)blas_api().cublasLtMatrixLayoutDestroy(plan.b);
    if (plan.c) (void)blas_api().cublasLtMatrixLayoutDestroy(plan.c);
    if (plan.op) (void)blas_api().cublasLtMatmulDescDestroy(plan.op);
    throw;
  }
  return lt_plans_.emplace(key, plan).first->second;
}

void CudaBackend::lt_matmul(bool trans_a, i64 M, i64 N, i64 K, const std::uint16_t* a, i64 lda,
                            const std::uint16_t* b, i64 ldb, float beta, float* d, i64 ldd) {
  const LtPlan& plan = lt_plan(
      {trans_a ? 1 : 0, M, N, K, lda, ldb, ldd, alignment_of(a), alignment_of(b), alignment_of(d)});
  const float alpha = 1.0f;
  // In place (C = D): beta = 0 never reads C, so a NaN-poisoned output is overwritten.
  CUBLAS_CHECK(blas_api().cublasLtMatmul(lt_, plan.op, &alpha, a, plan.a, b, plan.b, &beta, d, plan.c, d,
                              plan.c, &plan.algo, blas_workspace_, kCublasWorkspaceBytes, stream_));
}

// y(m, out) = x(m, in) W^T + beta y. Column-major this is y^T (out, m) = W x^T: W's
// row-major (out, in) buffer is the column-major (in, out) matrix W^T, so op T, lda = in;
// x's buffer is the column-major (in, m) matrix x^T, op N, ldb = in; y^T has ld = out.
void CudaBackend::linear_forward(float* y, const float* x, const TensorView& w, const float* bias,
                                 i64 m, float beta) {
  if (m == 0) return;
  if (w.quant != nullptr) {
    quant_linear(false, y, x, w, m, beta);
    if (bias) kernels::bias_add(y, bias, m, w.shape[0], stream_);
    return;
  }
  check_placed(w, 2, DType::dtype_bf16, "linear weight");
  const i64 out = w.shape[0], in = w.shape[1];
  ANVIL_CHECK(m > 0 && out > 0 && in > 0, "linear sizes m=", m, " ", w.shape.str());
  const std::uint16_t* xb = stage_bf16(x, m * in);  // (m, in) bf16
  lt_matmul(true, out, m, in, w.as<const std::uint16_t>(), in, xb, in, beta, y, out);
  if (bias) kernels::bias_add(y, bias, m, out, stream_);
}

// dx(m, in) = dy(m, out) W + beta dx. Column-major: dx^T (in, m) = [W's buffer as the
// column-major (in, out) matrix, op N, lda = in] dy^T (out, m, ldb = out); ld of dx^T = in.
void CudaBackend::linear_backward_input(float* dx, const float* dy, const TensorView& w, i64 m,
                                        float beta) {
  if (m == 0) return;
  if (w.quant != nullptr) return quant_linear(true, dx, dy, w, m, beta);
  check_placed(w, 2, DType::dtype_bf16, "linear weight");
  const i64 out = w.shape[0], in = w.shape[1];
  ANVIL_CHECK(m > 0 && out > 0 && in > 0, "linear sizes m=", m, " ", w.shape.str());
  const std::uint16_t* dyb = stage_bf16(dy, m * out);  // (m, out) bf16
  lt_matmul(false, in, m, out, w.as<const std::uint16_t>(), in, dyb, out, beta, dx, in);
}

}  // namespace anvil::backend
