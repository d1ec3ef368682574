// MLX's affine group quantization, as mlx.core.quantize(w, group_size, bits) computes it, so
// that an exported model loads in mlx-lm exactly as `mlx_lm.convert -q` would have written it.
// Each row is cut into groups of `group_size` along the row; a group keeps
//   scale, bias  with  w ≈ scale · q + bias,  q in [0, 2^bits - 1],
// where the bias is the group's edge value (its min or its max, whichever is larger in
// magnitude) so that the edge is represented exactly. Codes are packed little end first,
// 32/bits of them per uint32 word, in row order.
#pragma once

#include <cstdint>

namespace anvil::exporting {

struct MlxQuant {
  int bits = 4;         // 4 or 8
  int group_size = 64;  // 32, 64 or 128
};

// Whether anvil writes this (bits, group_size): the affine layouts mlx_lm.convert offers whose
// codes fill whole words.
bool mlx_quant_supported(int bits, int group_size);

// uint32 words per row of `cols` elements (cols a multiple of the group size).
inline std::int64_t mlx_quant_words(std::int64_t cols, int bits) { return cols * bits / 32; }

// w (rows, cols) f32, already rounded to the model dtype (mlx quantizes the cast weights) →
// packed (rows, cols·bits/32), scales and biases (rows, cols/group_size) in f32; the caller
// stores those in the model dtype. The arithmetic is mlx's in fp32: codes are computed with
// the fp32 scale and bias, before they are rounded to the model dtype.
void mlx_quantize_rows(const float* w, std::int64_t rows, std::int64_t cols, MlxQuant q, std::uint32_t* packed,
                       float* scales, float* biases);

}  // namespace anvil::exporting
