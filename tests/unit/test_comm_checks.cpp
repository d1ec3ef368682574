// Comm's check layer (comm/comm.cpp): the public calls check their arguments once for every
// implementation, and a bad call never reaches an implementation. A recording Comm stands
// in for MpiComm / NcclComm / StagedComm: its *_impl only count what arrives.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "comm/comm.h"
#include "core/error.h"
#include "error_test_util.h"

namespace anvil::comm {
namespace {

using test::contains;
using test::error_of;

// Rank `rank` of a group of `size` that talks to nobody and records every call that gets
// past the checks.
class RecordingComm final : public Comm {
 public:
  RecordingComm(int rank, int size) : rank_(rank), size_(size) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }
  std::int64_t max_block_count() const override { return 1000; }

  int impl_calls = 0;
  int local_copies = 0;
  bool last_in_place = false;

 protected:
  void allreduce_impl(void*, std::int64_t, DType, ReduceOp) override { ++impl_calls; }
  void allgather_impl(const void*, void*, std::int64_t, DType, bool in_place) override {
    ++impl_calls;
    last_in_place = in_place;
  }
  void reduce_scatter_impl(const void*, void*, std::int64_t, DType, ReduceOp, bool in_place) override {
    ++impl_calls;
    last_in_place = in_place;
  }
  void broadcast_impl(void*, std::int64_t, DType, int) override { ++impl_calls; }
  void alltoallv_impl(const void*, const std::int64_t*, void*, const std::int64_t*, DType) override { ++impl_calls; }
  void barrier_impl() override { ++impl_calls; }
  std::unique_ptr<Comm> split_impl(int, int, std::string) const override {
    return std::make_unique<RecordingComm>(0, 1);
  }
  void local_copy(void* dst, const void* src, std::size_t bytes) override {
    ++local_copies;
    std::memcpy(dst, src, bytes);
  }

