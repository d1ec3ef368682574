// The NF4 and FP8 codecs (src/quant) against tests/golden/quant/quant.safetensors, made by
// scripts/reference/make_quant_golden.py with bitsandbytes 0.50.2 (NF4: quantize_4bit on
// CPU with double quantization, and its dequantize_4bit) and torch 2.15's float8_e4m3fn
// (FP8). bitsandbytes runs on this CPU, so the reference is bitsandbytes itself: the
// 4-bit codes, the f32 absmax, the offset (also for 39 block counts), the absmax's own scales, FP8 codes and scales
// and the dequantized values are bit-identical, including bitsandbytes' 8-bit absmax search
// (a 65536-point table that now and then picks the neighbour of the nearest code: 1
// block of 264 in "big"), which src/quant/nf4.cpp reproduces.
// Round trips check the error bound each format promises.
#include <gtest/gtest.h>

#include <unistd.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "bnb_test_util.h"
#include "io/safetensors.h"
#include "quant/fp8.h"
#include "quant/nf4.h"
#include "quant/quant_load.h"
#include "quant/quant_state.h"

namespace anvil::quant {
namespace {

using i64 = std::int64_t;

const io::SafetensorsFile& golden() {
  static const io::SafetensorsFile f =
      io::SafetensorsFile::open(std::string(ANVIL_SOURCE_DIR) + "/tests/golden/quant/quant.safetensors");
  return f;
}

template <typename T>
std::vector<T> read(const std::string& name) {
  const io::TensorInfo* t = golden().find(name);
  EXPECT_NE(t, nullptr) << name;
  if (!t) return {};
  const TensorView v = golden().view(*t);
  std::vector<T> out(static_cast<std::size_t>(v.nbytes() / sizeof(T)));
  std::memcpy(out.data(), v.data, v.nbytes());
  return out;
}

std::vector<float> read_bf16_as_f32(const std::string& name) {
  std::vector<float> out;
  for (const std::uint16_t h : read<std::uint16_t>(name)) out.push_back(bf16_to_f32(h));
  return out;
}

Shape golden_shape(const std::string& name) { return golden().find(name)->shape; }

std::uint32_t bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

void expect_bits_equal(const float* got, const std::vector<float>& want, const std::string& what) {
  i64 bad = 0;
  for (std::size_t i = 0; i < want.size(); ++i)
    if (bits(got[i]) != bits(want[i]) && bad++ < 5)
      ADD_FAILURE() << what << "[" << i << "]: " << got[i] << " vs " << want[i];
  EXPECT_EQ(bad, 0) << what;
}

TEST(QuantNf4, CodeTablesAreBitsandbytes) {
  const std::vector<float> nf4 = read<float>("nf4.quant_map");
  ASSERT_EQ(nf4.size(), 16u);
  expect_bits_equal(nf4_code().data(), nf4, "nf4 code");
  const std::vector<float> dyn = read<float>("nf4.nested_quant_map");
  ASSERT_EQ(dyn.size(), 256u);
  expect_bits_equal(dynamic_map_signed().data(), dyn, "dynamic map");
}

class QuantNf4Golden : public ::testing::TestWithParam<std::string> {};

TEST_P(QuantNf4Golden, CodesAbsmaxAndValuesMatchBitsandbytes) {
  const std::string p = "nf4." + GetParam() + ".";
  const std::vector<float> x = read_bf16_as_f32(p + "x");
  QuantStore store;
  const TensorView dense{const_cast<float*>(x.data()), DType::dtype_f32, golden_shape(p + "x")};
  const TensorView q = store.add(dense, QuantKind::quant_nf4);
  ASSERT_EQ(q.dtype, DType::dtype_nf4);
  EXPECT_EQ(q.shape, dense.shape);

  const std::vector<std::uint8_t> packed = read<std::uint8_t>(p + "packed");
  ASSERT_EQ(q.nbytes(), packed.size());
  EXPECT_EQ(std::memcmp(q.data, packed.data(), packed.size()), 0) << "packed 4-bit codes";
  expect_bits_equal(q.quant->absmax2, read<float>(p + "absmax2"), "absmax2");
  expect_bits_equal(&q.quant->offset, read<float>(p + "offset"), "offset");

  // The 8-bit absmax codes: the same picks, including where bitsandbytes' table gives the
  // neighbour of the nearest code (counted: "big" has one such block, so the test tells
  // its search from a plain nearest-code one).
  const std::vector<std::uint8_t> want_q = read<std::uint8_t>(p + "absmax_q");
  const std::vector<float> absmax = read<float>(p + "absmax_f32");
  ASSERT_EQ(want_q.size(), absmax.size());
  const QuantState& st = *q.quant;
  i64 differ = 0, not_nearest = 0;
  for (std::size_t b = 0; b < want_q.size(); ++b) {
    if (st.absmax_q[b] != want_q[b] && differ++ < 5)
      ADD_FAILURE() << "absmax code of block " << b << ": " << int{st.absmax_q[b]} << " vs " << int{want_q[b]};
    const float target = (absmax[b] - st.offset) * (1.0f / st.absmax2[b / kAbsmaxBlocksize]);
    const float* code = st.absmax_code;
    const float d = std::fabs(code[want_q[b]] - target);
    if ((want_q[b] > 0 && std::fabs(code[want_q[b] - 1] - target) < d) ||
        (want_q[b] < 255 && std::fabs(code[want_q[b] + 1] - target) < d))
      ++not_nearest;
  }
  EXPECT_EQ(differ, 0) << "8-bit absmax codes";
  EXPECT_EQ(not_nearest, GetParam() == "big" ? 1 : 0) << "blocks where bitsandbytes' code is not the nearest";

  std::vector<float> dq(x.size());
  quant_dequantize(q, 0, static_cast<i64>(x.size()), dq.data());
  expect_bits_equal(dq.data(), read<float>(p + "dequant"), "dequantized values");
}

INSTANTIATE_TEST_SUITE_P(Cases, QuantNf4Golden, ::testing::Values("big", "odd", "tiny"));

// The offset of weights of many block counts (every path of torch's CPU sum, which
// bitsandbytes' absmax.mean() goes through): bit for bit. A plain double-precision mean
// differs in the last bit for about half of them (checked, so the test can tell).
TEST(QuantNf4, AbsmaxOffsetIsBitsandbytes) {
  const std::vector<std::int32_t> blocks = read<std::int32_t>("nf4.offsets.blocks");
  const std::vector<float> absmax = read<float>("nf4.offsets.absmax");
  const std::vector<float> want = read<float>("nf4.offsets.want");
  ASSERT_EQ(blocks.size(), want.size());
  std::size_t at = 0;
  int plain_differs = 0;
  for (std::size_t c = 0; c < blocks.size(); ++c) {
    const float* a = absmax.data() + at;
    EXPECT_EQ(bits(nf4_absmax_offset(a, blocks[c])), bits(want[c])) << blocks[c] << " blocks";
    double sum = 0.0;
    for (std::int32_t i = 0; i < blocks[c]; ++i) sum += a[i];
    plain_differs += bits(static_cast<float>(sum / blocks[c])) != bits(want[c]);
    at += static_cast<std::size_t>(blocks[c]);
  }
  EXPECT_EQ(at, absmax.size());
  EXPECT_GT(plain_differs, 5);
}

// Tiles start and end anywhere (odd elements, inside blocks): the GEMM asks for row tiles.
TEST(QuantNf4, DequantizeAnyRangeEqualsTheWhole) {
  const std::vector<float> x = read_bf16_as_f32("nf4.odd.x");
  QuantStore store;
  const i64 n = static_cast<i64>(x.size());
  const TensorView q = store.add({const_cast<float*>(x.data()), DType::dtype_f32, Shape{1, n}},
                                 QuantKind::quant_nf4);
  std::vector<float> whole(x.size());
  quant_dequantize(q, 0, n, whole.data());
  for (const auto& [first, count] : std::vector<std::pair<i64, i64>>{{1, 1}, {3, 70}, {63, 2}, {64, 64}, {1000, n - 1000}}) {
    std::vector<float> part(static_cast<std::size_t>(count));
    quant_dequantize(q, first, count, part.data());
    expect_bits_equal(part.data(), std::vector<float>(whole.begin() + first, whole.begin() + first + count),
                      "range " + std::to_string(first));
  }
}

// Each value is within half the widest gap of the code (0.1385 of its block's absmax) of
// the input, plus the error of the double-quantized absmax itself.
TEST(QuantNf4, RoundTripErrorWithinTheCodeGap) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  const i64 n = 64 * 600 + 10;
  std::vector<float> x(static_cast<std::size_t>(n));
  for (auto& v : x) v = normal(rng);
  const QuantTensor t = nf4_quantize(x.data(), n);
  std::vector<float> dq(x.size());
  nf4_dequantize(t.state, t.codes.data(), 0, n, dq.data());
  const auto& c = nf4_code();
  float half_gap = 0.0f;
  for (int i = 0; i < 15; ++i) half_gap = std::max(half_gap, (c[i + 1] - c[i]) / 2);
  double worst = 0.0;
  for (i64 b = 0; b * 64 < n; ++b) {
    float amax = 0.0f;
    for (i64 i = b * 64; i < std::min(n, b * 64 + 64); ++i) amax = std::max(amax, std::fabs(x[i]));
    const float amax_dq = t.absmax_code[t.absmax_q[b]] * t.absmax2[b / 256] + t.state.offset;
    for (i64 i = b * 64; i < std::min(n, b * 64 + 64); ++i) {
      const double bound = half_gap * amax * 1.0001 + std::fabs(amax_dq - amax);
      worst = std::max(worst, std::fabs(dq[i] - x[i]) / bound);
    }
  }
  EXPECT_LE(worst, 1.0);
  EXPECT_GT(worst, 0.3);  // the bound is tight enough to mean something
}

TEST(QuantFp8, DecodeTableIsTorchs) {
  const std::vector<float> want = read<float>("fp8.decode");
  ASSERT_EQ(want.size(), 256u);
  for (int b = 0; b < 256; ++b) {
    const float got = fp8_e4m3_to_f32(static_cast<std::uint8_t>(b));
    if (std::isnan(want[b])) EXPECT_TRUE(std::isnan(got)) << b;
    else EXPECT_EQ(bits(got), bits(want[b])) << b;
  }
}

TEST(QuantFp8, EncodeRoundsLikeTorch) {
  const std::vector<float> x = read<float>("fp8.sweep.x");
  const std::vector<std::uint8_t> want = read<std::uint8_t>("fp8.sweep.q");
  ASSERT_EQ(x.size(), want.size());
  for (std::size_t i = 0; i < x.size(); ++i)
    EXPECT_EQ(int{f32_to_fp8_e4m3(x[i])}, int{want[i]}) << "x = " << x[i];
  EXPECT_EQ(f32_to_fp8_e4m3(1e6f), 0x7e);  // saturates (torch gives NaN past 464)
  EXPECT_EQ(f32_to_fp8_e4m3(-1e6f), 0xfe);
}

TEST(QuantFp8, PerRowCodesScalesAndValuesMatchTorch) {
  const std::vector<float> x = read_bf16_as_f32("fp8.rows.x");
  QuantStore store;
  const TensorView q = store.add({const_cast<float*>(x.data()), DType::dtype_f32, golden_shape("fp8.rows.x")},
                                 QuantKind::quant_fp8);
  ASSERT_EQ(q.dtype, DType::dtype_fp8_e4m3);
  const std::vector<std::uint8_t> codes = read<std::uint8_t>("fp8.rows.q");
  ASSERT_EQ(q.nbytes(), codes.size());
  EXPECT_EQ(std::memcmp(q.data, codes.data(), codes.size()), 0);
  expect_bits_equal(q.quant->row_scale, read<float>("fp8.rows.scale"), "row scales");
  std::vector<float> dq(x.size());
  quant_dequantize(q, 0, static_cast<i64>(x.size()), dq.data());
  expect_bits_equal(dq.data(), read<float>("fp8.rows.dequant"), "dequantized");
  std::vector<float> part(50);
  quant_dequantize(q, 17, 50, part.data());  // a range across rows
  expect_bits_equal(part.data(), std::vector<float>(dq.begin() + 17, dq.begin() + 67), "range");
}

// e4m3 keeps 3 mantissa bits: a normal value is within 2^-4 of itself relative; below the
// smallest normal (2^-6 scale) the error is at most half a subnormal step (2^-10 scale).
TEST(QuantFp8, RoundTripErrorWithinHalfAnUlp) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const i64 rows = 16, cols = 300;
  std::vector<float> w(static_cast<std::size_t>(rows * cols));
  for (auto& v : w) v = normal(rng) * std::exp(normal(rng));
  const QuantTensor t = fp8_quantize(w.data(), rows, cols);
  std::vector<float> dq(w.size());
  fp8_dequantize(t.state, t.codes.data(), cols, 0, rows * cols, dq.data());
  for (i64 r = 0; r < rows; ++r)
    for (i64 c = 0; c < cols; ++c) {
      const float s = t.row_scale[r], v = w[r * cols + c];
      const double bound = std::max(std::fabs(v) / 16.0, s * std::ldexp(1.0, -10)) * 1.0001;
      ASSERT_LE(std::fabs(dq[r * cols + c] - v), bound) << r << "," << c;
    }
}

