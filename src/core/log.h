// The one logging path. Messages go to stderr; by default only rank 0 speaks.
#pragma once

#include <string>

#include "core/error.h"

namespace anvil {

enum class LogLevel { log_debug, log_info, log_warn, log_error };

void log_set_level(LogLevel level);
// Parses "debug" / "info" / "warn" / "error"; a user error names the value otherwise.
LogLevel log_level_from_name(const std::string& name);
// Set once the process grid is known: rank > 0 prints only warnings and errors.
void log_set_rank(int rank, int world_size);
void log_write(LogLevel level, const std::string& message);

template <typename... Args>
void log_debug(Args&&... args) {
  log_write(LogLevel::log_debug, str_cat(std::forward<Args>(args)...));
}
template <typename... Args>
void log_info(Args&&... args) {
  log_write(LogLevel::log_info, str_cat(std::forward<Args>(args)...));
}
template <typename... Args>
void log_warn(Args&&... args) {
  log_write(LogLevel::log_warn, str_cat(std::forward<Args>(args)...));
}

}  // namespace anvil
