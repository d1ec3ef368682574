// The CPU backend's vector exp (backend/cpu/cpu_exp.h) against exp in double precision over
// the whole float range where exp is normal, its edges (0 below, +inf above, NaN kept), and
// the same bits in the vector loops (whichever instruction set this CPU picked) as the
// one-element formula.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <vector>

#include "backend/cpu/cpu_exp.h"

namespace anvil::backend {
namespace {

// Distance in units in the last place between two finite non-negative floats.
std::int64_t ulps(float a, float b) {
  return std::llabs(static_cast<std::int64_t>(std::bit_cast<std::int32_t>(a)) -
                    std::bit_cast<std::int32_t>(b));
}

TEST(OpsExp, WithinTwoUlpOfExpOverTheNormalRange) {
  std::vector<float> x;
  for (double v = -87.33; v <= 88.72; v += 0.000713) x.push_back(static_cast<float>(v));
  x.push_back(-87.3365f);  // exp is FLT_MIN here
  x.push_back(88.7228f);   // and close to FLT_MAX here
  ASSERT_NE(x.size() % 16, 0u) << "the length should leave a tail after the vector loop";
  std::vector<float> y(x.size());
  exp_shifted(x.data(), 0.0f, y.data(), static_cast<std::int64_t>(x.size()));
  std::int64_t worst = 0;
  std::size_t worst_at = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const auto want = static_cast<float>(std::exp(static_cast<double>(x[i])));
    ASSERT_TRUE(std::isfinite(y[i]) && y[i] > 0.0f) << x[i] << " -> " << y[i];
    if (ulps(y[i], want) > worst) worst = ulps(y[i], want), worst_at = i;
  }
  EXPECT_LE(worst, 2) << "at x = " << x[worst_at];
}

TEST(OpsExp, VectorLoopsGiveTheScalarFormulasBits) {
  std::vector<float> x;
  for (int i = 0; i < 100003; ++i) x.push_back(-90.0f + 180.0f * static_cast<float>(i) / 100003);
  const float shift = 1.7f;
  const auto n = static_cast<std::int64_t>(x.size());
  std::vector<float> shifted(x.size()), negated(x.size());
  exp_shifted(x.data(), shift, shifted.data(), n);
  exp_negated(x.data(), negated.data(), n);
  for (std::size_t i = 0; i < x.size(); ++i) {
    ASSERT_EQ(std::bit_cast<std::uint32_t>(shifted[i]),
              std::bit_cast<std::uint32_t>(exp_scalar(x[i] - shift)))
        << "exp_shifted at x = " << x[i];
    ASSERT_EQ(std::bit_cast<std::uint32_t>(negated[i]), std::bit_cast<std::uint32_t>(exp_scalar(-x[i])))
        << "exp_negated at x = " << x[i];
  }
  // In place gives the same values.
  std::vector<float> in_place = x;
  exp_shifted(in_place.data(), shift, in_place.data(), n);
  EXPECT_EQ(in_place, shifted);
}

TEST(OpsExp, EdgesOfTheRange) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> x = {-inf, -1000.0f, -100.0f, -87.34f, 0.0f, -0.0f, 88.73f, 1000.0f, inf,
                          std::numeric_limits<float>::quiet_NaN(), 1.0f};
  std::vector<float> y(x.size());
  exp_shifted(x.data(), 0.0f, y.data(), static_cast<std::int64_t>(x.size()));
  EXPECT_EQ(y[0], 0.0f);
  EXPECT_EQ(y[1], 0.0f);
  EXPECT_EQ(y[2], 0.0f);  // exp(-100) is subnormal: flushed to 0
  EXPECT_EQ(y[3], 0.0f);
  EXPECT_EQ(y[4], 1.0f);
  EXPECT_EQ(y[5], 1.0f);
  EXPECT_EQ(y[6], inf);
  EXPECT_EQ(y[7], inf);
  EXPECT_EQ(y[8], inf);
  EXPECT_TRUE(std::isnan(y[9]));
  EXPECT_LE(ulps(y[10], static_cast<float>(std::exp(1.0))), 1);
  // A softmax row shifted by its maximum: the maximum's own entry is exactly 1.
  const float row[3] = {-3.0f, 2.5f, 0.25f};
  float p[3];
  exp_shifted(row, 2.5f, p, 3);
  EXPECT_EQ(p[1], 1.0f);
}

}  // namespace
}  // namespace anvil::backend
