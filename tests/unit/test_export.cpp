// anvil export on tiny random models with random nonzero adapters: merged weights against
// W + scale·B·A computed here in fp64, untouched tensors byte for byte, shards and index,
// the merged model's logits against the base model's with the adapter, tied embeddings,
// and the all-or-nothing output directory.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "error_test_util.h"
#include "export/export.h"
#include "export/peft.h"
#include "export/shard_writer.h"
#include "io/files.h"
#include "llama_test_util.h"
#include "model/llama.h"

namespace anvil {
namespace {

namespace fs = std::filesystem;
using exporting::ExportOptions;
using test::error_of;

// Opaque bytes: export copies tokenizer files without reading them.
const std::map<std::string, std::string> kTokenizerFiles = {
    {"tokenizer.json", "{\"version\": \"1.0\", \"model\": {\"type\": \"BPE\"}}\n"},
    {"tokenizer_config.json", "{\"bos_token\": \"<s>\"}\n"},
    {"special_tokens_map.json", "{\"eos_token\": \"</s>\"}\n"},
    {"tokenizer.model", std::string("\x00\x01\xff binary\n", 11)}};

model::LoraSpec lora_spec(bool rslora, std::initializer_list<model::Proj> targets) {
  model::LoraSpec s;
  s.rank = 4;
  s.alpha = 8;
  s.rslora = rslora;
  for (auto p : targets) s.targets[static_cast<int>(p)] = true;
  return s;
}

// A base model directory (weights, config, generation config, tokenizer files) and a
// random nonzero adapter for it.
struct Fixture {
  test::TempDir tmp;
  model::ModelSpec spec;
  std::string base;
  model::LoraSpec lora;
  std::vector<float> params;

