// LoRA adapter kernels: y += scale * dropout(x) A^T B^T and its backward. Adapter matrices
// are fp32 masters. The products are fp32 SIMT loops (r <= 64 makes them narrow; tensor
// cores in bf16 are a later step, once they can be tested on a GPU): at least as accurate
// as bf16 inputs with fp32 accumulation.
//
// Dropout matches the CPU backend bit for bit in its mask: element (row, col) of x is kept
// when philox_uniform(stream, index) >= p, index = (row_offset + row) * row_stride +
// col_offset + col, and scaled by 1/(1-p) (see backend::LoraDropout).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cuda_runtime.h>

#include "philox.cuh"

namespace anvil::kernels {

struct LoraDropoutParams {
  float p = 0.0f;  // 0: no dropout, no random numbers drawn
  std::uint32_t k0 = 0, k1 = 0, c2 = 0, c3 = 0;  // the Philox stream (PhiloxStream)
  std::int64_t row_offset = 0, row_stride = 0, col_offset = 0;
};

// The keep decisions of elements (row, col + j), j < 4, of the adapter input as bits j.
// Four neighbours share at most two Philox blocks, so each block is drawn once, not four
// times. Host-callable so CPU-only tests can hold it against core/philox.
__host__ __device__ inline unsigned lora_dropout_keep4(const LoraDropoutParams& d,
                                                       std::int64_t row, std::int64_t col) {
  const auto first = static_cast<std::uint64_t>((d.row_offset + row) * d.row_stride +
                                                d.col_offset + col);
  unsigned bits = 0;
  std::uint64_t cached = ~std::uint64_t{0};
  PhiloxWords words{};
  for (unsigned j = 0; j < 4; ++j) {
    const std::uint64_t index = first + j;
    const std::uint64_t block = index / 4;
    if (block != cached) {
      words = philox4x32_10(static_cast<std::uint32_t>(block),
                            static_cast<std::uint32_t>(block >> 32), d.c2, d.c3, d.k0, d.k1);
      cached = block;
    }
    const std::uint32_t word = philox_detail::pick(words, static_cast<unsigned>(index % 4));
    if (static_cast<float>(word >> 8) * 0x1p-24f >= d.p) bits |= 1u << j;
  }
  return bits;
}

// xa (n, r) = dropout(x) A^T, x (n, in) read once, the mask made on the fly.
// a (r, in). r <= 64.
void lora_down(float* xa, const float* x, const float* a, std::int64_t n, std::int64_t in, int r,
               const LoraDropoutParams& drop, cudaStream_t stream);
// y (n, out) += scale * xa B^T, b (out, r), in place on the base output.
void lora_up(float* y, const float* xa, const float* b, std::int64_t n, std::int64_t out, int r,
             float scale, cudaStream_t stream);

// Scratch lora_backward needs: g = scale * dy B (n, r) and partial sums, in bytes.
std::size_t lora_backward_workspace_bytes(std::int64_t n, std::int64_t in, std::int64_t out, int r);
// db (out, r) += scale * dy^T xa;  g = scale * dy B (n, r);  da (r, in) += g^T dropout(x);
// dx (n, in) += mask(g A) when dx is not null (the mask and 1/(1-p) of the forward).
// dy (n, out), x (n, in), xa (n, r) as saved by the forward.
void lora_backward(float* dx, float* da, float* db, const float* dy, const float* x,
                   const float* xa, const float* a, const float* b, std::int64_t n,
                   std::int64_t in, std::int64_t out, int r, float scale,
                   const LoraDropoutParams& drop, void* workspace, cudaStream_t stream);

}  // namespace anvil::kernels
