// FP8 e4m3 weights with one f32 scale per row (per output channel): the layout of
// compressed-tensors' "float8 channel" and fbgemm_fp8 checkpoints. scale = amax(row) / 448
// (an all-zero row gets 1); code = e4m3(w / scale) rounded to nearest even.
#pragma once

#include <cstdint>

#include "quant/quant_state.h"

namespace anvil::quant {

inline constexpr float kFp8Max = 448.0f;

QuantTensor fp8_quantize(const float* w, std::int64_t rows, std::int64_t cols);

void fp8_dequantize(const QuantState& s, const std::uint8_t* codes, std::int64_t cols,
                    std::int64_t first, std::int64_t count, float* dst);

}  // namespace anvil::quant
