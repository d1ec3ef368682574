// The warp-level CPU emulation tier: compiles the real kernel sources (kernels/*.cu) with
// the host compiler and runs them on the CPU, so every CI run exercises them without a GPU.
//
// This header is force-included (-include) into every emulated translation unit, before
// the CUDA headers. Each CUDA thread of a block is a cooperative fiber (ucontext) that runs
// until it reaches a synchronisation point; the scheduler (emu_runtime.cpp) then picks the
// next fiber in the order of the chosen schedule (ANVIL_EMU_SCHEDULE). What the kernels see:
//   threadIdx/blockIdx/blockDim/gridDim   globals, set by the scheduler at every switch;
//   __syncthreads, __syncwarp             barriers of the block / of the warp's mask;
//   __shfl_*_sync, __ballot/any/all_sync  exchanges through per-warp slots (all lanes of the
//                                         mask arrive before any reads);
//   ANVIL_SHARED, dynamic_shared<T>()     per-block shared memory, filled with 0xFF before
//                                         every block (raw __shared__ is refused here);
//   ptx::mma_m16n8k16_bf16                the tensor-core product, computed from the PTX ISA's
//                                         fragment layouts (not from the kernels' own tables);
//   atomics                               plain updates (fibers never interleave inside one).
// What this cannot show: timing, occupancy, register and shared-memory limits, the device
// numerics of intrinsics (code under __CUDA_ARCH__ takes its host branch here), cuBLASLt,
// NCCL. Those stay for a real GPU.
#pragma once

#define ANVIL_CUDA_EMU 1

// Launch bounds only steer register allocation on the device.
#define __launch_bounds__(...)
// Every block-shared array goes through ANVIL_SHARED (kernels/launch.cuh), so that the
// emulator can give each block its own poisoned copy; a raw __shared__ would be one static
// array for all blocks with no poison, so it does not compile here.
#define __shared__ __shared__is_not_emulated_use_ANVIL_SHARED

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>

namespace anvil::emu {

// Runs grid x block fibers of `body` (one kernel call each), block after block. Records a
// launch error (a deadlock, a bad configuration) for cudaGetLastError.
// `kernel` identifies the kernel (its address) for the attributes set on it.
void launch(const void* kernel, dim3 grid, dim3 block, std::size_t dynamic_smem,
            const std::function<void()>& body);

// This block's dynamic shared memory (the launch's byte count, 16-byte aligned).
void* dynamic_shared_memory();
// This block's copy of the block-shared array declared at `site` (a unique address per
// declaration and template instance): `bytes` long, 16-byte aligned, 0xFF at block start.
void* block_shared(const void* site, std::size_t bytes);

// __syncthreads at file:line. ANVIL_EMU_DROP_BARRIER=NAME:LINE (NAME: the file's base name)
// turns that one barrier into a no-op: the mutation test proves the tier catches its loss.
void sync_threads(const char* file, int line);
// Marks the running launch failed with `message` (the first failure wins); inside a kernel
// it never returns: the fiber is abandoned and the launch ends with an error.
void fail(const std::string& message);
// Lane of the calling thread in its warp.
unsigned lane_id();

// A warp collective over the lanes of `mask`: each lane deposits `bytes` of `in` in its
// slot; once every lane of the mask has arrived, `read(slots)` runs in each lane, with
// slots[l] the deposit of lane l (nullptr for lanes outside the mask).
enum class WarpOp { sync, shfl, vote, mma };
void warp_exchange(WarpOp op, unsigned mask, const void* in, std::size_t bytes,
                   const std::function<void(const void* const* slots)>& read);

template <typename T>
T shuffle(unsigned mask, T v, int src_lane) {
  static_assert(sizeof(T) <= 16, "shuffle of at most 16 bytes");
  T out = v;
  warp_exchange(WarpOp::shfl, mask, &v, sizeof(T), [&](const void* const* slots) {
    if (src_lane >= 0 && src_lane < 32 && slots[src_lane])
      std::memcpy(&out, slots[src_lane], sizeof(T));
  });
  return out;
}

unsigned vote_ballot(unsigned mask, bool predicate);

}  // namespace anvil::emu

// ---- device built-ins ------------------------------------------------------------------

inline uint3 threadIdx;
inline uint3 blockIdx;
inline dim3 blockDim;
inline dim3 gridDim;
constexpr int warpSize = 32;

#define __syncthreads() ::anvil::emu::sync_threads(__FILE__, __LINE__)
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  anvil::emu::warp_exchange(anvil::emu::WarpOp::sync, mask, nullptr, 0, [](const void* const*) {});
}

template <typename T>
T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  const int lane = static_cast<int>(anvil::emu::lane_id());
  return anvil::emu::shuffle(mask, v, (lane & ~(width - 1)) + (src & (width - 1)));
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  const int lane = static_cast<int>(anvil::emu::lane_id());
  const int src = lane ^ lane_mask;
  // A source outside the lane's width segment leaves the value unchanged (PTX shfl.bfly).
  return anvil::emu::shuffle(mask, v, (src & ~(width - 1)) == (lane & ~(width - 1)) ? src : lane);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const int lane = static_cast<int>(anvil::emu::lane_id());
  const int src = lane + static_cast<int>(delta);
  return anvil::emu::shuffle(mask, v, (src & ~(width - 1)) == (lane & ~(width - 1)) ? src : lane);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const int lane = static_cast<int>(anvil::emu::lane_id());
  const int src = lane - static_cast<int>(delta);
  return anvil::emu::shuffle(mask, v, src >= (lane & ~(width - 1)) ? src : lane);
}
inline unsigned __ballot_sync(unsigned mask, int p) {
  return anvil::emu::vote_ballot(mask, p != 0);
}
inline int __any_sync(unsigned mask, int p) { return anvil::emu::vote_ballot(mask, p != 0) != 0; }
inline int __all_sync(unsigned mask, int p) { return anvil::emu::vote_ballot(mask, p == 0) == 0; }

// Bit casts and the round-to-nearest arithmetic intrinsics (the host rounds to nearest).
inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
inline float __int_as_float(int i) { return __uint_as_float(static_cast<unsigned>(i)); }
inline int __float_as_int(float f) { return static_cast<int>(__float_as_uint(f)); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline unsigned __umulhi(unsigned a, unsigned b) {
  return static_cast<unsigned>((static_cast<std::uint64_t>(a) * b) >> 32);
}

// Atomics: fibers switch only at synchronisation points, so a plain update is atomic.
template <typename T>
T atomicAdd(T* p, T v) {
  const T old = *p;
  *p = old + v;
  return old;
}
template <typename T>
T atomicMax(T* p, T v) {
  const T old = *p;
  if (v > old) *p = v;
  return old;
}
template <typename T>
T atomicExch(T* p, T v) {
  const T old = *p;
  *p = v;
  return old;
}

namespace anvil::kernels::ptx {

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32: c += a (16x16) * b (16x8), one warp.
void mma_m16n8k16_bf16(float (&c)[4], const std::uint32_t (&a)[4], const std::uint32_t (&b)[2]);

}  // namespace anvil::kernels::ptx
