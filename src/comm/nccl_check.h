// NCCL_CHECK: the NCCL member of anvil's check-macro family (see core/error.h). Private to
// src/comm/ (and its tests): callers see Comm, never <nccl.h>.
#pragma once

#include <nccl.h>

#include <string>
#include <string_view>

#include "core/error.h"

namespace anvil::comm {

// An NCCL failure is never the user's input (arguments are checked before the call): it is
// internal, and carries NCCL's code string and its last-error text, which names the cause
// (a transport, a peer, a CUDA error) where the code alone says "unhandled system error".
[[noreturn]] inline void nccl_fail(ncclResult_t rc, const char* expr, const char* file, int line,
                                   std::string_view comm_name = {}) {
  const char* last = ncclGetLastError(nullptr);
  const std::string detail =
      str_cat(ncclGetErrorString(rc), last && *last ? str_cat(" (", last, ")") : std::string());
  if (comm_name.empty()) throw_internal_error(file, line, expr, " failed: ", detail);
  throw_internal_error(file, line, expr, " on comm '", comm_name, "' failed: ", detail);
}

}  // namespace anvil::comm

// NCCL_CHECK(call) or NCCL_CHECK(call, comm_name): the name goes into the message.
#define NCCL_CHECK(expr, ...)                                                            \
  do {                                                                                   \
    const ncclResult_t anvil_nccl_status_ = (expr);                                      \
    if (anvil_nccl_status_ != ncclSuccess)                                               \
      ::anvil::comm::nccl_fail(anvil_nccl_status_, #expr, __FILE__,                      \
                               __LINE__ __VA_OPT__(, ) __VA_ARGS__);                    \
  } while (0)
