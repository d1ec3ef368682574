// The rules that span keys or reach outside the file: the parallel layout and batch split,
// the model's shape, files that must exist. Internal to anvil_train.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "train/config.h"

namespace anvil::train {

struct KeyProblem {
  std::string key;  // the key the message is about; the loader adds its file and line
  std::string message;
};

struct BatchLayout {
  int world_size = 0;
  int dp = 0;  // the ranks the global batch splits over: ep × dp (the ep ranks see different data)
  int grad_accumulation = 0;
};

// For `world_size` ranks (0: tp × dp, dp auto counting as 1). Returns the problems; when
// there are none, `layout` is filled.
std::vector<KeyProblem> batch_layout_check(const TrainConfig& cfg, int world_size, BatchLayout& layout);

// Every cross-key and filesystem rule. `parsed` says whether a key got a valid value of
// its own; a rule that involves a key which did not is skipped (its error is reported
// already, and a second message about the same typo would only confuse).
std::vector<KeyProblem> config_check_rules(const TrainConfig& cfg, const ConfigContext& ctx,
                                           const std::function<bool(std::string_view)>& parsed);

}  // namespace anvil::train