 private:
  int rank_, size_;
  std::string name_ = "tp";
};

TEST(CommChecks, BadArgumentsThrowBeforeAnyImplementation) {
  RecordingComm c(1, 2);
  std::vector<float> f(8);
  std::vector<std::uint16_t> h(8);
  std::vector<std::int32_t> i(8);
  const std::vector<std::pair<const char*, std::function<void()>>> bad = {
      {"negative count -1", [&] { c.allreduce(f.data(), -1, DType::dtype_f32, ReduceOp::reduce_sum); }},
      {"bf16", [&] { c.allreduce(h.data(), 4, DType::dtype_bf16, ReduceOp::reduce_sum); }},
      {"reduce_avg is not defined on dtype i32",
       [&] { c.allreduce(i.data(), 4, DType::dtype_i32, ReduceOp::reduce_avg); }},
      {"u8", [&] { c.reduce_scatter(h.data(), h.data(), 1, DType::dtype_u8, ReduceOp::reduce_max); }},
      {"negative count -2", [&] { c.allgather(f.data(), f.data(), -2, DType::dtype_f32); }},
      {"root 2 is not a rank of a group of 2", [&] { c.broadcast(f.data(), 1, DType::dtype_f32, 2); }},
      {"root -1", [&] { c.broadcast(f.data(), 1, DType::dtype_f32, -1); }},
      // send (2) overlapping recv (4) without being rank 1's block (recv + 2).
      {"send overlaps recv", [&] { c.allgather(f.data() + 1, f.data(), 2, DType::dtype_f32); }},
      {"alltoallv on comm 'tp': negative count -1", [&] {
         const std::int64_t sc[2] = {1, -1}, rc[2] = {1, 1};
         c.alltoallv(f.data(), sc, f.data() + 4, rc, DType::dtype_f32);
       }},
      {"alltoallv on comm 'tp': send and recv overlap", [&] {
         const std::int64_t sc[2] = {2, 2}, rc[2] = {2, 2};
         c.alltoallv(f.data(), sc, f.data() + 2, rc, DType::dtype_f32);
       }},
      {"exceeds MPI's int count", [&] {
         const std::int64_t sc[2] = {600, 600}, rc[2] = {1, 1};
         c.alltoallv(f.data(), sc, f.data() + 4, rc, DType::dtype_f32);
       }},
      {"send and recv overlap", [&] {
         c.reduce_scatter(f.data(), f.data() + 1, 2, DType::dtype_f32, ReduceOp::reduce_sum);
       }},
      {"count 1001 per rank exceeds", [&] { c.allgather(nullptr, nullptr, 1001, DType::dtype_f32); }},
      {"count 1001 per rank exceeds", [&] {
         c.reduce_scatter(nullptr, nullptr, 1001, DType::dtype_f32, ReduceOp::reduce_sum);
       }},
      {"negative color -1", [&] { (void)c.split(-1, 0, "x"); }},
  };
  for (const auto& [want, call] : bad) {
    SCOPED_TRACE(want);
    const Error e = error_of(call);
    EXPECT_EQ(e.kind(), ErrorKind::internal);
    EXPECT_TRUE(contains(e, want)) << e.what();
    EXPECT_TRUE(contains(e, "comm 'tp'")) << e.what();
  }
  EXPECT_EQ(c.impl_calls, 0);
  EXPECT_EQ(c.local_copies, 0);
}

TEST(CommChecks, GoodCallsReachTheImplementationOnceWithTheirLayout) {
  RecordingComm c(1, 2);
  std::vector<float> recv(8), send(4);
  c.allreduce(recv.data(), 8, DType::dtype_f32, ReduceOp::reduce_avg);
  EXPECT_EQ(c.impl_calls, 1);
  c.allgather(recv.data() + 4, recv.data(), 4, DType::dtype_f32);  // rank 1's own block: in place
  EXPECT_EQ(c.impl_calls, 2);
  EXPECT_TRUE(c.last_in_place);
  c.allgather(send.data(), recv.data(), 4, DType::dtype_f32);
  EXPECT_FALSE(c.last_in_place);
  c.reduce_scatter(recv.data(), recv.data(), 4, DType::dtype_f32, ReduceOp::reduce_sum);
  EXPECT_TRUE(c.last_in_place);
  c.reduce_scatter(recv.data(), send.data(), 4, DType::dtype_f32, ReduceOp::reduce_sum);
  EXPECT_FALSE(c.last_in_place);
  c.broadcast(send.data(), 4, DType::dtype_bf16, 0);  // copies take any dtype
  c.barrier();
  EXPECT_EQ(c.impl_calls, 7);
  // count 0 is checked, then nothing to send.
  c.allreduce(nullptr, 0, DType::dtype_f64, ReduceOp::reduce_max);
  c.allgather(nullptr, nullptr, 0, DType::dtype_f32);
  c.reduce_scatter(nullptr, nullptr, 0, DType::dtype_i64, ReduceOp::reduce_sum);
  c.broadcast(nullptr, 0, DType::dtype_u8, 1);
  EXPECT_EQ(c.impl_calls, 7);
  EXPECT_EQ(c.local_copies, 0);
}

TEST(CommChecks, AGroupOfOneOnlyCopiesOutOfPlace) {
  RecordingComm c(0, 1);
  std::vector<float> a{1, 2, 3}, b(3);
  c.allreduce(a.data(), 3, DType::dtype_f32, ReduceOp::reduce_sum);
  c.broadcast(a.data(), 3, DType::dtype_f32, 0);
  c.allgather(a.data(), a.data(), 3, DType::dtype_f32);  // in place
  c.reduce_scatter(a.data(), a.data(), 3, DType::dtype_f32, ReduceOp::reduce_sum);
  EXPECT_EQ(c.impl_calls, 0);
  EXPECT_EQ(c.local_copies, 0);
  c.allgather(a.data(), b.data(), 3, DType::dtype_f32);
  EXPECT_EQ(b, a);
  b.assign(3, 0.0f);
  c.reduce_scatter(a.data(), b.data(), 3, DType::dtype_f32, ReduceOp::reduce_sum);
  EXPECT_EQ(b, a);
  EXPECT_EQ(c.local_copies, 2);
  EXPECT_EQ(c.impl_calls, 0);
  // A group of one's alltoallv copies its own block.
  const std::int64_t n3 = 3;
  b.assign(3, 0.0f);
  c.alltoallv(a.data(), &n3, b.data(), &n3, DType::dtype_f32);
  EXPECT_EQ(b, a);
  EXPECT_EQ(c.local_copies, 3);
  const std::int64_t n2 = 2;
  EXPECT_TRUE(contains(error_of([&] { c.alltoallv(a.data(), &n3, b.data(), &n2, DType::dtype_f32); }),
                       "sends 3 to itself but expects 2"));
  EXPECT_EQ(c.impl_calls, 0);
  // A barrier always reaches the implementation (NcclComm waits for its stream there).
  c.barrier();
  EXPECT_EQ(c.impl_calls, 1);
  // The block limit holds on a group of one too.
  EXPECT_TRUE(contains(error_of([&] { c.allgather(nullptr, nullptr, 1001, DType::dtype_u8); }), "exceeds"));
}

}  // namespace
}  // namespace anvil::comm
