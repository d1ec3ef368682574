// A routing in host vectors (the CPU backend's memory) and its copy in device memory, for
// the MoE and Llama 4 kernel tests (test_moe.cpp, test_llama4.cpp).
#pragma once

#include <cstdint>
#include <vector>

#include "backend/backend.h"
#include "gpu_dev.h"
#include "moe.cuh"

namespace anvil::test {

using i64 = std::int64_t;

struct HostRoute {
  std::vector<float> probs, weight;
  std::vector<std::int32_t> expert, row, token;
  std::vector<std::int64_t> offsets;
  HostRoute(i64 n, i64 E, i64 k)
      : probs(static_cast<std::size_t>(n * E)), weight(static_cast<std::size_t>(n * k)),
        expert(static_cast<std::size_t>(n * k)), row(static_cast<std::size_t>(n * k)),
        token(static_cast<std::size_t>(n * k)), offsets(static_cast<std::size_t>(E + 1)) {}
  backend::MoeRoute view() {
    return {probs.data(), expert.data(), weight.data(), row.data(), token.data(), offsets.data()};
  }
};

// The same routing in device memory (poisoned, or a copy of a host routing).
struct DevRoute {
  Dev<float> probs, weight;
  Dev<std::int32_t> expert, row, token;
  Dev<std::int64_t> offsets;
  explicit DevRoute(const HostRoute& h)
      : probs(h.probs), weight(h.weight), expert(h.expert), row(h.row), token(h.token), offsets(h.offsets) {}
  void poison() {
    probs.poison();
    weight.poison();
    expert.poison();
    row.poison();
    token.poison();
    offsets.poison();
  }
  kernels::MoeRouteBuffers view() const {
    return {probs.get(), expert.get(), weight.get(), row.get(), token.get(), offsets.get()};
  }
};

}  // namespace anvil::test
