// io::slab_sum, the per-layer checksum of format-2 checkpoints: the blocks that tile a slab
// add up to the whole slab's sum (whatever the tiling: how TP ranks of any grid check it
// together), a changed bit or two swapped elements change it, and its values are those of
// its definition (checkpoints on disk hold them), whatever the loop that computes them.
#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <random>
#include <utility>
#include <vector>

#include "io/checksum.h"

namespace {

using anvil::io::slab_sum;

std::vector<float> random_slab(std::int64_t n) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = nd(rng);
  return v;
}

// The (nrows, ncols) block at (row0, col0) of a row-major slab `cols` wide, copied out.
std::vector<float> block_of(const std::vector<float>& slab, std::int64_t cols, std::int64_t row0, std::int64_t nrows,
                            std::int64_t col0, std::int64_t ncols) {
  std::vector<float> out;
  for (std::int64_t i = 0; i < nrows; ++i)
    for (std::int64_t j = 0; j < ncols; ++j)
      out.push_back(slab[static_cast<std::size_t>((row0 + i) * cols + col0 + j)]);
  return out;
}

TEST(SlabSum, BlocksOfAnyTilingAddUpToTheWholeSlab) {
  const std::int64_t rows = 6, cols = 10;
  const auto slab = random_slab(rows * cols);
  const std::uint64_t whole = slab_sum(slab.data(), rows, cols, 0, 0, cols);
  // Row blocks (column-parallel B under TP), column blocks (row-parallel A), and uneven ones.
  for (const auto& [r0, c0] : {std::pair<std::int64_t, std::int64_t>{3, 0}, {0, 5}, {2, 7}}) {
    std::uint64_t sum = 0;
    for (const auto& [row0, nrows] : {std::pair{std::int64_t{0}, r0}, std::pair{r0, rows - r0}})
      for (const auto& [col0, ncols] : {std::pair{std::int64_t{0}, c0}, std::pair{c0, cols - c0}}) {
        if (nrows == 0 || ncols == 0) continue;
        const auto b = block_of(slab, cols, row0, nrows, col0, ncols);
        sum += slab_sum(b.data(), nrows, ncols, row0, col0, cols);
      }
    EXPECT_EQ(sum, whole) << "split at row " << r0 << ", column " << c0;
  }
}

TEST(SlabSum, AFlippedBitOrTwoSwappedElementsChangeIt) {
  const std::int64_t rows = 4, cols = 8;
  const auto slab = random_slab(rows * cols);
  const std::uint64_t whole = slab_sum(slab.data(), rows, cols, 0, 0, cols);
  for (int bit = 0; bit < 32; ++bit) {
    auto damaged = slab;
    std::uint32_t u;
    std::memcpy(&u, &damaged[13], 4);
    u ^= 1u << bit;
    std::memcpy(&damaged[13], &u, 4);
    EXPECT_NE(slab_sum(damaged.data(), rows, cols, 0, 0, cols), whole) << "bit " << bit;
  }
  auto swapped = slab;
  std::swap(swapped[2], swapped[17]);
  EXPECT_NE(slab_sum(swapped.data(), rows, cols, 0, 0, cols), whole);
}

// The definition, written out element by element: the sum (mod 2^64) of mix(index, bits).
std::uint64_t slab_sum_by_definition(const float* block, std::int64_t nrows, std::int64_t ncols,
                                     std::int64_t row0, std::int64_t col0, std::int64_t cols) {
  std::uint64_t sum = 0;
  for (std::int64_t i = 0; i < nrows; ++i)
    for (std::int64_t j = 0; j < ncols; ++j) {
      std::uint32_t bits;
      std::memcpy(&bits, block + i * ncols + j, sizeof(bits));
      const auto index = static_cast<std::uint64_t>((row0 + i) * cols + col0 + j);
      const std::uint64_t h = (bits + index * 0x9E3779B97F4A7C15ull) * 0xBF58476D1CE4E5B9ull;
      sum += h ^ (h >> 31);
    }
  return sum;
}

TEST(SlabSum, EqualsItsDefinitionForEveryShapeAndOffset) {
  const auto data = random_slab(40 * 67);
  // Row lengths below, at and past any vector width, blocks anywhere in wide slabs.
  for (const std::int64_t ncols : {1, 3, 4, 7, 8, 15, 16, 17, 31, 33, 67})
    for (const std::int64_t nrows : {1, 2, 5, 40}) {
      const std::int64_t row0 = ncols % 5, col0 = nrows * 3, cols = col0 + ncols + 11;
      EXPECT_EQ(slab_sum(data.data(), nrows, ncols, row0, col0, cols),
                slab_sum_by_definition(data.data(), nrows, ncols, row0, col0, cols))
          << nrows << " x " << ncols;
      // Whole rows (one run of consecutive indices), from a row past the first.
      EXPECT_EQ(slab_sum(data.data(), nrows, ncols, row0 + 3, 0, ncols),
                slab_sum_by_definition(data.data(), nrows, ncols, row0 + 3, 0, ncols))
          << nrows << " whole rows of " << ncols;
    }
}

// run_sum_copy: a block read out of a slab in memory at any byte alignment (a read buffer),
// a run per row or whole rows as one run, copied exactly, with slab_sum's value for the block.
TEST(SlabSum, CopyingABlockRunByRunGivesItsSumAndItsBytes) {
  const std::int64_t rows = 9, cols = 37;
  const auto slab = random_slab(rows * cols);
  for (std::size_t shift = 0; shift < 4; ++shift) {
    std::vector<unsigned char> bytes(slab.size() * 4 + shift);
    std::memcpy(bytes.data() + shift, slab.data(), slab.size() * 4);
    const unsigned char* at = bytes.data() + shift;
    for (const auto& [row0, nrows, col0, ncols] :
         {std::array<std::int64_t, 4>{0, rows, 0, cols}, {2, 5, 0, cols}, {1, 7, 3, 33}, {4, 1, 36, 1}, {0, 9, 16, 17}}) {
      const auto want = block_of(slab, cols, row0, nrows, col0, ncols);
      std::vector<float> got(want.size(), -1.0f);
      std::uint64_t sum = 0;
      if (ncols == cols) {  // whole rows: one run
        sum = anvil::io::run_sum_copy(at + 4 * row0 * cols, got.data(), nrows * cols, static_cast<std::uint64_t>(row0 * cols));
      } else {
        for (std::int64_t i = 0; i < nrows; ++i) {
          const auto index = static_cast<std::uint64_t>((row0 + i) * cols + col0);
          sum += anvil::io::run_sum_copy(at + 4 * index, got.data() + i * ncols, ncols, index);
        }
      }
      EXPECT_EQ(sum, slab_sum(want.data(), nrows, ncols, row0, col0, cols)) << "shift " << shift << ", row0 " << row0;
      EXPECT_EQ(std::memcmp(got.data(), want.data(), want.size() * 4), 0) << "shift " << shift << ", row0 " << row0;
    }
  }
}

TEST(SlabSum, ValuesOfCheckpointsAlreadyWritten) {
  // Computed by the first implementation (anvil 389e2c7), which wrote format-2 files.
  std::vector<float> slab(7 * 13);
  for (std::size_t i = 0; i < slab.size(); ++i) slab[i] = static_cast<float>(static_cast<int>(i % 97)) * 0.25f - 7.0f;
  EXPECT_EQ(slab_sum(slab.data(), 7, 13, 0, 0, 13), 0xfdb77111c1b6c5e9ull);
  EXPECT_EQ(slab_sum(slab.data(), 7, 13, 5, 3, 29), 0x5c7d5270d30f69d5ull);
}

}  // namespace
