// The collective watchdog: a collective that has not finished after a time limit means a
// rank has stopped or hangs (a stuck kernel, a SIGSTOP, a dead node the transport has not
// noticed). Waiting forever would hold every GPU of the job, so the watchdog ends the job
// with MPI_Abort and an error naming the collective (parallel.collective_timeout_s).
//
// MpiComm marks each collective's start and end (CollectiveScope); the watchdog thread
// looks once a second, and polls the registered NCCL communicators for asynchronous errors.
#pragma once

#include <functional>
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

// A communicator whose failures arrive asynchronously (NCCL): `poll` returns a message
// when it has failed (empty: fine), `abort` tears it down so that nothing waits on it. While
// armed, the watchdog thread polls every registered one each tick; on a failure, a
// collective past its limit or an expired device wait (core/device_wait.h) it aborts them
// all, prints the message naming rank, host, collective and group, and calls MPI_Abort.
// (The NCCL side is compiled, never run: no GPU here.)
struct AsyncComm {
  std::function<std::string()> poll;
  std::function<void()> abort;
};
int async_comm_register(AsyncComm comm);  // an id for async_comm_unregister
void async_comm_unregister(int id);

// Starts the watchdog thread (timeout_s > 0) or stops it (0). Aborting prints
// "[rank R] error: <op> on <comm> has not finished after N s ... (<setting>)" and calls
// MPI_Abort(MPI_COMM_WORLD, 3). `setting` (a string literal) is the config key that set the
// limit: the set-up and the training loop have their own. While armed, the same limit
// bounds every host wait on the device (device_wait_limit_set).
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
