// NcclComm: the Comm collectives on device buffers over NCCL, one rank per GPU. Built only
// with CUDA (target anvil_comm_nccl); anvil_comm itself stays CUDA-free.
//
// Every collective is enqueued on the stream given at creation and returns without waiting
// for it, so it is ordered with the compute work on that stream (or, through events, with
// another stream) and the host never blocks. barrier() is the exception: it waits until
// every earlier collective of this rank has finished. A buffer may be reused by the host
// only after the stream has reached the collective.
#pragma once

#include <cuda_runtime.h>

#include <memory>
#include <string>

#include "comm/comm.h"

namespace anvil::comm {

// The NcclComm of the ranks of `bootstrap`, a host Comm of the same group (an MpiComm: its
// rank 0 makes the NCCL id and broadcasts it), on this rank's current CUDA device. Two
// ranks of one group on the same GPU are refused by NCCL; such ranks use staged_comm over
// MpiComm instead. Collective over `bootstrap`; the result does not need it afterwards.
// split() children use the same stream.
std::unique_ptr<Comm> nccl_comm_create(Comm& bootstrap, cudaStream_t stream, std::string name);

// A DeviceStaging for staged_comm on a CUDA rank: cudaMemcpyAsync on `stream` (ordered
// after the compute that produced the data), then a wait for that stream.
std::unique_ptr<DeviceStaging> cuda_device_staging(cudaStream_t stream);

}  // namespace anvil::comm
