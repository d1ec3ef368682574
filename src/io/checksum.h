// The checksums of checkpoint data (XXH64, and the additive per-slab sum of format 2).
#pragma once

#include <cstddef>
#include <cstdint>

namespace anvil::io {

// The checksum of one slab of a stack, from a block of it: the sum (mod 2^64) over the
// block's elements of mix(the element's row-major index in the whole (rows, cols) slab,
// its bits), where mix is a bijection of the bits for each index (so any one damaged
// element changes the sum) and mixes the index in (so moved elements do too). The sums of
// blocks that tile a slab add up to the whole slab's: TP ranks add theirs with a small
// all-reduce instead of gathering the data. `block` is (nrows, ncols) row-major, at
// (row0, col0) of a slab `cols` wide.
std::uint64_t slab_sum(const float* block, std::int64_t nrows, std::int64_t ncols, std::int64_t row0,
                       std::int64_t col0, std::int64_t cols);
// slab_sum's terms for n consecutive elements of a slab, the first of them at row-major
// index `first` of the slab, read from `src` (any alignment) and copied on the way to dst:
// one pass over the bytes instead of a copy and a sum. The terms of the runs that make up a
// block add up to the block's slab_sum.
std::uint64_t run_sum_copy(const void* src, float* dst, std::int64_t n, std::uint64_t first);
// XXH64 (seed 0) of n floats, and of n bytes.
std::uint64_t checksum_f32(const float* data, std::int64_t n);
std::uint64_t checksum_bytes(const void* data, std::size_t n);

}  // namespace anvil::io
