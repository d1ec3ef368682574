// CpuBackend: scratch sizing, gemm, linear layers, embedding, SwiGLU.
#include "backend/cpu/cpu_backend.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "backend/cpu/cpu_exp.h"
#include "core/dtype.h"
#include "core/error.h"
#include "quant/quant_state.h"

namespace anvil::backend {

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

namespace {

// Floats of each scratch buffer reserve() sizes, in member order.
std::array<i64, 7> scratch_floats(const BackendLimits& l) {
  const i64 width = std::max({l.max_width, l.hidden, i64{1}});
  const i64 lora_rows = std::min(kLoraRows, l.max_tokens);
  // A block of query rows per thread (cpu_attention.cpp spreads heads over the threads).
  const i64 attn_floats = std::max(omp_get_max_threads(), 1) * std::min(kAttnRows, l.max_seq) * l.max_seq;
  return {std::max(kConvertFloats, width),  // weight_rows_
          width,                            // norm_w_
          attn_floats,                      // attn_p_
          attn_floats,                      // attn_dp_
          kLossRows * l.vocab,              // logits_
          lora_rows * l.max_width,          // lora_x_
          // The LoRA rank is not among the limits; it never exceeds the adapted layer's width.
          lora_rows * l.max_width};         // lora_g_
}

// The limits an expert worker (cpu_moe_experts.cpp) sizes its scratch by: it runs only
// the linear, LoRA and SwiGLU ops, on at most a micro-batch's rows.
BackendLimits expert_worker_limits(const BackendLimits& l) {
  BackendLimits w;
  w.max_tokens = l.max_tokens;
  w.max_width = l.max_width;
  w.hidden = l.hidden;
  return w;
}

// One expert worker per OpenMP thread when there are several threads; none otherwise.
int expert_worker_count() {
  const int threads = omp_get_max_threads();
  return threads > 1 ? threads : 0;
}

i64 own_scratch_bytes(const BackendLimits& l) {
  i64 floats = 0;
  for (const i64 n : scratch_floats(l)) floats += n;
  return floats * static_cast<i64>(sizeof(float)) +
         (l.vocab + l.max_tokens) * static_cast<i64>(sizeof(i64)) +  // embed_order_
         kReservedExperts * static_cast<i64>(sizeof(i64));              // expert_order_
}

}  // namespace

void CpuBackend::reserve(const BackendLimits& l) {
  reserve_own(l);
  const BackendLimits worker = expert_worker_limits(l);
  for (const std::unique_ptr<CpuBackend>& w : expert_workers(expert_worker_count())) w->reserve_own(worker);
  scratch(expert_order_, kReservedExperts);
}

void CpuBackend::reserve_own(const BackendLimits& l) {
  const std::array<i64, 7> n = scratch_floats(l);
  std::vector<float>* bufs[] = {&weight_rows_, &norm_w_, &attn_p_, &attn_dp_, &logits_, &lora_x_, &lora_g_};
  for (std::size_t i = 0; i < n.size(); ++i) scratch(*bufs[i], n[i]);
  scratch(embed_order_, l.vocab + l.max_tokens);
}

std::int64_t cpu_scratch_bytes(const BackendLimits& limits) {
  return own_scratch_bytes(limits) + expert_worker_count() * own_scratch_bytes(expert_worker_limits(limits));
}

// ---- memory: host memory -----------------------------------------------------------------

void* CpuBackend::memory_alloc(std::size_t bytes) {
  constexpr std::size_t kAlign = 64;
  const std::size_t size = std::max<std::size_t>(kAlign, (bytes + kAlign - 1) / kAlign * kAlign);
  void* p = std::aligned_alloc(kAlign, size);
  if (!p) throw std::bad_alloc();
  std::memset(p, 0, size);
  return p;
}

void CpuBackend::memory_free(void* p) { std::free(p); }

void CpuBackend::copy(void* dst, const void* src, std::size_t bytes) {
  if (bytes && dst != src) std::memmove(dst, src, bytes);
}

void CpuBackend::copy_from_host(void* dst, const void* host, std::size_t bytes) { copy(dst, host, bytes); }

void CpuBackend::copy_to_host(void* host, const void* src, std::size_t bytes) { copy(host, src, bytes); }

void CpuBackend::fill_zero(void* dst, std::size_t bytes) {
  if (bytes) std::memset(dst, 0, bytes);
}

// ---- weights ---------------------------------------------------------------------------

bool weight_is_direct_f32(const TensorView& w) {
  return w.dtype == DType::dtype_f32 &&
         reinterpret_cast<std::uintptr_t>(w.data) % alignof(float) == 0;
}

bool weight_is_quantized(const TensorView& w) {
  return w.dtype == DType::dtype_nf4 || w.dtype == DType::dtype_fp8_e4m3;
}

void load_f32(float* dst, const TensorView& w, i64 offset, i64 count) {
  const auto* bytes = static_cast<const unsigned char*>(w.data);
  if (w.dtype == DType::dtype_f32) {
    std::memcpy(dst, bytes + offset * 4, static_cast<std::size_t>(count) * 4);
    return;
  }
  ANVIL_CHECK(w.dtype == DType::dtype_bf16, "weights must be f32 or bf16, got ",
              dtype_name(w.dtype));
  // The view may be misaligned (mmapped file): bytes are copied into an aligned chunk,
  // which the conversion loop then reads with plain (vectorizable) loads.
  const unsigned char* src = bytes + offset * 2;
  constexpr i64 kChunk = 512;
  std::uint16_t h[kChunk];
  for (i64 i0 = 0; i0 < count; i0 += kChunk) {
    const i64 len = std::min(kChunk, count - i0);
    std::memcpy(h, src + 2 * i0, static_cast<std::size_t>(len) * 2);
    for (i64 i = 0; i < len; ++i) dst[i0 + i] = bf16_to_f32(h[i]);
  }
}

i64 CpuBackend::weight_row_block(const TensorView& w) const {
  const i64 rows = w.shape[0], cols = w.shape[1];
  if (weight_is_direct_f32(w)) return std::max<i64>(rows, 1);
  return std::clamp<i64>(kConvertFloats / std::max<i64>(cols, 1), 1, std::max<i64>(rows, 1));
}

const float* CpuBackend::weight_rows_f32(const TensorView& w, i64 row0, i64 rows) {
  const i64 cols = w.shape[1];
  if (weight_is_direct_f32(w)) return w.as<const float>() + row0 * cols;
  float* dst = scratch(weight_rows_, rows * cols);
  if (weight_is_quantized(w)) {  // a tile of rows dequantized, never the whole matrix
    quant::quant_dequantize(w, row0 * cols, rows * cols, dst);
    return dst;
  }
  ANVIL_CHECK(w.dtype == DType::dtype_f32 || w.dtype == DType::dtype_bf16,
              "weights must be f32, bf16, nf4 or fp8_e4m3, got ", dtype_name(w.dtype));
  // Serial on purpose: the copy is memory-bound, and an OpenMP team started between two
  // sgemm calls competes with OpenBLAS's still-spinning threads (5x slower on 2 cores).
  for (i64 r = 0; r < rows; ++r) load_f32(dst + r * cols, w, (row0 + r) * cols, cols);
  return dst;
}

// ---- dense algebra ---------------------------------------------------------------------

void CpuBackend::gemm(bool trans_a, bool trans_b, i64 m, i64 n, i64 k, float alpha, const float* a,
                      i64 lda, const float* b, i64 ldb, float beta, float* c, i64 ldc) {
  if (m == 0 || n == 0) return;
  ANVIL_CHECK(m > 0 && n > 0 && k >= 0, "gemm sizes ", m, " x ", n, " x ", k);
  ANVIL_CHECK(std::max({m, n, k, lda, ldb, ldc}) <= INT_MAX, "gemm dimension beyond BLAS int");
  if (k == 0) {  // C = beta * C; BLAS rejects lda < 1 here
    for (i64 i = 0; i < m; ++i)
      for (i64 j = 0; j < n; ++j) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
    return;
  }
  if (m == 1) {  // one row (a decode step): a matrix-vector product, without sgemm's packing of B
    const int inc_a = trans_a ? static_cast<int>(lda) : 1;
    if (trans_b)  // c(n) = B(n, k) a(k)
      cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(n), static_cast<int>(k), alpha, b,
                  static_cast<int>(ldb), a, inc_a, beta, c, 1);
    else  // c(n) = B(k, n)^T a(k)
      cblas_sgemv(CblasRowMajor, CblasTrans, static_cast<int>(k), static_cast<int>(n), alpha, b,
                  static_cast<int>(ldb), a, inc_a, beta, c, 1);
    return;
  }
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, static_cast<int>(m), static_cast<int>(n),
              static_cast<int>(k), alpha, a, static_cast<int>(lda), b, static_cast<int>(ldb), beta,
              c, static_cast<int>(ldc));
}

