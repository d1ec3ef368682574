// The MPI session of one anvil process: init/finalize, world and node-local ranks, and the
// job-wide abort that keeps a failing rank from leaving the others hanging.
#pragma once

#include <exception>
#include <string>

namespace anvil::comm {

// Initialises MPI for the lifetime of the object (works under mpirun, srun, or alone as a
// singleton) and tells the logger which rank this is. On normal destruction it finalizes
// MPI; when destroyed by an exception it leaves MPI up so that main() can abort the job.
class MpiSession {
 public:
  MpiSession();
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

  int world_rank() const { return world_rank_; }
  int world_size() const { return world_size_; }
  // Rank among the processes on this node (MPI_COMM_TYPE_SHARED): picks the GPU.
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }

 private:
  int world_rank_ = 0;
  int world_size_ = 1;
  int local_rank_ = 0;
  int local_size_ = 1;
};

// Before MPI_Init in a process that no launcher started (no mpirun, srun or prterun
// environment): an Open MPI singleton lets every point-to-point layer probe its network
// libraries, most of its 0.28 s MPI_Init on the 2-core VM (more than a GGUF export of a 135M
// model spends quantizing). A world of one sends nothing: this asks for the ob1 layer, 0.08 s,
// unless the environment already chose (it never overrides a variable that is set). Other
// MPI implementations ignore it. Not Open MPI's isolated singleton (no orted, 0.03 s): every
// isolated singleton shares one session directory, and one that finalizes removes files that
// another one's MPI-IO still uses (seen in CI: two exports of one checkpoint at once).
// MpiSession calls it.
void mpi_singleton_settings();

// Called by main() after an error: with more than one rank, MPI_Abort(exit_code) ends
// every rank of the job at once; with one rank it ends the process with exit_code, without
// MPI_Finalize or exit handlers (they would close files that the error left broken).
// Returns only when MPI is not up.
void abort_job_if_distributed(int exit_code);

// The end of every anvil program's main() after an error: prints "[rank N] error: ..." to
// stderr, aborts the job when it has more than one rank, and returns the exit code (2 for
// user errors, 1 for internal ones) for main to return when it is alone.
int exit_after_error(const std::exception& e);

// Whether MPI is initialised and not finalized (an MpiSession is alive).
bool mpi_running();

// "[rank 3] " when MPI runs with more than one rank, "" otherwise.
std::string rank_prefix();

}  // namespace anvil::comm
