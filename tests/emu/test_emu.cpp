// The emulator itself: small kernels written for these tests show that it runs CUDA's
// semantics (barriers, shuffles, votes, shared memory per block, mma.sync from the ISA) and
// that it fails where a GPU could go wrong (a missing barrier, a deadlock, a launch over its
// shared-memory limit). The schedule comes from ANVIL_EMU_SCHEDULE, as for the op tests.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "launch.cuh"
#include "ptx.cuh"

namespace anvil {
namespace {

using kernels::launch;

// Block sum through shared memory, with or without the barrier between writing and reading.
__global__ void block_sum_kernel(float* out, const float* in, bool with_barrier) {
  ANVIL_SHARED(float, part, 128);
  part[threadIdx.x] = in[blockIdx.x * blockDim.x + threadIdx.x];
  if (with_barrier) __syncthreads();
  if (threadIdx.x == 0) {
    float s = 0.0f;
    for (unsigned i = 0; i < blockDim.x; ++i) s += part[i];
    out[blockIdx.x] = s;
  }
}

std::vector<float> block_sums(bool with_barrier) {
  std::vector<float> in(4 * 128), out(4, -1.0f);
  std::iota(in.begin(), in.end(), 0.0f);
  launch(block_sum_kernel, 4, 128, 0, nullptr, out.data(), in.data(), with_barrier);
  return out;
}

TEST(Emulator, SharedMemoryIsPerBlockAndBarriersOrderIt) {
  const std::vector<float> out = block_sums(true);
  for (int b = 0; b < 4; ++b) EXPECT_EQ(out[b], 128.0f * 128 * b + 127.0f * 128 / 2) << b;
}

// Without the barrier, thread 0 reads slots that other threads have not written yet in
// every schedule that does not run thread 0 last: 0xFF-poisoned shared memory makes the
// sum NaN. 'reverse' runs thread 0 last, so there the race stays hidden (as it may on a
// GPU): the reason every test runs under all schedules.
TEST(Emulator, MissingBarrierReadsPoison) {
  const char* s = std::getenv("ANVIL_EMU_SCHEDULE");
  const std::string schedule = s ? s : "forward";
  const std::vector<float> out = block_sums(false);
  if (schedule == "reverse")
    EXPECT_EQ(out[0], 127.0f * 128 / 2);
  else
    EXPECT_TRUE(std::isnan(out[0])) << out[0];
}

__global__ void shuffle_kernel(int* out) {
  const int lane = threadIdx.x % 32;
  const int x = __shfl_xor_sync(0xffffffffu, lane * 10, 1);
  const int d = __shfl_down_sync(0xffffffffu, lane, 3);
  const unsigned ballot = __ballot_sync(0xffffffffu, lane % 3 == 0);
  out[threadIdx.x * 3 + 0] = x;
  out[threadIdx.x * 3 + 1] = d;
  out[threadIdx.x * 3 + 2] = static_cast<int>(ballot);
}

TEST(Emulator, ShufflesAndVotes) {
  std::vector<int> out(64 * 3, 0);
  launch(shuffle_kernel, 1, 64, 0, nullptr, out.data());
  unsigned want_ballot = 0;
  for (int l = 0; l < 32; l += 3) want_ballot |= 1u << l;
  for (int t = 0; t < 64; ++t) {
    const int lane = t % 32;
    EXPECT_EQ(out[t * 3 + 0], (lane ^ 1) * 10) << t;
    EXPECT_EQ(out[t * 3 + 1], lane + 3 < 32 ? lane + 3 : lane) << t;  // past the warp: own value
    EXPECT_EQ(static_cast<unsigned>(out[t * 3 + 2]), want_ballot) << t;
  }
}

// Half of warp 0 waits at __syncthreads while the other half waits in a shuffle that needs
// the first half: no thread can go on. The launch fails, naming the deadlock.
__global__ void deadlock_kernel(int* out) {
  if (threadIdx.x < 16) __syncthreads();
  else out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1, 1);
}

TEST(Emulator, DeadlockFailsTheLaunch) {
  std::vector<int> out(32, 0);
  try {
    launch(deadlock_kernel, 1, 32, 0, nullptr, out.data());
    FAIL() << "a deadlocked launch returned";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("deadlock"), std::string::npos) << e.what();
  }
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // the error was taken by the failed launch
}