// y(m, out) = x(m, in) W^T + beta y, over blocks of W's rows (columns of y).
void CpuBackend::linear_forward(float* y, const float* x, const TensorView& w, const float* bias,
                                i64 m, float beta) {
  ANVIL_CHECK(w.shape.rank() == 2, "linear weight must be 2-D, got ", w.shape.str());
  const i64 out = w.shape[0], in = w.shape[1];
  if (m == 0) return;
  const i64 block = weight_row_block(w);
  for (i64 r0 = 0; r0 < out; r0 += block) {
    const i64 rows = std::min(block, out - r0);
    const float* wr = weight_rows_f32(w, r0, rows);  // (rows, in)
    gemm(false, true, m, rows, in, 1.0f, x, in, wr, in, beta, y + r0, out);
  }
  if (!bias) return;
#pragma omp parallel for schedule(static) if (m * out >= kParallelWork)
  for (i64 i = 0; i < m; ++i)
    for (i64 j = 0; j < out; ++j) y[i * out + j] += bias[j];
}

// dx(m, in) = dy(m, out) W + beta dx: a sum over blocks of W's rows.
void CpuBackend::linear_backward_input(float* dx, const float* dy, const TensorView& w, i64 m,
                                       float beta) {
  ANVIL_CHECK(w.shape.rank() == 2, "linear weight must be 2-D, got ", w.shape.str());
  const i64 out = w.shape[0], in = w.shape[1];
  if (m == 0) return;
  const i64 block = weight_row_block(w);
  for (i64 r0 = 0; r0 < out; r0 += block) {
    const i64 rows = std::min(block, out - r0);
    const float* wr = weight_rows_f32(w, r0, rows);  // (rows, in)
    gemm(false, false, m, in, rows, 1.0f, dy + r0, out, wr, in, r0 == 0 ? beta : 1.0f, dx, in);
  }
}

