// The Runtime's groups under mpiexec, on CPU ranks: one communicator per group takes host
// scalars and backend buffers alike, the grid follows parallel.tp, the TP group splits its
// replicated KV heads. And GroupComm, the communicator a GPU rank gets, with a fake device
// memory: each call goes to the host or the (staged) device Comm by where its buffers are.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <vector>

#include "backend/backend.h"
#include "comm/comm.h"
#include "comm/process_grid.h"
#include "core/error.h"
#include "../unit/error_test_util.h"
#include "../unit/fake_device.h"
#include "model/model_spec.h"
#include "runtime/group_comm.h"
#include "runtime/runtime.h"

namespace anvil::runtime {
namespace {

using comm::Comm;
using comm::ReduceOp;
using test::contains;
using test::error_of;

int world_size() { return comm::mpi_comm_world()->size(); }

RuntimeSpec cpu_spec(int tp) { return RuntimeSpec{tp, backend::BackendKind::backend_cpu, comm::CommKind::comm_auto}; }

TEST(RuntimeGroups, GridFollowsTpAndEachGroupTakesHostAndBackendBuffers) {
  const int p = world_size();
  const int tp = p % 2 == 0 ? 2 : 1;
  Runtime rt(nullptr, cpu_spec(tp));
  const int r = rt.world_rank();
  EXPECT_EQ(rt.world_size(), p);
  EXPECT_EQ(rt.tp_size(), tp);
  EXPECT_EQ(rt.dp_size(), p / tp);
  EXPECT_EQ(rt.tp_rank(), r % tp);
  EXPECT_EQ(rt.dp_rank(), r / tp);

  // A host scalar and a backend buffer through the same dp communicator object.
  double host = r + 1;
  rt.dp().allreduce_sum(&host, 1);
  double want = 0;
  for (int d = 0; d < rt.dp_size(); ++d) want += d * tp + rt.tp_rank() + 1;
  EXPECT_EQ(host, want);
  backend::Backend& be = rt.backend();
  auto* buf = static_cast<float*>(be.memory_alloc(3 * sizeof(float)));
  const float mine[3] = {static_cast<float>(r), 1.0f, static_cast<float>(2 * r)};
  be.copy_from_host(buf, mine, sizeof mine);
  rt.tp().allreduce(buf, 3, DType::dtype_f32, ReduceOp::reduce_sum);
  float got[3] = {};
  be.copy_to_host(got, buf, sizeof got);
  const int first = rt.dp_rank() * tp;  // the tp group's ranks: first .. first + tp - 1
  const float ranks = static_cast<float>(tp * first + tp * (tp - 1) / 2);
  EXPECT_EQ(got[0], ranks);
  EXPECT_EQ(got[1], static_cast<float>(tp));
  EXPECT_EQ(got[2], 2 * ranks);
  be.memory_free(buf);
  // The world group: one small host collective, as the metrics make.
  double worst = r;
  rt.world().allreduce(&worst, 1, DType::dtype_f64, ReduceOp::reduce_max);
  EXPECT_EQ(worst, p - 1);
}

// tp = 4 over a model with two KV heads: ranks 0-1 hold head 0, ranks 2-3 head 1, and each
// pair reduces its KV gradients in its own sub-group.
TEST(RuntimeGroups, TpGroupSplitsReplicatedKvHeads) {
  if (world_size() != 4) GTEST_SKIP() << "needs 4 ranks";
  Runtime rt(nullptr, cpu_spec(4));
  const model::ModelSpec spec = *model::model_preset("tiny");  // 4 heads, 2 KV heads
  const model::TpGroup& g = rt.tp_group(spec);
  EXPECT_EQ(g.comm, &rt.tp());
  EXPECT_EQ(g.shard.kv_replicas, 2);
  ASSERT_NE(g.kv_comm, nullptr);
  EXPECT_EQ(g.kv_comm->size(), 2);
  EXPECT_EQ(g.kv_comm->name(), "tp-kv");
  float x = static_cast<float>(rt.tp_rank());
  g.kv_comm->allreduce_sum(&x, 1);
  EXPECT_EQ(x, rt.tp_rank() < 2 ? 1.0f : 5.0f);  // 0 + 1, 2 + 3
}


TEST(GroupComm, EachCallGoesWhereItsBuffersAre) {
  auto world = comm::mpi_comm_world();
  test::FakeDevice dev;
  auto device = comm::staged_comm(*world, dev);
  auto group = group_comm(*world, *device, [&](const void* q) { return dev.holds(q); });
  const int r = world->rank(), p = world->size();
  EXPECT_EQ(group->rank(), r);
  EXPECT_EQ(group->size(), p);
  EXPECT_EQ(group->name(), "world");

  double host = r;
  group->allreduce_sum(&host, 1);
  EXPECT_EQ(host, p * (p - 1) / 2);
  EXPECT_EQ(dev.staged, 0);  // the host scalar never touched the device path

  float* d = dev.memory.data();
  d[0] = static_cast<float>(r);
  group->allreduce_sum(d, 1);
  EXPECT_EQ(d[0], static_cast<float>(p * (p - 1) / 2));
  EXPECT_EQ(dev.staged, 2);  // out to the host and back

  // allgather on device buffers, in place (this rank's block of recv).
  d[r] = static_cast<float>(10 + r);
  group->allgather(d + r, d, 1, DType::dtype_f32);
  for (int i = 0; i < p; ++i) EXPECT_EQ(d[i], static_cast<float>(10 + i));

  // send and recv in different memories is a caller's bug, refused before any message.
  std::vector<float> recv(static_cast<std::size_t>(p));
  const Error e = error_of([&] { group->allgather(d, recv.data(), 1, DType::dtype_f32); });
  EXPECT_TRUE(contains(e, "different memories")) << e.what();

  // A split keeps dispatching: a group per rank parity.
  auto half = group->split(r % 2, r, "half");
  EXPECT_EQ(half->name(), "half");
  double one = 1;
  half->allreduce_sum(&one, 1);
  EXPECT_EQ(one, (p + 1 - r % 2) / 2);
  d[1] = 1;
  const int before = dev.staged;
  half->allreduce_sum(d + 1, 1);
  EXPECT_EQ(d[1], one);
  if (half->size() > 1) {
    EXPECT_GT(dev.staged, before);
  } else {
    EXPECT_EQ(dev.staged, before);  // a group of one moves nothing
  }
}

// A TP group must sit on one node. ANVIL_NODE_SIZE=N makes every N consecutive ranks a
// node: with nodes of 2 every tp-2 group is whole; with nodes of 3 the group {2, 3} spans
// node-0 and node-1 and only its ranks refuse (the check is collective over the TP group
// alone, so the others go on), naming parallel.tp and the hosts.
TEST(LaunchCheck, TensorParallelGroupsStayOnOneNode) {
  const int p = world_size();
  if (p % 2 != 0) GTEST_SKIP() << "needs an even world for tp 2";
  const comm::ProcessGrid grid(comm::mpi_comm_world(), 2);
  setenv("ANVIL_NODE_SIZE", "2", 1);
  EXPECT_NO_THROW(launch_check_tp_node(grid));
  setenv("ANVIL_NODE_SIZE", "3", 1);
  const int first = grid.world_rank() - grid.tp_rank();  // the group's ranks: first, first + 1
  const bool spans = first / 3 != (first + 1) / 3;
  if (spans) {
    const Error e = error_of([&] { launch_check_tp_node(grid); });
    EXPECT_EQ(e.kind(), ErrorKind::user);
    EXPECT_TRUE(contains(e, "parallel.tp = 2")) << e.what();
    EXPECT_TRUE(contains(e, "node-" + std::to_string(first / 3))) << e.what();
  } else {
    EXPECT_NO_THROW(launch_check_tp_node(grid));
  }
  unsetenv("ANVIL_NODE_SIZE");
}

// output_dir must be one directory for every rank. A directory seen by all: the check
// passes and leaves nothing behind. With ANVIL_OUTPUT_DIR_NODE_LOCAL=1 and one simulated
// node per rank (ANVIL_NODE_SIZE=1), every rank but 0 looks elsewhere: every rank throws
// the same user error, naming the blind ranks, their hosts and the token's path; the token
// is removed all the same.
TEST(LaunchCheck, OutputDirVisibleFromEveryRank) {
  auto world = comm::mpi_comm_world();
  std::vector<char> dir(256, '\0');
  if (world->rank() == 0) {
    const std::string made = std::filesystem::temp_directory_path() / "anvil_shared_XXXXXX";
    std::memcpy(dir.data(), made.data(), made.size());
    ASSERT_NE(mkdtemp(dir.data()), nullptr);
  }
  world->broadcast(dir.data(), static_cast<std::int64_t>(dir.size()), DType::dtype_i8, 0);
  const std::string path = dir.data();
  EXPECT_NO_THROW(launch_check_shared_dir(*world, path));
  world->barrier();
  EXPECT_TRUE(std::filesystem::is_empty(path));
  world->barrier();  // before rank 0 writes the next token

  setenv("ANVIL_OUTPUT_DIR_NODE_LOCAL", "1", 1);
  setenv("ANVIL_NODE_SIZE", "1", 1);
  const Error e = error_of([&] { launch_check_shared_dir(*world, path); });
  unsetenv("ANVIL_OUTPUT_DIR_NODE_LOCAL");
  unsetenv("ANVIL_NODE_SIZE");
  EXPECT_EQ(e.kind(), ErrorKind::user);
  EXPECT_TRUE(contains(e, "output_dir must be on a shared filesystem")) << e.what();
  EXPECT_TRUE(contains(e, "world rank 1 on host node-1")) << e.what();
  // Rank 1 is the first blind one: rank 0 sees its own file.
  EXPECT_TRUE(contains(e, "not visible to world rank 1 on host node-1")) << e.what();
  EXPECT_TRUE(contains(e, path + "/.anvil-shared-check-")) << e.what();
  world->barrier();
  EXPECT_TRUE(std::filesystem::is_empty(path));
  world->barrier();
  if (world->rank() == 0) std::filesystem::remove_all(path);
}

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

TEST(Binding, EveryRankReportsWhereItRuns) {
  Runtime rt(nullptr, cpu_spec(1));
  const std::string mine = rt.binding_line();
  EXPECT_TRUE(has(mine, "rank " + std::to_string(rt.world_rank()) + "/" + std::to_string(rt.world_size()))) << mine;
  EXPECT_TRUE(has(mine, "; cpus ")) << mine;
  EXPECT_TRUE(has(mine, "CUDA_VISIBLE_DEVICES=")) << mine;
  EXPECT_TRUE(has(mine, "; cpu")) << mine;  // the backend's description
  const std::vector<std::string> all = rt.binding_report();
  if (rt.world_rank() != 0) {
    EXPECT_TRUE(all.empty());
    return;
  }
  ASSERT_EQ(static_cast<int>(all.size()), rt.world_size());
  for (int r = 0; r < rt.world_size(); ++r)
    EXPECT_EQ(all[static_cast<std::size_t>(r)].rfind("rank " + std::to_string(r) + "/", 0), 0u) << all[static_cast<std::size_t>(r)];
  EXPECT_EQ(all[0], mine);
}

TEST(Binding, CpuSetsAsRanges) {
  EXPECT_EQ(cpu_ranges({0, 1, 2, 3, 8, 10, 11}), "0-3,8,10-11");
  EXPECT_EQ(cpu_ranges({5}), "5");
  EXPECT_EQ(cpu_ranges({}), "");
}

}  // namespace
}  // namespace anvil::runtime
