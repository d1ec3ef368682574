// The main() of every MPI GoogleTest executable (anvil_mpi_gtest in CMakeLists.txt).
//
// Every rank runs every test. Rank 0 prints GoogleTest's usual report; the other ranks
// print only their failures, each line prefixed "[rank N]", so that a failure on any rank
// shows without N copies of the report. The exit code is combined over the ranks: if any
// rank failed, every rank returns 1, so mpiexec (and CTest) sees the failure no matter
// which rank's code it reports.
//
// A test must keep the ranks in step: every collective is reached by every rank, so use
// EXPECT_* (not an ASSERT_* that returns early) before a collective call. A rank that
// leaves a collective unmatched hangs the job until the CTest TIMEOUT.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>
#include <exception>
#include <sstream>
#include <string>

#include "comm/mpi_session.h"
#include "core/error.h"

namespace {

// The failures of a rank other than 0, with its rank in front of every line.
class RankFailurePrinter : public testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}

  void OnTestPartResult(const testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::printf("[rank %d] %s:%d: Failure\n", rank_,
                result.file_name() ? result.file_name() : "unknown", result.line_number());
    // One prefix per line: mpiexec interleaves the ranks' output line by line.
    std::istringstream message(result.message());
    for (std::string line; std::getline(message, line);) {
      std::printf("[rank %d] %s\n", rank_, line.c_str());
    }
    std::fflush(stdout);
  }

  void OnTestEnd(const testing::TestInfo& info) override {
    if (!info.result()->Failed()) return;
    std::printf("[rank %d] [  FAILED  ] %s.%s\n", rank_, info.test_suite_name(), info.name());
    std::fflush(stdout);
  }

 private:
  int rank_;
};

}  // namespace

int main(int argc, char** argv) {
  try {
    anvil::comm::MpiSession session;
    testing::InitGoogleTest(&argc, argv);
    if (session.world_rank() != 0) {
      testing::TestEventListeners& listeners = testing::UnitTest::GetInstance()->listeners();
      delete listeners.Release(listeners.default_result_printer());
      listeners.Append(new RankFailurePrinter(session.world_rank()));
    }
    int failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
    const int local_failed = failed;
    if (MPI_Allreduce(MPI_IN_PLACE, &failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD) !=
        MPI_SUCCESS) {
      failed = 1;
    }
    if (session.world_rank() == 0 && failed && !local_failed) {
      std::printf("[  FAILED  ] rank 0 passed, but another rank failed (see [rank N] lines)\n");
    }
    std::fflush(stdout);
    return failed;
  } catch (const std::exception& e) {
    // Outside any test (MPI init, the final reduction): same path as anvil's main().
    return anvil::comm::exit_after_error(e);
  }
}
