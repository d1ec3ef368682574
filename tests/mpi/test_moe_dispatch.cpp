// MoeDispatch under mpiexec (any rank count P): 2·P experts, 2 per rank. Rank s routes
// c(s, e) = (s + e) % 3 rows to expert e, row k of that run filled with 1000 s + 10 e + k.
// The expert ranks must receive them expert-major (expert e's rows: rank 0's, rank 1's, ...,
// each in order), and what they send back must land where each row came from.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "backend/backend.h"
#include "comm/comm.h"
#include "model/moe_dispatch.h"

namespace anvil::model {
namespace {

constexpr std::int64_t kWidth = 3, kPerRank = 2;

std::int64_t rows_of(int src, std::int64_t e) { return (src + e) % 3; }
float value_of(int src, std::int64_t e, std::int64_t k) { return static_cast<float>(1000 * src + 10 * e + k); }

TEST(MoeDispatch, RowsReachTheirExpertsExpertMajorAndComeBackInPlace) {
  auto world = comm::mpi_comm_world();
  const int r = world->rank(), P = world->size();
  const std::int64_t E = kPerRank * P;
  std::vector<std::int64_t> offsets{0};  // (E + 1) this rank's expert-sorted rows
  std::vector<float> home;               // (R, width)
  for (std::int64_t e = 0; e < E; ++e) {
    for (std::int64_t k = 0; k < rows_of(r, e); ++k) home.insert(home.end(), kWidth, value_of(r, e, k));
    offsets.push_back(offsets.back() + rows_of(r, e));
  }
  auto be = backend::make_cpu_backend();
  MoeDispatch d(*world, *be, E, 2 * E, kWidth, 1);
  const std::int64_t* local = d.plan(0, offsets.data());
  std::vector<float> expected;
  for (std::int64_t j = 0; j < kPerRank; ++j) {
    const std::int64_t e = r * kPerRank + j;
    std::int64_t n = 0;
    for (int s = 0; s < P; ++s) {
      for (std::int64_t k = 0; k < rows_of(s, e); ++k) expected.insert(expected.end(), kWidth, value_of(s, e, k));
      n += rows_of(s, e);
    }
    EXPECT_EQ(local[j + 1] - local[j], n) << "local expert " << j;
  }
  ASSERT_EQ(local[kPerRank] * kWidth, static_cast<std::int64_t>(expected.size()));
  std::vector<float> got(expected.size(), -1.0f);
  d.send(0, home.data(), got.data());
  EXPECT_EQ(got, expected);

  // The experts' "outputs": their inputs negated; back home, each row is its own, negated.
  for (float& x : got) x = -x;
  std::vector<float> back(home.size(), 0.0f);
  d.send_back(0, got.data(), back.data());
  for (std::size_t i = 0; i < home.size(); ++i) ASSERT_EQ(back[i], -home[i]) << "element " << i;
}

}  // namespace
}  // namespace anvil::model
