// Base models already quantized on disk. Recognised from config.json's
// quantization_config; their linear weights load straight into quantized views:
//   fp8   quant_method "compressed-tensors" (float, 8 bits, channel strategy) or
//         "fbgemm_fp8": `<linear>.weight` F8_E4M3 (out, in) and `<linear>.weight_scale`
//         f32 / bf16 (out, 1) or (out), value = code * scale[row].
//   nf4   quant_method "bitsandbytes" with load_in_4bit and bnb_4bit_quant_type nf4, as
//         transformers saves Linear4bit: `<linear>.weight` packed U8, `.weight.absmax`
//         (U8 when double-quantized, else F32), `.weight.quant_map` (16),
//         `.weight.nested_absmax`, `.weight.nested_quant_map` (256) and
//         `.weight.quant_state.bitsandbytes__nf4` (JSON bytes: shape, blocksize,
//         nested_blocksize, nested_offset). Whole tensors only (parallel.tp 1): a TP slice
//         would cut the flat absmax blocks.
// Anything else in quantization_config (another method, int8, fp4, per-tensor or group
// scales) is a user error naming config.json and the key, and malformed quantization
// tensors are errors naming the tensor.
#pragma once

#include <string>

#include "io/safetensors.h"
#include "quant/quant_state.h"

namespace anvil::quant {

// How the model in `model_dir` is quantized on disk (quant_none: not at all).
QuantKind quant_format_of_model(const std::string& model_dir);

// The linear weight a quantization tensor (a scale, a bitsandbytes state tensor) belongs
// to; empty when `name` is none.
std::string quant_side_tensor_owner(const std::string& name);
bool quant_side_tensor(const std::string& name);

// Whether the weight `name` is stored as bitsandbytes 4-bit (it has a quant_state tensor).
bool bnb4_packed(const io::SafetensorsModel& file, const std::string& name);

// The logical (out, in) shape a bitsandbytes 4-bit weight's quant_state records.
Shape bnb4_shape(const io::SafetensorsModel& file, const std::string& name);
// The whole bitsandbytes NF4 weight `name`, into `store`.
TensorView nf4_load(const io::SafetensorsModel& file, const std::string& name, QuantStore& store);

// Rows [row0, + rows) and columns [col0, + cols) of the on-disk FP8 weight `name` and its
// per-row scales, copied into `store`: a TP rank's slice, never the whole tensor.
TensorView fp8_load_slice(const io::SafetensorsModel& file, const std::string& name, std::int64_t row0,
                          std::int64_t rows, std::int64_t col0, std::int64_t cols, QuantStore& store);

}  // namespace anvil::quant
