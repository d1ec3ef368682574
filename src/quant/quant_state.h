// The state a quantized weight view carries besides its codes (TensorView::quant), and
// the store that owns quantized weights. The model never looks inside: a quantized view
// goes to Backend::linear_forward / linear_backward_input like a dense one, and the
// backend dequantizes tiles of its rows (quant_dequantize) just before each GEMM.
//
// Layouts (both match what bitsandbytes and compressed-tensors write to disk):
//   nf4       codes: flat over the row-major tensor, two per byte, element 2i in the high
//             nibble. Block b = elements [64 b, 64 b + 64) has absmax[b]; the value is
//             code[nibble] * absmax[b]. Double quantization stores absmax[b] - offset as
//             8-bit codes of the signed dynamic map, in blocks of 256 with their own f32
//             absmax2: absmax[b] = absmax_code[absmax_q[b]] * absmax2[b / 256] + offset.
//   fp8_e4m3  codes: one byte per element; the value is e4m3(code) * row_scale[row].
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace anvil {

struct QuantState {
  // nf4 (blocksize elements per absmax; either absmax_f32 or the double-quantized triple)
  std::int64_t blocksize = 0;
  const float* code = nullptr;              // (16) value of each 4-bit code
  const float* absmax_f32 = nullptr;        // (blocks) plain absmax, when not double-quantized
  const std::uint8_t* absmax_q = nullptr;   // (blocks) 8-bit codes of absmax - offset
  const float* absmax_code = nullptr;       // (256) value of each 8-bit absmax code
  const float* absmax2 = nullptr;           // (ceil(blocks / absmax_blocksize))
  std::int64_t absmax_blocksize = 0;
  float offset = 0.0f;
  // fp8_e4m3
  const float* row_scale = nullptr;         // (rows)
};

}  // namespace anvil

namespace anvil::quant {

enum class QuantKind : std::uint8_t { quant_none, quant_nf4, quant_fp8 };

// "none" | "nf4" | "fp8": the spelling of model.quant and of checkpoints.
const char* quant_kind_name(QuantKind k);
bool quant_kind_from_name(const std::string& name, QuantKind* out);

// Which base linear weights are quantized at load: every one whose tensor name has a
// dot-separated part listed in `skip` (lm_head, q_proj, ...) stays dense. Norms, biases
// and the embedding never reach the quantizer.
struct QuantPolicy {
  QuantKind kind = QuantKind::quant_none;
  std::vector<std::string> skip;
  bool applies(const std::string& tensor_name) const;
  // For the planner: the base is bitsandbytes 4-bit on disk (quant_load.h), which is what a
  // rank keeps of it then (the loader itself looks at each tensor).
  struct Bnb4OnDisk {
    bool nested = false;                 // bnb_4bit_use_double_quant: absmax 8-bit, else f32
    std::vector<std::string> unpacked;   // llm_int8_skip_modules: left dense by bitsandbytes
    bool packed(const std::string& tensor_name) const;
  };
  std::optional<Bnb4OnDisk> bnb = std::nullopt;
};

// model.quant_skip's default: the output head, the embedding and MoE routers stay dense.
const std::vector<std::string>& default_quant_skip();

// One quantized tensor: its codes and the arrays its QuantState points into.
struct QuantTensor {
  std::vector<std::uint8_t> codes;
  std::vector<float> code;        // nf4: 16 values
  std::vector<float> absmax_f32;
  std::vector<std::uint8_t> absmax_q;
  std::vector<float> absmax_code;
  std::vector<float> absmax2;
  std::vector<float> row_scale;
  QuantState state;
  // Points `state` at the arrays above (after they are filled or moved).
  void bind();
};

// Owns quantized tensors at stable addresses, so views into them stay valid.
class QuantStore {
 public:
  // Quantizes a dense (rows, cols) f32 view and returns the quantized view of it.
  TensorView add(const TensorView& dense, QuantKind kind);
  // Takes an already quantized tensor (loaded from a file) of `dtype` and `shape`.
  TensorView adopt(QuantTensor t, DType dtype, const Shape& shape);
  // Bytes of every code and scale held.
  std::int64_t bytes() const { return bytes_; }

 private:
  std::vector<std::unique_ptr<QuantTensor>> tensors_;
  std::int64_t bytes_ = 0;
};

// Bytes a (rows, cols) weight takes quantized as `kind` (codes and every scale).
std::int64_t quant_bytes(QuantKind kind, std::int64_t rows, std::int64_t cols);

// w (rows, cols) f32, in place: replaced by the values it has after quantization as
// `parts` tensor-parallel ranks hold it (split_cols: each quantizes its block of columns,
// a row-parallel layer; else its block of rows), i.e. the base that training saw.
void quant_roundtrip_sliced(float* w, std::int64_t rows, std::int64_t cols, QuantKind kind, int parts,
                            bool split_cols);

// dst[0, count) = the values of flat elements [first, first + count) of a quantized view.
void quant_dequantize(const TensorView& w, std::int64_t first, std::int64_t count, float* dst);

}  // namespace anvil::quant
