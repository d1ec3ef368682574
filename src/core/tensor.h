// A non-owning view of a dense row-major tensor. Memory is owned by arenas or mapped files.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "core/dtype.h"
#include "core/error.h"

namespace anvil {

// A shape of up to kMaxDims dimensions, stored inline (no allocation).
class Shape {
 public:
  static constexpr int kMaxDims = 8;
  Shape() = default;
  Shape(std::initializer_list<std::int64_t> dims) {
    ANVIL_CHECK(dims.size() <= kMaxDims, "too many dimensions: ", dims.size());
    for (auto d : dims) dims_[rank_++] = d;
  }
  void push_back(std::int64_t d) {
    ANVIL_CHECK(rank_ < kMaxDims, "too many dimensions");
    dims_[rank_++] = d;
  }
  int rank() const { return rank_; }
  std::int64_t operator[](int i) const { return dims_[i]; }
  std::int64_t& operator[](int i) { return dims_[i]; }
  const std::int64_t* begin() const { return dims_.data(); }
  const std::int64_t* end() const { return dims_.data() + rank_; }
  std::int64_t numel() const {
    std::int64_t n = 1;
    for (int i = 0; i < rank_; ++i) n *= dims_[i];
    return n;
  }
  bool operator==(const Shape& o) const {
    if (rank_ != o.rank_) return false;
    for (int i = 0; i < rank_; ++i)
      if (dims_[i] != o.dims_[i]) return false;
    return true;
  }
  // "[4096, 14336]"
  std::string str() const;

 private:
  std::array<std::int64_t, kMaxDims> dims_{};
  int rank_ = 0;
};

// The scales and codes a quantized view (dtype nf4 or fp8_e4m3) needs besides its codes;
// defined and owned by src/quant (quant/quant_state.h). Null for plain dtypes.
struct QuantState;

struct TensorView {
  void* data = nullptr;
  DType dtype = DType::dtype_f32;
  Shape shape;
  const QuantState* quant = nullptr;

  std::int64_t numel() const { return shape.numel(); }
  // nf4 packs two codes per byte (an odd count rounds up), as bitsandbytes stores them.
  std::size_t nbytes() const {
    return (static_cast<std::size_t>(numel()) * dtype_bits(dtype) + 7) / 8;
  }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data);
  }
};

}  // namespace anvil
