// ProcessGrid: the world split into tp × ep × dp (../shared/DESIGN.md "Grid with experts").
// Tensor-parallel groups of `tp` consecutive ranks are innermost (they land on the same
// node, on NVLink), then `ep` expert-parallel ranks, then dp:
//   world rank = (dp_rank * ep + ep_rank) * tp + tp_rank.
// The groups:
//   tp   the tp consecutive ranks of one model slice
//   dp   every rank holding the same TP slice of the dense parts (attention, norms, dense
//        MLPs, router): ep × dp ranks. They see different data and reduce the non-expert
//        gradients; with ep = 1 it is the plain data-parallel group.
//   ep   the ep ranks of one replica that split the routed experts between them (tokens
//        travel between them by all-to-all)
//   edp  the ranks holding the same experts (same tp and ep rank): dp ranks, over which the
//        routed experts' gradients are reduced
#pragma once

#include <memory>

#include "comm/comm.h"

namespace anvil::comm {

class ProcessGrid {
 public:
  // Splits `world` into tp × ep × (world.size() / (tp × ep)). tp and ep must be positive and
  // tp × ep divide the world size (an internal error otherwise: parallel.tp and parallel.ep
  // are validated with the config).
  ProcessGrid(std::unique_ptr<Comm> world, int tp, int ep = 1);
  // One rank, tp = ep = dp = 1, no MPI needed.
  static ProcessGrid single();

  int tp_rank() const { return tp_->rank(); }
  int tp_size() const { return tp_->size(); }
  // In the ep × dp group of the same TP slice: dp_rank * ep + ep_rank.
  int dp_rank() const { return dp_->rank(); }
  int dp_size() const { return dp_->size(); }
  int ep_rank() const { return ep_->rank(); }
  int ep_size() const { return ep_->size(); }
  int edp_rank() const { return edp_->rank(); }
  int edp_size() const { return edp_->size(); }
  int world_rank() const { return world_->rank(); }
  int world_size() const { return world_->size(); }
  Comm& world() const { return *world_; }
  Comm& tp() const { return *tp_; }
  Comm& dp() const { return *dp_; }
  Comm& ep() const { return *ep_; }
  Comm& edp() const { return *edp_; }

 private:
  std::unique_ptr<Comm> world_, tp_, dp_, ep_, edp_;
};

}  // namespace anvil::comm
