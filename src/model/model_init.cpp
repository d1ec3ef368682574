// Random model initialisation: HF files written one tensor at a time, values from a
// counter-based generator so that they depend only on the seed and the tensor name.
#include "model/model_init.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "core/error.h"
#include "io/safetensors.h"

namespace anvil::model {

namespace {


std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

std::uint64_t name_hash(const std::string& name) {  // FNV-1a: stable across runs and builds
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : name) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

// Normals from a counter: element i of a tensor depends only on (key, i), never on
// write order, chunking, threads or sharding. Box-Muller turns the two 32-bit halves of
// one hash into two normals, shared by elements 2p and 2p + 1.
void fill_normal(std::uint64_t key, std::int64_t begin, std::int64_t end, double stddev, float* out) {
  for (std::int64_t p = begin / 2; 2 * p < end; ++p) {
    const std::uint64_t h = splitmix64(key ^ splitmix64(static_cast<std::uint64_t>(p)));
    const double u1 = (static_cast<double>(h >> 32) + 1.0) * 0x1.0p-32;  // (0, 1]
    const double u2 = static_cast<double>(h & 0xffffffffull) * 0x1.0p-32;
    const double r = stddev * std::sqrt(-2.0 * std::log(u1));
    const double angle = 6.283185307179586 * u2;
    if (2 * p >= begin) out[2 * p - begin] = static_cast<float>(r * std::cos(angle));
    if (2 * p + 1 < end) out[2 * p + 1 - begin] = static_cast<float>(r * std::sin(angle));
  }
}

bool ends_with(const std::string& s, const char* suffix) {
  const std::string x = suffix;
  return s.size() >= x.size() && s.compare(s.size() - x.size(), x.size(), x) == 0;
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  out.close();
  ANVIL_CHECK_INPUT(out.good(), path, ": write failed");
}

enum class InitKind { normal, ones, zeros };

InitKind init_kind(const std::string& name) {
  if (ends_with(name, "layernorm.weight") || ends_with(name, "_norm.weight") || name == "model.norm.weight")
    return InitKind::ones;
  if (ends_with(name, ".bias")) return InitKind::zeros;
  return InitKind::normal;  // linear layers and the embedding: HF's initializer_range
}

// Fills out[0, end - begin) with elements [begin, end) of the tensor, in `dtype`.
// stddev: of the normal values; norm_std: of a norm's values around 1 (0: exactly ones).
void fill_range(InitKind kind, double stddev, double norm_std, std::uint64_t key, DType dtype, std::int64_t begin,
                std::int64_t end, float* scratch, std::uint8_t* out) {
  const std::int64_t m = end - begin;
  if (kind == InitKind::normal) {
    fill_normal(key, begin, end, stddev, scratch);
  } else if (kind == InitKind::ones && norm_std > 0) {
    fill_normal(key, begin, end, norm_std, scratch);
    for (std::int64_t j = 0; j < m; ++j) scratch[j] += 1.0f;
  } else {
    std::fill(scratch, scratch + m, kind == InitKind::ones ? 1.0f : 0.0f);
  }
  f32_store_as(scratch, m, dtype, out);
}

// Streams one tensor in chunks through the writer. Each chunk is filled by several
// threads (an 8B model is 8e9 normals; one core would take minutes), each thread over an
// even-aligned slice so that Box-Muller pairs never straddle two threads.
void write_tensor_values(io::SafetensorsWriter& writer, const WeightInfo& w, const InitOptions& options,
                         double stddev) {
  const std::uint64_t seed = options.seed;
  const DType dtype = options.dtype;
  const std::int64_t n = w.shape.numel();
  const InitKind kind = init_kind(w.name);
  const std::uint64_t key = splitmix64(seed ^ name_hash(w.name));
  constexpr std::int64_t kChunk = 1 << 20;
  const std::int64_t threads =
      std::clamp<std::int64_t>(std::thread::hardware_concurrency(), 1, 16);
  std::vector<float> scratch(static_cast<std::size_t>(std::min(kChunk, n)));
  std::vector<std::uint8_t> buf(scratch.size() * dtype_size(dtype));
  for (std::int64_t start = 0; start < n; start += kChunk) {
    const std::int64_t m = std::min(kChunk, n - start);
    const std::int64_t parts = m >= (1 << 16) ? threads : 1;
    const std::int64_t slice = ((m + parts - 1) / parts + 1) & ~std::int64_t{1};
    auto run = [&](std::int64_t t) {
      const std::int64_t lo = std::min(m, t * slice), hi = std::min(m, lo + slice);
      if (lo < hi)
        fill_range(kind, stddev, options.norm_std, key, dtype, start + lo, start + hi, scratch.data() + lo,
                   buf.data() + static_cast<std::size_t>(lo) * dtype_size(dtype));
    };
    {
      std::vector<std::jthread> pool;
      for (std::int64_t t = 1; t < parts; ++t) pool.emplace_back(run, t);
      run(0);
    }  // joins
    writer.append(buf.data(), static_cast<std::size_t>(m) * dtype_size(dtype));
  }
}

}  // namespace

std::uint64_t model_weight_bytes(const ModelSpec& spec, DType dtype) {
  return static_cast<std::uint64_t>(model_parameter_count(spec)) * dtype_size(dtype);
}

void model_config_write(const ModelSpec& spec, DType dtype, const std::string& dir) {
  ModelSpec out_spec = spec;
  out_spec.torch_dtype = dtype == DType::dtype_f32 ? "float32" : dtype == DType::dtype_bf16 ? "bfloat16" : "float16";
  write_text(dir + "/config.json", model_spec_to_json(out_spec));
  nlohmann::json gen = {{"_from_model_config", true}, {"do_sample", false}};
  if (spec.bos_token_id >= 0) gen["bos_token_id"] = spec.bos_token_id;
  if (spec.eos_token_ids.size() == 1) gen["eos_token_id"] = spec.eos_token_ids[0];
  else if (!spec.eos_token_ids.empty()) gen["eos_token_id"] = spec.eos_token_ids;
  write_text(dir + "/generation_config.json", gen.dump(2) + "\n");
}

void model_init_write(const ModelSpec& spec, const std::string& dir, const InitOptions& options) {
  ANVIL_CHECK_INPUT(options.dtype == DType::dtype_f32 || options.dtype == DType::dtype_bf16 ||
                        options.dtype == DType::dtype_f16,
                    "model init: the weight dtype must be f32, bf16 or f16, got ", dtype_short_name(options.dtype));
  ANVIL_CHECK_INPUT(options.max_shard_bytes > 0, "model init: the maximum shard size must be positive");
  model_config_write(spec, options.dtype, dir);

  // Greedy sharding in model order: a new shard starts when the next tensor would push
  // the current one past max_shard_bytes (a tensor larger than that gets a shard alone).
  const auto weights = model_weight_list(spec);
  std::vector<std::vector<const WeightInfo*>> shards(1);
  std::uint64_t shard_bytes = 0;
  for (const auto& w : weights) {
    const std::uint64_t b = static_cast<std::uint64_t>(w.shape.numel()) * dtype_size(options.dtype);
    if (!shards.back().empty() && shard_bytes + b > options.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(&w);
    shard_bytes += b;
  }
  nlohmann::json weight_map = nlohmann::json::object();
  const std::size_t count = shards.size();
  for (std::size_t s = 0; s < count; ++s) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", s + 1, count);
    const std::string file = count == 1 ? "model.safetensors" : name;
    io::SafetensorsWriter writer(dir + "/" + file);
    for (const auto* w : shards[s]) writer.declare(w->name, options.dtype, w->shape);
    for (const auto* w : shards[s]) {
      write_tensor_values(writer, *w, options, spec.initializer_range);
      weight_map[w->name] = file;
    }
    writer.finish();
  }
  if (count > 1) {
    const nlohmann::json index = {
        {"metadata", {{"total_size", model_weight_bytes(spec, options.dtype)}}},
        {"weight_map", weight_map}};
    write_text(dir + "/model.safetensors.index.json", index.dump(2) + "\n");
  }
}

}  // namespace anvil::model
