#include "train/schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace anvil::train {

double schedule_lr(const ScheduleParams& p, std::int64_t step) {
  if (p.warmup_steps > 0 && step <= p.warmup_steps)
    return p.lr * static_cast<double>(step) / static_cast<double>(p.warmup_steps);
  if (p.kind == LrSchedule::lr_constant) return p.lr;
  const double min_lr = p.lr * p.min_lr_ratio;
  const std::int64_t span = p.total_steps - p.warmup_steps;
  if (span <= 0) return p.lr;
  const double progress =
      std::clamp(static_cast<double>(step - p.warmup_steps) / static_cast<double>(span), 0.0, 1.0);
  if (p.kind == LrSchedule::lr_linear) return min_lr + (p.lr - min_lr) * (1.0 - progress);
  return min_lr + (p.lr - min_lr) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
}

}  // namespace anvil::train
