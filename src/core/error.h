// anvil::Error and the check macros: the one error path of the project.
// Library code throws; only main() turns an Error into a message and an exit code.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace anvil {

// What went wrong decides the exit code: user errors (bad config, bad input file, bad
// usage) exit 2, internal errors (a broken invariant, a failed system call) exit 1.
enum class ErrorKind { user, internal };

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, std::string message)
      : std::runtime_error(std::move(message)), kind_(kind) {}
  ErrorKind kind() const { return kind_; }
  int exit_code() const { return kind_ == ErrorKind::user ? 2 : 1; }

 private:
  ErrorKind kind_;
};

// Concatenates anything streamable: str_cat("tensor ", name, " has ", n, " elements").
template <typename... Args>
std::string str_cat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}

template <typename... Args>
[[noreturn]] void throw_user_error(Args&&... args) {
  throw Error(ErrorKind::user, str_cat(std::forward<Args>(args)...));
}

template <typename... Args>
[[noreturn]] void throw_internal_error(const char* file, int line, Args&&... args) {
  throw Error(ErrorKind::internal,
              str_cat(std::forward<Args>(args)..., " [", file, ":", line, "]"));
}

// The message main() prints for any exception, and the exit code it returns.
std::string error_message(const std::exception& e);
int error_exit_code(const std::exception& e);

}  // namespace anvil

// Internal invariant: a failure is a bug in anvil (exit 1).
#define ANVIL_CHECK(cond, ...)                                                      \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      ::anvil::throw_internal_error(__FILE__, __LINE__,                            \
                                    "check failed: " #cond __VA_OPT__(, ": ", ) __VA_ARGS__); \
    }                                                                               \
  } while (0)

// Input validation: a failure is the user's to fix (exit 2). The message must name the
// file / key / tensor concerned.
#define ANVIL_CHECK_INPUT(cond, ...)                           \
  do {                                                         \
    if (!(cond)) ::anvil::throw_user_error(__VA_ARGS__);       \
  } while (0)
