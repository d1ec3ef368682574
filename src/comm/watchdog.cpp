#include "comm/watchdog.h"

#include <mpi.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <memory>
#include <mutex>
#include <thread>

#include "comm/comm.h"
#include "comm/mpi_session.h"

namespace anvil::comm {
namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::atomic<double> g_busy_seconds{0.0};
// The collective in progress on this process's one communicating thread: its start
// (0: none), name and communicator.
std::atomic<double> g_started{0.0};
std::atomic<const char*> g_op{nullptr};
std::atomic<const std::string*> g_comm{nullptr};

class Watchdog {
 public:
  Watchdog(double timeout_s, const char* setting) : timeout_(timeout_s), setting_(setting), thread_([this] { run(); }) {}
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

 private:
  void run() {
    std::unique_lock<std::mutex> lock(mu_);
    const auto tick = std::chrono::duration<double>(timeout_ < 4 ? timeout_ / 4 : 1.0);
    while (!cv_.wait_for(lock, tick, [this] { return stop_; })) {
      const double started = g_started.load();
      if (started == 0 || now_s() - started < timeout_) continue;
      const char* op = g_op.load();
      const std::string* comm = g_comm.load();
      std::fprintf(stderr,
                   "%serror: %s on the %s group has not finished after %.0f s: a rank has stopped or hangs "
                   "(%s); ending the job\n",
                   rank_prefix().c_str(), op ? op : "a collective", comm ? comm->c_str() : "?", now_s() - started,
                   setting_);
      std::fflush(stderr);
      MPI_Abort(MPI_COMM_WORLD, 3);
    }
  }

  double timeout_;
  const char* setting_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

std::unique_ptr<Watchdog> g_watchdog;

}  // namespace

CollectiveScope::CollectiveScope(const char* op, const std::string& comm) : t0_(now_s()) {
  g_op.store(op);
  g_comm.store(&comm);
  g_started.store(t0_);
}

CollectiveScope::~CollectiveScope() {
  g_started.store(0.0);
  g_busy_seconds.fetch_add(now_s() - t0_, std::memory_order_relaxed);
}

void collective_watchdog(double timeout_s, const char* setting) {
  g_watchdog.reset();
  if (timeout_s > 0) g_watchdog = std::make_unique<Watchdog>(timeout_s, setting);
}

double comm_busy_seconds() { return g_busy_seconds.load(std::memory_order_relaxed); }

}  // namespace anvil::comm
