#include "data/sampler.h"

#include <utility>

#include "core/error.h"

namespace anvil::data {

std::uint64_t SplitMix64::next() {
  std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

std::uint64_t SplitMix64::below(std::uint64_t bound) {
  ANVIL_CHECK(bound > 0);
  // The lowest 2^64 mod bound values are rejected: with them the small residues would
  // come up once more often than the others.
  const std::uint64_t threshold = (0 - bound) % bound;
  for (;;) {
    const std::uint64_t r = next();
    if (r >= threshold) return r % bound;
  }
}

void sampler_permutation(std::int64_t count, std::uint64_t seed, std::int64_t epoch,
                         std::vector<std::int64_t>& out) {
  ANVIL_CHECK(count >= 0 && epoch >= 0, count, " ", epoch);
  out.resize(static_cast<std::size_t>(count));
  for (std::int64_t i = 0; i < count; ++i) out[i] = i;
  SplitMix64 gen(seed ^ SplitMix64(static_cast<std::uint64_t>(epoch)).next());
  for (std::int64_t i = count - 1; i > 0; --i) {
    const auto j = static_cast<std::int64_t>(gen.below(static_cast<std::uint64_t>(i) + 1));
    std::swap(out[i], out[j]);
  }
}

Sampler::Sampler(std::int64_t count, std::uint64_t seed, bool shuffle)
    : count_(count), seed_(seed), shuffle_(shuffle) {
  ANVIL_CHECK(count > 0, "a sampler over ", count, " sequences");
  start_epoch();
}

void Sampler::start_epoch() {
  if (shuffle_) sampler_permutation(count_, seed_, state_.epoch, order_);
}

void Sampler::next(std::int64_t n, std::vector<std::int64_t>& out) {
  ANVIL_CHECK(n >= 0, n);
  out.clear();
  out.reserve(static_cast<std::size_t>(n));
  for (std::int64_t k = 0; k < n; ++k) {
    const std::int64_t c = state_.cursor;
    out.push_back(shuffle_ ? order_[static_cast<std::size_t>(c)] : c);
    if (++state_.cursor == count_) {
      ++state_.epoch;
      state_.cursor = 0;
      start_epoch();
    }
  }
}

void Sampler::restore(State s) {
  ANVIL_CHECK_INPUT(s.epoch >= 0 && s.cursor >= 0 && s.cursor < count_, "the data position (epoch ", s.epoch,
                    ", sequence ", s.cursor, ") does not fit a data set of ", count_,
                    " sequences: was the data or seq_len changed since the checkpoint?");
  const bool new_epoch = s.epoch != state_.epoch;
  state_ = s;
  if (new_epoch) start_epoch();
}

}  // namespace anvil::data
