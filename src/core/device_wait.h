// Host waits on a device, with a deadline. A host that waits on a GPU (a loss copied back, a
// stream synchronised) waits as long as the GPU's queue takes; when a collective in that
// queue waits on a dead or stopped peer, that is forever. So such waits poll a completion
// query (cudaEventQuery) instead of blocking, and give up at a deadline: the collective
// watchdog (comm/watchdog.h), while armed, installs its limit and what to do then (abort the
// communicators, say which wait and which collective, MPI_Abort).
#pragma once

#include <functional>

namespace anvil {

// Calls `done` until it returns true (then true) or until `timeout_s` seconds have passed
// (then false); timeout_s <= 0: no deadline. Between calls it yields at first, then sleeps
// briefly, so that a short wait costs microseconds and a long one little CPU.
bool poll_until(const std::function<bool()>& done, double timeout_s);

// What a device wait does when its deadline passes: `what` is the wait ("copy_to_host"),
// `waited_s` how long it waited. The watchdog's handler does not return; a handler that
// returns makes device_wait throw an internal error.
using DeviceWaitExpired = void (*)(const char* what, double waited_s);

// The deadline of every device_wait from now on (timeout_s <= 0: none) and its handler.
void device_wait_limit_set(double timeout_s, DeviceWaitExpired on_expired);

// Polls `done` under the installed limit (none: until it is done).
void device_wait(const std::function<bool()>& done, const char* what);

}  // namespace anvil