  Fixture(const std::string& tag, const char* preset, DType base_dtype, model::LoraSpec l)
      : tmp("export_" + tag), spec(*model::model_preset(preset)), base(tmp.str() + "/base"), lora(l) {
    if (base_dtype != DType::dtype_f32) spec.torch_dtype = base_dtype == DType::dtype_bf16 ? "bfloat16" : "float16";
    fs::create_directories(base);
    model::InitOptions o;
    o.seed = 11;
    o.dtype = base_dtype;
    model::model_init_write(spec, base, o);
    for (const auto& [name, bytes] : kTokenizerFiles) io::write_text_file_atomic(base + "/" + name, bytes);
    const model::LoraLayout layout(spec, lora);
    std::mt19937 rng(7);
    std::normal_distribution<float> nd(0.0f, 0.05f);
    params.resize(static_cast<std::size_t>(layout.size()));
    for (auto& x : params) x = nd(rng);
  }
  exporting::ExportAdapter adapter() const { return {spec, lora, params.data(), base, {}, 1}; }
  std::string out(const std::string& name) const { return tmp.str() + "/" + name; }
};

std::vector<float> tensor_f32(const io::SafetensorsModel& m, const std::string& name) {
  const auto* e = m.find(name);
  EXPECT_NE(e, nullptr) << name;
  if (!e) return {};
  const TensorView v = e->file->view(*e->info);
  std::vector<float> out(static_cast<std::size_t>(v.numel()));
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<float>(dtype_load_as_f64(v.data, v.dtype, i));
  return out;
}

std::string tensor_bytes(const io::SafetensorsModel& m, const std::string& name) {
  const auto* e = m.find(name);
  EXPECT_NE(e, nullptr) << name;
  if (!e) return {};
  const TensorView v = e->file->view(*e->info);
  return std::string(static_cast<const char*>(v.data), v.nbytes());
}

// W + scale · B·A of one slot, in fp64 from the base's fp32 values.
std::vector<double> merged_reference(const io::SafetensorsModel& base, const model::LoraSlot& s,
                                     const model::LoraSpec& lora, const float* params, const std::string& name) {
  const auto w = tensor_f32(base, name);
  const float* a = params + s.a_offset;  // (r, in)
  const float* b = params + s.b_offset;  // (out, r)
  std::vector<double> out(w.size());
  for (std::int64_t o = 0; o < s.out; ++o)
    for (std::int64_t i = 0; i < s.in; ++i) {
      double d = 0;
      for (std::int64_t k = 0; k < lora.rank; ++k) d += static_cast<double>(b[o * lora.rank + k]) * a[k * s.in + i];
      out[static_cast<std::size_t>(o * s.in + i)] = w[static_cast<std::size_t>(o * s.in + i)] + lora.scale() * d;
    }
  return out;
}

std::string weight_name(const model::LoraSlot& s) {
  return s.module + ".weight";
}

// Tensor names in file order, shard after shard.
std::vector<std::string> names_in_order(const io::SafetensorsModel& m) {
  std::vector<std::string> out;
  for (const auto& f : m.files())
    for (const auto& t : f.tensors()) out.push_back(t.name);
  return out;
}

// Checks every tensor of the f32 export of `f`: merged ones against the fp64 reference,
// the others byte for byte.
void check_f32_export(const Fixture& f, const std::string& out) {
  const auto base = io::SafetensorsModel::open(f.base);
  const auto merged = io::SafetensorsModel::open(out);
  EXPECT_EQ(names_in_order(merged), names_in_order(base));
  const model::LoraLayout layout(f.spec, f.lora);
  std::set<std::string> adapted;
  for (const auto& s : layout.slots()) {
    const std::string name = weight_name(s);
    adapted.insert(name);
    const auto want = merged_reference(base, s, f.lora, f.params.data(), name);
    const auto got = tensor_f32(merged, name);
    ASSERT_EQ(got.size(), want.size());
    double err = 0, delta = 0;
    const auto w = tensor_f32(base, name);
    for (std::size_t i = 0; i < got.size(); ++i) {
      err = std::max(err, std::abs(got[i] - want[i]));
      delta = std::max(delta, std::abs(want[i] - w[i]));
    }
    EXPECT_LE(err, 1e-6) << name;
    EXPECT_GT(delta, 1e-3) << name << ": the adapter must change the weight";
  }
  for (const auto& name : names_in_order(base))
    if (!adapted.count(name)) {
      EXPECT_EQ(tensor_bytes(merged, name), tensor_bytes(base, name)) << name;
    }
}

TEST(Export, MergedF32TensorsAndFiles) {
  using model::Proj;
  Fixture f("f32", "tiny", DType::dtype_f32, lora_spec(false, {Proj::proj_q, Proj::proj_v, Proj::proj_gate,
                                                                Proj::proj_down}));
  ExportOptions opt;
  const auto summary = exporting::export_to_dir(f.adapter(), f.out("merged"), opt, {});
  EXPECT_EQ(summary.dtype, DType::dtype_f32);  // the base's torch_dtype
  EXPECT_EQ(summary.merged, 4u * f.spec.num_hidden_layers);
  EXPECT_EQ(summary.shards, 1u);
  EXPECT_TRUE(fs::exists(f.out("merged") + "/model.safetensors"));
  EXPECT_FALSE(fs::exists(f.out("merged") + "/model.safetensors.index.json"));
  check_f32_export(f, f.out("merged"));

  for (const auto& [name, bytes] : kTokenizerFiles)
    EXPECT_EQ(io::read_text_file(f.out("merged") + "/" + name), bytes) << name;
  EXPECT_EQ(io::read_text_file(f.out("merged") + "/generation_config.json"),
            io::read_text_file(f.base + "/generation_config.json"));
  auto cfg = nlohmann::json::parse(io::read_text_file(f.out("merged") + "/config.json"));
  auto base_cfg = nlohmann::json::parse(io::read_text_file(f.base + "/config.json"));
  EXPECT_EQ(cfg["torch_dtype"], "float32");
  EXPECT_EQ(cfg, base_cfg);
  // Nothing else next to the output: the staging directory is gone.
  std::size_t entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(f.tmp.path)) ++entries;
  EXPECT_EQ(entries, 2u);  // base, merged
}

TEST(Export, RsLoraScaleAndCastToBf16) {
  using model::Proj;
  Fixture f("bf16", "tiny", DType::dtype_f32, lora_spec(true, {Proj::proj_k, Proj::proj_o, Proj::proj_up}));
  ASSERT_FLOAT_EQ(f.lora.scale(), 4.0f);  // alpha / sqrt(r)
  ExportOptions opt;
  opt.dtype = DType::dtype_bf16;
  exporting::export_to_dir(f.adapter(), f.out("merged"), opt, {});
  const auto base = io::SafetensorsModel::open(f.base);
  const auto merged = io::SafetensorsModel::open(f.out("merged"));
  EXPECT_EQ(nlohmann::json::parse(io::read_text_file(f.out("merged") + "/config.json"))["torch_dtype"], "bfloat16");
  const model::LoraLayout layout(f.spec, f.lora);
  std::set<std::string> adapted;
  for (const auto& s : layout.slots()) {
    const std::string name = weight_name(s);
    adapted.insert(name);
    const auto want = merged_reference(base, s, f.lora, f.params.data(), name);
    const auto got = tensor_f32(merged, name);
    for (std::size_t i = 0; i < got.size(); ++i)  // bf16 keeps 8 significant bits
      ASSERT_LE(std::abs(got[i] - want[i]), std::abs(want[i]) * 0x1p-8 + 1e-30) << name << " [" << i << "]";
  }
  for (const auto& name : names_in_order(base)) {
    EXPECT_EQ(merged.find(name)->info->dtype, DType::dtype_bf16) << name;
    if (adapted.count(name)) continue;
    const auto w = tensor_f32(base, name), got = tensor_f32(merged, name);
    for (std::size_t i = 0; i < w.size(); ++i) ASSERT_EQ(got[i], bf16_to_f32(f32_to_bf16(w[i]))) << name;
  }
}

TEST(Export, DefaultDtypeFollowsTheBaseAndKeepsItsBytes) {
  Fixture f("bf16base", "tiny", DType::dtype_bf16, lora_spec(false, {model::Proj::proj_q}));
  EXPECT_EQ(exporting::export_default_dtype(f.base), DType::dtype_bf16);
  const auto summary = exporting::export_to_dir(f.adapter(), f.out("merged"), ExportOptions{}, {});
  EXPECT_EQ(summary.dtype, DType::dtype_bf16);
  const auto base = io::SafetensorsModel::open(f.base);
  const auto merged = io::SafetensorsModel::open(f.out("merged"));
  for (const auto& name : names_in_order(base))
    if (name.find("q_proj") == std::string::npos) {
      EXPECT_EQ(tensor_bytes(merged, name), tensor_bytes(base, name)) << name;
    }
}

TEST(Export, ShardsAndIndexHoldEveryTensorOnce) {
  Fixture f("shards", "tiny", DType::dtype_f32, lora_spec(false, {model::Proj::proj_q, model::Proj::proj_down}));
  ExportOptions opt;
  opt.max_shard_bytes = exporting::shard_size_parse("150KB", "--max-shard-size");
  const auto summary = exporting::export_to_dir(f.adapter(), f.out("merged"), opt, {});
  ASSERT_GT(summary.shards, 2u);
  const std::string dir = f.out("merged");
  EXPECT_FALSE(fs::exists(dir + "/model.safetensors"));
  const auto index = nlohmann::json::parse(io::read_text_file(dir + "/model.safetensors.index.json"));
  const auto base = io::SafetensorsModel::open(f.base);
  std::uint64_t total = 0;
  std::map<std::string, std::string> listed;
  for (const auto& [name, file] : index["weight_map"].items()) listed[name] = file.get<std::string>();
  std::size_t seen = 0;
  for (std::size_t s = 0; s < summary.shards; ++s) {
    const std::string file = exporting::shard_file_name(s, summary.shards);
    EXPECT_EQ(file, str_cat("model-0000", s + 1, "-of-0000", summary.shards, ".safetensors"));
    const auto shard = io::SafetensorsFile::open(dir + "/" + file);
    std::uint64_t bytes = 0;
    for (const auto& t : shard.tensors()) {
      EXPECT_EQ(listed[t.name], file) << t.name;
      bytes += t.end - t.begin;
      ++seen;
    }
    // Only a tensor larger than the limit may exceed it, alone in its shard.
    EXPECT_TRUE(bytes <= opt.max_shard_bytes || shard.tensors().size() == 1) << file;
    total += bytes;
  }
  EXPECT_EQ(seen, base.tensors().size());
  EXPECT_EQ(listed.size(), base.tensors().size());
  EXPECT_EQ(index["metadata"]["total_size"].get<std::uint64_t>(), total);
  check_f32_export(f, dir);  // through the index, in the base's order
}

// The merged model without an adapter (all-zero B) against the base model with it.
void check_logits(const Fixture& f, const std::string& merged_dir) {
  auto be = backend::make_cpu_backend();
  const std::int64_t T = 12, V = f.spec.vocab_size;
  const model::LoraLayout layout(f.spec, f.lora);
  auto make = [&](const std::string& dir, const std::vector<float>& adapter) {
    auto m = std::make_unique<model::LlamaModel>(
        f.spec, model::base_weights_load(f.spec, dir, DType::dtype_f32, model::tp_shard(f.spec, 0, 1)), layout,
        model::ModelLimits{1, T, false}, *be, 1);
    std::copy(adapter.begin(), adapter.end(), m->lora_params());
    return m;
  };
  std::vector<std::int32_t> ids, positions;
  std::mt19937 rng(5);
  for (std::int64_t t = 0; t < T; ++t) {
    ids.push_back(static_cast<std::int32_t>(rng() % static_cast<std::uint32_t>(V)));
    positions.push_back(static_cast<std::int32_t>(t));
  }
  model::TokenBatch batch;
  batch.batch = 1;
  batch.seq = T;
  batch.ids = ids.data();
  batch.positions = positions.data();
  std::vector<float> want(static_cast<std::size_t>(T * V)), got(want.size()), plain(want.size());
  make(f.base, f.params)->logits(batch, want.data());
  make(merged_dir, std::vector<float>(f.params.size(), 0.0f))->logits(batch, got.data());
  make(f.base, std::vector<float>(f.params.size(), 0.0f))->logits(batch, plain.data());
  EXPECT_LE(test::rel_error(got.data(), want.data(), want.size()), 1e-5);
  EXPECT_GT(test::rel_error(plain.data(), want.data(), want.size()), 1e-3) << "the adapter must matter";
}

TEST(Export, MergedLogitsEqualBasePlusAdapter) {
  model::LoraSpec all = lora_spec(false, {});
  all.targets.fill(true);
  Fixture f("logits", "tiny", DType::dtype_f32, all);
  exporting::export_to_dir(f.adapter(), f.out("merged"), ExportOptions{}, {});
  check_logits(f, f.out("merged"));
}

TEST(Export, TiedEmbeddings) {
  model::LoraSpec all = lora_spec(true, {});
  all.targets.fill(true);
  Fixture f("tied", "tiny-tied", DType::dtype_f32, all);
  ExportOptions opt;
  opt.max_shard_bytes = 200'000;
  exporting::export_to_dir(f.adapter(), f.out("merged"), opt, {});
  const auto merged = io::SafetensorsModel::open(f.out("merged"));
  EXPECT_EQ(merged.find("lm_head.weight"), nullptr);
  EXPECT_EQ(nlohmann::json::parse(io::read_text_file(f.out("merged") + "/config.json"))["tie_word_embeddings"], true);
  check_f32_export(f, f.out("merged"));
  check_logits(f, f.out("merged"));
}

TEST(Export, PeftAdapterReadsBack) {
  Fixture f("peft", "tiny", DType::dtype_f32, lora_spec(true, {model::Proj::proj_v, model::Proj::proj_up}));
  ExportOptions opt;
  opt.format = exporting::export_format_parse("peft", "--format");
  const auto summary = exporting::export_to_dir(f.adapter(), f.out("adapter"), opt, {});
  EXPECT_EQ(summary.tensors, 4u * f.spec.num_hidden_layers);
  const auto back = exporting::peft_load(f.out("adapter"), f.spec);
  EXPECT_EQ(back.params, f.params);
  EXPECT_TRUE(back.spec.rslora);
  const auto cfg = nlohmann::json::parse(io::read_text_file(f.out("adapter") + "/adapter_config.json"));
  EXPECT_EQ(cfg["peft_type"], "LORA");
  EXPECT_EQ(cfg["task_type"], "CAUSAL_LM");
  EXPECT_EQ(cfg["base_model_name_or_path"], f.base);
  EXPECT_EQ(cfg["target_modules"], nlohmann::json({"v_proj", "up_proj"}));
  const auto file = io::SafetensorsFile::open(f.out("adapter") + "/adapter_model.safetensors");
  const auto* a = file.find("base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight");
  const auto* b = file.find("base_model.model.model.layers.1.mlp.up_proj.lora_B.weight");
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->shape, (Shape{4, f.spec.hidden_size}));
  EXPECT_EQ(b->shape, (Shape{f.spec.intermediate_size, 4}));
}