// A bitsandbytes NF4 tensor as transformers saves it (packed codes, 8-bit absmax, nested
// state, quant_state JSON), written from our quantizer (bit-identical to bitsandbytes'),
// then cut into tensor-parallel slices: every slice dequantizes to exactly the whole
// tensor's values there, including slices starting mid-block (sub-blocks down to 1).
TEST(QuantNf4Slice, SlicesHoldTheWholeTensorsValues) {
  const std::string dir = ::testing::TempDir() + "anvil_nf4_slice_" + std::to_string(::getpid());
  std::mt19937 rng(9);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  struct Case {
    i64 rows, cols;
    std::vector<std::array<i64, 4>> slices;  // row0, rows, col0, cols
  };
  const std::vector<Case> cases = {
      {16, 176, {{0, 8, 0, 176}, {8, 8, 0, 176}, {4, 4, 0, 176}, {0, 16, 88, 88}, {0, 16, 44, 44}, {0, 16, 132, 44}}},
      {37, 53, {{0, 37, 13, 20}, {5, 9, 0, 53}, {36, 1, 52, 1}, {0, 37, 0, 53}}}};
  for (const Case& c : cases) {
    const i64 n = c.rows * c.cols;
    std::vector<float> x(static_cast<std::size_t>(n));
    for (auto& v : x) v = normal(rng);
    const QuantTensor t = nf4_quantize(x.data(), n);
    std::vector<float> whole(static_cast<std::size_t>(n));
    nf4_dequantize(t.state, t.codes.data(), 0, n, whole.data());
    for (const bool nested : {true, false}) {  // absmax 8-bit with its own scales, or f32
      const std::string path = dir + "_" + std::to_string(c.cols) + ".safetensors";
      const std::string name = "w.weight";
      {
        const test::Bnb4Weight b(name, x.data(), c.rows, c.cols, nested);
        io::SafetensorsWriter w(path);
        b.declare(w);
        b.write(w);
        w.finish();
      }
      const io::SafetensorsModel file = io::SafetensorsModel::open(path);
      for (const auto& [row0, rows, col0, cols] : c.slices) {
        SCOPED_TRACE(std::to_string(c.rows) + "x" + std::to_string(c.cols) + " slice rows " + std::to_string(row0) +
                     "+" + std::to_string(rows) + " cols " + std::to_string(col0) + "+" + std::to_string(cols) +
                     (nested ? " nested" : " f32 absmax"));
        QuantStore store;
        const TensorView v = nf4_load_slice(file, name, row0, rows, col0, cols, store);
        ASSERT_EQ(v.shape, (Shape{rows, cols}));
        std::vector<float> got(static_cast<std::size_t>(rows * cols));
        quant_dequantize(v, 0, rows * cols, got.data());
        std::vector<float> want;
        for (i64 r = row0; r < row0 + rows; ++r)
          want.insert(want.end(), whole.begin() + r * c.cols + col0, whole.begin() + r * c.cols + col0 + cols);
        expect_bits_equal(got.data(), want, "slice");
        // What the planner counts for it (train/plan.cpp) is what the slice holds.
        EXPECT_EQ(store.bytes(), nf4_slice_bytes({nested, {}}, c.rows, c.cols, row0, rows, col0, cols));
      }
      std::remove(path.c_str());
    }
  }
}

TEST(QuantState, KindNamesRoundTrip) {
  for (const QuantKind k : {QuantKind::quant_none, QuantKind::quant_nf4, QuantKind::quant_fp8}) {
    QuantKind back = QuantKind::quant_none;
    EXPECT_TRUE(quant_kind_from_name(quant_kind_name(k), &back));
    EXPECT_EQ(back, k);
  }
  QuantKind k;
  EXPECT_FALSE(quant_kind_from_name("int4", &k));
}

}  // namespace
}  // namespace anvil::quant
