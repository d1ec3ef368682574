// The GGUF formats: the merged model as one llama.cpp file (--format gguf), and the adapter
// alone as a llama.cpp LoRA file (--format gguf-lora).
//
// Both are laid out in full before any tensor is computed (gguf_writer.h): the header fixes
// every tensor's offset, so the ranks of an mpirun export each take whole tensors (the
// largest first, each to the least loaded rank) and write them in place, and the file is
// the same bytes as one process writes. A tensor streams through in row blocks: merged,
// put in llama.cpp's q/k row order, quantized, written. Llama 4's fused experts are read
// split per expert (MergedSource::FusedExperts::split) and stacked like any other family's.
#include <algorithm>
#include <bit>
#include <cmath>
#include <exception>
#include <filesystem>
#include <map>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/error.h"
#include "export/export.h"
#include "export/gguf_tokenizer_meta.h"
#include "export/merged_source.h"
#include "gguf/gguf_spec.h"
#include "io/gguf_quant.h"
#include "io/gguf_writer.h"

namespace anvil::exporting {

namespace {

// Which rank writes each tensor: the largest first, each to the rank with the fewest bytes
// so far (ties: the lowest rank). Every rank computes the same assignment.
std::vector<int> tensors_assign(const io::GgufLayout& layout, int ranks) {
  const std::size_t n = layout.tensors().size();
  std::vector<std::size_t> order(n);
  for (std::size_t i = 0; i < n; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return layout.tensor_bytes(a) > layout.tensor_bytes(b); });
  std::vector<std::uint64_t> load(static_cast<std::size_t>(ranks), 0);
  std::vector<int> owner(n, 0);
  for (std::size_t i : order) {
    const auto least = static_cast<int>(std::min_element(load.begin(), load.end()) - load.begin());
    owner[i] = least;
    load[static_cast<std::size_t>(least)] += layout.tensor_bytes(i);
  }
  return owner;
}

// This OpenMP thread's index, and how many a parallel region may have (0 and 1 without OpenMP).
int thread_index() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}
std::size_t thread_count() {
#ifdef _OPENMP
  return static_cast<std::size_t>(omp_get_max_threads());
#else
  return 1;
#endif
}

// No NaN or infinity among x[0, n): every element's exponent bits tested, no early exit, so
// that the loop vectorizes (a find_if over the merged rows took a fifth of a q4_0 export).
bool all_finite(const float* x, std::int64_t n) {
  std::uint32_t special = 0;
#pragma omp simd reduction(| : special)
  for (std::int64_t i = 0; i < n; ++i) special |= (std::bit_cast<std::uint32_t>(x[i]) & 0x7f800000u) == 0x7f800000u;
  return special == 0;
}

// ggml order: the row length first.
std::vector<std::uint64_t> ggml_dims(const Shape& shape) {
  std::vector<std::uint64_t> dims;
  for (int d = shape.rank() - 1; d >= 0; --d) dims.push_back(static_cast<std::uint64_t>(shape[d]));
  return dims;
}