TEST(Export, OutputDirectoryIsAllOrNothing) {
  Fixture f("outdir", "tiny", DType::dtype_f32, lora_spec(false, {model::Proj::proj_q}));
  const std::string out = f.out("merged");
  ExportOptions peft;
  peft.format = exporting::ExportFormat::export_format_peft;
  // A non-empty directory that is not an export: refused, with or without --force.
  fs::create_directories(out);
  io::write_text_file_atomic(out + "/notes.txt", "mine");
  ExportOptions opt;
  auto e = error_of([&] { exporting::export_to_dir(f.adapter(), out, opt, {}); });
  EXPECT_EQ(e.kind(), ErrorKind::user);
  EXPECT_TRUE(test::contains(e, "not empty")) << e.what();
  opt.force = true;
  e = error_of([&] { exporting::export_to_dir(f.adapter(), out, opt, {}); });
  EXPECT_TRUE(test::contains(e, "--force only replaces")) << e.what();
  EXPECT_EQ(io::read_text_file(out + "/notes.txt"), "mine");
  fs::remove_all(out);

  // An earlier export: refused without --force, replaced with it.
  exporting::export_to_dir(f.adapter(), out, peft, {});
  opt.force = false;
  e = error_of([&] { exporting::export_to_dir(f.adapter(), out, opt, {}); });
  EXPECT_TRUE(test::contains(e, "use --force")) << e.what();
  opt.force = true;
  exporting::export_to_dir(f.adapter(), out, opt, {});
  EXPECT_TRUE(fs::exists(out + "/config.json"));
  EXPECT_FALSE(fs::exists(out + "/adapter_config.json"));

  // A failure after the weights were written (a tokenizer file that cannot be copied)
  // leaves the earlier export untouched, and no directory at all where there was none.
  fs::remove(f.base + "/tokenizer.json");
  fs::create_directory(f.base + "/tokenizer.json");
  e = error_of([&] { exporting::export_to_dir(f.adapter(), out, opt, {}); });
  EXPECT_EQ(e.kind(), ErrorKind::user);
  EXPECT_TRUE(test::contains(e, "tokenizer.json")) << e.what();
  EXPECT_TRUE(fs::exists(out + "/config.json"));
  e = error_of([&] { exporting::export_to_dir(f.adapter(), f.out("fresh"), opt, {}); });
  EXPECT_FALSE(fs::exists(f.out("fresh")));
  for (const auto& entry : fs::directory_iterator(f.tmp.path))
    EXPECT_EQ(entry.path().filename().string().find(".partial"), std::string::npos) << entry.path();

  // Never over what the export reads.
  e = error_of([&] { exporting::export_to_dir(f.adapter(), f.tmp.str(), opt, {}); });
  EXPECT_TRUE(test::contains(e, "which the export reads")) << e.what();
  e = error_of([&] { exporting::export_to_dir(f.adapter(), out, opt, {out + "/../merged/x.h5"}); });
  EXPECT_TRUE(test::contains(e, "which the export reads")) << e.what();
}