__global__ void big_smem_kernel(float* out) { out[0] = kernels::dynamic_shared<float>()[0]; }

TEST(Emulator, DynamicSharedMemoryOver48KbNeedsTheAttribute) {
  float out = 0.0f;
  EXPECT_THROW(launch(big_smem_kernel, 1, 32, 64 * 1024, nullptr, &out), Error);
  ASSERT_EQ(cudaFuncSetAttribute(reinterpret_cast<const void*>(big_smem_kernel),
                                 cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024),
            cudaSuccess);
  launch(big_smem_kernel, 1, 32, 64 * 1024, nullptr, &out);
  EXPECT_TRUE(std::isnan(out)) << "dynamic shared memory starts as 0xFF";
}

// mma.sync m16n8k16 against a plain product, the operands packed per the PTX ISA's
// fragment tables (written out here independently of the emulator's own decoding).
__global__ void mma_kernel(float* d, const std::uint16_t* a, const std::uint16_t* b) {
  const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
  auto pair = [](std::uint16_t lo, std::uint16_t hi) {
    return std::uint32_t(lo) | std::uint32_t(hi) << 16;
  };
  const std::uint32_t af[4] = {pair(a[g * 16 + 2 * t], a[g * 16 + 2 * t + 1]),
                               pair(a[(g + 8) * 16 + 2 * t], a[(g + 8) * 16 + 2 * t + 1]),
                               pair(a[g * 16 + 2 * t + 8], a[g * 16 + 2 * t + 9]),
                               pair(a[(g + 8) * 16 + 2 * t + 8], a[(g + 8) * 16 + 2 * t + 9])};
  // b is stored (k, n) row-major: B(k, n) = b[k * 8 + n].
  const std::uint32_t bf[2] = {pair(b[(2 * t) * 8 + g], b[(2 * t + 1) * 8 + g]),
                               pair(b[(2 * t + 8) * 8 + g], b[(2 * t + 9) * 8 + g])};
  float c[4] = {1.0f, 1.0f, 1.0f, 1.0f};
  kernels::ptx::mma_m16n8k16_bf16(c, af, bf);
  d[g * 8 + 2 * t] = c[0];
  d[g * 8 + 2 * t + 1] = c[1];
  d[(g + 8) * 8 + 2 * t] = c[2];
  d[(g + 8) * 8 + 2 * t + 1] = c[3];
}

TEST(Emulator, MmaIsTheMatrixProduct) {
  std::mt19937 gen(7);
  std::uniform_int_distribution<int> small(-8, 8);
  auto bf16 = [](float x) {
    std::uint32_t u;
    std::memcpy(&u, &x, 4);
    return static_cast<std::uint16_t>(u >> 16);  // small integers are exact in bf16
  };
  std::vector<float> a(16 * 16), b(16 * 8);
  std::vector<std::uint16_t> ab(a.size()), bb(b.size());
  for (std::size_t i = 0; i < a.size(); ++i) ab[i] = bf16(a[i] = static_cast<float>(small(gen)));
  for (std::size_t i = 0; i < b.size(); ++i) bb[i] = bf16(b[i] = static_cast<float>(small(gen)));
  std::vector<float> d(16 * 8, 0.0f);
  launch(mma_kernel, 1, 32, 0, nullptr, d.data(), ab.data(), bb.data());
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 8; ++n) {
      float want = 1.0f;
      for (int k = 0; k < 16; ++k) want += a[m * 16 + k] * b[k * 8 + n];
      EXPECT_EQ(d[m * 8 + n], want) << m << "," << n;
    }
}

}  // namespace
}  // namespace anvil
