// staged_comm over MpiComm under mpiexec, with a fake DeviceStaging whose "device" memory is
// ordinary host memory: every collective must give exactly what the plain MpiComm gives on
// the same inputs, and must have gone through the staging (bytes counted each way, never
// touching the caller's buffers with MPI). Checks use EXPECT_* so that every rank reaches
// every collective, also after a failure.
#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "comm/comm.h"
#include "core/error.h"
#include "../unit/error_test_util.h"

namespace anvil::comm {
namespace {

using test::contains;
using test::error_of;

// memcpy both ways, counting calls and bytes, and remembering every host pointer it was
// given so the test can check the caller's buffers were not among them.
class FakeStaging final : public DeviceStaging {
 public:
  void to_host(void* host, const void* device, std::size_t bytes) override {
    std::memcpy(host, device, bytes);
    ++to_host_calls;
    to_host_bytes += bytes;
    host_seen.push_back(host);
  }
  void to_device(void* device, const void* host, std::size_t bytes) override {
    std::memcpy(device, host, bytes);
    ++to_device_calls;
    to_device_bytes += bytes;
    host_seen.push_back(host);
  }
  // True when no host-side pointer lies inside [p, p + bytes).
  bool never_staged_into(const void* p, std::size_t bytes) const {
    const auto lo = reinterpret_cast<std::uintptr_t>(p);
    for (const void* h : host_seen) {
      const auto a = reinterpret_cast<std::uintptr_t>(h);
      if (a >= lo && a < lo + bytes) return false;
    }
    return true;
  }
  void reset() { *this = FakeStaging(); }