// VmRSS or VmHWM of this process, in bytes (0 when /proc says nothing).
std::int64_t proc_status_bytes(const std::string& key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.starts_with(key + ":")) return std::stoll(line.substr(key.size() + 1)) * 1024;  // "  1234 kB"
  return 0;
}

// The merge streams: the peak memory it adds is a few blocks, not a tensor, let alone the
// model (117 MB here, the largest tensor 34 MB). Measured in this process: writing 5 to
// clear_refs resets the peak (VmHWM) to the current resident set.
TEST(Export, PeakMemoryIsBlocksNotTheModel) {
  model::ModelSpec spec = *model::model_preset("tiny");
  spec.hidden_size = 512;
  spec.intermediate_size = 1536;
  spec.num_hidden_layers = 4;
  spec.num_attention_heads = 8;
  spec.num_key_value_heads = 4;
  spec.head_dim = 64;
  spec.vocab_size = 16384;
  model::LoraSpec all = lora_spec(false, {});
  all.targets.fill(true);
  test::TempDir tmp("export_memory");
  const std::string base = tmp.str() + "/base";
  fs::create_directories(base);
  model::model_init_write(spec, base, model::InitOptions{});
  const std::vector<float> params(static_cast<std::size_t>(model::LoraLayout(spec, all).size()), 0.01f);
  const exporting::ExportAdapter adapter{spec, all, params.data(), base, {}, 1};
  {
    std::ofstream reset("/proc/self/clear_refs");
    reset << "5";
    reset.close();
    if (!reset.good() || proc_status_bytes("VmHWM") == 0) GTEST_SKIP() << "cannot reset the peak RSS here";
  }
  const std::int64_t before = proc_status_bytes("VmRSS");
  const auto summary = exporting::export_to_dir(adapter, tmp.str() + "/merged", ExportOptions{}, {});
  const std::int64_t growth = proc_status_bytes("VmHWM") - before;
  const std::int64_t largest = spec.vocab_size * spec.hidden_size * 4;
  std::printf("export of %.0f MB: peak RSS growth %.1f MB (largest tensor %.1f MB)\n", summary.bytes / 1e6,
              growth / 1e6, largest / 1e6);
  EXPECT_LT(growth, largest);
}

