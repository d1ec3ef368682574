// The preemption flag: SIGUSR1/SIGTERM only set it (the process lives on), and the ranks'
// agreement is a max over the flag. CTest runs each case in its own process, so each
// starts with the flag clear and the default signal actions.
#include <gtest/gtest.h>

#include <csignal>

#include "comm/comm.h"
#include "train/preemption.h"

namespace anvil::train {
namespace {

TEST(Preemption, ClearUntilASignalArrives) {
  preemption_install();
  const auto self = comm::self_comm("self");
  EXPECT_FALSE(preemption_requested());
  EXPECT_FALSE(preemption_agreed(*self));
  EXPECT_FALSE(preemption_stopped());
}

TEST(Preemption, SigusrOneSetsTheFlagAndTheProcessLivesOn) {
  preemption_install();
  preemption_install();  // a second call changes nothing
  ASSERT_EQ(std::raise(SIGUSR1), 0);
  EXPECT_TRUE(preemption_requested());
  EXPECT_TRUE(preemption_agreed(*comm::self_comm("self")));
  ASSERT_EQ(std::raise(SIGUSR1), 0);  // as during a checkpoint save: still only the flag
  EXPECT_TRUE(preemption_requested());
}

TEST(Preemption, SigtermSetsTheFlagAndTheProcessLivesOn) {
  preemption_install();
  ASSERT_EQ(std::raise(SIGTERM), 0);
  EXPECT_TRUE(preemption_requested());
}

TEST(Preemption, StoppedIsWhatMainTurnsIntoExitCode75) {
  EXPECT_EQ(exit_preempted, 75);
  EXPECT_FALSE(preemption_stopped());
  preemption_note_stopped();
  EXPECT_TRUE(preemption_stopped());
}

}  // namespace
}  // namespace anvil::train
