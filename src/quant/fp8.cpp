#include "quant/fp8.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "core/dtype.h"
#include "core/error.h"

namespace anvil::quant {

using i64 = std::int64_t;

QuantTensor fp8_quantize(const float* w, i64 rows, i64 cols) {
  ANVIL_CHECK(rows > 0 && cols > 0, "fp8: nothing to quantize");
  QuantTensor t;
  t.codes.resize(static_cast<std::size_t>(rows * cols));
  t.row_scale.resize(static_cast<std::size_t>(rows));
  for (i64 r = 0; r < rows; ++r) {
    const float* row = w + r * cols;
    float amax = 0.0f;
    for (i64 c = 0; c < cols; ++c) amax = std::max(amax, std::fabs(row[c]));
    const float scale = amax > 0.0f ? amax / kFp8Max : 1.0f;
    t.row_scale[r] = scale;
    for (i64 c = 0; c < cols; ++c)
      t.codes[r * cols + c] = f32_to_fp8_e4m3(std::clamp(row[c] / scale, -kFp8Max, kFp8Max));
  }
  t.bind();
  return t;
}

namespace {

std::array<float, 256> fp8_table() {
  std::array<float, 256> t{};
  for (int b = 0; b < 256; ++b) t[b] = fp8_e4m3_to_f32(static_cast<std::uint8_t>(b));
  return t;
}

}  // namespace

void fp8_dequantize(const QuantState& s, const std::uint8_t* codes, i64 cols, i64 first,
                    i64 count, float* dst) {
  static const std::array<float, 256> value = fp8_table();
  const i64 end = first + count;
  for (i64 r = first / cols; r * cols < end; ++r) {
    const float scale = s.row_scale[r];
    const i64 e0 = std::max(first, r * cols), e1 = std::min(end, (r + 1) * cols);
    for (i64 i = e0; i < e1; ++i) dst[i - first] = value[codes[i]] * scale;
  }
}

}  // namespace anvil::quant
