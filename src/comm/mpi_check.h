// mpi_check: the one place an MPI return code becomes an anvil::Error; mpi_is_up. Private to
// src/comm/ (and its tests): nothing outside the comm layer should see <mpi.h>.
#pragma once

#include <mpi.h>

#include <string>
#include <string_view>

#include "core/error.h"

namespace anvil::comm {

// Communicators run with MPI_ERRORS_RETURN, so a failed call comes back here instead of
// killing the process with MPI's own message. An MPI failure is never the user's input
// (that is validated before the call): it is internal, and names the call and the group.
inline void mpi_check(int rc, const char* call, std::string_view comm_name = {}) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) len = 0;
  const std::string detail = len > 0 ? std::string(text, len) : str_cat("MPI error code ", rc);
  if (comm_name.empty()) throw Error(ErrorKind::internal, str_cat(call, " failed: ", detail));
  throw Error(ErrorKind::internal,
              str_cat(call, " on comm '", comm_name, "' failed: ", detail));
}

// Between MPI_Init and MPI_Finalize. Both queries are legal at any time.
inline bool mpi_is_up() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  return initialized && !finalized;
}

}  // namespace anvil::comm
