// Rank 1 fails while rank 0 waits in a barrier that rank 1 will never reach. The error
// path is the same as anvil's main(): comm::exit_after_error.
#include <mpi.h>

#include <cstdio>
#include <exception>

#include "comm/mpi_session.h"
#include "core/error.h"

int main() {
  try {
    anvil::comm::MpiSession session;
    if (session.world_rank() == 1) anvil::throw_user_error("rank 1 fails on purpose");
    MPI_Barrier(MPI_COMM_WORLD);  // rank 0 would hang here forever without the abort
    return 0;
  } catch (const std::exception& e) {
    return anvil::comm::exit_after_error(e);
  }
}
