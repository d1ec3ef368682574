#include "comm/mpi_session.h"

#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <exception>

#include "comm/mpi_check.h"
#include "comm/watchdog.h"
#include "core/error.h"
#include "core/log.h"

namespace anvil::comm {

namespace {

// True when a launcher (mpirun or mpiexec, srun, prterun) started this process and holds its
// place among the ranks; otherwise MPI_Init makes it a singleton, a world of one.
bool started_by_a_launcher() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", "PMI_FD"})
    if (std::getenv(name) != nullptr) return true;
  return false;
}

}  // namespace

void mpi_singleton_settings() {
  if (started_by_a_launcher()) return;
  setenv("OMPI_MCA_pml", "ob1", 0);
}

MpiSession::MpiSession() {
  if (!mpi_is_up()) {
    mpi_singleton_settings();
    // The collective watchdog (watchdog.h) calls MPI_Abort from its own thread while the
    // main thread may sit in a collective: only MPI_THREAD_MULTIPLE allows that.
    int provided = 0;
    mpi_check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided), "MPI_Init_thread");
    if (provided < MPI_THREAD_MULTIPLE)
      log_warn("this MPI provides thread level ", provided, " < MPI_THREAD_MULTIPLE: the "
               "collective watchdog's abort from its own thread is outside what it promises");
  }
  // Errors come back as codes (and become anvil::Error) instead of killing the process
  // with MPI's own message.
  mpi_check(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
  mpi_check(MPI_Comm_rank(MPI_COMM_WORLD, &world_rank_), "MPI_Comm_rank");
  mpi_check(MPI_Comm_size(MPI_COMM_WORLD, &world_size_), "MPI_Comm_size");
  MPI_Comm node = MPI_COMM_NULL;
  mpi_check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, world_rank_,
                                MPI_INFO_NULL, &node),
            "MPI_Comm_split_type");
  mpi_check(MPI_Comm_rank(node, &local_rank_), "MPI_Comm_rank");
  mpi_check(MPI_Comm_size(node, &local_size_), "MPI_Comm_size");
  mpi_check(MPI_Comm_free(&node), "MPI_Comm_free");
  log_set_rank(world_rank_, world_size_);
}

MpiSession::~MpiSession() {
  // Unwinding from an error: finalizing now would wait for ranks that may never arrive.
  if (std::uncaught_exceptions() > 0) return;
  collective_watchdog(0);
  if (mpi_is_up()) MPI_Finalize();
}

void abort_job_if_distributed(int exit_code) {
  if (!mpi_is_up()) return;
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size > 1) {
    std::fflush(stdout);
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, exit_code);
  }
  // Alone, the process ends here, skipping MPI_Finalize and the exit handlers: both would
  // shut HDF5 down, which crashes on a file whose writes failed (a full disk during a
  // checkpoint), and nothing is owed to other ranks.
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(exit_code);
}

int exit_after_error(const std::exception& e) {
  std::fprintf(stderr, "%serror: %s\n", rank_prefix().c_str(), error_message(e).c_str());
  std::fflush(stderr);
  const int code = error_exit_code(e);
  abort_job_if_distributed(code);
  return code;
}

bool mpi_running() { return mpi_is_up(); }

std::string rank_prefix() {
  if (!mpi_is_up()) return "";
  int size = 1, rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return size > 1 ? str_cat("[rank ", rank, "] ") : std::string();
}

}  // namespace anvil::comm
