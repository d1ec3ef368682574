// Philox4x32-10 against the known-answer vectors of the Random123 distribution
// (kat_vectors: counter, key -> output), and the stream / uniform conventions on top of it.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "core/error.h"
#include "core/philox.h"

namespace anvil {
namespace {

struct Kat {
  PhiloxCounter counter;
  PhiloxKey key;
  PhiloxCounter expect;
};

TEST(Philox, KnownAnswers) {
  const Kat kats[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
      {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
       {0xffffffff, 0xffffffff},
       {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
      {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
       {0xa4093822, 0x299f31d0},
       {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
  };
  for (const Kat& k : kats) {
    const PhiloxCounter got = philox4x32_10(k.counter, k.key);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(got[i], k.expect[i]) << "word " << i;
  }
}

TEST(Philox, StreamPacking) {
  const PhiloxStream s = philox_stream(0x1122334455667788ull, 0x0000000a0000002bull, 7, 3);
  EXPECT_EQ(s.key.k0, 0x55667788u);
  EXPECT_EQ(s.key.k1, 0x11223344u ^ 0x0000000au);  // high word of step folded into the key
  EXPECT_EQ(s.c2, 0x2bu);
  EXPECT_EQ(s.c3, (7u << 8) | 3u);
  EXPECT_THROW(philox_stream(1, 1, 1u << 24, 0), Error);
  EXPECT_THROW(philox_stream(1, 1, 0, 256), Error);
}

// philox_uniform(stream, i) is word i % 4 of block i / 4, top 24 bits scaled by 2^-24.
TEST(Philox, UniformIsTopBitsOfTheBlockWord) {
  const PhiloxStream s = philox_stream(42, 5, 2, 1);
  for (std::uint64_t index : {0ull, 1ull, 2ull, 3ull, 4ull, 1001ull, (1ull << 35) + 6}) {
    const std::uint64_t block = index / 4;
    const PhiloxCounter words = philox4x32_10(
        {static_cast<std::uint32_t>(block), static_cast<std::uint32_t>(block >> 32), s.c2, s.c3},
        s.key);
    const float want = static_cast<float>(words[index % 4] >> 8) / 16777216.0f;
    EXPECT_EQ(philox_uniform(s, index), want) << "index " << index;
  }
}

TEST(Philox, UniformRangeAndMoments) {
  const PhiloxStream s = philox_stream(1234, 1, 0, 0);
  const int n = 200000;
  double sum = 0.0, sum2 = 0.0;
  std::set<float> distinct;
  for (int i = 0; i < n; ++i) {
    const float u = philox_uniform(s, static_cast<std::uint64_t>(i));
    ASSERT_GE(u, 0.0f);
    ASSERT_LT(u, 1.0f);
    EXPECT_EQ(u, std::ldexp(std::floor(std::ldexp(u, 24)), -24));  // a multiple of 2^-24
    sum += u;
    sum2 += static_cast<double>(u) * u;
    if (i < 1000) distinct.insert(u);
  }
  const double mean = sum / n, var = sum2 / n - mean * mean;
  // Standard errors: 1/sqrt(12 n) ~ 6.5e-4 for the mean; the variance 1/12 to ~2e-4.
  EXPECT_NEAR(mean, 0.5, 4e-3);
  EXPECT_NEAR(var, 1.0 / 12.0, 2e-3);
  EXPECT_GT(distinct.size(), 990u);
}

TEST(Philox, StreamsDifferAndRepeat) {
  const PhiloxStream a = philox_stream(9, 3, 1, 0);
  const PhiloxStream b = philox_stream(9, 3, 1, 1);  // another slot
  const PhiloxStream c = philox_stream(9, 4, 1, 0);  // another step
  const PhiloxStream d = philox_stream(9, 3, 2, 0);  // another layer
  int same_b = 0, same_c = 0, same_d = 0;
  for (std::uint64_t i = 0; i < 256; ++i) {
    const float u = philox_uniform(a, i);
    EXPECT_EQ(u, philox_uniform(philox_stream(9, 3, 1, 0), i));  // stateless
    same_b += u == philox_uniform(b, i);
    same_c += u == philox_uniform(c, i);
    same_d += u == philox_uniform(d, i);
  }
  EXPECT_LT(same_b, 3);
  EXPECT_LT(same_c, 3);
  EXPECT_LT(same_d, 3);
}

}  // namespace
}  // namespace anvil
