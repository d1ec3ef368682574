#include "train/loss_guard.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/log.h"

namespace anvil::train {

LossGuard::LossGuard(const LossGuardParams& p) : p_(p), window_(static_cast<std::size_t>(p.spike_window)) {}

LossVerdict LossGuard::check(double loss, double grad_norm, std::int64_t step, bool log) {
  if (!std::isfinite(loss) || !std::isfinite(grad_norm)) {
    ANVIL_CHECK_INPUT(p_.skip_nonfinite, "step ", step, ": the ", std::isfinite(loss) ? "gradient norm" : "loss",
                      " is not finite (loss ", loss, ", grad norm ", grad_norm,
                      "); lower train.lr or set train.skip_nonfinite: true to skip such steps");
    return {true, false};
  }
  const bool spike = spike_check(loss, step, log);
  return {spike && p_.skip_spikes, spike};
}

// A step's loss above factor x the mean of the last `window` losses is a spike (once the
// window holds at least half of them). A skipped spike stays out of the window; more than
// window / 2 spikes in a row are a new level, not spikes: the window restarts there.
bool LossGuard::spike_check(double loss, std::int64_t step, bool log) {
  if (p_.spike_factor <= 0) return false;
  bool spike = false;
  if (losses_.size() >= std::max<std::size_t>(2, window_ / 2)) {
    const double mean = sum_ / static_cast<double>(losses_.size());
    spike = loss > p_.spike_factor * mean;
    if (spike && ++in_a_row_ > std::max<std::size_t>(1, window_ / 2)) {
      // Not a spike but a new level (harder data, a changed schedule): skipping on would
      // stop training for good. The window starts again from here.
      if (log)
        log_warn("step ", step, ": the loss has stayed above train.loss_spike_factor x its running mean for ",
                 in_a_row_, " steps; taking ", loss, " as its new level");
      losses_.clear();
      sum_ = 0;
      spike = false;
    } else if (spike && log) {
      log_warn("step ", step, ": loss spike: ", loss, " is above train.loss_spike_factor ", p_.spike_factor, " x ",
               mean, " (the mean of the last ", losses_.size(), " steps)");
    }
  }
  if (!spike) in_a_row_ = 0;
  if (!spike || !p_.skip_spikes) push(loss);
  return spike;
}

void LossGuard::push(double loss) {
  losses_.push_back(loss);
  sum_ += loss;
  if (losses_.size() > window_) {
    sum_ -= losses_.front();
    losses_.pop_front();
  }
}

}  // namespace anvil::train
