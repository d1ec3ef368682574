// ANVIL_FAULT_INJECT=RANK:STEP[:save] makes world rank RANK fail on purpose, for the tests
// that a failing rank ends the whole job and that a crash never costs the last complete
// checkpoint: without ":save" it throws in the middle of step STEP (after its first
// micro-batch, while the other ranks go on into the step's collectives); with ":save" it
// kills itself (SIGKILL) in the middle of writing step STEP's checkpoint
// (CheckpointContext::kill_during_save). RANK:setup stops that rank (SIGSTOP) just before
// the Runtime's collective set-up, as a node that hangs there would.
#pragma once

#include <cstdint>

namespace anvil::train {

struct FaultInjection {
  std::int64_t step = 0;  // 0: none on this rank
  bool during_save = false;
  bool stall_setup = false;

  // Throws (a user error naming the variable) when this rank is to fail in `step`'s
  // micro-batches.
  void maybe_fail_in_step(std::int64_t current_step) const;
};

// The fault for world rank `world_rank` from the environment; a malformed value is a user
// error.
FaultInjection fault_injection_from_env(int world_rank);

}  // namespace anvil::train
