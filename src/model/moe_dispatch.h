// Expert parallelism's token exchange (../shared/DESIGN.md "Grid with experts"). The ep
// ranks of a replica route their own tokens over all E experts, then hold E / ep experts
// each, a contiguous block: rank j holds experts [j·El, (j + 1)·El), El = E / ep. Because a
// rank's routed rows are sorted by expert (moe_routing.h), the rows bound for rank j are one
// contiguous run of them, so the exchange is
//   1. counts: rank i tells rank j how many of its rows go to each of j's experts
//      (an all-to-all of El counts per pair);
//   2. rows: an all-to-all of those runs; rank j receives them source-major (rank 0's rows
//      for its experts, then rank 1's, ...) and reorders them expert-major, so each local
//      expert runs one GEMM over a contiguous block: expert e's rows are rank 0's rows for
//      e, then rank 1's, each in that rank's token order (deterministic);
//   3. back: the experts' outputs take the reverse path to the ranks that sent the rows, in
//      the order they were sent, and the existing combine adds them in choice order.
// Backward sends the outputs' gradients the same way as the rows and the inputs' gradients
// back, with the counts of the forward (kept per layer). The counts and plans are host
// memory; the rows are backend memory (device memory on the CUDA backend), moved by the
// backend's copies and sent by the ep group's Comm, which takes either (runtime/group_comm.h:
// NCCL's all-to-all for device buffers).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "backend/backend.h"
#include "comm/comm.h"
#include "model/lora.h"

namespace anvil::model {

class MoeDispatch {
 public:
  // `ep`: the expert-parallel group; `experts`: the model's E (ep must divide it); `rows`:
  // the most routed rows of one rank (N·k); `width`: the row width C; `layers`: the model's
  // layer count (a plan is kept per layer for its backward).
  MoeDispatch(comm::Comm& ep, backend::Backend& be, std::int64_t experts, std::int64_t rows, std::int64_t width,
              std::int64_t layers);

  // The most rows this rank's experts can receive: every rank's every routed row.
  static std::int64_t local_rows_max(std::int64_t rows, int ep) { return rows * ep; }

  // Layer `layer`'s forward: exchanges the counts of this rank's expert-sorted rows
  // (`offsets`, E + 1: the routing's, host memory) and returns where each local expert's rows start in
  // the expert-major local order, (El + 1). Collective over the ep group.
  const std::int64_t* plan(std::int64_t layer, const std::int64_t* offsets);
  // The plan's local offsets again (backward).
  const std::int64_t* local_offsets(std::int64_t layer) const;

  // home (R, C): this rank's rows in expert order -> local (rows received, C), expert-major.
  void send(std::int64_t layer, const float* home, float* local);
  // local (rows received, C), expert-major -> home (R, C): each row back in the place it
  // was sent from. Collective over the ep group.
  void send_back(std::int64_t layer, const float* local, float* home);

 private:
  // Source-major (as the all-to-all delivers) <-> expert-major (as the GEMMs read).
  void reorder(std::int64_t layer, const float* from, float* to, bool to_expert_major) const;

  struct Free {
    backend::Backend* be;
    void operator()(float* p) const { be->memory_free(p); }
  };

  comm::Comm& ep_;
  backend::Backend& be_;
  int size_;
  std::int64_t el_, width_;
  // Per layer: rows to send to each rank and to receive from each (ep), rows from each
  // source for each local expert (ep · El), local expert offsets (El + 1).
  std::vector<std::int64_t> send_rows_, recv_rows_, recv_by_expert_, local_offsets_;
  std::vector<std::int64_t> send_count_, recv_count_;  // (ep) elements of one call
  std::vector<std::int64_t> stage_counts_;             // (E) this rank's rows per expert
  std::unique_ptr<float, Free> stage_;  // (local_rows_max, C) rows in source-major order, backend memory
  std::int64_t stage_rows_ = 0;
};

// The data-parallel reduction of a rank's adapter gradients under ep: the routed experts'
// slots over `edp` (the ranks holding the same experts), every other slot over `dp` (every
// rank of the same TP slice), each packed into `stage` (backend memory, local.size() floats)
// by the backend's copies for one sum.
void ep_grads_allreduce(const LoraLayout& local, float* grads, comm::Comm& dp, comm::Comm& edp, backend::Backend& be,
                        float* stage);

}  // namespace anvil::model
