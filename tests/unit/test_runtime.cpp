// The Runtime (runtime/runtime.h) on one rank without MPI: parallel.backend /
// parallel.comm resolution (what auto becomes, which combinations are refused, with the
// key named), the backend limit table that config validation reads, and the groups.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/backend_support.h"
#include "core/error.h"
#include "error_test_util.h"
#include "model/model_spec.h"
#include "fake_device.h"
#include "runtime/group_comm.h"
#include "runtime/placement.h"
#include "runtime/runtime.h"

namespace anvil::runtime {
namespace {

using B = backend::BackendKind;
using C = comm::CommKind;

// ---- placement: the job's backend, each rank's GPU by UUID, the communicator ----------

// `n` ranks on `node`, each seeing the GPUs `visible(local rank)` names.
template <typename F>
void add_node(std::vector<RankView>& job, const std::string& node, int n, F visible) {
  for (int l = 0; l < n; ++l) job.push_back({node, B::backend_cuda, visible(l)});
}
std::vector<std::string> gpus(std::initializer_list<const char*> ids) { return {ids.begin(), ids.end()}; }
const std::vector<std::string> kFour = gpus({"GPU-a", "GPU-b", "GPU-c", "GPU-d"});

TEST(Placement, CpuJobsTalkMpiAndNcclIsRefused) {
  const std::vector<RankView> job(4, RankView{"n0", B::backend_cpu, {}});
  const JobPlacement p = placement_resolve(job, C::comm_auto);
  EXPECT_EQ(p.backend, B::backend_cpu);
  EXPECT_EQ(p.comm, C::comm_mpi);
  EXPECT_TRUE(p.gpu.empty());
  EXPECT_EQ(placement_resolve(job, C::comm_mpi).comm, C::comm_mpi);
  EXPECT_TRUE(test::contains(test::error_of([&] { placement_resolve(job, C::comm_nccl); }),
                             "parallel.comm: nccl needs GPUs"));
}

TEST(Placement, NoBindingEveryRankSeesAllGpus) {  // plain mpirun, or srun --gpus-per-node=4
  std::vector<RankView> job;
  add_node(job, "n0", 4, [](int) { return kFour; });
  add_node(job, "n1", 4, [](int) { return kFour; });
  const JobPlacement p = placement_resolve(job, C::comm_auto);
  ASSERT_EQ(p.gpu.size(), 8u);
  for (int r = 0; r < 8; ++r) {
    EXPECT_EQ(p.gpu[r].ordinal, r % 4) << r;  // each node starts again at its ordinal 0
    EXPECT_EQ(p.gpu[r].uuid, kFour[r % 4]) << r;
    EXPECT_EQ(p.gpu[r].sharers, 1) << r;
  }
  EXPECT_EQ(p.comm, C::comm_nccl);
  EXPECT_EQ(p.shared, "");
}

TEST(Placement, PerTaskBindingEachRankSeesOnlyItsOwnGpu) {  // srun --gpus-per-task=1
  std::vector<RankView> job;
  add_node(job, "n0", 4, [](int l) { return std::vector<std::string>{kFour[l]}; });
  const JobPlacement p = placement_resolve(job, C::comm_nccl);  // was refused when "4 ranks > 1 device"
  for (int r = 0; r < 4; ++r) {
    EXPECT_EQ(p.gpu[r].ordinal, 0) << r;
    EXPECT_EQ(p.gpu[r].uuid, kFour[r]) << r;
    EXPECT_EQ(p.gpu[r].sharers, 1) << r;
  }
  EXPECT_EQ(p.comm, C::comm_nccl);
}

TEST(Placement, ClosestBindingSocketsSeeTheirOwnGpus) {  // --gpu-bind=closest, 2 sockets
  std::vector<RankView> job;
  add_node(job, "n0", 4, [](int l) { return l < 2 ? gpus({"GPU-a", "GPU-b"}) : gpus({"GPU-c", "GPU-d"}); });
  const JobPlacement p = placement_resolve(job, C::comm_auto);
  const char* want[] = {"GPU-a", "GPU-b", "GPU-c", "GPU-d"};
  for (int r = 0; r < 4; ++r) EXPECT_EQ(p.gpu[r].uuid, want[r]) << r;
  EXPECT_EQ(p.comm, C::comm_nccl);

  // Ranks placed cyclically over the sockets (srun --distribution=block:cyclic): local
  // ranks 0 and 2 see socket 0's GPUs, 1 and 3 socket 1's. local_rank % 2 would put ranks
  // 0 and 2 both on GPU-a and ranks 1 and 3 both on GPU-d.
  job.clear();
  add_node(job, "n0", 4, [](int l) { return l % 2 == 0 ? gpus({"GPU-a", "GPU-b"}) : gpus({"GPU-c", "GPU-d"}); });
  const JobPlacement q = placement_resolve(job, C::comm_nccl);
  const char* want2[] = {"GPU-a", "GPU-c", "GPU-b", "GPU-d"};
  const int ordinal2[] = {0, 0, 1, 1};
  for (int r = 0; r < 4; ++r) {
    EXPECT_EQ(q.gpu[r].uuid, want2[r]) << r;
    EXPECT_EQ(q.gpu[r].ordinal, ordinal2[r]) << r;
    EXPECT_EQ(q.gpu[r].sharers, 1) << r;
  }
}

TEST(Placement, MoreRanksThanGpusShareThemAndNcclIsRefused) {
  std::vector<RankView> job;
  add_node(job, "n0", 4, [](int) { return gpus({"GPU-a", "GPU-b"}); });
  add_node(job, "n1", 2, [](int) { return gpus({"GPU-a", "GPU-b"}); });  // another node's GPU-a is another GPU
  const JobPlacement p = placement_resolve(job, C::comm_auto);
  const int ordinal[] = {0, 1, 0, 1, 0, 1};
  const int sharers[] = {2, 2, 2, 2, 1, 1};
  for (int r = 0; r < 6; ++r) {
    EXPECT_EQ(p.gpu[r].ordinal, ordinal[r]) << r;
    EXPECT_EQ(p.gpu[r].sharers, sharers[r]) << r;
  }
  EXPECT_EQ(p.comm, C::comm_mpi);  // auto: NCCL cannot, the whole job stages through the host
  EXPECT_EQ(p.shared, "ranks 0, 2 on n0 share GPU-a; ranks 1, 3 on n0 share GPU-b");
  EXPECT_EQ(placement_resolve(job, C::comm_mpi).comm, C::comm_mpi);
  const Error e = test::error_of([&] { placement_resolve(job, C::comm_nccl); });
  EXPECT_TRUE(test::contains(e, "parallel.comm: nccl, but ranks 0, 2 on n0 share GPU-a")) << e.what();
  EXPECT_EQ(e.kind(), ErrorKind::user);

  // Per-task binding that hands two ranks the same GPU is sharing too.
  job.clear();
  add_node(job, "n0", 2, [](int) { return gpus({"GPU-a"}); });
  EXPECT_EQ(placement_resolve(job, C::comm_auto).shared, "ranks 0, 1 on n0 share GPU-a");
}

TEST(Placement, BackendsMustAgreeOverTheJob) {
  std::vector<RankView> job;
  add_node(job, "gpu-node", 2, [](int) { return kFour; });
  job.push_back({"cpu-node", B::backend_cpu, {}});
  job.push_back({"cpu-node", B::backend_cpu, {}});
  const Error e = test::error_of([&] { placement_resolve(job, C::comm_auto); });
  EXPECT_EQ(e.kind(), ErrorKind::user);
  EXPECT_TRUE(test::contains(e, "the CPU backend on cpu-node (ranks 2, 3); but the CUDA backend on gpu-node (ranks 0, 1)"))
      << e.what();
}

TEST(Placement, ACudaRankWithoutAGpuIsNamed) {
  std::vector<RankView> job;
  add_node(job, "n0", 1, [](int) { return kFour; });
  add_node(job, "n1", 1, [](int) { return std::vector<std::string>{}; });
  const Error e = test::error_of([&] { placement_resolve(job, C::comm_auto); });
  EXPECT_TRUE(test::contains(e, "rank 1 on n1 sees no GPU")) << e.what();
}

TEST(Placement, TheGatherCarriesEveryField) {
  comm::ProcessGrid grid(comm::self_comm("world"), 1);
  const RankView mine{"host-1", B::backend_cuda, gpus({"GPU-a", "GPU-\"odd\""})};
  const std::vector<RankView> all = placement_gather(grid.world(), mine);
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].node, "host-1");
  EXPECT_EQ(all[0].backend, B::backend_cuda);
  EXPECT_EQ(all[0].gpus, mine.gpus);
}

