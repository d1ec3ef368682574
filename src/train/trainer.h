// The training loop: data ─► micro-batches ─► forward/backward ─► grad norm, clip ─► AdamW
// ─► schedule, with metrics.jsonl, the progress line and periodic evaluation.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "comm/process_grid.h"
#include "train/config.h"

namespace anvil::train {

struct TrainResult {
  std::int64_t steps = 0;
  std::int64_t skipped_steps = 0;
  double last_loss = 0;
  std::optional<double> first_eval_loss;  // before the first step
  std::optional<double> last_eval_loss;
  std::string adapter_dir;  // PEFT adapter written at the end (empty after --stop-after)
  std::optional<std::string> resumed_from;
  std::string last_checkpoint;
  // Stopped early on SIGUSR1/SIGTERM (train/preemption.h): last_checkpoint continues it.
  bool preempted = false;
};

struct TrainOptions {
  // > 0: end cleanly after this step with a checkpoint, as a preempted job would; the same
  // command with checkpoint.resume: auto continues from it.
  std::int64_t stop_after = 0;
  // This rank's place on its node (MpiSession::local_rank/local_size): picks its GPU.
  int local_rank = 0;
  int local_size = 1;
};

// Runs the whole training of `cfg` on the ranks of `grid`, every rank calling it (one rank:
// ProcessGrid::single()). Each data-parallel replica takes its own rows of every global
// batch; each tensor-parallel rank holds its slice of the model. Only world rank 0 writes
// metrics, the progress line and the adapter. Throws anvil::Error with the step on a
// non-finite loss (unless train.skip_nonfinite) and on bad data or models.
TrainResult train_run(const TrainConfig& cfg, const comm::ProcessGrid& grid, const TrainOptions& options = {});

}  // namespace anvil::train
