// GGUF quantizers (gguf_quant.h) against anvil's own dequantizers, and llama.cpp's type
// plan on the shapes of two real models. Byte equality with llama.cpp and with the `gguf`
// package is e2e.gguf_quant_reference's job.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/gguf.h"
#include "io/gguf_dequant.h"
#include "io/gguf_quant.h"

namespace anvil::io {
namespace {

std::uint32_t id(GgmlType t) { return static_cast<std::uint32_t>(t); }

// normal(0, 0.02) with 0.2% outliers ×12, an all-zero block and a constant block at the
// start (the zero-scale and max == min paths).
std::vector<float> weights(std::int64_t rows, std::int64_t cols, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  std::vector<float> w(rows * cols);
  for (auto& v : w) v = uniform(gen) < 0.002f ? 12.0f * normal(gen) : normal(gen);
  std::fill(w.begin(), w.begin() + 256, 0.0f);
  std::fill(w.begin() + 256, w.begin() + 512, 0.015f);
  return w;
}

std::vector<std::uint8_t> quantize(std::uint32_t type, const std::vector<float>& x, std::int64_t rows,
                                   std::int64_t cols) {
  std::vector<std::uint8_t> q(rows * gguf_row_bytes(type, cols));
  gguf_quantize_rows(type, x.data(), rows, cols, q.data());
  return q;
}

std::vector<float> dequantize(std::uint32_t type, const std::vector<std::uint8_t>& q, std::int64_t rows,
                              std::int64_t cols) {
  GgufTensorInfo t;
  t.name = "t";
  t.type = type;
  t.dims = {static_cast<std::uint64_t>(cols), static_cast<std::uint64_t>(rows)};
  t.numel = rows * cols;
  t.nbytes = q.size();
  std::vector<float> y(t.numel);
  gguf_dequantize(t, q.data(), y.data(), "test");
  return y;
}

float f16_at(const std::uint8_t* p) {
  std::uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

constexpr float kF16Eps = 1.0f / 2048;  // relative rounding error of an f16 (2^-11)
constexpr std::int64_t kRows = 256, kCols = 512;

// ---- round trips with their error bounds --------------------------------------------

// F32 is a copy; F16 and BF16 round to nearest: half an ulp, 2^-11 and 2^-8 relative
// (the data stays in both types' normal range).
TEST(GgufQuant, FloatTypesRoundToNearest) {
  const auto x = weights(kRows, kCols, 1);
  EXPECT_EQ(dequantize(id(GgmlType::ggml_f32), quantize(id(GgmlType::ggml_f32), x, kRows, kCols), kRows, kCols), x);
  for (auto [type, rel] : {std::pair{GgmlType::ggml_f16, kF16Eps}, std::pair{GgmlType::ggml_bf16, 1.0f / 256}}) {
    const auto y = dequantize(id(type), quantize(id(type), x, kRows, kCols), kRows, kCols);
    for (std::size_t i = 0; i < x.size(); ++i) ASSERT_LE(std::fabs(y[i] - x[i]), rel * std::fabs(x[i]) + 1e-7f) << i;
  }
}

// 32-element types. A code is the nearest integer to x / d except where clamped, and the
// stored f16 scale (and min) add at most 2^-11 relative each:
//   Q8_0  |e| <= d/2 + 127·d·2^-11                                d = amax / 127
//   Q4_0  |e| <= d/2 + 8·d·2^-11, but d + 8·d·2^-11 where x/d > 7.5: d = -m/8 maps m to
//         code 0 exactly, and the opposite extreme (x/d up to 8) is clamped to code 15
//   Q5_0  the same with 16 and 31
//   Q4_1  |e| <= d/2 + 15·d·2^-11 + |min|·2^-11                  d = (max - min) / 15
//   Q5_1  the same with 31
// (d, min: the f32 values before rounding; a float slack of 1e-6·amax on top.)
struct SimpleCase {
  GgmlType type;
  int top;           // largest code
  bool symmetric;    // Q4_0 / Q5_0
};

TEST(GgufQuant, ThirtyTwoElementTypesWithinHalfAStep) {
  const auto x = weights(kRows, kCols, 2);
  for (const SimpleCase c : {SimpleCase{GgmlType::ggml_q8_0, 127, false}, SimpleCase{GgmlType::ggml_q4_0, 15, true},
                             SimpleCase{GgmlType::ggml_q5_0, 31, true}, SimpleCase{GgmlType::ggml_q4_1, 15, false},
                             SimpleCase{GgmlType::ggml_q5_1, 31, false}}) {
    const auto y = dequantize(id(c.type), quantize(id(c.type), x, kRows, kCols), kRows, kCols);
    for (std::size_t b = 0; b < x.size() / 32; ++b) {
      const float* xb = x.data() + 32 * b;
      float amax = 0, m = 0, mn = xb[0], mx = xb[0];
      for (int j = 0; j < 32; ++j) {
        if (std::fabs(xb[j]) > amax) amax = std::fabs(xb[j]), m = xb[j];
        mn = std::min(mn, xb[j]), mx = std::max(mx, xb[j]);
      }
      float d = 0, bound = 0;
      const float half = static_cast<float>(c.top + 1) / 2;
      if (c.type == GgmlType::ggml_q8_0) {
        d = amax / 127;
        bound = d / 2 + 127 * d * kF16Eps;
      } else if (c.symmetric) {
        d = m / -half;
        bound = std::fabs(d) / 2 + half * std::fabs(d) * kF16Eps;
      } else {
        d = (mx - mn) / static_cast<float>(c.top);
        bound = d / 2 + c.top * d * kF16Eps + std::fabs(mn) * kF16Eps;
      }
      for (int j = 0; j < 32; ++j) {
        float limit = bound;
        if (c.symmetric && d != 0 && xb[j] / d > half - 0.5f) limit += std::fabs(d) / 2;  // the clamped side
        ASSERT_LE(std::fabs(y[32 * b + j] - xb[j]), limit + 1e-6f * amax)
            << ggml_type_name(id(c.type)) << " block " << b << " element " << j;
      }
    }
  }
}

// k-quants. Step 3 of the encoders recomputes every code by rounding against the scale as
// stored, so an element inside its sub-block's grid [lo, lo + nmax·step] is within half a
// step of its value (Q4_K/Q5_K: step d·sc, lo = -dmin·m; Q6_K: step d·sc over codes
// -32..31). The fit may shrink the grid below the sub-block's range when clipping an
// extreme lowers the weighted error; such elements (about 4% at 4 bits) are checked as a
// regression only: within 4 steps. Overall, a least-squares grid per 32 elements (16 for
// Q6_K) must do at least as well as the 32-element type with the same codes and a plain
// min/max grid: RMSE(Q4_K) <= RMSE(Q4_1), RMSE(Q5_K) <= RMSE(Q5_1), and Q6_K, one more bit,
// <= RMSE(Q5_1) / 1.5 (a bit halves the step; 1.5 leaves room for its coarser 8-bit scales).
struct KCase {
  GgmlType type;
  int nmax;
  GgmlType baseline;  // the 32-element type it must beat
  float margin;       // RMSE <= RMSE(baseline) / margin
};

double rmse(const std::vector<float>& x, const std::vector<float>& y) {
  double sq = 0;
  for (std::size_t i = 0; i < x.size(); ++i) sq += (static_cast<double>(y[i]) - x[i]) * (static_cast<double>(y[i]) - x[i]);
  return std::sqrt(sq / static_cast<double>(x.size()));
}

// Per element: {step, lo} of its sub-block.
std::pair<float, float> k_grid(GgmlType type, const std::uint8_t* b, int i) {
  if (type == GgmlType::ggml_q6_k) {
    // Codes -32..31 times a signed step: the grid runs from -32·step to 31·step.
    const float step = f16_at(b + 208) * static_cast<float>(static_cast<std::int8_t>(b[192 + i / 16]));
    return {std::fabs(step), (step > 0 ? -32 : -31) * std::fabs(step)};
  }
  const std::uint8_t* sc = b + 4;
  const int g = i / 32;
  int s, m;
  if (g < 4) {
    s = sc[g] & 63, m = sc[g + 4] & 63;
  } else {
    s = (sc[g + 4] & 0x0F) | ((sc[g - 4] >> 6) << 4), m = (sc[g + 4] >> 4) | ((sc[g] >> 6) << 4);
  }
  return {f16_at(b) * static_cast<float>(s), -f16_at(b + 2) * static_cast<float>(m)};
}

TEST(GgufQuant, KQuantsWithinHalfAStepOnTheirGrid) {
  const auto x = weights(kRows, kCols, 3);
  for (const KCase c : {KCase{GgmlType::ggml_q4_k, 15, GgmlType::ggml_q4_1, 1.0f},
                        KCase{GgmlType::ggml_q5_k, 31, GgmlType::ggml_q5_1, 1.0f},
                        KCase{GgmlType::ggml_q6_k, 63, GgmlType::ggml_q5_1, 1.5f}}) {
    const auto q = quantize(id(c.type), x, kRows, kCols);
    const auto y = dequantize(id(c.type), q, kRows, kCols);
    const std::uint32_t block_bytes = ggml_block(id(c.type)).bytes;
    std::int64_t inside = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      const auto [step, lo] = k_grid(c.type, q.data() + (i / 256) * block_bytes, static_cast<int>(i % 256));
      if (x[i] < lo || x[i] > lo + c.nmax * step) {
        ASSERT_LE(std::fabs(y[i] - x[i]), 4 * step) << ggml_type_name(id(c.type)) << " clipped element " << i;
        continue;
      }
      ++inside;
      ASSERT_LE(std::fabs(y[i] - x[i]), step / 2 * (1 + 1e-4f) + 1e-6f * std::fabs(lo))
          << ggml_type_name(id(c.type)) << " element " << i;
    }
    EXPECT_GT(inside, static_cast<std::int64_t>(x.size() * 0.9)) << ggml_type_name(id(c.type));
    const auto base = dequantize(id(c.baseline), quantize(id(c.baseline), x, kRows, kCols), kRows, kCols);
    EXPECT_LE(rmse(x, y), rmse(x, base) / c.margin) << ggml_type_name(id(c.type));
    // The all-zero block comes back as zeros, the constant one close to its value.
    for (int i = 0; i < 256; ++i) ASSERT_EQ(y[i], 0.0f) << ggml_type_name(id(c.type));
    for (int i = 256; i < 512; ++i) ASSERT_NEAR(y[i], 0.015f, 0.015f * 0.01f) << ggml_type_name(id(c.type));
  }
}

// ---- determinism, sizes, names --------------------------------------------------------

TEST(GgufQuant, SameBytesForAnyThreadCount) {
  const auto x = weights(kRows, kCols, 4);
  const int threads = omp_get_max_threads();
  for (auto type : {GgmlType::ggml_q8_0, GgmlType::ggml_q4_1, GgmlType::ggml_q4_k, GgmlType::ggml_q5_k,
                    GgmlType::ggml_q6_k}) {
    omp_set_num_threads(1);
    const auto one = quantize(id(type), x, kRows, kCols);
    omp_set_num_threads(3);
    const auto three = quantize(id(type), x, kRows, kCols);
    EXPECT_EQ(one, three) << ggml_type_name(id(type));
    EXPECT_EQ(one, quantize(id(type), x, kRows, kCols)) << ggml_type_name(id(type));
  }
  omp_set_num_threads(threads);
}

TEST(GgufQuant, RowBytes) {
  EXPECT_EQ(gguf_row_bytes(id(GgmlType::ggml_f32), 576), 2304u);
  EXPECT_EQ(gguf_row_bytes(id(GgmlType::ggml_bf16), 576), 1152u);
  EXPECT_EQ(gguf_row_bytes(id(GgmlType::ggml_q8_0), 576), 18u * 34);
  EXPECT_EQ(gguf_row_bytes(id(GgmlType::ggml_q4_0), 576), 18u * 18);
  EXPECT_EQ(gguf_row_bytes(id(GgmlType::ggml_q5_1), 576), 18u * 24);
  EXPECT_EQ(gguf_row_bytes(id(GgmlType::ggml_q4_k), 4096), 16u * 144);
  EXPECT_EQ(gguf_row_bytes(id(GgmlType::ggml_q5_k), 4096), 16u * 176);
  EXPECT_EQ(gguf_row_bytes(id(GgmlType::ggml_q6_k), 4096), 16u * 210);
  for (auto [type, len] : {std::pair{GgmlType::ggml_q4_k, 576}, std::pair{GgmlType::ggml_q8_0, 48},
                           std::pair{GgmlType::ggml_q8_0, 0}}) {
    try {
      gguf_row_bytes(id(type), len);
      ADD_FAILURE() << ggml_type_name(id(type)) << " " << len;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::user);
      EXPECT_NE(std::string(e.what()).find("blocks have"), std::string::npos) << e.what();
    }
  }
  EXPECT_FALSE(gguf_can_quantize(id(GgmlType::ggml_q2_k)));
  EXPECT_THROW(gguf_row_bytes(id(GgmlType::ggml_q2_k), 256), Error);
}

TEST(GgufQuant, FileTypeNames) {
  const std::map<std::string, GgufFileType> expected = {
      {"f32", GgufFileType::gguf_file_all_f32}, {"f16", GgufFileType::gguf_file_f16},
      {"bf16", GgufFileType::gguf_file_bf16},   {"q8_0", GgufFileType::gguf_file_q8_0},
      {"q4_0", GgufFileType::gguf_file_q4_0},   {"q4_1", GgufFileType::gguf_file_q4_1},
      {"q5_0", GgufFileType::gguf_file_q5_0},   {"q5_1", GgufFileType::gguf_file_q5_1},
      {"q4_k", GgufFileType::gguf_file_q4_k_s}, {"q5_k", GgufFileType::gguf_file_q5_k_s},
      {"q6_k", GgufFileType::gguf_file_q6_k},   {"q4_k_m", GgufFileType::gguf_file_q4_k_m},
      {"q5_k_m", GgufFileType::gguf_file_q5_k_m}};
  for (const auto& [name, ft] : expected) {
    EXPECT_EQ(gguf_file_type_from_name(name), ft) << name;
    EXPECT_EQ(gguf_file_type_name(ft), name);
  }
  EXPECT_EQ(static_cast<int>(GgufFileType::gguf_file_q4_k_m), 15);  // llama_ftype values
  EXPECT_EQ(static_cast<int>(GgufFileType::gguf_file_bf16), 32);
  for (const char* bad : {"q3_k", "Q4_K_M", "q4_k_s", ""}) {
    try {
      gguf_file_type_from_name(bad);
      ADD_FAILURE() << bad;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::user);
      EXPECT_NE(std::string(e.what()).find(gguf_file_type_names()), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace anvil::io
