// Shared by the model tests: a model directory made by our generator in a temp dir, and
// tensors read from the golden files of scripts/reference/make_golden.py.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "model/model_init.h"
#include "model/model_spec.h"

namespace anvil::test {

inline std::string golden_dir(const std::string& name) {
  return std::string(ANVIL_SOURCE_DIR) + "/tests/golden/" + name;
}

// A fresh directory under the system temp dir, removed when the object dies.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& tag) {
    path = std::filesystem::temp_directory_path() /
           ("anvil_test_" + tag + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string str() const { return path.string(); }
};

// Writes the weights of `spec` with our deterministic generator (what `anvil init-model
// --spec` does) and returns the directory.
inline std::string make_model_dir(const TempDir& dir, const model::ModelSpec& spec,
                                  std::uint64_t seed, DType dtype = DType::dtype_f32, double norm_std = 0.0) {
  model::InitOptions o;
  o.seed = seed;
  o.dtype = dtype;
  o.norm_std = norm_std;
  model::model_init_write(spec, dir.str(), o);
  return dir.str();
}

template <typename T>
std::vector<T> read_tensor(const io::SafetensorsFile& f, const std::string& name) {
  const io::TensorInfo* t = f.find(name);
  EXPECT_NE(t, nullptr) << name;
  if (!t) return {};
  std::vector<T> out(static_cast<std::size_t>(t->shape.numel()));
  std::memcpy(out.data(), f.view(*t).data, out.size() * sizeof(T));
  return out;
}

// max |a - b| / max |b|: the error relative to the reference's scale.
inline double rel_error(const float* a, const float* b, std::size_t n) {
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < n; ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::abs(static_cast<double>(b[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

}  // namespace anvil::test
