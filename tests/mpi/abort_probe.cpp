// Rank 1 fails while rank 0 waits in a barrier that rank 1 will never reach. The error
// path is the same as anvil's main(): message, then abort_job_if_distributed.
#include <mpi.h>

#include <cstdio>
#include <exception>

#include "comm/runtime.h"
#include "core/error.h"

int main() {
  try {
    anvil::comm::MpiSession session;
    if (session.world_rank() == 1) anvil::throw_user_error("rank 1 fails on purpose");
    MPI_Barrier(MPI_COMM_WORLD);  // rank 0 would hang here forever without the abort
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%serror: %s\n", anvil::comm::rank_prefix().c_str(),
                 anvil::error_message(e).c_str());
    const int code = anvil::error_exit_code(e);
    anvil::comm::abort_job_if_distributed(code);
    return code;
  }
}
