// Base models already quantized on disk. Recognised from config.json's
// quantization_config; their linear weights load straight into quantized views:
//   fp8   quant_method "compressed-tensors" (float, 8 bits, channel strategy) or
//         "fbgemm_fp8": `<linear>.weight` F8_E4M3 (out, in) and `<linear>.weight_scale`
//         f32 / bf16 (out, 1) or (out), value = code * scale[row].
// Anything else in quantization_config (another method, int8, per-tensor or group
// scales, bitsandbytes 4-bit) is a user error naming config.json and the key, and
// malformed quantization tensors are errors naming the tensor.
#pragma once

#include <string>

#include "io/safetensors.h"
#include "quant/quant_state.h"

namespace anvil::quant {

// How the model in `model_dir` is quantized on disk (quant_none: not at all).
QuantKind quant_format_of_model(const std::string& model_dir);

// Whether `name` is a quantization tensor that belongs to a linear weight (a scale).
bool quant_side_tensor(const std::string& name);

// Rows [row0, + rows) and columns [col0, + cols) of the on-disk FP8 weight `name` and its
// per-row scales, copied into `store`: a TP rank's slice, never the whole tensor.
TensorView fp8_load_slice(const io::SafetensorsModel& file, const std::string& name, std::int64_t row0,
                          std::int64_t rows, std::int64_t col0, std::int64_t cols, QuantStore& store);

}  // namespace anvil::quant