TEST(Runtime, BackendAutoFollowsTheVisibleDevices) {
  const bool gpu = backend::cuda_device_count() > 0;
  EXPECT_EQ(backend_resolve(B::backend_auto), gpu ? B::backend_cuda : B::backend_cpu);
  EXPECT_EQ(backend_resolve(B::backend_cpu), B::backend_cpu);
  if (gpu) {
    EXPECT_EQ(backend_resolve(B::backend_cuda), B::backend_cuda);
    return;
  }
  try {
    backend_resolve(B::backend_cuda);
    FAIL() << "cuda accepted without a device";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::user);
    EXPECT_NE(std::string(e.what()).find("parallel.backend: cuda"), std::string::npos) << e.what();
  }
}

// The table config validation reads: the CPU reference takes any rank and head_dim; the
// CUDA kernels ranks up to 64 and head_dim 64 or 128.
TEST(BackendSupport, LimitsOfEachBackend) {
  EXPECT_FALSE(backend::backend_lora_rank_problem(B::backend_cpu, 4096));
  EXPECT_FALSE(backend::backend_head_dim_problem(B::backend_cpu, 96));
  EXPECT_FALSE(backend::backend_lora_rank_problem(B::backend_cuda, 64));
  EXPECT_FALSE(backend::backend_head_dim_problem(B::backend_cuda, 64));
  EXPECT_FALSE(backend::backend_head_dim_problem(B::backend_cuda, 128));
  const auto rank = backend::backend_lora_rank_problem(B::backend_cuda, 128);
  ASSERT_TRUE(rank);
  EXPECT_NE(rank->find("128 is more than the CUDA backend's LoRA kernels take (at most 64)"), std::string::npos)
      << *rank;
  const auto head = backend::backend_head_dim_problem(B::backend_cuda, 96);
  ASSERT_TRUE(head);
  EXPECT_NE(head->find("head_dim is 96; the CUDA backend's attention kernels take head_dim 64 or 128"),
            std::string::npos)
      << *head;
  EXPECT_EQ(backend::backend_auto(), backend::cuda_device_count() > 0 ? B::backend_cuda : B::backend_cpu);
}

