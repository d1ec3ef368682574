// What a test needs to check an anvil::Error: the error a call throws, and its message.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "core/error.h"

namespace anvil::test {

// The anvil::Error that f throws (a test failure when it throws none).
template <typename F>
Error error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "expected an anvil::Error";
  return Error(ErrorKind::internal, "");
}

inline bool contains(const Error& e, const std::string& part) {
  return std::string(e.what()).find(part) != std::string::npos;
}

}  // namespace anvil::test
