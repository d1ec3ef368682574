#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"

namespace anvil {

TEST(DType, NamesRoundTripAndSizes) {
  for (DType t : kAllDTypes) {
    EXPECT_EQ(dtype_from_name(dtype_name(t)), t);
    EXPECT_EQ(dtype_from_short_name(dtype_short_name(t)), t);
  }
  EXPECT_EQ(dtype_size(DType::dtype_bf16), 2u);
  EXPECT_EQ(dtype_size(DType::dtype_f64), 8u);
  EXPECT_EQ(dtype_size(DType::dtype_bool), 1u);
  EXPECT_EQ(dtype_from_name("F8_E4M3"), DType::dtype_fp8_e4m3);
  EXPECT_FALSE(dtype_from_name("F8_E5M2").has_value());
  EXPECT_FALSE(dtype_from_name("NF4").has_value());  // not a file dtype: lives in U8 tensors
  EXPECT_EQ(dtype_bits(DType::dtype_nf4), 4u);
  EXPECT_THROW(dtype_size(DType::dtype_nf4), Error);
  EXPECT_EQ((TensorView{nullptr, DType::dtype_nf4, Shape{3, 5}}.nbytes()), 8u);  // 15 codes
  EXPECT_EQ((TensorView{nullptr, DType::dtype_fp8_e4m3, Shape{3, 5}}.nbytes()), 15u);
  EXPECT_FALSE(dtype_from_name("f32").has_value());  // safetensors names are upper case
}

// bf16 rounding against a straightforward reference: the nearest of the two bf16
// neighbours (by exact double distance), ties to the even mantissa.
TEST(DType, Bf16RoundsToNearestEven) {
  std::mt19937 rng(1234);
  std::uniform_int_distribution<std::uint32_t> bits;
  for (int i = 0; i < 200000; ++i) {
    std::uint32_t u = bits(rng);
    float f;
    std::memcpy(&f, &u, 4);
    if (!std::isfinite(f)) continue;
    const std::uint16_t lo = static_cast<std::uint16_t>(u >> 16);  // truncation: towards zero
    const std::uint16_t hi = static_cast<std::uint16_t>(lo + 1);   // next away from zero
    const double dlo = std::fabs(double(f) - bf16_to_f32(lo));
    // Past the largest finite bf16 the next step is inf, which stands at 2^128 for rounding.
    const double hi_value = (hi & 0x7fff) == 0x7f80 ? std::copysign(std::ldexp(1.0, 128), f)
                                                    : double(bf16_to_f32(hi));
    const double dhi = std::fabs(double(f) - hi_value);
    std::uint16_t want = dlo < dhi ? lo : dhi < dlo ? hi : ((lo & 1) ? hi : lo);
    ASSERT_EQ(f32_to_bf16(f), want) << "f=" << f;
  }
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f)), 1.0f);
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(-2.5f)), -2.5f);
}

TEST(DType, F16ExhaustiveRoundTrip) {
  // Every finite half converts to float and back unchanged.
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    const auto hh = static_cast<std::uint16_t>(h);
    const float f = f16_to_f32(hh);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(f))));
      continue;
    }
    ASSERT_EQ(f32_to_f16(f), hh) << "h=" << h;
  }
}

TEST(DType, F16RoundingMatchesNearestHalf) {
  // Reference: search the two halves bracketing f (halves are ordered like their bits
  // for positive values) and pick the nearer, ties to even.
  std::mt19937 rng(99);
  std::uniform_real_distribution<float> mag(-30.0f, 17.0f);
  for (int i = 0; i < 100000; ++i) {
    const float f = std::exp2(mag(rng));
    std::uint16_t lo = 0;
    for (int step = 1 << 15; step > 0; step >>= 1)
      if (lo + step < 0x7c00 && f16_to_f32(static_cast<std::uint16_t>(lo + step)) <= f) lo += step;
    const std::uint16_t hi = static_cast<std::uint16_t>(lo + 1);
    const double dlo = double(f) - f16_to_f32(lo);
    // Past 65504 the next step is inf, which stands at 2^16 for rounding.
    const double dhi = (hi == 0x7c00 ? 65536.0 : double(f16_to_f32(hi))) - f;
    const std::uint16_t want = dlo < dhi ? lo : dhi < dlo ? hi : ((lo & 1) ? hi : lo);
    ASSERT_EQ(f32_to_f16(f), want) << "f=" << f;
  }
  EXPECT_EQ(f32_to_f16(70000.0f), 0x7c00);   // overflow to +inf
  EXPECT_EQ(f32_to_f16(-70000.0f), 0xfc00);  // and -inf
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
}

// f32_store_as's f16 rows (F16C eight at a time where the CPU has it) equal f32_to_f16 of
// each element: every exponent, exact ties, subnormal results, overflow, infinities, signed
// zeros, a NaN (canonical, as the bit loop writes it) and a length that is no multiple of 8.
TEST(DType, F16RowsEqualTheElementConversion) {
  std::mt19937 rng(7);
  std::vector<float> x;
  for (int i = 0; i < 200003; ++i) {
    std::uint32_t u = rng();
    if (i % 5 == 0) u = (u & 0xffffe000u) | 0x1000u;  // a tie between two halves
    float f;
    std::memcpy(&f, &u, 4);
    if (std::isnan(f)) f = 0.0f;
    x.push_back(f);
  }
  for (const float f : {0.0f, -0.0f, 65504.0f, 65519.99f, 65520.0f, 1e-8f, 3e-8f, -6e-8f,
                        std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity()})
    x.push_back(f);
  x.insert(x.begin() + 1001, std::numeric_limits<float>::quiet_NaN());
  std::vector<std::uint8_t> out(2 * x.size());
  f32_store_as(x.data(), static_cast<std::int64_t>(x.size()), DType::dtype_f16, out.data());
  for (std::size_t i = 0; i < x.size(); ++i) {
    std::uint16_t h;
    std::memcpy(&h, out.data() + 2 * i, 2);
    ASSERT_EQ(h, f32_to_f16(x[i])) << "element " << i << " = " << x[i];
  }
}

TEST(Tensor, ShapeAndView) {
  Shape s{4, 3, 2};
  EXPECT_EQ(s.rank(), 3);
  EXPECT_EQ(s.numel(), 24);
  EXPECT_EQ(s.str(), "[4, 3, 2]");
  EXPECT_EQ(Shape{}.numel(), 1);  // a scalar
  float buf[24] = {};
  TensorView v{buf, DType::dtype_f32, s};
  EXPECT_EQ(v.nbytes(), 96u);
  EXPECT_TRUE((Shape{4, 3, 2} == s));
  EXPECT_FALSE((Shape{4, 6} == s));
}

}  // namespace anvil