// One rank on the CPU backend: every group is a group of one, and each group's single
// communicator takes a host scalar and a backend buffer alike.
TEST(Runtime, SingleRankCpuGroupsTakeHostAndBackendBuffers) {
  Runtime rt(nullptr, RuntimeSpec{1, B::backend_cpu, C::comm_auto});
  EXPECT_EQ(rt.backend_kind(), B::backend_cpu);
  EXPECT_EQ(rt.description(), "cpu");
  EXPECT_EQ(rt.world_size(), 1);
  EXPECT_EQ(rt.tp_size(), 1);
  EXPECT_EQ(rt.dp_size(), 1);
  EXPECT_EQ(rt.world().name(), "world");
  EXPECT_EQ(rt.tp().name(), "tp");
  EXPECT_EQ(rt.dp().name(), "dp");
  double host = 3.5;
  rt.dp().allreduce_sum(&host, 1);
  EXPECT_EQ(host, 3.5);
  auto* device = static_cast<float*>(rt.backend().memory_alloc(4 * sizeof(float)));
  const float values[4] = {1, 2, 3, 4};
  rt.backend().copy_from_host(device, values, sizeof values);
  rt.dp().allreduce(device, 4, DType::dtype_f32, comm::ReduceOp::reduce_avg);
  float back[4] = {};
  rt.backend().copy_to_host(back, device, sizeof back);
  EXPECT_EQ(std::memcmp(back, values, sizeof back), 0);
  rt.backend().memory_free(device);
}

TEST(Runtime, TpGroupOfOneRankHoldsTheWholeModel) {
  Runtime rt(nullptr, RuntimeSpec{1, B::backend_cpu, C::comm_mpi});
  const model::ModelSpec spec = *model::model_preset("tiny");
  const model::TpGroup& g = rt.tp_group(spec);
  EXPECT_EQ(g.comm, &rt.tp());
  EXPECT_EQ(g.kv_comm, nullptr);
  EXPECT_EQ(g.shard.kv_replicas, 1);
  EXPECT_EQ(&rt.tp_group(spec), &g);  // made once
}

