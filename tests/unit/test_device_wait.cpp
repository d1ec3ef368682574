// core/device_wait.h: the deadline logic of the host's waits on the device, with a stand-in
// completion query (the CUDA side, cuda_stream_wait's cudaEventQuery, never ran here).
#include <gtest/gtest.h>

#include <chrono>
#include <stdexcept>
#include <string>

#include "core/device_wait.h"
#include "core/error.h"

namespace anvil {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

TEST(PollUntil, ReturnsOnceTheQueryIsDoneAskingNoMoreThanNeeded) {
  int calls = 0;
  EXPECT_TRUE(poll_until([&] { return ++calls == 3; }, 10.0));
  EXPECT_EQ(calls, 3);
  calls = 0;
  EXPECT_TRUE(poll_until([&] { return ++calls == 2000; }, 0));  // no deadline; past the yields
  EXPECT_EQ(calls, 2000);
}

TEST(PollUntil, GivesUpAtTheDeadlineNotBeforeAndNotMuchAfter) {
  const auto t0 = std::chrono::steady_clock::now();
  int calls = 0;
  EXPECT_FALSE(poll_until([&] { return ++calls < 0; }, 0.2));
  const double waited = seconds_since(t0);
  EXPECT_GE(waited, 0.2);
  EXPECT_LT(waited, 2.0);
  EXPECT_GT(calls, 1);
}

// The handler the watchdog installs does not return (MPI_Abort); this one throws so that
// the test sees what it was told.
std::string g_seen;
void expired_throws(const char* what, double waited_s) {
  g_seen = std::string(what) + " after " + std::to_string(static_cast<int>(waited_s * 10));
  throw std::runtime_error(g_seen);
}
void expired_returns(const char*, double) {}

TEST(DeviceWait, CallsTheInstalledHandlerAtTheDeadlineNamingTheWait) {
  device_wait_limit_set(0.1, &expired_throws);
  EXPECT_THROW(device_wait([] { return false; }, "copy_to_host"), std::runtime_error);
  EXPECT_EQ(g_seen, "copy_to_host after 1");
  int calls = 0;
  EXPECT_NO_THROW(device_wait([&] { return ++calls == 5; }, "synchronize"));  // done in time
  // A handler that returns does not let the wait pass as if it were done.
  device_wait_limit_set(0.05, &expired_returns);
  try {
    device_wait([] { return false; }, "barrier");
    ADD_FAILURE() << "an expired wait returned";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("barrier: the device has not finished after"), std::string::npos) << e.what();
  }
}

TEST(DeviceWait, WithoutALimitWaitsUntilDone) {
  device_wait_limit_set(0, &expired_throws);  // disarmed: no deadline, whatever the handler
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_NO_THROW(device_wait([&] { return seconds_since(t0) > 0.3; }, "copy_to_host"));
  EXPECT_GE(seconds_since(t0), 0.3);
}

}  // namespace
}  // namespace anvil