// ---- embedding -------------------------------------------------------------------------

void CpuBackend::embedding_forward(float* out, const std::int32_t* ids, const TensorView& table,
                                   i64 n, const VocabShard& shard) {
  ANVIL_CHECK(table.shape.rank() == 2, "embedding table must be 2-D, got ", table.shape.str());
  const i64 rows = table.shape[0], dim = table.shape[1];
  const i64 vocab = shard.total > 0 ? shard.total : rows;
  ANVIL_CHECK(shard.first >= 0 && shard.first + rows <= vocab, "vocabulary shard [", shard.first,
              ", ", shard.first + rows, ") outside [0, ", vocab, ")");
  for (i64 i = 0; i < n; ++i)
    ANVIL_CHECK(ids[i] >= 0 && ids[i] < vocab, "token id ", ids[i], " outside [0, ", vocab, ")");
#pragma omp parallel for schedule(static) if (n * dim >= kParallelWork)
  for (i64 i = 0; i < n; ++i) {
    const i64 row = ids[i] - shard.first;
    if (row >= 0 && row < rows) load_f32(out + i * dim, table, row * dim, dim);
    else std::fill(out + i * dim, out + (i + 1) * dim, 0.0f);
  }
}

// Threads own column blocks: no races, and the sum order is the same for any thread count.
void CpuBackend::embedding_backward(float* dtable, const float* dout, const std::int32_t* ids,
                                    i64 n, i64 vocab, i64 dim) {
  for (i64 i = 0; i < n; ++i)
    ANVIL_CHECK(ids[i] >= 0 && ids[i] < vocab, "token id ", ids[i], " outside [0, ", vocab, ")");
  // The tokens grouped by id, in token order (a stable counting sort): position p of
  // `sorted` is where the CUDA kernel's sort puts it. A row adds its tokens in pieces cut
  // at multiples of kChunk of that position, each piece summed from zero, the pieces in
  // order: the CUDA kernel's order (kernels/embedding.cu), so both give the same bits.
  constexpr i64 kChunk = 64;
  i64* end = scratch(embed_order_, vocab + n);  // end[v]: one past id v's last position
  i64* sorted = end + vocab;                    // (n) token indices by (id, token)
  std::fill(end, end + vocab, i64{0});
  for (i64 i = 0; i < n; ++i) ++end[ids[i]];
  for (i64 v = 0, start = 0; v < vocab; ++v) {  // end[v] = start of v, for the fill below
    const i64 count = end[v];
    end[v] = start;
    start += count;
  }
  for (i64 i = 0; i < n; ++i) sorted[end[ids[i]]++] = i;  // now end[v] is v's end
  auto begin = [&](i64 v) { return v == 0 ? i64{0} : end[v - 1]; };
  constexpr i64 kCols = 64;
  const i64 col_blocks = (dim + kCols - 1) / kCols;
#pragma omp parallel for schedule(static) if (n * dim >= kParallelWork)
  for (i64 cb = 0; cb < col_blocks; ++cb) {
    const i64 c0 = cb * kCols, c1 = std::min(dim, c0 + kCols);
    for (i64 v = 0; v < vocab; ++v) {
      if (begin(v) == end[v]) continue;
      for (i64 c = c0; c < c1; ++c) {
        float total = 0.0f, piece = 0.0f;
        bool any = false;
        for (i64 p = begin(v); p < end[v]; ++p) {
          if (p > begin(v) && p % kChunk == 0) {
            total = any ? total + piece : piece;
            any = true;
            piece = 0.0f;
          }
          piece += dout[sorted[p] * dim + c];
        }
        dtable[v * dim + c] += any ? total + piece : piece;
      }
    }
  }
}

