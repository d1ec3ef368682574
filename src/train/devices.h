// Where one rank computes and how it talks on that memory: the Backend from
// parallel.backend and the communicators for backend (device) buffers from parallel.comm.
// Host-side collectives (losses, metrics, the preemption flag) stay on the ProcessGrid's
// MPI communicators.
#pragma once

#include <memory>
#include <string>

#include "backend/backend.h"
#include "comm/comm.h"
#include "comm/process_grid.h"
#include "train/config.h"

namespace anvil::train {

struct RankDevices {
  std::unique_ptr<backend::Backend> backend;
  // Collectives on backend memory: the grid's own MPI communicators on the CPU backend,
  // NCCL ones or MPI staged through host memory on a GPU.
  comm::Comm* tp = nullptr;
  comm::Comm* dp = nullptr;
  std::string description;  // "cpu" or "cuda device 1 (NVIDIA H200), nccl"

  std::unique_ptr<comm::DeviceStaging> staging;
  std::unique_ptr<comm::Comm> tp_owned, dp_owned;
};

// The backend kind `requested` resolves to on this machine: auto = cuda when this build has
// CUDA and a device is visible; cuda without either is a user error naming parallel.backend.
BackendKind backend_resolve(BackendKind requested);
// The communicator kind for `backend`: auto = nccl on cuda unless several ranks of this node
// share one GPU (NCCL refuses that; MPI staged through the host works), mpi on cpu.
CommKind comm_resolve(CommKind requested, BackendKind backend, int local_size, int devices);

// Collective over the grid's world (NCCL's bootstrap broadcasts over MPI). The rank takes GPU
// local_rank % devices.
RankDevices rank_devices_create(const TrainConfig& cfg, const comm::ProcessGrid& grid, int local_rank,
                                int local_size);

}  // namespace anvil::train