// The file laid out by rank 0 (which creates it: header written, space allocated) and
// written by every rank, each its own tensors through `write_tensor(i, file, thread)`, which
// returns the number of adapters it merged into tensor i (summed into summary.merged). A
// failure on rank 0 while creating reaches the others before they open the file. With
// `threads`, a rank's tensors go over its OpenMP threads, the largest first, each tensor
// on one thread (its blocks then quantized on that thread alone: the nested region is
// serial); the bytes do not depend on which thread wrote them.
template <typename WriteTensor>
void gguf_write_collective(const std::string& path, const io::GgufLayout& layout, ShardRanks ranks,
                           comm::Comm* world, bool threads, WriteTensor write_tensor, ExportSummary& summary) {
  std::int32_t failed = 0;
  if (ranks.rank == 0) {
    try {
      io::GgufFileWriter::create(path, layout);
    } catch (...) {
      failed = 1;
      if (world) world->allreduce(&failed, 1, DType::dtype_i32, comm::ReduceOp::reduce_max);
      throw;
    }
  }
  if (world) world->allreduce(&failed, 1, DType::dtype_i32, comm::ReduceOp::reduce_max);
  ANVIL_CHECK_INPUT(failed == 0, path, ": rank 0 could not create the file");
  const std::vector<int> owner = tensors_assign(layout, ranks.size);
  std::vector<std::size_t> mine;
  for (std::size_t i = 0; i < layout.tensors().size(); ++i)
    if (owner[i] == ranks.rank) mine.push_back(i);
  std::stable_sort(mine.begin(), mine.end(),
                   [&](std::size_t a, std::size_t b) { return layout.tensor_bytes(a) > layout.tensor_bytes(b); });
  io::GgufFileWriter file(path, layout);
  std::exception_ptr error;  // the first failure; the tensors not yet begun are skipped
  const auto n = static_cast<std::int64_t>(mine.size());
  std::size_t merged = 0;
#pragma omp parallel for schedule(dynamic, 1) if (threads) reduction(+ : merged)
  for (std::int64_t k = 0; k < n; ++k) {
    bool skip = false;
#pragma omp critical(anvil_gguf_write_error)
    skip = error != nullptr;
    if (skip) continue;
    try {
      merged += write_tensor(mine[static_cast<std::size_t>(k)], file, thread_index());
    } catch (...) {
#pragma omp critical(anvil_gguf_write_error)
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
  for (const std::size_t i : mine) summary.bytes += layout.tensor_bytes(i);
  summary.tensors += mine.size();
  summary.merged += merged;
  file.sync();
  summary.shards = ranks.rank == 0 ? 1 : 0;
}

// Merged tensor `src_index` in row blocks, quantized, written from row `file_row0` of file
// tensor `file_index` on (an expert's place in a stacked tensor; 0 otherwise): a block of
// whole heads for a permuted q/k projection, so that llama.cpp's row order stays within it.
struct RowBlocks {
  std::vector<float> rows;       // (m, cols) as read
  std::vector<float> permuted;   // (m, cols) in GGUF row order
  std::vector<std::uint8_t> out;  // m quantized rows
};

void merged_tensor_write(MergedSource& source, std::size_t src_index, std::int64_t heads, std::uint32_t type,
                         io::GgufFileWriter& file, std::size_t file_index, std::int64_t file_row0,
                         const io::GgufLayout& layout, RowBlocks& buf) {
  const MergedSource::Tensor& t = source.tensors()[src_index];
  const std::int64_t head_rows = heads > 0 ? t.rows / heads : 1;
  ANVIL_CHECK_INPUT(heads == 0 || (t.rows % heads == 0 && head_rows % 2 == 0), "export: ", t.name, " has ", t.rows,
                    " rows, not ", heads, " heads of even size");
  const std::int64_t rows_per_block = std::max(head_rows, source.block_rows(src_index) / head_rows * head_rows);
  const std::uint64_t row_bytes = layout.row_bytes(file_index);
  const auto block = static_cast<std::size_t>(std::min(rows_per_block, t.rows) * t.cols);
  if (buf.rows.size() < block) buf.rows.resize(block);
  if (heads > 0 && buf.permuted.size() < block) buf.permuted.resize(block);
  for (std::int64_t row = 0; row < t.rows; row += rows_per_block) {
    const std::int64_t m = std::min(rows_per_block, t.rows - row);
    source.read_rows(src_index, row, m, buf.rows.data());  // (m, cols)
    const float* rows = buf.rows.data();
    // The quantizers' scales need finite inputs; a NaN here is a diverged adapter or a
    // damaged base, and no inference client could use the file.
    if (!all_finite(rows, m * t.cols)) {
      const auto bad = std::find_if(rows, rows + m * t.cols, [](float v) { return !std::isfinite(v); });
      throw_user_error("export: ", t.name, " has a non-finite value (", *bad, ") in row ", row + (bad - rows) / t.cols,
                       " of the merged weights; the adapter or the base is damaged");
    }
    if (heads > 0) {
      for (std::int64_t r = 0; r < m; ++r) {
        const std::int64_t to = gguf::gguf_permuted_row(row + r, t.rows, heads) - row;
        std::copy_n(buf.rows.data() + r * t.cols, t.cols, buf.permuted.data() + to * t.cols);
      }
      rows = buf.permuted.data();
    }
    buf.out.resize(static_cast<std::size_t>(m) * row_bytes);
    io::gguf_quantize_rows(type, rows, m, t.cols, buf.out.data());
    file.write(file_index, static_cast<std::uint64_t>(file_row0 + row) * row_bytes, buf.out.data(), buf.out.size());
  }
  source.release(src_index);
}

// general.name: the base directory's name.
std::string model_name(const std::string& base_dir) {
  const std::filesystem::path p = std::filesystem::path(base_dir).lexically_normal();
  const std::string name = (p.has_filename() ? p : p.parent_path()).filename().string();
  return name.empty() ? "model" : name;
}

}  // namespace

ExportSummary export_gguf(const ExportAdapter& adapter, const std::string& path, const ExportOptions& options,
                          ShardRanks ranks, comm::Comm* world) {
  const std::string arch = gguf::gguf_architecture(adapter.spec);
  MergedSource source(adapter, MergedSource::FusedExperts::split);
  const std::vector<float> rope_freqs = gguf::gguf_rope_freqs(adapter.spec);

  // The tensors in the base's order (rope_freqs first, as the converter yields it), named
  // and typed as llama.cpp's quantizer would for this file type. A layer's routed experts
  // are one stacked tensor per projection (ggml [in, out, E], at its first expert's place).
  std::vector<io::GgufTensorDecl> decls;
  std::vector<std::vector<std::size_t>> sources;  // by decl: its merged tensor(s), by expert; none: rope_freqs
  if (!rope_freqs.empty()) {
    decls.push_back({"rope_freqs.weight", {rope_freqs.size()}, static_cast<std::uint32_t>(io::GgmlType::ggml_f32)});
    sources.emplace_back();
  }
  const auto experts = static_cast<std::size_t>(adapter.spec.moe.num_experts);
  std::map<std::string, std::size_t> stacks;  // stacked tensor → its decl
  for (std::size_t i = 0; i < source.tensors().size(); ++i) {
    const auto& t = source.tensors()[i];
    if (t.outside) continue;  // a multimodal checkpoint's vision tower: the file holds the text model
    if (const auto name = gguf::gguf_tensor_name(t.name)) {
      decls.push_back({*name, ggml_dims(t.shape), 0});
      sources.push_back({i});
      continue;
    }
    const auto slice = gguf::gguf_expert_tensor(adapter.spec, t.name);
    ANVIL_CHECK_INPUT(slice.has_value() && experts > 0, "export: tensor ", t.name, " of ", adapter.base_dir,
                      " has no place in llama.cpp's ", arch, " layout");
    ANVIL_CHECK_INPUT(slice->expert < adapter.spec.moe.num_experts, "export: tensor ", t.name, " is expert ",
                      slice->expert, " of a model with ", experts);
    const auto [at, fresh] = stacks.emplace(slice->name, decls.size());
    if (fresh) {
      decls.push_back({slice->name, {static_cast<std::uint64_t>(t.cols), static_cast<std::uint64_t>(t.rows), experts}, 0});
      sources.emplace_back(experts, SIZE_MAX);
    }
    const std::vector<std::uint64_t>& dims = decls[at->second].dims;
    ANVIL_CHECK_INPUT(dims[0] == static_cast<std::uint64_t>(t.cols) && dims[1] == static_cast<std::uint64_t>(t.rows),
                      "export: tensor ", t.name, " has shape ", t.shape.str(), ", unlike the other experts of ",
                      slice->name);
    std::size_t& slot = sources[at->second][static_cast<std::size_t>(slice->expert)];
    ANVIL_CHECK_INPUT(slot == SIZE_MAX, "export: expert ", slice->expert, " of ", slice->name, " appears twice");
    slot = i;
  }
  for (const auto& [name, decl] : stacks)
    for (std::size_t e = 0; e < experts; ++e)
      ANVIL_CHECK_INPUT(sources[decl][e] != SIZE_MAX, "export: ", adapter.base_dir, " has no expert ", e, " for ",
                        name);
  std::vector<io::GgufPlanTensor> plan_in;
  for (const auto& d : decls) plan_in.push_back({d.name, std::vector<std::int64_t>(d.dims.begin(), d.dims.end())});
  const io::GgufPlanModel plan_model{arch, adapter.spec.num_hidden_layers, adapter.spec.num_attention_heads,
                                     adapter.spec.num_key_value_heads, adapter.spec.moe.num_experts};
  const std::vector<std::uint32_t> types = io::gguf_quant_plan(options.gguf_type, plan_in, plan_model);
  for (std::size_t i = 0; i < decls.size(); ++i) decls[i].type = types[i];

  std::vector<io::GgufKv> meta = gguf::gguf_model_metadata(adapter.spec, model_name(adapter.base_dir),
                                                           static_cast<std::uint32_t>(options.gguf_type));
  for (auto& kv : gguf_tokenizer_metadata(adapter.base_dir)) meta.push_back(std::move(kv));
  meta.push_back({"general.quantization_version", io::gguf_value_u32(2)});
  const io::GgufLayout layout(meta, std::move(decls));

  ExportSummary summary;
  std::vector<RowBlocks> bufs(thread_count());  // one per thread
  gguf_write_collective(path, layout, ranks, world, source.concurrent_reads(),
                        [&](std::size_t i, io::GgufFileWriter& file, int thread) -> std::size_t {
    if (sources[i].empty()) {
      file.write(i, 0, rope_freqs.data(), rope_freqs.size() * sizeof(float));
      return 0;
    }
    std::int64_t row0 = 0;  // a stacked tensor's experts follow each other
    std::size_t adapters = 0;
    for (const std::size_t src : sources[i]) {
      const auto& t = source.tensors()[src];
      adapters += static_cast<std::size_t>(t.adapters);
      merged_tensor_write(source, src, gguf::gguf_permuted_heads(adapter.spec, t.name), layout.tensors()[i].type, file,
                          i, row0, layout, bufs[static_cast<std::size_t>(thread)]);
      row0 += t.rows;
    }
    return adapters;
  }, summary);
  summary.out_dir = path;
  summary.dtype = DType::dtype_f32;
  return summary;
}

ExportSummary export_gguf_lora(const ExportAdapter& adapter, const std::string& path) {
  ANVIL_CHECK(adapter.params != nullptr, "export: no adapter parameters");
  const std::string arch = gguf::gguf_architecture(adapter.spec);
  const model::LoraLayout layout(adapter.spec, adapter.lora);
  // llama.cpp scales by adapter.lora.alpha / rank; this alpha gives anvil's scale (rsLoRA too).
  const float alpha = adapter.lora.scale() * static_cast<float>(adapter.lora.rank);
  std::vector<io::GgufKv> meta = {
      {"general.architecture", io::gguf_value_string(arch)},
      {"general.type", io::gguf_value_string("adapter")},
      {"general.name", io::gguf_value_string(model_name(adapter.base_dir))},
      {"adapter.type", io::gguf_value_string("lora")},
      {"adapter.lora.alpha", io::gguf_value_f32(alpha)},
      {"general.quantization_version", io::gguf_value_u32(2)},
  };
  // A (r, in) is ggml [in, r]; B (out, r) is ggml [r, out], its rows in llama.cpp's q/k
  // order like the weight it adds to. A routed expert's pair joins its layer's stacked
  // tensor: ggml [in, r, E] and [r, out, E], expert after expert, as the weight they add to.
  struct LoraTensor {
    std::vector<const model::LoraSlot*> slots;  // one, or one per expert
    bool b = false;
  };
  std::vector<io::GgufTensorDecl> decls;
  std::vector<LoraTensor> parts;
  std::map<std::string, std::size_t> stacks;  // stacked weight → its lora_a decl
  const auto r = static_cast<std::uint64_t>(adapter.lora.rank);
  const auto f32 = static_cast<std::uint32_t>(io::GgmlType::ggml_f32);
  const auto experts = static_cast<std::size_t>(adapter.spec.moe.num_experts);
  for (const auto& s : layout.slots()) {
    const auto in = static_cast<std::uint64_t>(s.in), out = static_cast<std::uint64_t>(s.out);
    if (s.expert < 0) {
      const auto name = gguf::gguf_tensor_name(s.module + ".weight");
      ANVIL_CHECK_INPUT(name.has_value(), "export: adapted module ", s.module, " has no place in llama.cpp's ", arch,
                        " layout");
      decls.push_back({*name + ".lora_a", {in, r}, f32});
      parts.push_back({{&s}, false});
      decls.push_back({*name + ".lora_b", {r, out}, f32});
      parts.push_back({{&s}, true});
      continue;
    }
    const auto slice = gguf::gguf_expert_tensor(adapter.spec, s.module + ".weight");
    ANVIL_CHECK_INPUT(slice.has_value(), "export: adapted expert ", s.module, " has no place in llama.cpp's ", arch,
                      " layout");
    const auto [at, fresh] = stacks.emplace(slice->name, decls.size());
    if (fresh) {
      decls.push_back({slice->name + ".lora_a", {in, r, experts}, f32});
      parts.push_back({std::vector<const model::LoraSlot*>(experts, nullptr), false});
      decls.push_back({slice->name + ".lora_b", {r, out, experts}, f32});
      parts.push_back({std::vector<const model::LoraSlot*>(experts, nullptr), true});
    }
    parts[at->second].slots[static_cast<std::size_t>(slice->expert)] = &s;
    parts[at->second + 1].slots[static_cast<std::size_t>(slice->expert)] = &s;
  }
  for (const LoraTensor& p : parts)
    for (const model::LoraSlot* s : p.slots)
      ANVIL_CHECK(s != nullptr, "export: an expert's adapter is missing from the layout");
  const io::GgufLayout file_layout(meta, std::move(decls));
  ExportSummary summary;
  std::vector<float> b;
  gguf_write_collective(path, file_layout, ShardRanks{}, nullptr, false, [&](std::size_t i, io::GgufFileWriter& file, int) -> std::size_t {
    std::uint64_t at = 0;  // bytes into tensor i: a stacked tensor's experts follow each other
    for (const model::LoraSlot* s : parts[i].slots) {
      if (!parts[i].b) {
        const std::size_t bytes = static_cast<std::size_t>(s->in * adapter.lora.rank) * sizeof(float);
        file.write(i, at, adapter.params + s->a_offset, bytes);
        at += bytes;
        continue;
      }
      const std::int64_t heads = gguf::gguf_permuted_heads(adapter.spec, s->module + ".weight");
      b.resize(static_cast<std::size_t>(s->out * adapter.lora.rank));
      for (std::int64_t row = 0; row < s->out; ++row)
        std::copy_n(adapter.params + s->b_offset + row * adapter.lora.rank, adapter.lora.rank,
                    b.data() + gguf::gguf_permuted_row(row, s->out, heads) * adapter.lora.rank);
      file.write(i, at, b.data(), b.size() * sizeof(float));
      at += b.size() * sizeof(float);
    }
    return std::size_t{0};  // nothing merged: the adapter as it is
  }, summary);
  summary.out_dir = path;
  summary.dtype = DType::dtype_f32;
  return summary;
}

}  // namespace anvil::exporting
