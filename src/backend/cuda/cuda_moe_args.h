// What the MoE and Llama 4 launchers (cuda_moe.cpp, cuda_llama4.cpp) hand their kernels: a
// route's device buffers, and counts narrowed to the kernels' int.
#pragma once

#include <climits>
#include <cstdint>

#include "backend/backend.h"
#include "core/error.h"
#include "moe.cuh"

namespace anvil::backend {

inline kernels::MoeRouteBuffers route_buffers(const MoeRoute& r) {
  return {r.probs, r.expert, r.weight, r.row, r.token, r.offsets};
}

// Experts and choices per token as the kernels take them (int).
inline int narrow(std::int64_t v, const char* what) {
  ANVIL_CHECK(v >= 0 && v <= INT_MAX, "MoE: ", what, " = ", v);
  return static_cast<int>(v);
}

}  // namespace anvil::backend
