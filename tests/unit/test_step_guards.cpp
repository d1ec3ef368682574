// The step's guards, each in its own file since the Trainer split: the loss guard
// (train/loss_guard.h: non-finite steps, loss spikes, a new level) and fault injection
// (train/fault_inject.h: ANVIL_FAULT_INJECT parsing).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>

#include "core/error.h"
#include "error_test_util.h"
#include "train/fault_inject.h"
#include "train/loss_guard.h"

namespace anvil::train {
namespace {

using test::contains;
using test::error_of;

constexpr double kNan = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

TEST(LossGuard, NonFiniteStepsStopTheRunUnlessSkipped) {
  LossGuard stop(LossGuardParams{false, 0, 0, false});
  EXPECT_FALSE(stop.check(2.0, 1.0, 1, false).skip);
  Error e = error_of([&] { stop.check(kNan, 1.0, 7, false); });
  EXPECT_EQ(e.kind(), ErrorKind::user);
  EXPECT_TRUE(contains(e, "step 7: the loss is not finite")) << e.what();
  EXPECT_TRUE(contains(e, "train.skip_nonfinite")) << e.what();
  e = error_of([&] { stop.check(2.0, kInf, 8, false); });
  EXPECT_TRUE(contains(e, "step 8: the gradient norm is not finite")) << e.what();

  LossGuard skip(LossGuardParams{true, 0, 0, false});
  const LossVerdict v = skip.check(kNan, 1.0, 3, false);
  EXPECT_TRUE(v.skip);
  EXPECT_FALSE(v.spike);
}

// factor 2 over a window of 4: flagged once the window holds 2 losses; a skipped spike
// stays out of the window; more than 2 spikes in a row are a new level.
TEST(LossGuard, SpikesAreFlaggedSkippedAndANewLevelIsAccepted) {
  LossGuard g(LossGuardParams{false, 2.0, 4, true});
  EXPECT_FALSE(g.check(10.0, 1, 1, false).spike);  // window too short to judge
  EXPECT_FALSE(g.check(1.0, 1, 2, false).spike);
  EXPECT_FALSE(g.check(1.0, 1, 3, false).spike);  // mean 4: 1 is no spike
  const LossVerdict spike = g.check(30.0, 1, 4, false);  // mean of (10, 1, 1) = 4; 30 > 8
  EXPECT_TRUE(spike.spike);
  EXPECT_TRUE(spike.skip);
  EXPECT_TRUE(g.check(40.0, 1, 5, false).spike);  // still judged against (10, 1, 1)
  // The third in a row: a new level; the window restarts with it.
  const LossVerdict level = g.check(50.0, 1, 6, false);
  EXPECT_FALSE(level.spike);
  EXPECT_FALSE(level.skip);
  EXPECT_FALSE(g.check(55.0, 1, 7, false).spike);  // window (50): too short again

  LossGuard log_only(LossGuardParams{false, 2.0, 4, false});
  log_only.check(1.0, 1, 1, false);
  log_only.check(1.0, 1, 2, false);
  const LossVerdict flagged = log_only.check(9.0, 1, 3, false);
  EXPECT_TRUE(flagged.spike);
  EXPECT_FALSE(flagged.skip);  // train.skip_loss_spikes: false only logs it
}

TEST(LossGuard, OffWhenTheFactorIsZero) {
  LossGuard g(LossGuardParams{false, 0, 4, true});
  for (int step = 1; step <= 6; ++step) EXPECT_FALSE(g.check(step == 5 ? 1e6 : 1.0, 1, step, false).spike);
}

TEST(FaultInjection, ParsedForItsRankOnly) {
  ::unsetenv("ANVIL_FAULT_INJECT");
  EXPECT_EQ(fault_injection_from_env(0).step, 0);
  ::setenv("ANVIL_FAULT_INJECT", "1:5", 1);
  EXPECT_EQ(fault_injection_from_env(0).step, 0);  // another rank's
  const FaultInjection step = fault_injection_from_env(1);
  EXPECT_EQ(step.step, 5);
  EXPECT_FALSE(step.during_save);
  step.maybe_fail_in_step(4);
  const Error e = error_of([&] { step.maybe_fail_in_step(5); });
  EXPECT_TRUE(contains(e, "ANVIL_FAULT_INJECT: failing in step 5 on purpose")) << e.what();

  ::setenv("ANVIL_FAULT_INJECT", "0:3:save", 1);
  const FaultInjection save = fault_injection_from_env(0);
  EXPECT_EQ(save.step, 3);
  EXPECT_TRUE(save.during_save);
  save.maybe_fail_in_step(3);  // fails in the save instead (CheckpointContext::kill_during_save)

  ::setenv("ANVIL_FAULT_INJECT", "1:setup", 1);
  EXPECT_FALSE(fault_injection_from_env(0).stall_setup);
  const FaultInjection setup = fault_injection_from_env(1);
  EXPECT_TRUE(setup.stall_setup);
  EXPECT_EQ(setup.step, 0);

  for (const char* bad : {"1", "1:0", "x:2", "0:2:load", "1:setup:2", "1:stall"}) {
    ::setenv("ANVIL_FAULT_INJECT", bad, 1);
    const Error b = error_of([] { fault_injection_from_env(0); });
    EXPECT_EQ(b.kind(), ErrorKind::user) << bad;
    EXPECT_TRUE(contains(b, "expected RANK:STEP, RANK:STEP:save or RANK:setup")) << b.what();
  }
  ::unsetenv("ANVIL_FAULT_INJECT");
}

}  // namespace
}  // namespace anvil::train
