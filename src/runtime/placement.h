// Which GPU each rank takes and which backend and communicator the whole job runs on,
// decided from what every rank sees, gathered once at start.
//
// A rank's CUDA ordinals say nothing about which physical GPU it is: with Slurm's
// --gpus-per-task (per-task binding) every rank sees its own GPU as ordinal 0, with
// --gpu-bind=closest the ranks of a socket see their socket's GPUs, with no binding every
// rank sees all of them. So ranks report their visible GPUs by UUID and each node's ranks
// are handed GPUs by UUID: in local-rank order, each rank takes the visible GPU that the
// fewest lower ranks of its node took (ties: the lowest ordinal). With identical lists this
// is local_rank % GPUs; with per-task binding it is each rank's own GPU. More ranks than
// GPUs means ranks share a GPU: NCCL refuses two ranks on one GPU, so comm auto becomes
// host-staged MPI for the whole job, and comm nccl is refused naming the GPU.
//
// Every rank computes the same answer from the same gathered table, so a refusal (a mix of
// backends over the nodes, ranks without a GPU) stops all of them alike, before any
// communicator is set up.
#pragma once

#include <string>
#include <vector>

#include "backend/backend_support.h"
#include "comm/comm.h"

namespace anvil::runtime {

// What one rank reports.
struct RankView {
  std::string node;                  // host name (or ANVIL_NODE_SIZE's simulated node)
  backend::BackendKind backend{};    // what parallel.backend resolved to on this rank
  std::vector<std::string> gpus;     // its visible GPUs' UUIDs, in CUDA ordinal order
};

struct GpuChoice {
  int ordinal = -1;   // the CUDA ordinal this rank opens (-1: cpu backend)
  std::string uuid;
  int sharers = 0;    // ranks of its node on the same GPU (1: alone)
};

struct JobPlacement {
  backend::BackendKind backend{};
  comm::CommKind comm{};
  std::vector<GpuChoice> gpu;  // per world rank; empty on the cpu backend
  std::string shared;          // "" or which ranks share which GPU (for the log)
};

// The decision, the same on every rank. `ranks` is indexed by world rank. User errors:
// ranks whose backends differ (naming the nodes of each), a cuda rank that sees no GPU,
// comm nccl on cpu or with ranks sharing a GPU.
JobPlacement placement_resolve(const std::vector<RankView>& ranks, comm::CommKind requested);

// Every rank's view, gathered over `world` (collective): a fixed-size record per rank.
std::vector<RankView> placement_gather(comm::Comm& world, const RankView& mine);

}  // namespace anvil::runtime
