#include "train/fault_inject.h"

#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/error.h"

namespace anvil::train {

void FaultInjection::maybe_fail_in_step(std::int64_t current_step) const {
  if (!during_save && step == current_step)
    throw_user_error("ANVIL_FAULT_INJECT: failing in step ", current_step, " on purpose");
}

FaultInjection fault_injection_from_env(int world_rank) {
  const char* v = std::getenv("ANVIL_FAULT_INJECT");
  if (!v || !*v) return {};
  int rank = -1;
  long long step = -1;
  char where[8] = {0};
  if (std::sscanf(v, "%d:%7s", &rank, where) == 2 && std::string(where) == "setup" &&
      std::string(v).find(':') == std::string(v).rfind(':')) {
    FaultInjection f;
    f.stall_setup = rank == world_rank;
    return f;
  }
  const int n = std::sscanf(v, "%d:%lld:%7s", &rank, &step, where);
  ANVIL_CHECK_INPUT((n == 2 || (n == 3 && std::string(where) == "save")) && step > 0,
                    "ANVIL_FAULT_INJECT: expected RANK:STEP, RANK:STEP:save or RANK:setup, got '", v, "'");
  if (rank != world_rank) return {};
  return {step, n == 3};
}

}  // namespace anvil::train