// A GroupComm of one rank over a host Comm and a staged "device" Comm whose device memory is
// one host block: a group of one's out-of-place copies stay in their memory, device ones
// through the device Comm (its staging), host ones by memcpy.
TEST(GroupComm, AGroupOfOneCopiesInTheMemoryOfItsBuffers) {
  test::FakeDevice dev;
  auto host = comm::self_comm("tp");
  auto device = comm::staged_comm(*host, dev);
  float* d = dev.memory.data();
  auto group = group_comm(*host, *device, [&](const void* p) { return dev.holds(p); });
  EXPECT_EQ(group->name(), "tp");
  EXPECT_EQ(group->size(), 1);
  d[0] = 1, d[1] = 2;
  group->allgather(d, d + 4, 2, DType::dtype_f32);
  EXPECT_EQ(d[4], 1.0f);
  EXPECT_EQ(d[5], 2.0f);
  EXPECT_EQ(dev.staged, 2);  // device to device, through the staging
  const float h[2] = {7, 8};
  float out[2] = {};
  group->allgather(h, out, 2, DType::dtype_f32);
  EXPECT_EQ(out[0], 7.0f);
  EXPECT_EQ(out[1], 8.0f);
  EXPECT_EQ(dev.staged, 2);  // host memory never staged
  // Buffers in two memories are a caller's bug even on one rank.
  EXPECT_THROW(group->allgather(h, d, 2, DType::dtype_f32), Error);
}

TEST(Runtime, NcclOnTheCpuBackendIsAUserError) {
  const Error e = [] {
    try {
      Runtime rt(nullptr, RuntimeSpec{1, B::backend_cpu, C::comm_nccl});
    } catch (const Error& err) {
      return err;
    }
    return Error(ErrorKind::internal, "none thrown");
  }();
  EXPECT_EQ(e.kind(), ErrorKind::user);
  EXPECT_NE(std::string(e.what()).find("parallel.comm: nccl needs GPUs"), std::string::npos) << e.what();
}

// The world must have the size the launcher started: mpirun's count wins (also under Slurm,
// where its orted are srun tasks); a direct srun launch is held to its task count.
TEST(LaunchCheck, WorldSizeMustMatchTheLauncher) {
  struct Env {  // sets or clears one variable for the scope, then restores it
    std::string name;
    std::string old;
    bool had;
    Env(const char* n, const char* v) : name(n), had(std::getenv(n) != nullptr) {
      if (had) old = std::getenv(n);
      if (v) setenv(n, v, 1); else unsetenv(n);
    }
    ~Env() {
      if (had) setenv(name.c_str(), old.c_str(), 1); else unsetenv(name.c_str());
    }
  };
  {
    Env ompi("OMPI_COMM_WORLD_SIZE", nullptr), slurm("SLURM_STEP_NUM_TASKS", nullptr);
    EXPECT_NO_THROW(launch_check_world(1));  // started alone
  }
  {
    Env ompi("OMPI_COMM_WORLD_SIZE", nullptr), slurm("SLURM_STEP_NUM_TASKS", "4");
    const Error e = test::error_of([] { launch_check_world(1); });
    EXPECT_EQ(e.kind(), ErrorKind::user);
    EXPECT_TRUE(test::contains(e, "srun started 4 tasks")) << e.what();
    EXPECT_TRUE(test::contains(e, "srun --mpi=pmix")) << e.what();
    EXPECT_NO_THROW(launch_check_world(4));
  }
  {
    Env ompi("OMPI_COMM_WORLD_SIZE", "2"), slurm("SLURM_STEP_NUM_TASKS", "1");
    EXPECT_NO_THROW(launch_check_world(2));  // mpirun inside a batch step: its count wins
    const Error e = test::error_of([] { launch_check_world(1); });
    EXPECT_EQ(e.kind(), ErrorKind::user);
    EXPECT_TRUE(test::contains(e, "mpirun started 2 processes")) << e.what();
  }
}

}  // namespace
}  // namespace anvil::runtime
