// Kernel launches and block-shared memory: where host code meets a launch configuration.
// Under the CPU emulation tier (tests/emu, ANVIL_CUDA_EMU defined) the same calls run each
// CUDA thread of a block as a fiber and give every block fresh shared memory filled with
// 0xFF, so kernels use these instead of <<<>>> and raw __shared__ declarations.
#pragma once

#include <cstddef>
#include <utility>
#include <cuda_runtime.h>

#include "cuda_check.cuh"

namespace anvil::kernels {

// kernel<<<grid, block, smem_bytes, stream>>>(args...), then the launch is checked.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t smem_bytes,
            cudaStream_t stream, Args&&... args) {
#ifdef ANVIL_CUDA_EMU
  (void)stream;  // the emulator runs launches in order, at once
  ::anvil::emu::launch(reinterpret_cast<const void*>(kernel), grid, block, smem_bytes,
                       [&] { kernel(args...); });
#else
  kernel<<<grid, block, smem_bytes, stream>>>(std::forward<Args>(args)...);
#endif
  CUDA_CHECK(cudaGetLastError());
}

// The block's dynamic shared memory (the launch's smem_bytes), 16-byte aligned.
template <typename T>
__device__ inline T* dynamic_shared() {
#ifdef ANVIL_CUDA_EMU
  return static_cast<T*>(::anvil::emu::dynamic_shared_memory());
#else
  extern __shared__ __align__(16) unsigned char anvil_dynamic_shared[];
  return reinterpret_cast<T*>(anvil_dynamic_shared);
#endif
}

}  // namespace anvil::kernels

// ANVIL_SHARED(float, xs, 64 * 65): a block-shared array of 64 * 65 floats named xs,
// 16-byte aligned (on the device: __shared__ __align__(16) float xs[64 * 65]).
#ifdef ANVIL_CUDA_EMU
#define ANVIL_SHARED(type, name, count)                                              \
  static char name##_emu_site;                                                       \
  type* const name = static_cast<type*>(                                             \
      ::anvil::emu::block_shared(&name##_emu_site, sizeof(type) * (count)))
#else
#define ANVIL_SHARED(type, name, count) __shared__ __align__(16) type name[count]
#endif
