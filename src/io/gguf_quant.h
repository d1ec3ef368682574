// f32 to ggml tensor types, and llama.cpp's choice of a type per tensor.
//
// The quantizers are the inverse of gguf_dequant.h and follow ggml's reference (no
// importance matrix) algorithms, so that a file anvil writes holds the bytes llama.cpp's
// `llama-quantize` would write for the same f32 weights:
//   F32 F16 BF16                     element-wise, round to nearest even
//   Q8_0 Q4_0 Q4_1 Q5_0 Q5_1         32-element blocks, one scale (and min) per block
//   Q4_K Q5_K                        256-element super-blocks of eight 32-element
//                                    sub-blocks, each with a fitted 6-bit scale and min
//   Q6_K                             256-element super-blocks of sixteen 16-element
//                                    sub-blocks, each with a fitted 8-bit signed scale
// These are exactly the types the plans of GgufFileType produce (Q8_0, Q5_0 and Q5_1 are
// also the fallbacks of the k-quants for rows that are not a multiple of 256).
//
// The plan is llama.cpp's per-tensor rule set (llama-quant.cpp, llama.cpp as vendored by
// llama-cpp-python 0.3.36) for its default options: no importance matrix, no --pure, no
// --output-tensor-type / --token-embedding-type / --tensor-type overrides.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace anvil::io {

bool gguf_can_quantize(std::uint32_t ggml_type);

// Bytes of one row of `row_len` elements. A user error unless anvil can quantize the type
// and row_len is a positive multiple of its block.
std::size_t gguf_row_bytes(std::uint32_t ggml_type, std::int64_t row_len);

// Quantizes `rows` rows of `row_len` f32 elements (row-major at `src`) into `dst`
// (rows · gguf_row_bytes bytes). Rows are split over OpenMP threads; every row is encoded
// on its own, so the bytes do not depend on the thread count. The values must be finite
// (as llama.cpp, the encoders do not check; a NaN or inf gives meaningless codes).
void gguf_quantize_rows(std::uint32_t ggml_type, const float* src, std::int64_t rows, std::int64_t row_len,
                        std::uint8_t* dst);

// llama.cpp's llama_ftype values (include/llama.h), for the file types anvil writes.
enum class GgufFileType : std::uint32_t {
  gguf_file_all_f32 = 0,
  gguf_file_f16 = 1,
  gguf_file_q4_0 = 2,
  gguf_file_q4_1 = 3,
  gguf_file_q8_0 = 7,
  gguf_file_q5_0 = 8,
  gguf_file_q5_1 = 9,
  gguf_file_q4_k_s = 14,
  gguf_file_q4_k_m = 15,
  gguf_file_q5_k_s = 16,
  gguf_file_q5_k_m = 17,
  gguf_file_q6_k = 18,
  gguf_file_bf16 = 32,
};

// The CLI names: f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q4_k q5_k q6_k q4_k_m q5_k_m.
// q4_k and q5_k are llama.cpp's Q4_K_S and Q5_K_S (the "small" mixes: the k-quant type on
// nearly every tensor); q4_k_m / q5_k_m give attn_v and ffn_down of some layers Q6_K.
// Anything else is a user error listing these names.
GgufFileType gguf_file_type_from_name(std::string_view name);
// The CLI name of a file type (the inverse of gguf_file_type_from_name).
const char* gguf_file_type_name(GgufFileType ft);
// The names gguf_file_type_from_name accepts, space-separated, for help texts.
const char* gguf_file_type_names();

// One tensor as the plan sees it: its GGUF name ("blk.3.attn_v.weight",
// "token_embd.weight", "output.weight", "output_norm.weight", "blk.0.ffn_down_exps.weight")
// and its ggml dims (dims[0] = row length; 3-D for stacked experts).
struct GgufPlanTensor {
  std::string name;
  std::vector<std::int64_t> dims;
};

// What llama.cpp's rules read from the model's hyperparameters. Whether embeddings are tied
// is not here: as in llama.cpp, it is whether the tensor list has output.weight.
struct GgufPlanModel {
  std::string arch;  // general.architecture: "llama" or "qwen2"
  std::int64_t n_layer = 0;
  std::int64_t n_head = 0;
  std::int64_t n_head_kv = 0;
  std::int64_t n_expert = 0;  // 0 for a dense model
};

// The ggml type of each tensor (same order as `tensors`) as llama.cpp's
// llama_model_quantize would choose it for f32 input: 1-D tensors, norms and anything
// that is not a ".weight" stay F32, the rest take the file type's type adjusted by the
// per-category rules, and a k-quant whose row is not a multiple of 256 falls back
// (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0; F16 if even 32 does not divide the row).
// llama.cpp numbers the attn_v and ffn_down tensors in its own order (by layer number,
// tensors outside the blocks first, then by name), so the input order does not matter;
// llama-quantize also writes its file in that order.
std::vector<std::uint32_t> gguf_quant_plan(GgufFileType ft, const std::vector<GgufPlanTensor>& tensors,
                                           const GgufPlanModel& model);

}  // namespace anvil::io
