#include "export/mlx_quant.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace anvil::exporting {

bool mlx_quant_supported(int bits, int group_size) {
  return (bits == 4 || bits == 8) && (group_size == 32 || group_size == 64 || group_size == 128);
}

void mlx_quantize_rows(const float* w, std::int64_t rows, std::int64_t cols, MlxQuant q, std::uint32_t* packed,
                       float* scales, float* biases) {
  ANVIL_CHECK(mlx_quant_supported(q.bits, q.group_size), "mlx quantize: unsupported bits ", q.bits,
              " / group size ", q.group_size);
  ANVIL_CHECK(cols % q.group_size == 0, "mlx quantize: ", cols, " columns are not a multiple of ", q.group_size);
  const float n_bins = static_cast<float>((1 << q.bits) - 1);
  const int per_word = 32 / q.bits;
  const std::int64_t groups = cols / q.group_size;
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* row = w + r * cols;
    std::uint32_t* out = packed + r * mlx_quant_words(cols, q.bits);
    for (std::int64_t g = 0; g < groups; ++g) {
      const float* x = row + g * q.group_size;
      const auto [lo, hi] = std::minmax_element(x, x + q.group_size);
      const float w_min = *lo, w_max = *hi;
      // The edge farther from zero is kept exact: it becomes the bias (code 0) and the
      // scale's sign points from it into the group. Rounding is to nearest even, as mlx's.
      const bool min_edge = std::fabs(w_min) > std::fabs(w_max);
      float scale = std::max((w_max - w_min) / n_bins, 1e-7f);
      if (!min_edge) scale = -scale;
      const float edge = min_edge ? w_min : w_max;
      const float q0 = std::nearbyint(edge / scale);
      if (q0 != 0.0f) scale = edge / q0;
      const float bias = q0 == 0.0f ? 0.0f : edge;
      scales[r * groups + g] = scale;
      biases[r * groups + g] = bias;
      for (int k = 0; k < q.group_size; k += per_word) {
        std::uint32_t word = 0;
        for (int j = 0; j < per_word; ++j) {
          const float code = std::clamp(std::nearbyint((x[k + j] - bias) / scale), 0.0f, n_bins);
          word |= static_cast<std::uint32_t>(code) << (q.bits * j);
        }
        *out++ = word;
      }
    }
  }
}

}  // namespace anvil::exporting
