// ggml tensor types to f32: one tensor at a time, block by block.
//
// Supported: F32, F16, BF16, the 32-element quants Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and the
// 256-element k-quants Q2_K, Q3_K, Q4_K, Q5_K, Q6_K. Every product is rounded to f32
// before the next operation (this file is compiled without FMA contraction), which is
// what ggml's reference dequantizers and the `gguf` Python package compute.
#pragma once

#include <cstdint>

#include "io/gguf.h"

namespace anvil::io {

bool gguf_can_dequantize(std::uint32_t type);
// A user error naming the type, the tensor and `label` (the file) unless anvil can
// convert the tensor's type.
void gguf_check_dequantizable(const GgufTensorInfo& t, const std::string& label);

// Writes the t.numel elements of `t` (t.nbytes bytes at `src`, as GgufFile::data gives
// them) to `out` as f32. A type anvil cannot convert is gguf_check_dequantizable's error.
void gguf_dequantize(const GgufTensorInfo& t, const std::uint8_t* src, float* out, const std::string& label);

}  // namespace anvil::io
