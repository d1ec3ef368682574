// The merged Hugging Face model: base tensors streamed from the mapping, an adapter folded
// into each targeted projection block by block, cast, appended to the current shard.
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "core/error.h"
#include "export/export.h"
#include "export/shard_writer.h"
#include "io/files.h"
#include "io/safetensors.h"
#include "model/tp_shard.h"
#include "quant/quant_load.h"

namespace anvil::exporting {

namespace fs = std::filesystem;

namespace {

// Elements per block: 4 MiB of fp32 in flight, whatever the tensor size.
constexpr std::int64_t kBlockElems = 1 << 20;

// Besides the weights and config.json, the files a model directory carries that
// transformers reads: copied byte for byte when the base has them (and anything named
// tokenizer*, e.g. Mistral's tokenizer.model.v3).
constexpr const char* kCopiedFiles[] = {"generation_config.json", "special_tokens_map.json", "added_tokens.json",
                                        "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json"};

// Reads elements [begin, begin + n) of a float tensor as fp32. The view may be misaligned
// for its type (safetensors.h), so elements are loaded with memcpy.
void load_f32(const TensorView& src, std::int64_t begin, std::int64_t n, float* out) {
  const auto* bytes = static_cast<const std::uint8_t*>(src.data);
  switch (src.dtype) {
    case DType::dtype_f32:
      std::memcpy(out, bytes + 4 * begin, static_cast<std::size_t>(n) * 4);
      return;
    case DType::dtype_bf16:
    case DType::dtype_f16:
      for (std::int64_t i = 0; i < n; ++i) {
        std::uint16_t h;
        std::memcpy(&h, bytes + 2 * (begin + i), 2);
        out[i] = src.dtype == DType::dtype_bf16 ? bf16_to_f32(h) : f16_to_f32(h);
      }
      return;
    default:
      for (std::int64_t i = 0; i < n; ++i)
        out[i] = static_cast<float>(dtype_load_as_f64(src.data, src.dtype, static_cast<std::size_t>(begin + i)));
  }
}

struct Buffers {
  std::vector<float> f32;          // (block rows, in)
  std::vector<std::uint8_t> cast;  // the same in the output dtype
  void reserve(std::int64_t elems, DType dtype) {
    const auto n = static_cast<std::size_t>(elems);
    if (f32.size() < n) f32.resize(n);
    if (cast.size() < n * dtype_size(dtype)) cast.resize(n * dtype_size(dtype));
  }
};

// A tensor without an adapter: bytes as they are when the dtype matches, else cast.
void tensor_copy(ShardedWriter& out, const TensorView& src, DType dtype, Buffers& buf) {
  const std::int64_t n = src.numel();
  const auto* bytes = static_cast<const std::uint8_t*>(src.data);
  for (std::int64_t begin = 0; begin < n; begin += kBlockElems) {
    const std::int64_t m = std::min(kBlockElems, n - begin);
    const std::uint8_t* chunk = bytes + begin * static_cast<std::int64_t>(dtype_size(src.dtype));
    const std::size_t chunk_bytes = static_cast<std::size_t>(m) * dtype_size(src.dtype);
    if (src.dtype == dtype) {
      out.append(chunk, chunk_bytes);
    } else {
      load_f32(src, begin, m, buf.f32.data());
      f32_store_as(buf.f32.data(), m, dtype, buf.cast.data());
      out.append(buf.cast.data(), static_cast<std::size_t>(m) * dtype_size(dtype));
    }
    io::mapping_pages_release(chunk, chunk_bytes);
  }
}

// W'(out, in) = W + scale · B(out, r) · A(r, in), in fp32, a block of rows at a time.
void tensor_merge(ShardedWriter& out, const TensorView& src, const model::LoraSlot& s, const model::LoraSpec& lora,
                  const float* params, DType dtype, backend::Backend& be, Buffers& buf) {
  const std::int64_t r = lora.rank;
  const std::int64_t rows_per_block = std::max<std::int64_t>(1, kBlockElems / s.in);
  const std::size_t src_size = dtype_size(src.dtype);
  buf.reserve(rows_per_block * s.in, dtype);  // one row may exceed a block
  for (std::int64_t row = 0; row < s.out; row += rows_per_block) {
    const std::int64_t m = std::min(rows_per_block, s.out - row);
    float* w = buf.f32.data();  // (m, in)
    load_f32(src, row * s.in, m * s.in, w);
    be.gemm(false, false, m, s.in, r, lora.scale(), params + s.b_offset + row * r, r, params + s.a_offset, s.in,
            1.0f, w, s.in);
    f32_store_as(w, m * s.in, dtype, buf.cast.data());
    out.append(buf.cast.data(), static_cast<std::size_t>(m * s.in) * dtype_size(dtype));
    io::mapping_pages_release(static_cast<const std::uint8_t*>(src.data) + static_cast<std::size_t>(row * s.in) * src_size,
                    static_cast<std::size_t>(m * s.in) * src_size);
  }
}

// The linear weights a quantized run held quantized, each with whether it is split by
// columns over TP (row-parallel) rather than by rows.
std::map<std::string, bool, std::less<>> quantized_weights(const ExportAdapter& a) {
  std::map<std::string, bool, std::less<>> out;
  if (a.quant.kind == quant::QuantKind::quant_none) return out;
  for (std::int64_t l = 0; l < a.spec.num_hidden_layers; ++l)
    for (int i = 0; i < model::kProjCount; ++i) {
      const auto proj = static_cast<model::Proj>(i);
      const bool expert = model::proj_is_expert(proj), mlp = proj >= model::Proj::proj_gate;
      if (mlp && expert != a.spec.layer_is_moe(l)) continue;  // the MLP this layer has
      for (std::int64_t e = 0; e < (expert ? a.spec.moe.num_experts : 1); ++e) {
        const std::string name = model::proj_module_path(a.spec, l, proj, expert ? e : -1) + ".weight";
        if (a.quant.applies(name)) out.emplace(name, model::proj_row_parallel(proj));
      }
    }
  if (!a.spec.tie_word_embeddings && a.quant.applies("lm_head.weight")) out.emplace("lm_head.weight", false);
  return out;
}

// A base tensor as the quantized run saw it: (rows, cols) f32 in `buf`. One quantized on
// disk (FP8 with its scales) is its dequantized self; one quantized at load, the values
// each TP rank's slice took.
TensorView base_dequantized(const io::SafetensorsModel& weights, const std::string& name, const TensorView& src,
                            const ExportAdapter& a, bool split_cols, std::vector<float>& buf) {
  const Shape shape = quant::bnb4_packed(weights, name) ? quant::bnb4_shape(weights, name) : src.shape;
  const std::int64_t rows = shape[0], cols = shape[1];
  buf.resize(static_cast<std::size_t>(rows * cols));
  if (src.dtype == DType::dtype_fp8_e4m3 || quant::bnb4_packed(weights, name)) {
    quant::QuantStore store;
    const TensorView q = src.dtype == DType::dtype_fp8_e4m3 ? quant::fp8_load_slice(weights, name, 0, rows, 0, cols, store)
                                                            : quant::nf4_load(weights, name, store);
    quant::quant_dequantize(q, 0, rows * cols, buf.data());
  } else {
    load_f32(src, 0, rows * cols, buf.data());
    quant::quant_roundtrip_sliced(buf.data(), rows, cols, a.quant.kind, a.quant_tp, split_cols);
  }
  return TensorView{buf.data(), DType::dtype_f32, shape};
}

const char* torch_dtype_name(DType t) {
  return t == DType::dtype_f32 ? "float32" : t == DType::dtype_bf16 ? "bfloat16" : "float16";
}

// The base's config.json with the export dtype; every other key kept as it was, in order.
void config_write(const std::string& base_dir, const std::string& dir, DType dtype) {
  const std::string path = base_dir + "/config.json";
  auto cfg = nlohmann::ordered_json::parse(io::read_text_file(path), nullptr, false);
  ANVIL_CHECK_INPUT(cfg.is_object(), path, ": not a JSON object");
  // transformers >= 4.56 writes "dtype" instead; a config with only that keeps its spelling.
  if (cfg.contains("torch_dtype") || !cfg.contains("dtype")) cfg["torch_dtype"] = torch_dtype_name(dtype);
  if (cfg.contains("dtype")) cfg["dtype"] = torch_dtype_name(dtype);
  io::write_text_file_atomic(dir + "/config.json", cfg.dump(2) + "\n");
}

void side_files_copy(const std::string& base_dir, const std::string& dir) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(base_dir, ec)) {
    const std::string name = entry.path().filename().string();
    const bool wanted = name.starts_with("tokenizer") ||
                        std::any_of(std::begin(kCopiedFiles), std::end(kCopiedFiles),
                                    [&](const char* f) { return name == f; });
    if (!wanted) continue;
    std::error_code copy_ec;
    fs::copy_file(entry.path(), fs::path(dir) / name, copy_ec);
    ANVIL_CHECK_INPUT(!copy_ec, entry.path().string(), ": cannot copy into the export: ", copy_ec.message());
  }
  ANVIL_CHECK_INPUT(!ec, base_dir, ": cannot list: ", ec.message());
}

}  // namespace

