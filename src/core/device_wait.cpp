#include "core/device_wait.h"

#include <atomic>
#include <chrono>
#include <thread>

#include "core/error.h"

namespace anvil {

namespace {

std::atomic<double> g_limit_s{0.0};
std::atomic<DeviceWaitExpired> g_on_expired{nullptr};

}  // namespace

bool poll_until(const std::function<bool()>& done, double timeout_s) {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  // A step's loss is usually ready within microseconds of the query: yield for the first
  // polls, then sleep 50 us between them (a long wait then costs a few percent of a core).
  constexpr int kYieldPolls = 1000;
  for (int polls = 0;; ++polls) {
    if (done()) return true;
    if (timeout_s > 0 && std::chrono::duration<double>(Clock::now() - t0).count() >= timeout_s) return false;
    if (polls < kYieldPolls) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
}

void device_wait_limit_set(double timeout_s, DeviceWaitExpired on_expired) {
  g_on_expired.store(on_expired);
  g_limit_s.store(timeout_s > 0 && on_expired ? timeout_s : 0.0);
}

void device_wait(const std::function<bool()>& done, const char* what) {
  const double limit = g_limit_s.load();
  if (poll_until(done, limit)) return;
  if (const DeviceWaitExpired on_expired = g_on_expired.load()) on_expired(what, limit);
  ANVIL_CHECK(false, what, ": the device has not finished after ", limit, " s");
}

}  // namespace anvil
