// The guard between a step's gradients and its update: a non-finite loss or gradient norm
// stops the run (or, with train.skip_nonfinite, skips the update), and a loss spike
// (train.loss_spike_factor) is logged and, with train.skip_loss_spikes, skipped. Every rank
// sees the same reduced loss and norm, so all ranks agree on the verdict without talking.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>

namespace anvil::train {

struct LossGuardParams {
  bool skip_nonfinite = false;
  double spike_factor = 0;  // <= 0: no spike detection
  std::int64_t spike_window = 0;
  bool skip_spikes = false;
};

struct LossVerdict {
  bool skip = false;   // no update this step
  bool spike = false;  // flagged as a spike (skipped or not)
};

class LossGuard {
 public:
  explicit LossGuard(const LossGuardParams& p);
  // Throws a user error at a non-finite step unless skip_nonfinite. `log`: this rank
  // writes the warnings (world rank 0).
  LossVerdict check(double loss, double grad_norm, std::int64_t step, bool log);

 private:
  bool spike_check(double loss, std::int64_t step, bool log);
  void push(double loss);

  LossGuardParams p_;
  std::size_t window_;
  std::deque<double> losses_;  // the last `window` accepted losses
  double sum_ = 0;
  std::size_t in_a_row_ = 0;  // consecutive flagged steps
};

}  // namespace anvil::train
