#include "io/checksum.h"

#include <xxhash.h>

#include <cstring>

namespace anvil::io {

std::uint64_t checksum_f32(const float* data, std::int64_t n) {
  return XXH64(data, static_cast<std::size_t>(n) * sizeof(float), 0);
}

std::uint64_t checksum_bytes(const void* data, std::size_t n) { return XXH64(data, n, 0); }

std::uint64_t slab_sum(const float* block, std::int64_t nrows, std::int64_t ncols, std::int64_t row0,
                       std::int64_t col0, std::int64_t cols) {
  std::uint64_t sum = 0;
  for (std::int64_t i = 0; i < nrows; ++i) {
    const float* row = block + i * ncols;
    const auto first = static_cast<std::uint64_t>((row0 + i) * cols + col0);
    for (std::int64_t j = 0; j < ncols; ++j) {
      std::uint32_t bits;
      std::memcpy(&bits, row + j, sizeof(bits));
      // (bits + index·φ)·odd, then an xorshift: each step is invertible for a fixed index.
      const std::uint64_t index = first + static_cast<std::uint64_t>(j);
      const std::uint64_t h = (bits + index * 0x9E3779B97F4A7C15ull) * 0xBF58476D1CE4E5B9ull;
      sum += h ^ (h >> 31);
    }
  }
  return sum;
}

}  // namespace anvil::io