  int to_host_calls = 0, to_device_calls = 0;
  std::size_t to_host_bytes = 0, to_device_bytes = 0;
  std::vector<const void*> host_seen;
};

constexpr std::int64_t kCount = 777;

// Rank- and index-dependent values that are exact in f32 (sums stay far below 2^24).
std::vector<float> rank_values(int rank, std::int64_t n, int salt = 0) {
  std::vector<float> v(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i)
    v[i] = static_cast<float>(((i * 7 + rank * 13 + salt) % 101) - 50) * 0.25f;
  return v;
}

class StagedComm : public testing::Test {
 protected:
  std::unique_ptr<Comm> world = mpi_comm_world();
  FakeStaging staging;
  std::unique_ptr<Comm> staged = staged_comm(*world, staging);
  int r = world->rank(), p = world->size();
};

TEST_F(StagedComm, ForwardsRankSizeAndName) {
  EXPECT_EQ(staged->rank(), r);
  EXPECT_EQ(staged->size(), p);
  EXPECT_EQ(staged->name(), world->name());
}

TEST_F(StagedComm, AllreduceSumMaxAvgMatchTheHostComm) {
  for (const ReduceOp op : {ReduceOp::reduce_sum, ReduceOp::reduce_max, ReduceOp::reduce_avg}) {
    std::vector<float> device = rank_values(r, kCount), expected = device;
    world->allreduce(expected.data(), kCount, DType::dtype_f32, op);
    staging.reset();
    staged->allreduce(device.data(), kCount, DType::dtype_f32, op);
    EXPECT_EQ(device, expected) << "op " << static_cast<int>(op);
    EXPECT_EQ(staging.to_host_bytes, kCount * sizeof(float));
    EXPECT_EQ(staging.to_device_bytes, kCount * sizeof(float));
    EXPECT_TRUE(staging.never_staged_into(device.data(), device.size() * sizeof(float)));
  }
  // Integers too (i64 sum).
  std::vector<std::int64_t> device(kCount), expected(kCount);
  for (std::int64_t i = 0; i < kCount; ++i) device[i] = expected[i] = i * (r + 1);
  world->allreduce(expected.data(), kCount, DType::dtype_i64, ReduceOp::reduce_sum);
  staged->allreduce(device.data(), kCount, DType::dtype_i64, ReduceOp::reduce_sum);
  EXPECT_EQ(device, expected);
}

TEST_F(StagedComm, AllgatherOutOfPlaceAndInPlaceMatchTheHostComm) {
  const std::vector<float> send = rank_values(r, kCount);
  std::vector<float> expected(static_cast<std::size_t>(p * kCount));
  world->allgather(send.data(), expected.data(), kCount, DType::dtype_f32);

  std::vector<float> recv(expected.size(), -1.0f);
  staging.reset();
  staged->allgather(send.data(), recv.data(), kCount, DType::dtype_f32);
  EXPECT_EQ(recv, expected);
  EXPECT_EQ(staging.to_host_bytes, kCount * sizeof(float));
  EXPECT_EQ(staging.to_device_bytes, p * kCount * sizeof(float));
  EXPECT_TRUE(staging.never_staged_into(recv.data(), recv.size() * sizeof(float)));

  // In place: send is this rank's block of recv.
  std::vector<float> in_place(expected.size(), -1.0f);
  std::memcpy(in_place.data() + r * kCount, send.data(), kCount * sizeof(float));
  staged->allgather(in_place.data() + r * kCount, in_place.data(), kCount, DType::dtype_f32);
  EXPECT_EQ(in_place, expected);

  // bf16 is only copied: the bits arrive unchanged.
  std::vector<std::uint16_t> send16(kCount), recv16(static_cast<std::size_t>(p * kCount));
  for (std::int64_t i = 0; i < kCount; ++i) send16[i] = static_cast<std::uint16_t>(0xff00 + r * 3 + i);
  staged->allgather(send16.data(), recv16.data(), kCount, DType::dtype_bf16);
  bool ok = true;
  for (int q = 0; q < p; ++q)
    for (std::int64_t i = 0; i < kCount; ++i)
      ok = ok && recv16[q * kCount + i] == static_cast<std::uint16_t>(0xff00 + q * 3 + i);
  EXPECT_TRUE(ok);
}

TEST_F(StagedComm, ReduceScatterOutOfPlaceAndInPlaceMatchTheHostComm) {
  for (const ReduceOp op : {ReduceOp::reduce_sum, ReduceOp::reduce_max, ReduceOp::reduce_avg}) {
    const std::vector<float> send = rank_values(r, p * kCount, 5);
    std::vector<float> expected(kCount);
    world->reduce_scatter(send.data(), expected.data(), kCount, DType::dtype_f32, op);

    std::vector<float> recv(kCount, -1.0f);
    staging.reset();
    staged->reduce_scatter(send.data(), recv.data(), kCount, DType::dtype_f32, op);
    EXPECT_EQ(recv, expected) << "op " << static_cast<int>(op);
    EXPECT_EQ(staging.to_host_bytes, p * kCount * sizeof(float));
    EXPECT_EQ(staging.to_device_bytes, kCount * sizeof(float));

    // In place: this rank's block lands at the front; the rest of the buffer is scratch.
    std::vector<float> in_place = send;
    staged->reduce_scatter(in_place.data(), in_place.data(), kCount, DType::dtype_f32, op);
    EXPECT_EQ(std::vector<float>(in_place.begin(), in_place.begin() + kCount), expected)
        << "op " << static_cast<int>(op);
  }
}

// Rank i sends rank j (j + 1) values i: what comes back is the host comm's exchange,
// staged out once and in once.
TEST_F(StagedComm, AlltoallvMatchesTheHostComm) {
  std::vector<std::int64_t> send_counts, recv_counts;
  std::vector<float> device, expected;
  for (int j = 0; j < p; ++j) {
    send_counts.push_back(j + 1);
    recv_counts.push_back(r + 1);
    device.insert(device.end(), static_cast<std::size_t>(j + 1), static_cast<float>(r));
    expected.insert(expected.end(), static_cast<std::size_t>(r + 1), static_cast<float>(j));
  }
  std::vector<float> recv(expected.size(), -1.0f);
  staging.reset();
  staged->alltoallv(device.data(), send_counts.data(), recv.data(), recv_counts.data(), DType::dtype_f32);
  EXPECT_EQ(recv, expected);
  EXPECT_EQ(staging.to_host_calls, 1);
  EXPECT_EQ(staging.to_device_calls, 1);
  EXPECT_TRUE(staging.never_staged_into(recv.data(), recv.size() * sizeof(float)));
}

TEST_F(StagedComm, BroadcastStagesOutOnTheRootAndInOnTheOthers) {
  const int root = p - 1;
  std::vector<double> device(kCount, static_cast<double>(r));
  staging.reset();
  staged->broadcast(device.data(), kCount, DType::dtype_f64, root);
  EXPECT_EQ(device, std::vector<double>(kCount, static_cast<double>(root)));
  EXPECT_EQ(staging.to_host_bytes, r == root ? kCount * sizeof(double) : 0u);
  EXPECT_EQ(staging.to_device_bytes, r == root ? 0u : kCount * sizeof(double));
}

TEST_F(StagedComm, SplitGivesAStagedChildOverTheInnerChild) {
  // Even and odd world ranks, ordered by descending world rank.
  auto child = staged->split(r % 2, -r, "half");
  auto plain = world->split(r % 2, -r, "half");
  EXPECT_EQ(child->name(), "half");
  EXPECT_EQ(child->rank(), plain->rank());
  EXPECT_EQ(child->size(), plain->size());
  std::vector<float> device = rank_values(r, kCount), expected = device;
  plain->allreduce(expected.data(), kCount, DType::dtype_f32, ReduceOp::reduce_sum);
  staging.reset();
  child->allreduce(device.data(), kCount, DType::dtype_f32, ReduceOp::reduce_sum);
  EXPECT_EQ(device, expected);
  // A group of one stages nothing for an allreduce; a larger one stages both ways.
  EXPECT_EQ(staging.to_host_bytes, child->size() > 1 ? kCount * sizeof(float) : 0u);
  // The child outlives the staged parent (it owns its inner communicator).
  staged.reset();
  child->barrier();
  std::vector<float> recv(static_cast<std::size_t>(child->size() * kCount));
  std::vector<float> recv_plain(recv.size());
  child->allgather(device.data(), recv.data(), kCount, DType::dtype_f32);
  plain->allgather(device.data(), recv_plain.data(), kCount, DType::dtype_f32);
  EXPECT_EQ(recv, recv_plain);
}

TEST_F(StagedComm, BadArgumentsFailAsOnTheHostCommBeforeAnyStaging) {
  std::vector<float> buf(static_cast<std::size_t>(p * kCount) + 1);
  const Error dtype_error = error_of([&] {
    staged->allreduce(buf.data(), kCount, DType::dtype_i32, ReduceOp::reduce_avg);
  });
  EXPECT_TRUE(contains(dtype_error, "reduce_avg is not defined on dtype i32")) << dtype_error.what();
  EXPECT_TRUE(contains(error_of([&] {
    staged->allreduce(buf.data(), -1, DType::dtype_f32, ReduceOp::reduce_sum);
  }), "negative count"));
  EXPECT_TRUE(contains(error_of([&] { staged->broadcast(buf.data(), 1, DType::dtype_f32, p); }),
                       "is not a rank of a group"));
  // Overlapping but not the in-place layouts (one element off).
  EXPECT_TRUE(contains(error_of([&] {
    staged->allgather(buf.data() + r * kCount + 1, buf.data(), kCount, DType::dtype_f32);
  }), "send overlaps recv"));
  EXPECT_TRUE(contains(error_of([&] {
    staged->reduce_scatter(buf.data() + 1, buf.data(), kCount, DType::dtype_f32,
                           ReduceOp::reduce_sum);
  }), "send and recv overlap"));
  EXPECT_TRUE(contains(error_of([&] { (void)staged->split(-1, 0, "x"); }), "negative color"));
  EXPECT_EQ(staging.to_host_calls + staging.to_device_calls, 0);
}

TEST_F(StagedComm, HostBufferIsReusedAfterWarmUp) {
  std::vector<float> big = rank_values(r, 4 * kCount), small = rank_values(r, kCount);
  staged->allreduce(big.data(), 4 * kCount, DType::dtype_f32, ReduceOp::reduce_sum);
  staging.reset();
  staged->allreduce(small.data(), kCount, DType::dtype_f32, ReduceOp::reduce_sum);
  staged->allreduce(big.data(), 4 * kCount, DType::dtype_f32, ReduceOp::reduce_sum);
  // Every staging call after the warm-up used the same host buffer.
  ASSERT_FALSE(staging.host_seen.empty());
  bool same = true;
  for (const void* h : staging.host_seen) same = same && h == staging.host_seen.front();
  EXPECT_TRUE(same);
}

}  // namespace
}  // namespace anvil::comm
