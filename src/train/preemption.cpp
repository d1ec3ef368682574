#include "train/preemption.h"

#include <unistd.h>

#include <csignal>
#include <cstring>

#include "core/error.h"

namespace anvil::train {

namespace {

// Written by the handler, read at step boundaries: the only state a handler may touch.
volatile std::sig_atomic_t g_signal = 0;
bool g_installed = false;
bool g_stopped = false;

extern "C" void preemption_handler(int signo) {
  g_signal = signo;
  // write(2) is async-signal-safe; the logger is not.
  const char* msg = signo == SIGUSR1 ? "anvil: SIGUSR1: checkpoint and stop at the end of this step\n"
                                     : "anvil: SIGTERM: checkpoint and stop at the end of this step\n";
  [[maybe_unused]] const ssize_t n = ::write(STDERR_FILENO, msg, std::strlen(msg));
}

}  // namespace

void preemption_install() {
  if (g_installed) return;
  struct sigaction sa = {};
  sa.sa_handler = preemption_handler;
  sigemptyset(&sa.sa_mask);
  // Interrupted reads and writes (a checkpoint being written) resume instead of failing.
  sa.sa_flags = SA_RESTART;
  for (const int signo : {SIGUSR1, SIGTERM})
    ANVIL_CHECK(sigaction(signo, &sa, nullptr) == 0, "sigaction(", signo, ") failed");
  g_installed = true;
}

bool preemption_requested() { return g_signal != 0; }

bool preemption_agreed(comm::Comm& world) {
  float flag = preemption_requested() ? 1.0f : 0.0f;
  world.allreduce_max(&flag, 1);
  return flag > 0.0f;
}

void preemption_note_stopped() { g_stopped = true; }

bool preemption_stopped() { return g_stopped; }

}  // namespace anvil::train
