// "did you mean ...?" for unknown config keys and values.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace anvil::train {

// Optimal-string-alignment distance, ASCII case-insensitive: an adjacent swap ("rnak" for
// "rank") counts as one edit, like a single typo.
std::size_t edit_distance(std::string_view a, std::string_view b);

// The candidate closest to `word` if it is close enough to be a likely typo (or one is a
// prefix of the other, as "warmup" of "warmup_steps"); "" otherwise. Ties go to the
// earlier candidate.
std::string closest_match(std::string_view word, const std::vector<std::string>& candidates);

// " (did you mean 'x'?)", or "" when nothing is close.
std::string did_you_mean(std::string_view word, const std::vector<std::string>& candidates);

}  // namespace anvil::train
