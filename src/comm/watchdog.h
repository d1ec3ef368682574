// The collective watchdog: a collective that has not finished after a time limit means a
// rank has stopped or hangs (a stuck kernel, a SIGSTOP, a dead node the transport has not
// noticed). Waiting forever would hold every GPU of the job, so the watchdog ends the job
// with MPI_Abort and an error naming the collective (parallel.collective_timeout_s).
//
// MpiComm marks each collective's start and end (CollectiveScope); the watchdog thread
// looks once a second.
#pragma once

#include <string>

namespace anvil::comm {

// Marks one collective (`op` on communicator `comm`, both outliving the scope) and adds
// its wall time to comm_busy_seconds().
class CollectiveScope {
 public:
  CollectiveScope(const char* op, const std::string& comm);
  ~CollectiveScope();
  CollectiveScope(const CollectiveScope&) = delete;
  CollectiveScope& operator=(const CollectiveScope&) = delete;

 private:
  double t0_;
};

// Starts the watchdog thread (timeout_s > 0) or stops it (0). Aborting prints
// "[rank R] error: <op> on <comm> has not finished after N s ... (<setting>)" and calls
// MPI_Abort(MPI_COMM_WORLD, 3). `setting` (a string literal) is the config key that set the
// limit: the set-up and the training loop have their own.
void collective_watchdog(double timeout_s, const char* setting = "parallel.collective_timeout_s");

// The watchdog armed for a scope (timeout_s 0: not armed), disarmed however it ends.
class WatchdogArmed {
 public:
  WatchdogArmed(double timeout_s, const char* setting) { collective_watchdog(timeout_s, setting); }
  ~WatchdogArmed() { collective_watchdog(0); }
  WatchdogArmed(const WatchdogArmed&) = delete;
  WatchdogArmed& operator=(const WatchdogArmed&) = delete;
};

}  // namespace anvil::comm