// ---- SwiGLU: h = silu(gate) * up, silu(g) = g / (1 + exp(-g)) as PyTorch computes it ----

// exp(-g) goes through the vector exp a chunk at a time, into a buffer on the stack.
constexpr i64 kSwigluChunk = 1024;

void CpuBackend::swiglu_forward(float* h, const float* gate, const float* up, i64 n) {
#pragma omp parallel for schedule(static) if (n >= kParallelWork)
  for (i64 c0 = 0; c0 < n; c0 += kSwigluChunk) {
    const i64 len = std::min(kSwigluChunk, n - c0);
    std::array<float, kSwigluChunk> e;
    exp_negated(gate + c0, e.data(), len);
    for (i64 j = 0; j < len; ++j) h[c0 + j] = gate[c0 + j] / (1.0f + e[j]) * up[c0 + j];
  }
}

// d silu(g)/dg = s (1 + g (1 - s)) with s = sigmoid(g).
void CpuBackend::swiglu_backward(float* dgate, float* dup, const float* dh, const float* gate,
                                 const float* up, i64 n) {
#pragma omp parallel for schedule(static) if (n >= kParallelWork)
  for (i64 c0 = 0; c0 < n; c0 += kSwigluChunk) {
    const i64 len = std::min(kSwigluChunk, n - c0);
    std::array<float, kSwigluChunk> e;
    exp_negated(gate + c0, e.data(), len);
    for (i64 j = 0; j < len; ++j) {
      const i64 i = c0 + j;
      const float g = gate[i];
      const float e1 = 1.0f + e[j];
      const float s = 1.0f / e1;
      dgate[i] = dh[i] * up[i] * s * (1.0f + g * (1.0f - s));
      dup[i] = dh[i] * (g / e1);
    }
  }
}

}  // namespace anvil::backend