TEST(Export, ShardSizesAndPlan) {
  EXPECT_EQ(exporting::shard_size_parse("5GB", "x"), 5'000'000'000ull);
  EXPECT_EQ(exporting::shard_size_parse("2gib", "x"), 2ull << 30);
  EXPECT_EQ(exporting::shard_size_parse("1234", "x"), 1234ull);
  EXPECT_TRUE(test::contains(error_of([] { exporting::shard_size_parse("big", "--max-shard-size"); }),
                             "--max-shard-size"));
  std::vector<exporting::ShardTensor> t = {{"a", DType::dtype_f32, Shape{10}},
                                           {"b", DType::dtype_f32, Shape{30}},
                                           {"c", DType::dtype_f32, Shape{0}},
                                           {"d", DType::dtype_f32, Shape{5}}};
  // 40 bytes; b (120) over the limit alone; then c (empty) and d (20) together.
  const auto plan = exporting::shard_plan(t, 100);
  ASSERT_EQ(plan.size(), 3u);
  EXPECT_EQ(plan[0], std::vector<std::size_t>{0});
  EXPECT_EQ(plan[1], std::vector<std::size_t>{1});
  EXPECT_EQ(plan[2], (std::vector<std::size_t>{2, 3}));
}

}  // namespace
}  // namespace anvil
