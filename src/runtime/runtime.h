// Runtime: where this rank computes and how it talks, built once from parallel.* before
// any weight is read, and passed to whatever needs a group (the trainer, the model's TP
// layers through tp_group()). It owns
//   - the MPI session (comm/mpi_session.h: MpiSession),
//   - the ProcessGrid: world = tp × ep × dp, tp innermost (consecutive ranks, one node),
//     then ep (comm/process_grid.h),
//   - the resolved backend (auto → cuda or cpu), agreed by every rank, and this rank's GPU,
//     assigned by UUID over its node (runtime/placement.h),
//   - per group ONE communicator, world(), tp(), dp(), ep(), edp(), that takes host scalars
//     and backend buffers alike (runtime/group_comm.h); dp() is every rank of the same TP
//     slice (ep × dp of them), edp() the ranks holding the same experts (DESIGN.md "Grid
//     with experts"),
//   - the TP group's split of the KV heads (tp_group()).
// parallel.tp arrives here validated (train/config_check.cpp); nothing here reads a config.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/backend_support.h"
#include "comm/comm.h"
#include "comm/process_grid.h"
#include "comm/mpi_session.h"
#include "model/model_spec.h"
#include "model/tp_layers.h"

namespace anvil::runtime {

// The parallel.* keys the Runtime is built from (train/ fills it from the config).
struct RuntimeSpec {
  int tp = 1;
  backend::BackendKind backend = backend::BackendKind::backend_auto;
  comm::CommKind comm = comm::CommKind::comm_auto;
  int ep = 1;  // last: brace-initialised specs ({tp, backend, comm}) keep meaning what they did
};

class Runtime {
 public:
  // Collective over the session's world; the Runtime keeps the session (and so MPI) until
  // it is destroyed. `session` null: the caller keeps MPI (the MPI tests' main), or there
  // is none and the world is one rank.
  Runtime(std::unique_ptr<comm::MpiSession> session, const RuntimeSpec& spec);
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  backend::Backend& backend() const { return *backend_; }
  backend::BackendKind backend_kind() const { return backend_kind_; }
  // "cpu" or "cuda device 1, nccl": for the log.
  const std::string& description() const { return description_; }

  int world_rank() const { return grid_.world_rank(); }
  int world_size() const { return grid_.world_size(); }
  int tp_rank() const { return grid_.tp_rank(); }
  int tp_size() const { return grid_.tp_size(); }
  int dp_rank() const { return grid_.dp_rank(); }
  int dp_size() const { return grid_.dp_size(); }
  int ep_rank() const { return grid_.ep_rank(); }
  int ep_size() const { return grid_.ep_size(); }
  // This rank's place on its node (picks its GPU and its CPU threads).
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }

  // The groups, each one communicator on host and backend memory alike.
  comm::Comm& world() const { return *world_; }
  comm::Comm& tp() const { return *tp_; }
  comm::Comm& dp() const { return *dp_; }
  comm::Comm& ep() const { return *ep_; }
  comm::Comm& edp() const { return *edp_; }
  // The same groups on host memory only, for code that hands MPI host buffers itself
  // (the HDF5 checkpoint's MPI-IO, the token cache).
  const comm::ProcessGrid& host_grid() const { return grid_; }

  // The TP group a model of `spec` runs in: this rank's shard (its routed experts too, under
  // ep) and, when ranks share replicated KV heads, their sub-group (split once, on the first
  // call; collective then); the ep group when ep > 1.
  const model::TpGroup& tp_group(const model::ModelSpec& spec);

  // Where this rank runs, one line: host, world and local rank, tp/dp coordinates, the CPUs
  // it may use and their NUMA nodes, CUDA_VISIBLE_DEVICES, and the device (a GPU's UUID
  // and PCI bus id). binding_report gathers every rank's line to world rank 0 (collective)
  // and returns them in rank order there (empty elsewhere).
  std::string binding_line() const;
  std::vector<std::string> binding_report() const;

 private:
  std::unique_ptr<comm::MpiSession> session_;  // null: kept by the caller, or no MPI
  int local_rank_ = 0, local_size_ = 1;
  comm::ProcessGrid grid_;
  backend::BackendKind backend_kind_{};
  std::unique_ptr<backend::Backend> backend_;
  std::string description_;
  // Device-memory Comms (NCCL, or MPI staged through host memory) and the GroupComms over
  // them and the grid's host Comms; empty on the CPU backend, where the grid's serve both.
  std::unique_ptr<comm::DeviceStaging> staging_;
  std::unique_ptr<comm::Comm> device_world_, device_tp_, device_dp_, device_ep_, device_edp_;
  std::unique_ptr<comm::Comm> group_world_, group_tp_, group_dp_, group_ep_, group_edp_;
  comm::Comm* world_ = nullptr;
  comm::Comm* tp_ = nullptr;
  comm::Comm* dp_ = nullptr;
  comm::Comm* ep_ = nullptr;
  comm::Comm* edp_ = nullptr;
  std::optional<model::TpGroup> tp_group_;
  std::unique_ptr<comm::Comm> kv_comm_;
};

// Launch checks, user errors that name the fix. The world has the size the launcher
// started (OMPI_COMM_WORLD_SIZE of mpirun, else SLURM_STEP_NUM_TASKS of srun): srun without
// PMIx would give every task a world of its own. Every TP group sits on one node (by host
// name; ANVIL_NODE_SIZE=N pretends every N consecutive ranks are a node, for tests).
// Collective over the grid's TP groups.
void launch_check_world(int world_size);
void launch_check_tp_node(const comm::ProcessGrid& grid);

// `dir` (the run's output_dir, which world rank 0 has created) is the same directory on
// every rank: rank 0 writes a token file of random content there, every rank reads it back,
// rank 0 removes it. Ranks that do not find it are named (host, rank, path) in a user error
// thrown on every rank ("output_dir must be on a shared filesystem"). Collective over
// `world`. ANVIL_OUTPUT_DIR_NODE_LOCAL=1 (tests) pretends `dir` is node-local: a rank on
// another node than rank 0 (by host name, or ANVIL_NODE_SIZE's simulated nodes) looks for
// the token under `dir`/<its node name>/ instead, where nothing is written.
void launch_check_shared_dir(comm::Comm& world, const std::string& dir);

// "0-3,8,10-11": a set of CPU numbers as ranges; the NUMA nodes of those CPUs from
// /sys (empty when the kernel does not say).
std::string cpu_ranges(const std::vector<int>& cpus);
std::string numa_nodes_of(const std::vector<int>& cpus);

// The backend kind `requested` resolves to on this machine: auto = backend::backend_auto();
// cuda without a device (or without CUDA in this build) is a user error naming
// parallel.backend.
backend::BackendKind backend_resolve(backend::BackendKind requested);

}  // namespace anvil::runtime
