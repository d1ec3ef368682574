// anvil import: plan (every GGUF tensor matched to the model's HF tensor list, shapes and
// types checked), then stream one tensor at a time: dequantize to f32, put q/k rows back
// in HF order, store in the output dtype row by row into the safetensors shards.
#include "import/gguf_import.h"

#include <map>
#include <vector>

#include "core/error.h"
#include "export/shard_writer.h"
#include "export/staged_dir.h"
#include "gguf/gguf_spec.h"
#include "import/gguf_tokenizer.h"
#include "io/gguf.h"
#include "io/gguf_dequant.h"
#include "io/json_strict.h"
#include "model/model_init.h"

namespace anvil::importing {

namespace {

using gguf::gguf_model_spec;
using gguf::gguf_permuted_heads;
using gguf::gguf_tensor_hf_name;
using io::detail::escape_for_message;

struct PlannedTensor {
  std::string hf_name;
  const io::GgufTensorInfo* src = nullptr;
  std::int64_t permuted_heads = 0;  // gguf_permuted_heads
};

std::map<std::string, const io::GgufTensorInfo*> tensors_by_hf_name(const io::GgufFile& g) {
  std::map<std::string, const io::GgufTensorInfo*> by_hf;
  for (const io::GgufTensorInfo& t : g.tensors()) {
    if (t.name == "rope_freqs.weight") continue;  // Llama 3 rope scaling, in config.json (gguf_model_spec)
    const auto hf = gguf_tensor_hf_name(t.name);
    ANVIL_CHECK_INPUT(hf.has_value(), g.path(), ": tensor '", escape_for_message(t.name),
                      "' has no Hugging Face counterpart in a llama/qwen2 model");
    io::gguf_check_dequantizable(t, g.path());
    by_hf[*hf] = &t;
  }
  return by_hf;
}

// The tensors in HF model order, each matched to its GGUF tensor; exactly the model's.
std::vector<PlannedTensor> plan_tensors(const io::GgufFile& g, const model::ModelSpec& spec) {
  auto by_hf = tensors_by_hf_name(g);
  std::vector<PlannedTensor> plan;
  for (const model::WeightInfo& w : model::model_weight_list(spec)) {
    const auto it = by_hf.find(w.name);
    ANVIL_CHECK_INPUT(it != by_hf.end(), g.path(), ": no tensor for ", w.name, " (", w.shape.str(), ")");
    const io::GgufTensorInfo& t = *it->second;
    ANVIL_CHECK_INPUT(t.shape() == w.shape, g.path(), ": tensor '", escape_for_message(t.name), "' has shape ",
                      t.shape().str(), " but the metadata makes ", w.name, " ", w.shape.str());
    plan.push_back({w.name, &t, gguf_permuted_heads(spec, w.name)});
    by_hf.erase(it);
  }
  ANVIL_CHECK_INPUT(by_hf.empty(), g.path(), ": tensor '",
                    by_hf.empty() ? "" : escape_for_message(by_hf.begin()->second->name),
                    "' is not part of the model its metadata describes");
  return plan;
}

// Scratch reused across tensors, so memory peaks at the largest tensor in f32 plus a row.
struct Scratch {
  std::vector<float> f32;         // (rows, cols)
  std::vector<std::uint8_t> row;  // (cols) in the output dtype
};

void write_tensor(exporting::ShardedWriter& writer, const io::GgufFile& g, const PlannedTensor& p, DType dtype,
                  Scratch& s) {
  const io::GgufTensorInfo& t = *p.src;
  s.f32.resize(t.numel);
  io::gguf_dequantize(t, g.data(t), s.f32.data(), g.path());
  io::mapping_pages_release(g.data(t), t.nbytes);
  const Shape shape = t.shape();
  const std::int64_t cols = shape[shape.rank() - 1];
  const std::int64_t rows = static_cast<std::int64_t>(t.numel) / cols;
  ANVIL_CHECK_INPUT(p.permuted_heads == 0 || rows % (2 * p.permuted_heads) == 0, g.path(), ": tensor '",
                    escape_for_message(t.name), "' has ", rows, " rows, not a whole number of ",
                    p.permuted_heads, " heads of even size");
  s.row.resize(static_cast<std::size_t>(cols) * dtype_size(dtype));
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* src = s.f32.data() + gguf::gguf_permuted_row(r, rows, p.permuted_heads) * cols;
    f32_store_as(src, cols, dtype, s.row.data());
    writer.append(s.row.data(), s.row.size());
  }
}

}  // namespace

model::ModelSpec gguf_import(const std::string& gguf_path, const std::string& out, const ImportOptions& options) {
  ANVIL_CHECK_INPUT(options.dtype == DType::dtype_f32 || options.dtype == DType::dtype_bf16 ||
                        options.dtype == DType::dtype_f16,
                    "import: the weight dtype must be f32, bf16 or f16, got ", dtype_short_name(options.dtype));
  const io::GgufFile g = io::GgufFile::open(gguf_path);
  const model::ModelSpec spec = gguf_model_spec(g);
  const std::vector<PlannedTensor> plan = plan_tensors(g, spec);
  const bool has_tokenizer = g.find("tokenizer.ggml.model") != nullptr;
  if (has_tokenizer) gguf_tokenizer_check(g);

  exporting::StagedDir staged(out, options.force, {gguf_path});
  model::model_config_write(spec, options.dtype, staged.path());
  if (has_tokenizer) gguf_tokenizer_write(g, staged.path(), spec.max_position_embeddings);
  std::vector<exporting::ShardTensor> shards;
  for (const PlannedTensor& p : plan) shards.push_back({p.hf_name, options.dtype, p.src->shape()});
  exporting::ShardedWriter writer(staged.path(), shards, options.max_shard_bytes);
  Scratch scratch;
  for (const PlannedTensor& p : plan) write_tensor(writer, g, p, options.dtype, scratch);
  writer.finish();
  staged.commit();
  return spec;
}

}  // namespace anvil::importing
