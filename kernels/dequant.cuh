// Dequantization of a frozen base weight (QLoRA, model.quant nf4 | fp8) into a bf16 panel
// that the cuBLASLt GEMMs of the linear layers read: a tile of rows at a time, never the
// whole matrix. The values are those of the CPU dequantizers (src/quant), rounded once to
// bf16: nf4 code[q] * absmax, fp8 e4m3(code) * row_scale, each product one f32 rounding.
//
// UNRUN: written and compiled for sm_90a, run only under the CPU emulation tier
// (tests/emu, emu.emu_dequant: bit for bit against the CPU dequantizers); no line of it
// has run on a GPU.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

namespace anvil::kernels {

// An NF4 weight on the device (layout: quant/quant_state.h). Either absmax_f32, or the
// double-quantized triple absmax_q / absmax_code / absmax2 with `offset`.
struct Nf4Weight {
  const std::uint8_t* codes = nullptr;  // two per byte, element 2i in the high nibble
  const float* code = nullptr;          // (16)
  std::int64_t blocksize = 0;
  const float* absmax_f32 = nullptr;    // (blocks) or null
  const std::uint8_t* absmax_q = nullptr;
  const float* absmax_code = nullptr;   // (256)
  const float* absmax2 = nullptr;
  std::int64_t absmax_blocksize = 0;
  float offset = 0.0f;
};

// An FP8 e4m3 weight with one scale per row.
struct Fp8Weight {
  const std::uint8_t* codes = nullptr;  // (rows, cols)
  const float* row_scale = nullptr;     // (rows)
  std::int64_t cols = 0;
};

// dst[i] = bf16(value of flat element first + i), i in [0, count).
void dequant_nf4_bf16(std::uint16_t* dst, const Nf4Weight& w, std::int64_t first, std::int64_t count,
                      cudaStream_t stream);
void dequant_fp8_bf16(std::uint16_t* dst, const Fp8Weight& w, std::int64_t first, std::int64_t count,
                      cudaStream_t stream);

}  // namespace anvil::kernels
