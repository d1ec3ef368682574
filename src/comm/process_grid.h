// ProcessGrid: the world split into tensor-parallel groups of `tp` consecutive ranks (the
// innermost dimension: they land on the same node, on NVLink) and data-parallel groups of
// the ranks that hold the same tensor-parallel slice. World rank = dp_rank * tp + tp_rank.
#pragma once

#include <memory>

#include "comm/comm.h"

namespace anvil::comm {

class ProcessGrid {
 public:
  // Splits `world` into dp = world.size() / tp replicas. tp must be positive and divide the
  // world size (an internal error otherwise: parallel.tp is validated with the config).
  ProcessGrid(std::unique_ptr<Comm> world, int tp);
  // One rank, tp = dp = 1, no MPI needed.
  static ProcessGrid single();

  int tp_rank() const { return tp_->rank(); }
  int tp_size() const { return tp_->size(); }
  int dp_rank() const { return dp_->rank(); }
  int dp_size() const { return dp_->size(); }
  int world_rank() const { return world_->rank(); }
  int world_size() const { return world_->size(); }
  Comm& world() const { return *world_; }
  Comm& tp() const { return *tp_; }
  Comm& dp() const { return *dp_; }

 private:
  std::unique_ptr<Comm> world_, tp_, dp_;
};

}  // namespace anvil::comm
