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
//         nested_blocksize, nested_offset). A TP rank takes its slice exactly (see
//         nf4_load_slice), so every rank holds the values of the whole tensor's slice.
// Anything else in quantization_config (another method, int8, fp4, per-tensor or group
// scales) is a user error naming config.json and the key, and malformed quantization
// tensors are errors naming the tensor.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "quant/quant_state.h"

namespace anvil::quant {

// How the model in `model_dir` is quantized on disk (quant_none: not at all).
QuantKind quant_format_of_model(const std::string& model_dir);

// How a bitsandbytes 4-bit model in `model_dir` stores its weights (config.json's
// quantization_config: bnb_4bit_use_double_quant, llm_int8_skip_modules); nullopt when it is
// not one. The planner reads it; the loader looks at each tensor instead.
std::optional<QuantPolicy::Bnb4OnDisk> bnb4_on_disk_of_model(const std::string& model_dir);

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

// Rows [row0, + rows) and columns [col0, + cols) of the bitsandbytes NF4 weight `name`: a TP
// rank's slice, holding exactly the values the whole tensor dequantizes to there. The
// on-disk 64-element absmax blocks run over the flat tensor, so a slice (a column slice
// above all: o_proj of a 576-wide model at tp 2 starts mid-block) need not start or end on
// one. Rather than requantizing (other numbers than tp 1), the slice keeps its 4-bit codes
// and becomes NF4 with plain f32 absmax over sub-blocks of g = gcd(64, the slice's offsets
// and widths) elements, each sub-block inside one on-disk block and carrying that block's
// (double-dequantized) absmax. Values are code * absmax as at tp 1, bit for bit; the cost is
// 32 / g bits of absmax per element instead of ~0.13.
TensorView nf4_load_slice(const io::SafetensorsModel& file, const std::string& name, std::int64_t row0,
                          std::int64_t rows, std::int64_t col0, std::int64_t cols, QuantStore& store);

// The bytes nf4_load_slice keeps of that slice of an (out, in) bitsandbytes NF4 weight
// stored as `form` says (blocks of 64; their absmax 8-bit in blocks of 256 when nested):
// as stored when the slice is the whole tensor, else codes and an f32 absmax per sub-block.
std::int64_t nf4_slice_bytes(const QuantPolicy::Bnb4OnDisk& form, std::int64_t out, std::int64_t in,
                             std::int64_t row0, std::int64_t rows, std::int64_t col0, std::int64_t cols);

// Rows [row0, + rows) and columns [col0, + cols) of the on-disk FP8 weight `name` and its
// per-row scales, copied into `store`: a TP rank's slice, never the whole tensor.
TensorView fp8_load_slice(const io::SafetensorsModel& file, const std::string& name, std::int64_t row0,
                          std::int64_t rows, std::int64_t col0, std::int64_t cols, QuantStore& store);

// fbgemm_fp8's fused Llama 4 experts (FbgemmFp8Llama4TextExperts): `name` is F8_E4M3
// (E, in, total) in x·W layout (experts.gate_up_proj (E, C, 2I), experts.down_proj (E, I, C))
// with `name`_scale f32 / bf16 holding one scale per output, (E, 1, total) or (E, total, 1).
// Expert `expert`'s outputs [col0, col0 + out) over inputs [in0, in0 + in_n) as an nn.Linear
// FP8 weight (out, in_n) with its per-row scales, codes copied (transposed), nothing
// requantized: gate is col0 0, up col0 I; a TP rank's slice takes its outputs (gate, up) or
// its inputs (down), the rows keeping their scales.
TensorView fp8_load_fused_expert(const io::SafetensorsModel& file, const std::string& name, std::int64_t expert,
                                 std::int64_t col0, std::int64_t out, std::int64_t in0, std::int64_t in_n,
                                 QuantStore& store);
// Those scales alone: the `n` outputs from col0 of expert `expert`.
std::vector<float> fp8_fused_scales(const io::SafetensorsModel& file, const std::string& name, std::int64_t expert,
                                    std::int64_t col0, std::int64_t n);

}  // namespace anvil::quant
