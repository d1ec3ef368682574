// A stand-in for device memory in CPU tests of the device paths (GroupComm, staged
// Comms): one host block that the test calls "device", and a DeviceStaging that copies
// with memcpy and counts the copies.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "comm/comm.h"

namespace anvil::test {

struct FakeDevice final : comm::DeviceStaging {
  std::vector<float> memory = std::vector<float>(64);
  int staged = 0;  // copies either way

  // Whether p points into `memory` (the GroupComm's IsDeviceMemory).
  bool holds(const void* p) const {
    const auto a = reinterpret_cast<std::uintptr_t>(p);
    const auto lo = reinterpret_cast<std::uintptr_t>(memory.data());
    return a >= lo && a < lo + memory.size() * sizeof(float);
  }
  void to_host(void* host, const void* device, std::size_t bytes) override {
    std::memcpy(host, device, bytes);
    ++staged;
  }
  void to_device(void* device, const void* host, std::size_t bytes) override {
    std::memcpy(device, host, bytes);
    ++staged;
  }
};

}  // namespace anvil::test
