// Helpers shared by the safetensors unit tests (test_safetensors*.cpp).
#pragma once

#include <gtest/gtest.h>

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/safetensors.h"

namespace anvil::io::testing_util {

namespace fs = std::filesystem;

// A fresh directory per test and process (tests run in parallel and in several build
// trees at once), removed at the end.
class TempDir {
 public:
  explicit TempDir(const std::string& name)
      : path_(fs::temp_directory_path() / ("anvil_test_st_" + name + "_" + std::to_string(::getpid()))) {
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  fs::path operator/(const std::string& leaf) const { return path_ / leaf; }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

inline std::vector<std::uint8_t> read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<std::uint8_t>((std::istreambuf_iterator<char>(in)), {});
}

inline std::vector<std::uint8_t> random_bytes(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::uint8_t> v(n);
  for (auto& b : v) b = static_cast<std::uint8_t>(rng());
  return v;
}

// A file assembled by hand: the header text is exactly what the test says.
inline std::vector<std::uint8_t> raw_file(const std::string& header, std::size_t data_bytes,
                                   std::int64_t len_override = -1) {
  const std::uint64_t n = len_override >= 0 ? static_cast<std::uint64_t>(len_override) : header.size();
  std::vector<std::uint8_t> out(8);
  for (int i = 0; i < 8; ++i) out[i] = static_cast<std::uint8_t>(n >> (8 * i));
  out.insert(out.end(), header.begin(), header.end());
  out.resize(out.size() + data_bytes, 0x5a);
  return out;
}

// parse() on an exactly sized heap copy, so that ASan flags a read even one byte past the
// end (a std::vector's spare capacity would hide it).
inline SafetensorsFile parse_exact(const std::vector<std::uint8_t>& bytes, const std::string& label,
                            std::unique_ptr<std::uint8_t[]>& storage) {
  storage.reset(new std::uint8_t[bytes.size()]);
  if (!bytes.empty()) std::memcpy(storage.get(), bytes.data(), bytes.size());
  return SafetensorsFile::parse(storage.get(), bytes.size(), label);
}

// Expects parse() to throw a user error naming the file and containing `fragment`.
inline void expect_rejected(const std::vector<std::uint8_t>& bytes, const std::string& fragment) {
  std::unique_ptr<std::uint8_t[]> storage;
  try {
    parse_exact(bytes, "bad.safetensors", storage);
    ADD_FAILURE() << "accepted a file that should fail with '" << fragment << "'";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::user) << e.what();
    const std::string msg = e.what();
    EXPECT_EQ(msg.rfind("bad.safetensors: ", 0), 0u) << msg;
    EXPECT_NE(msg.find(fragment), std::string::npos) << "message: " << msg << "\nexpected: " << fragment;
  }
}

// One tensor entry: {"name": {"dtype": ..., "shape": ..., "data_offsets": [b, e]}}.
inline std::string entry(const std::string& name, const std::string& dtype, const std::string& shape,
                  std::uint64_t b, std::uint64_t e) {
  return "\"" + name + "\": {\"dtype\": \"" + dtype + "\", \"shape\": " + shape + ", \"data_offsets\": [" +
         std::to_string(b) + ", " + std::to_string(e) + "]}";
}

inline std::string tensor_name(DType t) { return "t_" + std::string(dtype_short_name(t)); }

// A small f32 file with the given tensors (two values each: v, -v).
inline void write_shard(const fs::path& path, const std::vector<std::pair<std::string, float>>& tensors) {
  SafetensorsWriter w(path.string());
  for (const auto& [name, value] : tensors) w.declare(name, DType::dtype_f32, Shape{2});
  for (const auto& [name, value] : tensors) {
    const float v[2] = {value, -value};
    w.write_tensor(name, v, sizeof v);
  }
  w.finish();
}

}  // namespace anvil::io::testing_util
