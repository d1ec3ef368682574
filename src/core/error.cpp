#include "core/error.h"

#include <new>

namespace anvil {

std::string error_message(const std::exception& e) {
  if (dynamic_cast<const std::bad_alloc*>(&e)) return "out of memory";
  return e.what();
}

int error_exit_code(const std::exception& e) {
  if (const auto* err = dynamic_cast<const Error*>(&e)) return err->exit_code();
  return 1;
}

}  // namespace anvil
