// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11): a
// counter-based RNG. The same (key, counter) gives the same numbers on any thread, rank or
// device, so dropout masks need no stored state and resume is exact.
#pragma once

#include <array>
#include <cstdint>

namespace anvil {

struct PhiloxKey {
  std::uint32_t k0 = 0;
  std::uint32_t k1 = 0;
};

using PhiloxCounter = std::array<std::uint32_t, 4>;

// Ten rounds of Philox4x32 on `counter` under `key`: four independent 32-bit words.
PhiloxCounter philox4x32_10(PhiloxCounter counter, PhiloxKey key);

// The key of one random stream: (seed, step, layer, slot) -> key and the upper counter
// words. `slot` tells streams in one layer apart (LoRA dropout of q_proj vs v_proj, ...).
struct PhiloxStream {
  PhiloxKey key;
  std::uint32_t c2 = 0;
  std::uint32_t c3 = 0;
};
PhiloxStream philox_stream(std::uint64_t seed, std::uint64_t step, std::uint32_t layer,
                           std::uint32_t slot);

// A uniform float in [0, 1) for element `index` of a stream: word (index % 4) of block
// index / 4, top 24 bits, so every float is exact.
float philox_uniform(const PhiloxStream& stream, std::uint64_t index);

}  // namespace anvil
