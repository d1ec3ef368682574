#include <gtest/gtest.h>

#include "core/error.h"

namespace anvil {

TEST(Error, UserErrorExitsTwoAndKeepsMessage) {
  try {
    throw_user_error("config.yaml:3: key 'train.lr': expected a number, got 'fast'");
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::user);
    EXPECT_EQ(error_exit_code(e), 2);
    EXPECT_EQ(error_message(e), "config.yaml:3: key 'train.lr': expected a number, got 'fast'");
  }
}

TEST(Error, CheckFailureIsInternalWithLocation) {
  try {
    const int rows = 3;
    ANVIL_CHECK(rows % 2 == 0, "rows must be even, got ", rows);
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.exit_code(), 1);
    const std::string msg = e.what();
    EXPECT_NE(msg.find("rows % 2 == 0"), std::string::npos) << msg;
    EXPECT_NE(msg.find("rows must be even, got 3"), std::string::npos) << msg;
    EXPECT_NE(msg.find("test_error.cpp"), std::string::npos) << msg;
  }
}

TEST(Error, CheckInputIsUserError) {
  EXPECT_NO_THROW(ANVIL_CHECK_INPUT(1 + 1 == 2, "never"));
  try {
    ANVIL_CHECK_INPUT(false, "file ", "x.safetensors", ": bad");
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::user);
    EXPECT_STREQ(e.what(), "file x.safetensors: bad");
  }
}

TEST(Error, ForeignExceptionsAreInternal) {
  std::runtime_error e("boom");
  EXPECT_EQ(error_exit_code(e), 1);
  std::bad_alloc oom;
  EXPECT_EQ(error_message(oom), "out of memory");
}

}  // namespace anvil
