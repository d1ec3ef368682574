#include "comm/process_grid.h"

#include <utility>

#include "core/error.h"

namespace anvil::comm {

ProcessGrid::ProcessGrid(std::unique_ptr<Comm> world, int tp) : world_(std::move(world)) {
  ANVIL_CHECK(world_ != nullptr, "ProcessGrid needs a world comm");
  const int world_size = world_->size();
  // The config's validation (train/config_check.cpp) has told the user already; reaching
  // here with a bad tp is a caller's bug.
  ANVIL_CHECK(tp >= 1 && world_size % tp == 0, "ProcessGrid: tp ", tp, " does not divide the world size ",
              world_size);
  const int rank = world_->rank();
  // World rank = dp_rank * tp + tp_rank: a tp group is a run of tp consecutive ranks, a dp
  // group the ranks tp apart. Keyed by world rank, so group ranks follow world order.
  tp_ = world_->split(rank / tp, rank, "tp");
  dp_ = world_->split(rank % tp, rank, "dp");
}

ProcessGrid ProcessGrid::single() { return ProcessGrid(self_comm("world"), 1); }

}  // namespace anvil::comm
