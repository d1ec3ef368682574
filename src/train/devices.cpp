#include "train/devices.h"

#include "core/error.h"
#include "core/log.h"

#if ANVIL_WITH_CUDA
#include "backend/cuda/cuda_backend.h"
#include "comm/nccl_comm.h"
#endif

namespace anvil::train {

namespace {

// Device buffers copied through host memory by the backend that owns them.
class BackendStaging final : public comm::DeviceStaging {
 public:
  explicit BackendStaging(backend::Backend& be) : be_(be) {}
  void to_host(void* host, const void* device, std::size_t bytes) override { be_.copy_to_host(host, device, bytes); }
  void to_device(void* device, const void* host, std::size_t bytes) override {
    be_.copy_from_host(device, host, bytes);
  }

 private:
  backend::Backend& be_;
};

}  // namespace

BackendKind backend_resolve(BackendKind requested) {
  const int devices = backend::cuda_device_count();
  if (requested == BackendKind::backend_auto)
    return devices > 0 ? BackendKind::backend_cuda : BackendKind::backend_cpu;
  if (requested == BackendKind::backend_cuda && devices == 0)
    throw_user_error("parallel.backend: cuda, but ",
#if ANVIL_WITH_CUDA
                     "no CUDA device is visible to this process (check CUDA_VISIBLE_DEVICES, the driver "
                     "and the Slurm --gpus request)",
#else
                     "this anvil was built without CUDA (nvcc was not found at build time)",
#endif
                     "; use parallel.backend: cpu or auto");
  return requested;
}

CommKind comm_resolve(CommKind requested, BackendKind backend, int local_size, int devices) {
  if (backend == BackendKind::backend_cpu) {
    ANVIL_CHECK_INPUT(requested != CommKind::comm_nccl, "parallel.comm: nccl needs GPUs, but parallel.backend is cpu");
    return CommKind::comm_mpi;
  }
  const bool shared_gpu = devices > 0 && local_size > devices;
  if (requested == CommKind::comm_auto) return shared_gpu ? CommKind::comm_mpi : CommKind::comm_nccl;
  ANVIL_CHECK_INPUT(!(requested == CommKind::comm_nccl && shared_gpu), "parallel.comm: nccl, but ", local_size,
                    " ranks on this node share ", devices,
                    " GPU(s), and NCCL needs one GPU per rank; use parallel.comm: mpi (or auto)");
  return requested;
}

RankDevices rank_devices_create(const TrainConfig& cfg, const comm::ProcessGrid& grid, int local_rank,
                                int local_size) {
  RankDevices d;
  const BackendKind kind = backend_resolve(cfg.parallel.backend);
  const int devices = backend::cuda_device_count();
  const CommKind comm = comm_resolve(cfg.parallel.comm, kind, local_size, devices);
  if (kind == BackendKind::backend_cpu) {
    d.backend = backend::make_cpu_backend();
    d.tp = &grid.tp();
    d.dp = &grid.dp();
    d.description = "cpu";
    return d;
  }
  const int device = local_rank % devices;
  d.backend = backend::make_cuda_backend(device);
  d.description = str_cat("cuda device ", device, ", ", comm == CommKind::comm_nccl ? "nccl" : "mpi (host-staged)");
  if (comm == CommKind::comm_mpi) {
    d.staging = std::make_unique<BackendStaging>(*d.backend);
    d.tp_owned = comm::staged_comm(grid.tp(), *d.staging);
    d.dp_owned = comm::staged_comm(grid.dp(), *d.staging);
  } else {
#if ANVIL_WITH_CUDA
    const cudaStream_t stream = static_cast<backend::CudaBackend&>(*d.backend).stream();
    d.tp_owned = comm::nccl_comm_create(grid.tp(), stream, "tp");
    d.dp_owned = comm::nccl_comm_create(grid.dp(), stream, "dp");
#endif
  }
  d.tp = d.tp_owned.get();
  d.dp = d.dp_owned.get();
  return d;
}

}  // namespace anvil::train
