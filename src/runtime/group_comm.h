// GroupComm: one communicator for one group (tp, dp, world) that takes host scalars and
// backend (device) buffers alike. Each call goes to the host Comm (MpiComm) or the device
// Comm (NcclComm, or MpiComm staged through host memory) by where its buffers live, so
// code above it (the trainer's loss sums, the model's TP collectives) names the group and
// never the memory. On the CPU backend host memory is backend memory and the Runtime uses
// the host Comm directly; GroupComm exists only where the two differ.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "comm/comm.h"

namespace anvil::runtime {

// Whether a pointer is device memory (Backend::is_device_memory).
using IsDeviceMemory = std::function<bool(const void*)>;

// `host` and `device` are Comms over the same ranks in the same order; both must outlive
// the result. A call whose buffers are in different memories is an internal error.
// split() returns a GroupComm that owns both children.
std::unique_ptr<comm::Comm> group_comm(comm::Comm& host, comm::Comm& device, IsDeviceMemory is_device);

}  // namespace anvil::runtime
