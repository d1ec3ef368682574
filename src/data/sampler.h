// The order in which the trainer visits sequences: a seeded permutation per epoch (file
// order when shuffle is off), the same on every platform and compiler, so that a run and
// its resumption see the same stream. std::shuffle and the <random> distributions are
// implementation-defined and are not used.
#pragma once

#include <cstdint>
#include <vector>

namespace anvil::data {

// SplitMix64 (Steele, Lea, Flood, "Fast splittable pseudorandom number generators", 2014):
// 64 bits of state, integer arithmetic only.
class SplitMix64 {
 public:
  explicit SplitMix64(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next();
  // Uniform in [0, bound), bound > 0; rejection keeps it free of modulo bias.
  std::uint64_t below(std::uint64_t bound);

 private:
  std::uint64_t state_;
};

// Epoch `epoch`'s order of 0..count-1: Fisher–Yates driven by SplitMix64 seeded with
// seed ^ SplitMix64(epoch).next(). Writes count indices into `out`.
void sampler_permutation(std::int64_t count, std::uint64_t seed, std::int64_t epoch,
                         std::vector<std::int64_t>& out);

class Sampler {
 public:
  Sampler(std::int64_t count, std::uint64_t seed, bool shuffle);

  // The next `n` sequence indices of the stream, into `out` (replacing its contents);
  // crosses epoch boundaries, with a new permutation each epoch.
  void next(std::int64_t n, std::vector<std::int64_t>& out);

  // epoch: the epoch the next index comes from; cursor: indices of it already handed out.
  struct State {
    std::int64_t epoch = 0, cursor = 0;
    bool operator==(const State&) const = default;
  };
  State state() const { return state_; }
  // Continues exactly where the sampler that gave `s` was (same count, seed and shuffle).
  // A state that does not fit `count` (the data changed under a checkpoint) is a user error.
  void restore(State s);
  std::int64_t epoch() const { return state_.epoch; }
  std::int64_t count() const { return count_; }

 private:
  void start_epoch();

  std::int64_t count_;
  std::uint64_t seed_;
  bool shuffle_;
  State state_;
  std::vector<std::int64_t> order_;  // (count_) this epoch's permutation; empty without shuffle
};

}  // namespace anvil::data
