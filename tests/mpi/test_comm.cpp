// MpiComm and ProcessGrid under mpiexec (any rank count): every rank fills its buffers from
// its rank and checks the closed-form result of the collective. Checks use EXPECT_* so that
// every rank reaches every collective, also after a failure.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <limits>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "comm/comm.h"
#include "comm/mpi_check.h"
#include "comm/process_grid.h"
#include "core/error.h"
#include "../unit/error_test_util.h"

namespace anvil::comm {
namespace {

template <typename T>
constexpr DType dtype_of() {
  if constexpr (std::is_same_v<T, float>) return DType::dtype_f32;
  if constexpr (std::is_same_v<T, double>) return DType::dtype_f64;
  if constexpr (std::is_same_v<T, std::int32_t>) return DType::dtype_i32;
  if constexpr (std::is_same_v<T, std::int64_t>) return DType::dtype_i64;
}

// The first index where got[i] != expected(i), or -1: one line of output per failing
// check instead of one per element.
template <typename T, typename F>
std::int64_t first_mismatch(const std::vector<T>& got, F expected) {
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (got[i] != static_cast<T>(expected(static_cast<std::int64_t>(i)))) {
      return static_cast<std::int64_t>(i);
    }
  }
  return -1;
}

using test::contains;
using test::error_of;

template <typename T>
class CommTyped : public testing::Test {};
using ReducibleTypes = testing::Types<float, double, std::int32_t, std::int64_t>;
TYPED_TEST_SUITE(CommTyped, ReducibleTypes);

constexpr std::int64_t kCount = 1000;

TYPED_TEST(CommTyped, AllreduceSumIsTheClosedFormSum) {
  using T = TypeParam;
  auto world = mpi_comm_world();
  const std::int64_t r = world->rank(), p = world->size();
  std::vector<T> buf(kCount);
  for (std::int64_t i = 0; i < kCount; ++i) buf[i] = static_cast<T>(r + i * p);
  world->allreduce(buf.data(), kCount, dtype_of<T>(), ReduceOp::reduce_sum);
  // sum over ranks q of (q + i p) = p (p - 1) / 2 + i p^2
  const auto sum = [&](std::int64_t i) { return p * (p - 1) / 2 + i * p * p; };
  const auto i_bad = first_mismatch(buf, sum);
  EXPECT_EQ(i_bad, -1) << "value " << (i_bad >= 0 ? buf[i_bad] : T{});
}

TYPED_TEST(CommTyped, AllreduceMaxTakesTheLargestRanksValue) {
  using T = TypeParam;
  auto world = mpi_comm_world();
  const std::int64_t r = world->rank(), p = world->size();
  // Even i grows with the rank, odd i shrinks: the maximum is neither "first" nor "last".
  std::vector<T> buf(kCount);
  for (std::int64_t i = 0; i < kCount; ++i) buf[i] = static_cast<T>(i % 2 == 0 ? i + r : i - r);
  world->allreduce(buf.data(), kCount, dtype_of<T>(), ReduceOp::reduce_max);
  EXPECT_EQ(first_mismatch(buf, [&](std::int64_t i) { return i % 2 == 0 ? i + p - 1 : i; }), -1);
}

TYPED_TEST(CommTyped, AllreduceAvgOnFloatsIsSumOverSizeOtherwiseAnInternalError) {
  using T = TypeParam;
  auto world = mpi_comm_world();
  const std::int64_t r = world->rank(), p = world->size();
  std::vector<T> buf(kCount);
  for (std::int64_t i = 0; i < kCount; ++i) buf[i] = static_cast<T>(r + i * p);
  if constexpr (std::is_floating_point_v<T>) {
    world->allreduce(buf.data(), kCount, dtype_of<T>(), ReduceOp::reduce_avg);
    // (p (p - 1) / 2 + i p^2) / p, exact in binary for p = 2, 3, 4
    EXPECT_EQ(first_mismatch(buf, [&](std::int64_t i) { return T(p - 1) / 2 + T(i * p); }), -1);
  } else {
    const Error e = error_of([&] {
      world->allreduce(buf.data(), kCount, dtype_of<T>(), ReduceOp::reduce_avg);
    });
    EXPECT_EQ(e.kind(), ErrorKind::internal);
    EXPECT_TRUE(contains(e, "reduce_avg") && contains(e, "'world'")) << e.what();
  }
}

TYPED_TEST(CommTyped, AllgatherPutsEachRanksBlockInRankOrder) {
  using T = TypeParam;
  auto world = mpi_comm_world();
  const std::int64_t r = world->rank(), p = world->size(), n = 7;
  std::vector<T> send(n), recv(p * n, T(-1));
  for (std::int64_t i = 0; i < n; ++i) send[i] = static_cast<T>(r * 100 + i);
  world->allgather(send.data(), recv.data(), n, dtype_of<T>());
  EXPECT_EQ(first_mismatch(recv, [&](std::int64_t j) { return (j / n) * 100 + j % n; }), -1);

  // In place: this rank's block of recv is the send buffer.
  std::vector<T> buf(p * n, T(-1));
  for (std::int64_t i = 0; i < n; ++i) buf[r * n + i] = static_cast<T>(r * 100 + i);
  world->allgather(buf.data() + r * n, buf.data(), n, dtype_of<T>());
  EXPECT_EQ(first_mismatch(buf, [&](std::int64_t j) { return (j / n) * 100 + j % n; }), -1);
}

TYPED_TEST(CommTyped, ReduceScatterGivesRankIBlockIOfTheReduction) {
  using T = TypeParam;
  auto world = mpi_comm_world();
  const std::int64_t r = world->rank(), p = world->size(), n = 5;
  std::vector<T> send(p * n), recv(n);
  for (std::int64_t j = 0; j < p * n; ++j) send[j] = static_cast<T>(r + j);
  world->reduce_scatter(send.data(), recv.data(), n, dtype_of<T>(), ReduceOp::reduce_sum);
  // element k of block r: sum over q of (q + r n + k)
  const auto sum = [&](std::int64_t k) { return p * (p - 1) / 2 + p * (r * n + k); };
  EXPECT_EQ(first_mismatch(recv, sum), -1);

  for (std::int64_t j = 0; j < p * n; ++j) send[j] = static_cast<T>(j % 2 == 0 ? j + r : j - r);
  world->reduce_scatter(send.data(), recv.data(), n, dtype_of<T>(), ReduceOp::reduce_max);
  EXPECT_EQ(first_mismatch(recv, [&](std::int64_t k) {
              const std::int64_t j = r * n + k;
              return j % 2 == 0 ? j + p - 1 : j;
            }),
            -1);

  // In place (send == recv): block r lands at the front of the buffer.
  std::vector<T> buf(p * n);
  for (std::int64_t j = 0; j < p * n; ++j) buf[j] = static_cast<T>(r + j);
  if constexpr (std::is_floating_point_v<T>) {
    world->reduce_scatter(buf.data(), buf.data(), n, dtype_of<T>(), ReduceOp::reduce_avg);
    buf.resize(n);
    EXPECT_EQ(first_mismatch(buf, [&](std::int64_t k) { return T(p - 1) / 2 + T(r * n + k); }), -1);
  } else {
    world->reduce_scatter(buf.data(), buf.data(), n, dtype_of<T>(), ReduceOp::reduce_sum);
    buf.resize(n);
    EXPECT_EQ(first_mismatch(buf, sum), -1);
  }
}

TYPED_TEST(CommTyped, BroadcastFromEveryRoot) {
  using T = TypeParam;
  auto world = mpi_comm_world();
  for (int root = 0; root < world->size(); ++root) {
    std::vector<T> buf(kCount, T(-1));
    if (world->rank() == root) {
      for (std::int64_t i = 0; i < kCount; ++i) buf[i] = static_cast<T>(root * kCount + i);
    }
    world->broadcast(buf.data(), kCount, dtype_of<T>(), root);
    EXPECT_EQ(first_mismatch(buf, [&](std::int64_t i) { return root * kCount + i; }), -1)
        << "root " << root;
  }
}

TEST(Comm, LargeAllreduceCrossesMpiEagerLimits) {
  auto world = mpi_comm_world();
  const std::int64_t r = world->rank(), p = world->size(), n = std::int64_t{1} << 20;  // 4 MiB
  std::vector<float> buf(n);
  for (std::int64_t i = 0; i < n; ++i) buf[i] = static_cast<float>(r + (i % 1000) * p);
  world->allreduce_sum(buf.data(), n);
  const auto sum = [&](std::int64_t i) { return p * (p - 1) / 2 + (i % 1000) * p * p; };
  EXPECT_EQ(first_mismatch(buf, sum), -1);
}

TEST(Comm, AllgatherAndBroadcastMoveNonReducibleDTypesByTheirSize) {
  auto world = mpi_comm_world();
  const std::int64_t r = world->rank(), p = world->size(), n = 3;
  std::vector<std::uint16_t> send(n), recv(p * n);  // bf16 bits, passed through untouched
  for (std::int64_t i = 0; i < n; ++i) send[i] = static_cast<std::uint16_t>(0xbf00 + r * 16 + i);
  world->allgather(send.data(), recv.data(), n, DType::dtype_bf16);
  const auto gathered = [&](std::int64_t j) { return 0xbf00 + (j / n) * 16 + j % n; };
  EXPECT_EQ(first_mismatch(recv, gathered), -1);

  std::vector<std::uint8_t> flags(5, 0);  // bool
  if (r == p - 1) flags = {1, 0, 1, 1, 0};
  world->broadcast(flags.data(), 5, DType::dtype_bool, static_cast<int>(p - 1));
  EXPECT_EQ(flags, (std::vector<std::uint8_t>{1, 0, 1, 1, 0}));
}

// Rank i sends rank j a block of (i + j + 1) rows of width 3 (so sizes differ per pair,
// and rank i's block to itself is not empty): row k of that block is (1000 i + 10 j + k,
// ...). Rank j then holds, from each i in rank order, exactly those rows.
TEST(Comm, AlltoallvDeliversEachRanksBlocksInRankOrder) {
  auto world = mpi_comm_world();
  const int r = world->rank(), p = world->size();
  constexpr std::int64_t kWidth = 3;
  auto rows = [](int from, int to) { return static_cast<std::int64_t>(from + to + 1); };
  auto value = [](int from, int to, std::int64_t row) { return static_cast<float>(1000 * from + 10 * to + row); };
  std::vector<std::int64_t> send_counts(static_cast<std::size_t>(p)), recv_counts(static_cast<std::size_t>(p));
  std::vector<float> send, expected;
  for (int j = 0; j < p; ++j) {
    send_counts[static_cast<std::size_t>(j)] = rows(r, j) * kWidth;
    recv_counts[static_cast<std::size_t>(j)] = rows(j, r) * kWidth;
    for (std::int64_t k = 0; k < rows(r, j); ++k) send.insert(send.end(), kWidth, value(r, j, k));
    for (std::int64_t k = 0; k < rows(j, r); ++k) expected.insert(expected.end(), kWidth, value(j, r, k));
  }
  std::vector<float> recv(expected.size(), -1.0f);  // (Σ_i rows(i, r), width)
  world->alltoallv(send.data(), send_counts.data(), recv.data(), recv_counts.data(), DType::dtype_f32);
  EXPECT_EQ(recv, expected);

  // The counts exchange that precedes a dispatch: one i64 per rank pair.
  std::vector<std::int64_t> ones(static_cast<std::size_t>(p), 1), counts_in(static_cast<std::size_t>(p));
  std::vector<std::int64_t> counts_out(static_cast<std::size_t>(p));
  for (int j = 0; j < p; ++j) counts_out[static_cast<std::size_t>(j)] = rows(r, j);
  world->alltoallv(counts_out.data(), ones.data(), counts_in.data(), ones.data(), DType::dtype_i64);
  EXPECT_EQ(first_mismatch(counts_in, [&](std::int64_t i) { return rows(static_cast<int>(i), r); }), -1);

  // A rank that sends and receives nothing still takes part.
  std::vector<std::int64_t> zeros(static_cast<std::size_t>(p), 0);
  world->alltoallv(send.data(), zeros.data(), recv.data(), zeros.data(), DType::dtype_f32);
}

TEST(Comm, BarrierWaitsForTheLastRank) {
  auto world = mpi_comm_world();
  world->barrier();
  const auto start = std::chrono::steady_clock::now();
  if (world->rank() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(300));
  world->barrier();
  const std::chrono::duration<double> waited = std::chrono::steady_clock::now() - start;
  // Rank 0 slept 0.3 s before arriving; nobody may leave before it arrives. The margin
  // allows for ranks that left the first barrier late on an oversubscribed machine.
  EXPECT_GE(waited.count(), 0.1);
}

TEST(Comm, ZeroCountIsANoOp) {
  auto world = mpi_comm_world();
  world->allreduce(nullptr, 0, DType::dtype_f32, ReduceOp::reduce_sum);
  world->allgather(nullptr, nullptr, 0, DType::dtype_f32);
  world->reduce_scatter(nullptr, nullptr, 0, DType::dtype_f64, ReduceOp::reduce_avg);
  world->broadcast(nullptr, 0, DType::dtype_i64, 0);
}

// Every rank passes the same bad argument, so every rank throws before any message.
TEST(Comm, BadArgumentsAreInternalErrorsNamingTheComm) {
  auto world = mpi_comm_world();
  std::vector<std::uint16_t> bf16(4);
  Error e = error_of([&] {
    world->allreduce(bf16.data(), 4, DType::dtype_bf16, ReduceOp::reduce_sum);
  });
  EXPECT_EQ(e.kind(), ErrorKind::internal);
  EXPECT_TRUE(contains(e, "allreduce on comm 'world'") && contains(e, "bf16")) << e.what();

  e = error_of([&] {
    world->reduce_scatter(bf16.data(), bf16.data(), 1, DType::dtype_u8, ReduceOp::reduce_max);
  });
  EXPECT_TRUE(contains(e, "reduce_scatter on comm 'world'") && contains(e, "u8")) << e.what();

  e = error_of([&] { world->allreduce(bf16.data(), -1, DType::dtype_f32, ReduceOp::reduce_sum); });
  EXPECT_TRUE(contains(e, "negative count -1")) << e.what();

  e = error_of([&] { world->broadcast(bf16.data(), 1, DType::dtype_f32, world->size()); });
  EXPECT_TRUE(contains(e, "root")) << e.what();

  e = error_of([&] { (void)world->split(-1, 0, "bad"); });
  EXPECT_TRUE(contains(e, "negative color")) << e.what();

  // Checked before the buffers are touched: the count alone is too large for MPI.
  const std::int64_t huge = std::int64_t{std::numeric_limits<int>::max()} + 1;
  e = error_of([&] { world->allgather(bf16.data(), nullptr, huge, DType::dtype_f32); });
  EXPECT_TRUE(contains(e, "allgather on comm 'world'") && contains(e, "exceeds MPI's int count"))
      << e.what();
}

TEST(Comm, MpiFailuresNameTheCallAndTheComm) {
  const Error e = error_of([] { mpi_check(MPI_ERR_COUNT, "MPI_Allreduce", "tp"); });
  EXPECT_EQ(e.kind(), ErrorKind::internal);
  EXPECT_TRUE(contains(e, "MPI_Allreduce on comm 'tp' failed: ")) << e.what();
}

// World ranks of a group, gathered over the group: who is in it, in group-rank order.
std::vector<std::int32_t> members_of(Comm& group, int world_rank) {
  const std::int32_t mine = world_rank;
  std::vector<std::int32_t> all(group.size());
  group.allgather(&mine, all.data(), 1, DType::dtype_i32);
  return all;
}

// A bit per world rank, summed over the group: the exact set of ranks a reduction covers.
std::int64_t member_mask(Comm& group, int world_rank) {
  std::int64_t bit = std::int64_t{1} << world_rank;
  group.allreduce(&bit, 1, DType::dtype_i64, ReduceOp::reduce_sum);
  return bit;
}

TEST(Comm, SplitGroupsByColorAndOrdersByKey) {
  auto world = mpi_comm_world();
  const int r = world->rank(), p = world->size();
  // Key -r: the group of each parity, in descending world rank.
  auto parity = world->split(r % 2, -r, "parity");
  EXPECT_EQ(parity->name(), "parity");
  std::vector<std::int32_t> expected;
  for (int q = p - 1; q >= 0; --q) {
    if (q % 2 == r % 2) expected.push_back(q);
  }
  EXPECT_EQ(parity->size(), static_cast<int>(expected.size()));
  EXPECT_EQ(members_of(*parity, r), expected);
  std::int64_t mask = 0;
  for (const int q : expected) mask |= std::int64_t{1} << q;
  EXPECT_EQ(member_mask(*parity, r), mask);

  // Equal keys: parent rank order. A split of a split works the same way.
  auto again = parity->split(0, 0, "again");
  EXPECT_EQ(members_of(*again, r), expected);

  // One group per rank: a group of one, where every collective is local.
  auto alone = world->split(r, 0, "alone");
  EXPECT_EQ(alone->size(), 1);
  EXPECT_EQ(alone->rank(), 0);
  std::vector<double> send{1.5, 2.5}, recv(2);
  alone->allgather(send.data(), recv.data(), 2, DType::dtype_f64);
  EXPECT_EQ(recv, send);
  alone->reduce_scatter(send.data(), recv.data(), 2, DType::dtype_f64, ReduceOp::reduce_avg);
  EXPECT_EQ(recv, send);
  alone->allreduce(send.data(), 2, DType::dtype_f64, ReduceOp::reduce_avg);
  EXPECT_EQ(send, (std::vector<double>{1.5, 2.5}));
  alone->barrier();
}

// Every tp from 1 to the world size: the divisors make a grid whose groups are exactly the
// ranks World rank = dp_rank * tp + tp_rank says; the others are refused (an internal
// error: parallel.tp is validated with the config, before any grid is made).
TEST(ProcessGrid, GroupsFollowWorldRankEqualsDpRankTimesTpPlusTpRank) {
  const int r = mpi_comm_world()->rank(), p = mpi_comm_world()->size();
  for (int tp = 1; tp <= p; ++tp) {
    SCOPED_TRACE(testing::Message() << "tp " << tp << " of " << p);
    if (p % tp != 0) {
      const Error e = error_of([&] { ProcessGrid grid(mpi_comm_world(), tp); });
      EXPECT_EQ(e.kind(), ErrorKind::internal);  // the config's validation told the user
      EXPECT_TRUE(contains(e, str_cat("ProcessGrid: tp ", tp, " does not divide the world size ", p)))
          << e.what();
      continue;
    }
    ProcessGrid grid(mpi_comm_world(), tp);
    EXPECT_EQ(grid.world_rank(), r);
    EXPECT_EQ(grid.world_size(), p);
    EXPECT_EQ(grid.tp_size(), tp);
    EXPECT_EQ(grid.dp_size(), p / tp);
    EXPECT_EQ(grid.tp_rank(), r % tp);
    EXPECT_EQ(grid.dp_rank(), r / tp);
    EXPECT_EQ(grid.tp().name(), "tp");
    EXPECT_EQ(grid.dp().name(), "dp");
    EXPECT_EQ(grid.world().name(), "world");

    std::vector<std::int32_t> tp_group, dp_group;
    std::int64_t tp_mask = 0, dp_mask = 0;
    for (int t = 0; t < tp; ++t) {
      tp_group.push_back(grid.dp_rank() * tp + t);
      tp_mask |= std::int64_t{1} << tp_group.back();
    }
    for (int d = 0; d < p / tp; ++d) {
      dp_group.push_back(d * tp + grid.tp_rank());
      dp_mask |= std::int64_t{1} << dp_group.back();
    }
    EXPECT_EQ(members_of(grid.tp(), r), tp_group);
    EXPECT_EQ(members_of(grid.dp(), r), dp_group);
    EXPECT_EQ(member_mask(grid.tp(), r), tp_mask);
    EXPECT_EQ(member_mask(grid.dp(), r), dp_mask);
  }
}

// Every (tp, ep) whose product divides the world: world rank = (dp_rank * ep + ep_rank) * tp
// + tp_rank; dp is every rank of the same TP slice, ep the ep ranks of one replica, edp the
// ranks holding the same experts.
TEST(ProcessGrid, ExpertGroupsFollowTpInnermostThenEpThenDp) {
  const int r = mpi_comm_world()->rank(), p = mpi_comm_world()->size();
  for (int tp = 1; tp <= p; ++tp)
    for (int ep = 1; tp * ep <= p; ++ep) {
      if (p % (tp * ep) != 0) continue;
      SCOPED_TRACE(testing::Message() << "tp " << tp << " ep " << ep << " of " << p);
      ProcessGrid grid(mpi_comm_world(), tp, ep);
      const int t = r % tp, e = (r / tp) % ep, d = r / (tp * ep), dp = p / (tp * ep);
      EXPECT_EQ(grid.tp_rank(), t);
      EXPECT_EQ(grid.ep_rank(), e);
      EXPECT_EQ(grid.ep_size(), ep);
      EXPECT_EQ(grid.dp_rank(), d * ep + e);
      EXPECT_EQ(grid.dp_size(), ep * dp);
      EXPECT_EQ(grid.edp_rank(), d);
      EXPECT_EQ(grid.edp_size(), dp);
      std::vector<std::int32_t> ep_group, edp_group;
      for (int k = 0; k < ep; ++k) ep_group.push_back((d * ep + k) * tp + t);
      for (int k = 0; k < dp; ++k) edp_group.push_back((k * ep + e) * tp + t);
      EXPECT_EQ(members_of(grid.ep(), r), ep_group);
      EXPECT_EQ(members_of(grid.edp(), r), edp_group);
    }
  if (p % 2 == 0) {
    const Error e = error_of([&] { ProcessGrid grid(mpi_comm_world(), 1, p + 2); });
    EXPECT_TRUE(contains(e, "does not divide the world size")) << e.what();
  }
}

// The user hears of such a tp from the config's validation (parallel.tp: at least 1, dividing
// the world); the grid refuses it as a caller's bug.
TEST(ProcessGrid, TpBelowOneOrAboveTheWorldIsRefused) {
  const int p = mpi_comm_world()->size();
  for (const int tp : {0, -2, p + 1}) {
    const Error e = error_of([&] { ProcessGrid grid(mpi_comm_world(), tp); });
    EXPECT_EQ(e.kind(), ErrorKind::internal);
    EXPECT_TRUE(contains(e, str_cat("ProcessGrid: tp ", tp, " does not divide"))) << e.what();
  }
}

TEST(SelfComm, IsAGroupOfOneEvenUnderMpi) {
  auto self = self_comm("solo");
  EXPECT_EQ(self->size(), 1);
  EXPECT_EQ(self->rank(), 0);
  float x = static_cast<float>(mpi_comm_world()->rank());
  self->allreduce_sum(&x, 1);
  EXPECT_EQ(x, static_cast<float>(mpi_comm_world()->rank()));
  self->barrier();
}

}  // namespace
}  // namespace anvil::comm
