#include "comm/watchdog.h"

#include <mpi.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>

#include "comm/comm.h"
#include "comm/mpi_session.h"
#include "core/device_wait.h"
#include "core/error.h"

namespace anvil::comm {
namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::atomic<double> g_busy_seconds{0.0};
// The collective in progress on this process's one communicating thread: its start
// (0: none), and "<op> on the <comm> group", a copy (the communicator may be gone when it is
// read). It stays after the collective ends: the last one enqueued, which a device wait past
// its deadline is most likely stuck behind.
std::atomic<double> g_started{0.0};
std::mutex g_last_mu;
std::string g_last = "a collective on the ? group";
// The setting that armed the watchdog (for messages from device waits).
std::atomic<const char*> g_setting{"parallel.collective_timeout_s"};

// The registered asynchronous communicators, by id.
std::mutex g_async_mu;
std::map<int, AsyncComm> g_async;
int g_async_next = 0;

std::string host_name() {
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  return host;
}

std::string last_collective() {
  std::lock_guard<std::mutex> lock(g_last_mu);
  return g_last;
}

// Ends the job from this rank: every asynchronous communicator aborted first (so that no
// thread stays blocked in it), then the message, then MPI_Abort.
[[noreturn]] void job_end(const std::string& message) {
  {
    std::lock_guard<std::mutex> lock(g_async_mu);
    for (auto& [id, c] : g_async) c.abort();
  }
  std::fprintf(stderr, "%serror: %s; ending the job (host %s)\n", rank_prefix().c_str(), message.c_str(),
               host_name().c_str());
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 3);
  std::abort();  // MPI_Abort does not return; the compiler does not know that
}

// A host wait on the device that passed the watchdog's limit (core/device_wait.h).
void device_wait_expired(const char* what, double waited_s) {
  job_end(str_cat(what, " has waited on the device for ", static_cast<int>(waited_s),
                  " s: a collective queued before it cannot finish (the last one enqueued: ", last_collective(),
                  "); a rank has stopped or hangs (", g_setting.load(), ")"));
}

// The first failure any registered communicator reports; empty: none.
std::string async_failure() {
  std::lock_guard<std::mutex> lock(g_async_mu);
  for (auto& [id, c] : g_async)
    if (std::string m = c.poll(); !m.empty()) return m;
  return {};
}

class Watchdog {
 public:
  Watchdog(double timeout_s, const char* setting)
      : timeout_(timeout_s), setting_(setting), thread_([this] { run(); }) {}
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
      if (const std::string failed = async_failure(); !failed.empty())
        job_end(str_cat(failed, " (the last collective enqueued: ", last_collective(), ")"));
      const double started = g_started.load();
      if (started == 0 || now_s() - started < timeout_) continue;
      char waited[32];
      std::snprintf(waited, sizeof waited, "%.0f", now_s() - started);
      job_end(str_cat(last_collective(), " has not finished after ", waited, " s: a rank has stopped or hangs (",
                      setting_, ")"));
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
  {
    std::lock_guard<std::mutex> lock(g_last_mu);
    g_last.assign(op).append(" on the ").append(comm).append(" group");
  }
  g_started.store(t0_);
}

CollectiveScope::~CollectiveScope() {
  g_started.store(0.0);
  g_busy_seconds.fetch_add(now_s() - t0_, std::memory_order_relaxed);
}

int async_comm_register(AsyncComm comm) {
  std::lock_guard<std::mutex> lock(g_async_mu);
  g_async.emplace(g_async_next, std::move(comm));
  return g_async_next++;
}

void async_comm_unregister(int id) {
  std::lock_guard<std::mutex> lock(g_async_mu);
  g_async.erase(id);
}

void collective_watchdog(double timeout_s, const char* setting) {
  g_watchdog.reset();
  device_wait_limit_set(0, nullptr);
  if (timeout_s <= 0) return;
  g_setting.store(setting);
  g_watchdog = std::make_unique<Watchdog>(timeout_s, setting);
  device_wait_limit_set(timeout_s, &device_wait_expired);
}

double comm_busy_seconds() { return g_busy_seconds.load(std::memory_order_relaxed); }

}  // namespace anvil::comm
