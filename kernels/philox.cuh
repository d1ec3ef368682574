// Philox4x32-10 on the device: the same function as anvil::philox4x32_10 (core/philox.h),
// so a dropout mask drawn on the GPU equals the CPU backend's. Host-callable as well, so
// CPU-only tests can hold it against the core implementation.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>  // __host__ / __device__ when a host compiler reads this

namespace anvil::kernels {

struct PhiloxWords {
  std::uint32_t w[4];
};

namespace philox_detail {

// Round multipliers and Weyl key increments (Salmon et al., table 2), as in core/philox.cpp.
constexpr std::uint32_t kM0 = 0xD2511F53u;
constexpr std::uint32_t kM1 = 0xCD9E8D57u;
constexpr std::uint32_t kW0 = 0x9E3779B9u;
constexpr std::uint32_t kW1 = 0xBB67AE85u;

__host__ __device__ inline std::uint32_t mulhi(std::uint32_t a, std::uint32_t b) {
#ifdef __CUDA_ARCH__
  return __umulhi(a, b);
#else
  return static_cast<std::uint32_t>((static_cast<std::uint64_t>(a) * b) >> 32);
#endif
}

// Word i of four without a dynamically indexed array (which would go to local memory).
__host__ __device__ inline std::uint32_t pick(const PhiloxWords& p, unsigned i) {
  return i == 0 ? p.w[0] : i == 1 ? p.w[1] : i == 2 ? p.w[2] : p.w[3];
}

}  // namespace philox_detail

__host__ __device__ inline PhiloxWords philox4x32_10(std::uint32_t c0, std::uint32_t c1,
                                                     std::uint32_t c2, std::uint32_t c3,
                                                     std::uint32_t k0, std::uint32_t k1) {
  using namespace philox_detail;
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k0 += kW0;
      k1 += kW1;
    }
    // Two 32x32->64 products; the high halves mix with the other words and the key, the
    // low halves move across (core/philox.cpp, philox_round).
    const std::uint32_t hi0 = mulhi(kM0, c0), lo0 = kM0 * c0;
    const std::uint32_t hi1 = mulhi(kM1, c2), lo1 = kM1 * c2;
    const std::uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
  }
  return PhiloxWords{{c0, c1, c2, c3}};
}

// philox_uniform(stream, index): word index % 4 of block index / 4, top 24 bits.
__host__ __device__ inline float philox_uniform(std::uint32_t k0, std::uint32_t k1,
                                                std::uint32_t c2, std::uint32_t c3,
                                                std::uint64_t index) {
  const std::uint64_t block = index / 4;
  const PhiloxWords words = philox4x32_10(static_cast<std::uint32_t>(block),
                                          static_cast<std::uint32_t>(block >> 32), c2, c3, k0, k1);
  const std::uint32_t word = philox_detail::pick(words, static_cast<unsigned>(index % 4));
  return static_cast<float>(word >> 8) * 0x1p-24f;
}

}  // namespace anvil::kernels
