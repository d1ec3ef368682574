// NF4 with double quantization, as bitsandbytes defines it (QLoRA, Dettmers et al. 2023):
// the 16-value NormalFloat code, absmax per block of 64, and the absmax itself quantized
// to 8 bits with bitsandbytes' signed dynamic map in blocks of 256 around its mean.
#pragma once

#include <array>
#include <cstdint>

#include "quant/quant_state.h"

namespace anvil::quant {

inline constexpr std::int64_t kNf4Blocksize = 64;
inline constexpr std::int64_t kAbsmaxBlocksize = 256;

// The NF4 code: quantiles of N(0, 1) scaled to [-1, 1], with an exact zero.
const std::array<float, 16>& nf4_code();
// bitsandbytes' create_dynamic_map(signed=True): 8-bit dynamic-exponent code, sorted.
const std::array<float, 256>& dynamic_map_signed();

// NF4 codes and double-quantized absmax of n values (a flat row-major tensor).
QuantTensor nf4_quantize(const float* x, std::int64_t n);
// The double quantization's offset: the mean of the blocks' absmax as bitsandbytes takes
// it (torch's float32 mean on CPU, one thread's summation order; see nf4.cpp).
float nf4_absmax_offset(const float* absmax, std::int64_t blocks);
// 8-bit blockwise quantization of n values with `code` (sorted, 256 values) as bitsandbytes
// 0.50.2 picks the code of x * (1 / absmax of its block): the nearest but within 1.5e-5 of
// a midpoint between two codes (its 65536-point table; see nf4.cpp). An all-zero block
// gets code 0. absmax: (ceil(n / blocksize)).
void blockwise8_quantize(const float* x, std::int64_t n, std::int64_t blocksize,
                         const float* code, std::uint8_t* q, float* absmax);

// The absmax of block b: absmax_f32[b], or its double-quantized form expanded (a product,
// then the offset added: two roundings, never one fused multiply-add).
float nf4_block_absmax(const QuantState& s, std::int64_t b);

void nf4_dequantize(const QuantState& s, const std::uint8_t* codes, std::int64_t first,
                    std::int64_t count, float* dst);

}  // namespace anvil::quant
