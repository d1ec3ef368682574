// self_comm and ProcessGrid::single(): the single-rank path, with no MPI initialised. It
// must check arguments exactly as MpiComm does, so that a caller's bug shows here first.
// And what MpiSession asks of Open MPI before MPI_Init when the process is a singleton.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "comm/comm.h"
#include "comm/mpi_session.h"
#include "comm/process_grid.h"
#include "core/error.h"
#include "error_test_util.h"

namespace anvil::comm {
namespace {

using test::contains;
using test::error_of;

TEST(SelfComm, IsRankZeroOfOne) {
  auto self = self_comm("tp");
  EXPECT_EQ(self->rank(), 0);
  EXPECT_EQ(self->size(), 1);
  EXPECT_EQ(self->name(), "tp");
}

TEST(SelfComm, ReductionsOfOneRankLeaveTheBuffer) {
  auto self = self_comm("dp");
  std::vector<float> f{1.5f, -2.0f, 3.25f};
  for (const auto op : {ReduceOp::reduce_sum, ReduceOp::reduce_avg, ReduceOp::reduce_max}) {
    self->allreduce(f.data(), 3, DType::dtype_f32, op);
  }
  EXPECT_EQ(f, (std::vector<float>{1.5f, -2.0f, 3.25f}));
  std::vector<std::int64_t> i{7, -8};
  self->allreduce(i.data(), 2, DType::dtype_i64, ReduceOp::reduce_max);
  EXPECT_EQ(i, (std::vector<std::int64_t>{7, -8}));

  std::vector<double> send{1.0, 2.0}, recv(2, 0.0);
  self->reduce_scatter(send.data(), recv.data(), 2, DType::dtype_f64, ReduceOp::reduce_avg);
  EXPECT_EQ(recv, send);
  self->reduce_scatter(send.data(), send.data(), 2, DType::dtype_f64, ReduceOp::reduce_sum);
  EXPECT_EQ(send, (std::vector<double>{1.0, 2.0}));
}

TEST(SelfComm, AllgatherCopiesAndBroadcastKeeps) {
  auto self = self_comm("world");
  std::vector<std::uint16_t> send{0x3f80, 0x4000}, recv(2, 0);  // bf16 bits
  self->allgather(send.data(), recv.data(), 2, DType::dtype_bf16);
  EXPECT_EQ(recv, send);
  self->allgather(recv.data(), recv.data(), 2, DType::dtype_bf16);  // in place
  EXPECT_EQ(recv, send);
  std::vector<std::int32_t> b{4, 5, 6};
  self->broadcast(b.data(), 3, DType::dtype_i32, 0);
  EXPECT_EQ(b, (std::vector<std::int32_t>{4, 5, 6}));
  self->barrier();
  self->allgather(nullptr, nullptr, 0, DType::dtype_f32);
}

TEST(SelfComm, ChecksArgumentsLikeMpiComm) {
  auto self = self_comm("tp");
  std::vector<std::uint16_t> h(4);
  Error e = error_of([&] {
    self->allreduce(h.data(), 4, DType::dtype_bf16, ReduceOp::reduce_sum);
  });
  EXPECT_EQ(e.kind(), ErrorKind::internal);
  EXPECT_TRUE(contains(e, "allreduce on comm 'tp'") && contains(e, "bf16")) << e.what();

  std::vector<std::int32_t> i(2);
  e = error_of([&] { self->allreduce(i.data(), 2, DType::dtype_i32, ReduceOp::reduce_avg); });
  EXPECT_TRUE(contains(e, "reduce_avg") && contains(e, "i32") && contains(e, "'tp'")) << e.what();

  e = error_of([&] { self->broadcast(i.data(), 2, DType::dtype_i32, 1); });
  EXPECT_TRUE(contains(e, "root 1")) << e.what();
  e = error_of([&] { self->allgather(i.data(), i.data(), -1, DType::dtype_i32); });
  EXPECT_TRUE(contains(e, "negative count")) << e.what();
  // send one element into recv: overlapping, and not the in-place layout.
  std::vector<std::int32_t> four(4);
  e = error_of([&] { self->allgather(four.data() + 1, four.data(), 2, DType::dtype_i32); });
  EXPECT_TRUE(contains(e, "allgather on comm 'tp'") && contains(e, "overlaps")) << e.what();
  e = error_of([&] {
    self->reduce_scatter(four.data(), four.data() + 1, 2, DType::dtype_i32, ReduceOp::reduce_sum);
  });
  EXPECT_TRUE(contains(e, "reduce_scatter on comm 'tp'") && contains(e, "overlap")) << e.what();
  e = error_of([&] { (void)self->split(-1, 0, "x"); });
  EXPECT_TRUE(contains(e, "negative color")) << e.what();
}

TEST(SelfComm, SplitGivesAnotherGroupOfOne) {
  auto self = self_comm("world");
  auto child = self->split(3, 7, "tp");
  EXPECT_EQ(child->name(), "tp");
  EXPECT_EQ(child->size(), 1);
  EXPECT_EQ(child->rank(), 0);
  EXPECT_EQ(self->name(), "world");
}

TEST(SelfComm, MpiCommWorldWithoutMpiIsAnInternalError) {
  const Error e = error_of([] { (void)mpi_comm_world(); });
  EXPECT_EQ(e.kind(), ErrorKind::internal);
  EXPECT_TRUE(contains(e, "MpiSession")) << e.what();
}

TEST(ProcessGrid, SingleIsOneRankOfSelfComms) {
  const ProcessGrid grid = ProcessGrid::single();
  EXPECT_EQ(grid.world_size(), 1);
  EXPECT_EQ(grid.tp_size(), 1);
  EXPECT_EQ(grid.dp_size(), 1);
  EXPECT_EQ(grid.world_rank(), 0);
  EXPECT_EQ(grid.tp_rank(), 0);
  EXPECT_EQ(grid.dp_rank(), 0);
  EXPECT_EQ(grid.world().name(), "world");
  EXPECT_EQ(grid.tp().name(), "tp");
  EXPECT_EQ(grid.dp().name(), "dp");
  float g = 2.5f;
  grid.dp().allreduce(&g, 1, DType::dtype_f32, ReduceOp::reduce_avg);
  EXPECT_EQ(g, 2.5f);
}

// parallel.tp reaches the grid validated (train/config_check.cpp reports it to the user,
// tests/unit/test_config.cpp): a tp that does not fit here is a caller's bug.
TEST(ProcessGrid, TpMustDivideTheWorldSize) {
  Error e = error_of([] { ProcessGrid grid(self_comm("world"), 2); });
  EXPECT_EQ(e.kind(), ErrorKind::internal);
  EXPECT_TRUE(contains(e, "ProcessGrid: tp 2 does not divide the world size 1")) << e.what();
  e = error_of([] { ProcessGrid grid(self_comm("world"), 0); });
  EXPECT_EQ(e.kind(), ErrorKind::internal);
  EXPECT_TRUE(contains(e, "ProcessGrid: tp 0")) << e.what();
  const ProcessGrid grid(self_comm("world"), 1);
  EXPECT_EQ(grid.tp_size(), 1);
}

// mpi_singleton_settings: Open MPI's ob1 layer only where no launcher started the process,
// never over a variable the user set, and never the isolated singleton (whose shared session
// directory breaks concurrent processes).
TEST(MpiSingletonSettings, OnlyWithoutALauncherAndNeverOverTheUsersChoice) {
  const char* const launcher[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", "PMI_FD"};
  for (const char* name : launcher) unsetenv(name);
  unsetenv("OMPI_MCA_pml");
  unsetenv("OMPI_MCA_ess_singleton_isolated");
  mpi_singleton_settings();
  ASSERT_NE(std::getenv("OMPI_MCA_pml"), nullptr);
  EXPECT_STREQ(std::getenv("OMPI_MCA_pml"), "ob1");
  EXPECT_EQ(std::getenv("OMPI_MCA_ess_singleton_isolated"), nullptr);

  setenv("OMPI_MCA_pml", "ucx", 1);
  mpi_singleton_settings();
  EXPECT_STREQ(std::getenv("OMPI_MCA_pml"), "ucx");

  for (const char* name : launcher) {
    unsetenv("OMPI_MCA_pml");
    setenv(name, "0", 1);
    mpi_singleton_settings();
    EXPECT_EQ(std::getenv("OMPI_MCA_pml"), nullptr) << name;
    unsetenv(name);
  }
  unsetenv("OMPI_MCA_pml");
}

}  // namespace
}  // namespace anvil::comm