DType export_default_dtype(const std::string& base_dir) {
  const std::string path = base_dir + "/config.json";
  const auto cfg = nlohmann::json::parse(io::read_text_file(path), nullptr, false);
  ANVIL_CHECK_INPUT(cfg.is_object(), path, ": not a JSON object");
  for (const char* key : {"torch_dtype", "dtype"}) {
    const auto it = cfg.find(key);
    if (it == cfg.end() || !it->is_string()) continue;
    const std::string v = it->get<std::string>();
    if (v == "float32") return DType::dtype_f32;
    if (v == "bfloat16") return DType::dtype_bf16;
    if (v == "float16") return DType::dtype_f16;
  }
  const auto weights = io::SafetensorsModel::open(base_dir);
  const auto* embed = weights.find("model.embed_tokens.weight");
  if (embed && (embed->info->dtype == DType::dtype_bf16 || embed->info->dtype == DType::dtype_f16))
    return embed->info->dtype;
  return DType::dtype_f32;
}

ExportSummary export_hf_merged(const ExportAdapter& adapter, const std::string& dir, const ExportOptions& options,
                               ShardRanks ranks) {
  const DType dtype = options.dtype ? *options.dtype : export_default_dtype(adapter.base_dir);
  ANVIL_CHECK_INPUT(dtype == DType::dtype_f32 || dtype == DType::dtype_bf16 || dtype == DType::dtype_f16,
                    "export: --dtype must be f32, bf16 or f16, got ", dtype_short_name(dtype));
  ANVIL_CHECK(adapter.params != nullptr, "export: no adapter parameters");
  const auto weights = io::SafetensorsModel::open(adapter.base_dir);
  model::model_check_weights(adapter.spec, weights);
  const model::LoraLayout layout(adapter.spec, adapter.lora);
  std::map<std::string, const model::LoraSlot*, std::less<>> slot_by_weight;
  for (const auto& s : layout.slots()) slot_by_weight.emplace(s.module + ".weight", &s);

  // In the base's own order: shard by shard, each in data order. Every rank plans all
  // tensors, so that the shards (and their names) come out as one process would write them.
  std::vector<ShardTensor> planned;
  std::vector<TensorView> sources;
  for (const auto& file : weights.files()) {
    for (const auto& t : file.tensors()) {
      if (quant::quant_side_tensor(t.name)) continue;  // the merged model is dense
      planned.push_back({t.name, dtype, quant::bnb4_packed(weights, t.name) ? quant::bnb4_shape(weights, t.name) : t.shape});
      sources.push_back(file.view(t));
    }
  }
  ShardedWriter out(dir, planned, options.max_shard_bytes, ranks);
  auto be = backend::make_cpu_backend();
  Buffers buf;
  buf.reserve(kBlockElems, dtype);
  const auto quantized = quantized_weights(adapter);
  std::vector<float> dequantized;  // (rows, cols) one quantized base tensor
  ExportSummary summary;
  for (std::size_t i = 0; i < planned.size(); ++i) {
    if (!out.tensor_owned(i)) continue;
    ++summary.tensors;
    TensorView src = sources[i];
    if (const auto q = quantized.find(planned[i].name); q != quantized.end())
      src = base_dequantized(weights, planned[i].name, src, adapter, q->second, dequantized);
    const auto it = slot_by_weight.find(planned[i].name);
    if (it == slot_by_weight.end()) {
      tensor_copy(out, src, dtype, buf);
      continue;
    }
    tensor_merge(out, src, *it->second, adapter.lora, adapter.params, dtype, *be, buf);
    ++summary.merged;
  }
  out.finish();
  // A rank's share cannot tell; export_to_dir checks the total over ranks.
  if (ranks.size == 1)
    ANVIL_CHECK(summary.merged == layout.slots().size(), "export: merged ", summary.merged, " of ",
                layout.slots().size(), " adapted weights");
  if (ranks.rank == 0) {
    config_write(adapter.base_dir, dir, dtype);
    side_files_copy(adapter.base_dir, dir);
  }

  summary.out_dir = dir;
  summary.dtype = dtype;
  summary.shards = out.owned_shard_count();
  summary.bytes = out.owned_bytes();
  return summary;
}

}  // namespace anvil::exporting
