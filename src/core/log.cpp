#include "core/log.h"

#include <cstdio>
#include <mutex>

namespace anvil {

namespace {
struct LogState {
  LogLevel level = LogLevel::log_info;
  int rank = 0;
  int world_size = 1;
  std::mutex mutex;
};
LogState& state() {
  static LogState s;
  return s;
}
}  // namespace

void log_set_level(LogLevel level) { state().level = level; }

LogLevel log_level_from_name(const std::string& name) {
  if (name == "debug") return LogLevel::log_debug;
  if (name == "info") return LogLevel::log_info;
  if (name == "warn") return LogLevel::log_warn;
  if (name == "error") return LogLevel::log_error;
  throw_user_error("unknown log level '", name, "' (expected debug, info, warn or error)");
}

void log_set_rank(int rank, int world_size) {
  state().rank = rank;
  state().world_size = world_size;
}

void log_write(LogLevel level, const std::string& message) {
  LogState& s = state();
  if (level < s.level) return;
  if (s.rank != 0 && level < LogLevel::log_warn) return;
  const char* tag = level == LogLevel::log_warn    ? "warning: "
                    : level == LogLevel::log_error ? "error: "
                    : level == LogLevel::log_debug ? "debug: "
                                                   : "";
  std::lock_guard<std::mutex> lock(s.mutex);
  if (s.world_size > 1)
    std::fprintf(stderr, "[rank %d] %s%s\n", s.rank, tag, message.c_str());
  else
    std::fprintf(stderr, "%s%s\n", tag, message.c_str());
  std::fflush(stderr);
}

}  // namespace anvil
