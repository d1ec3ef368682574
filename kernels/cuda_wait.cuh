// cuda_stream_wait: a host wait for a stream's queued work, bounded by the collective
// watchdog's deadline (core/device_wait.h) instead of cudaStreamSynchronize's forever. Used by
// every host wait of the CUDA backend and the NCCL communicator. Compiled, never run (no GPU
// here).
#pragma once

#include <cuda_runtime.h>

#include "core/device_wait.h"
#include "cuda_check.cuh"

namespace anvil {

// Everything queued on `stream` before the call has run on return; `what` names the wait
// in the watchdog's message if the deadline passes first.
inline void cuda_stream_wait(cudaStream_t stream, const char* what) {
  cudaEvent_t done = nullptr;
  CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
  cudaError_t status = cudaEventRecord(done, stream);
  if (status == cudaSuccess) {
    device_wait(
        [&] {
          status = cudaEventQuery(done);
          return status != cudaErrorNotReady;
        },
        what);
  }
  (void)cudaEventDestroy(done);
  CUDA_CHECK(status);
}

}  // namespace anvil
