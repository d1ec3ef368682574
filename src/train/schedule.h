// Learning-rate schedules: linear warm-up, then constant, linear or cosine decay to
// lr * min_lr_ratio at the last step.
#pragma once

#include <cstdint>

#include "train/config.h"

namespace anvil::train {

struct ScheduleParams {
  LrSchedule kind = LrSchedule::lr_cosine;
  double lr = 0;
  std::int64_t warmup_steps = 0;
  std::int64_t total_steps = 0;
  double min_lr_ratio = 0;
};

// The learning rate of optimizer step `step` (1-based). Warm-up ramps as lr · step/warmup,
// so the first step already moves (HF's schedulers start at 0 and waste a step); the decay
// runs from the end of warm-up to total_steps, where it reaches lr · min_lr_ratio.
double schedule_lr(const ScheduleParams& p, std::int64_t step);

}  // namespace anvil::train
