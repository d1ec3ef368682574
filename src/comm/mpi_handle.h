// The MPI communicator under a Comm, for the libraries that take one themselves (parallel
// HDF5 opens its files over it): the checkpoint reaches MPI through the ProcessGrid's
// groups, never through MPI_COMM_WORLD behind their back.
#pragma once

#include <mpi.h>

#include "comm/comm.h"

namespace anvil::comm {

// An MpiComm's own communicator; MPI_COMM_SELF for any other group of one rank (MPI must be
// up to use it); an internal error for another Comm of several ranks (device collectives).
MPI_Comm mpi_handle(const Comm& comm);

}  // namespace anvil::comm
