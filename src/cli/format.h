// Number formatting for people: "8,030,261,248", "14.96 GiB".
#pragma once

#include <cstdint>
#include <string>

namespace anvil::cli {
std::string format_thousands(std::int64_t n);
std::string format_bytes(std::uint64_t bytes);
}  // namespace anvil::cli
