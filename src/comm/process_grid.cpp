#include "comm/process_grid.h"

#include <utility>

#include "core/error.h"

namespace anvil::comm {

ProcessGrid::ProcessGrid(std::unique_ptr<Comm> world, int tp, int ep) : world_(std::move(world)) {
  ANVIL_CHECK(world_ != nullptr, "ProcessGrid needs a world comm");
  const int world_size = world_->size();
  // The config's validation (train/config_check.cpp) has told the user already; reaching
  // here with a bad tp or ep is a caller's bug.
  ANVIL_CHECK(tp >= 1 && world_size % tp == 0, "ProcessGrid: tp ", tp, " does not divide the world size ",
              world_size);
  ANVIL_CHECK(ep >= 1 && world_size % (tp * ep) == 0, "ProcessGrid: tp ", tp, " x ep ", ep,
              " does not divide the world size ", world_size);
  const int rank = world_->rank();
  const int tp_rank = rank % tp, ep_rank = (rank / tp) % ep, dp_rank = rank / (tp * ep);
  // Keyed by world rank, so group ranks follow world order (dp's rank is dp_rank * ep +
  // ep_rank: the batch's rows go to the ep ranks of a replica in turn).
  tp_ = world_->split(rank / tp, rank, "tp");
  dp_ = world_->split(tp_rank, rank, "dp");
  ep_ = world_->split(dp_rank * tp + tp_rank, rank, "ep");
  edp_ = world_->split(ep_rank * tp + tp_rank, rank, "edp");
}

ProcessGrid ProcessGrid::single() { return ProcessGrid(self_comm("world"), 1); }

}  // namespace anvil::comm
