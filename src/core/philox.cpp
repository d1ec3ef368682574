#include "core/philox.h"

#include "core/error.h"

namespace anvil {

namespace {

// Round multipliers and Weyl key increments of Philox4x32 (Salmon et al., table 2).
constexpr std::uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr std::uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr std::uint32_t kPhiloxW0 = 0x9E3779B9u;
constexpr std::uint32_t kPhiloxW1 = 0xBB67AE85u;

inline void mulhilo(std::uint32_t a, std::uint32_t b, std::uint32_t& hi, std::uint32_t& lo) {
  const std::uint64_t p = static_cast<std::uint64_t>(a) * b;
  hi = static_cast<std::uint32_t>(p >> 32);
  lo = static_cast<std::uint32_t>(p);
}

// One round: two 32x32->64 products; the high halves are mixed with the other two words
// and the key, the low halves move across.
inline PhiloxCounter philox_round(const PhiloxCounter& c, PhiloxKey k) {
  std::uint32_t hi0, lo0, hi1, lo1;
  mulhilo(kPhiloxM0, c[0], hi0, lo0);
  mulhilo(kPhiloxM1, c[2], hi1, lo1);
  return {hi1 ^ c[1] ^ k.k0, lo1, hi0 ^ c[3] ^ k.k1, lo0};
}

}  // namespace

PhiloxCounter philox4x32_10(PhiloxCounter counter, PhiloxKey key) {
  counter = philox_round(counter, key);
  for (int r = 1; r < 10; ++r) {
    key.k0 += kPhiloxW0;
    key.k1 += kPhiloxW1;
    counter = philox_round(counter, key);
  }
  return counter;
}

// Packing of (seed, step, layer, slot):
//   key.k0 = lo32(seed)
//   key.k1 = hi32(seed) ^ hi32(step)
//   c2     = lo32(step)
//   c3     = layer << 8 | slot          (layer < 2^24, slot < 2^8)
// c0, c1 are the 64-bit block number inside the stream (philox_uniform). For one seed the
// map (step, layer, slot) -> (key, c2, c3) is one-to-one, so two streams of one run never
// share numbers. The step's high word goes into the key because the counter words are
// full; runs never get near 2^32 steps, where it would begin to matter.
PhiloxStream philox_stream(std::uint64_t seed, std::uint64_t step, std::uint32_t layer,
                           std::uint32_t slot) {
  ANVIL_CHECK(layer < (1u << 24), "philox stream layer out of range: ", layer);
  ANVIL_CHECK(slot < (1u << 8), "philox stream slot out of range: ", slot);
  PhiloxStream s;
  s.key.k0 = static_cast<std::uint32_t>(seed);
  s.key.k1 = static_cast<std::uint32_t>(seed >> 32) ^ static_cast<std::uint32_t>(step >> 32);
  s.c2 = static_cast<std::uint32_t>(step);
  s.c3 = (layer << 8) | (slot & 0xffu);
  return s;
}

float philox_uniform(const PhiloxStream& stream, std::uint64_t index) {
  const std::uint64_t block = index / 4;
  const PhiloxCounter c{static_cast<std::uint32_t>(block), static_cast<std::uint32_t>(block >> 32),
                        stream.c2, stream.c3};
  const std::uint32_t word = philox4x32_10(c, stream.key)[index % 4];
  return static_cast<float>(word >> 8) * 0x1p-24f;
}

}  // namespace anvil
