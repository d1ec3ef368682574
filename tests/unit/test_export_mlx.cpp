// anvil export --format mlx: the affine quantizer on hand-checked groups, the rope fix of
// config.json, and the quantized export of a tiny model (which modules are quantized, the
// dequantized weights against the dense export, the config block, ranks splitting the shards).
// tests/e2e/test_export_mlx.py checks the same against mlx itself.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "error_test_util.h"
#include "export/export.h"
#include "export/export_config.h"
#include "export/mlx_quant.h"
#include "io/files.h"
#include "io/safetensors.h"
#include "llama_test_util.h"
#include "model/model_init.h"
#include "model/model_spec.h"

namespace anvil {
namespace {

namespace fs = std::filesystem;
using exporting::MlxQuant;
using json = nlohmann::ordered_json;

TEST(MlxQuant, MinEdgeGroupIsExactAndPacksLowNibbleFirst) {
  // 0, -1, ..., -15 twice: the min edge (-15) is the bias, the scale 1 (4 bits) or 15/255
  // (8 bits), and the codes 15 - (k mod 16).
  std::vector<float> w(32);
  for (int k = 0; k < 32; ++k) w[k] = -static_cast<float>(k % 16);
  std::vector<std::uint32_t> packed(8);
  float scale = 0, bias = 0;
  exporting::mlx_quantize_rows(w.data(), 1, 32, MlxQuant{4, 32}, packed.data(), &scale, &bias);
  EXPECT_EQ(scale, 1.0f);
  EXPECT_EQ(bias, -15.0f);
  EXPECT_EQ(packed[0], 0x89ABCDEFu);
  EXPECT_EQ(packed[1], 0x01234567u);
  EXPECT_EQ(packed[2], 0x89ABCDEFu);
  EXPECT_EQ(packed[3], 0x01234567u);

  exporting::mlx_quantize_rows(w.data(), 1, 32, MlxQuant{8, 32}, packed.data(), &scale, &bias);
  EXPECT_EQ(scale, -15.0f / -255.0f);
  EXPECT_EQ(bias, -15.0f);
  EXPECT_EQ(packed[0], 0xCCDDEEFFu);  // codes 255, 238, 221, 204
  EXPECT_EQ(packed[3], 0x00112233u);  // codes 51, 34, 17, 0
}

TEST(MlxQuant, MaxEdgeGroupHasNegativeScaleAndZeroGroupZeroBias) {
  // 0..15 twice: the max edge (15) is the bias and the scale is -1, codes 15 - x.
  std::vector<float> w(64, 0.0f);
  for (int k = 0; k < 32; ++k) w[k] = static_cast<float>(k % 16);
  std::vector<std::uint32_t> packed(8);
  float scales[2], biases[2];
  exporting::mlx_quantize_rows(w.data(), 1, 64, MlxQuant{4, 32}, packed.data(), scales, biases);
  EXPECT_EQ(scales[0], -1.0f);
  EXPECT_EQ(biases[0], 15.0f);
  EXPECT_EQ(packed[0], 0x89ABCDEFu);
  // An all-zero group: the scale floor 1e-7 (negated, the max edge), no bias, codes 0.
  EXPECT_EQ(scales[1], -1e-7f);
  EXPECT_EQ(biases[1], 0.0f);
  EXPECT_EQ(packed[4], 0u);
}

// Rounding costs half a step; and since mlx rescales so that the edge value is exact (edge /
// round(edge / scale)), the far end of a group may clip by up to 15/16 of a step more.
TEST(MlxQuant, DequantizedWithinOneAndAHalfSteps) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  const std::int64_t rows = 5, cols = 256;
  std::vector<float> w(rows * cols);
  for (auto& x : w) x = nd(rng);
  for (int bits : {4, 8})
    for (int gs : {32, 64, 128}) {
      const std::int64_t groups = cols / gs, per = 32 / bits;
      std::vector<std::uint32_t> packed(rows * exporting::mlx_quant_words(cols, bits));
      std::vector<float> scales(rows * groups), biases(rows * groups);
      exporting::mlx_quantize_rows(w.data(), rows, cols, MlxQuant{bits, gs}, packed.data(), scales.data(),
                                   biases.data());
      for (std::int64_t i = 0; i < rows * cols; ++i) {
        const std::int64_t r = i / cols, c = i % cols, g = r * groups + c / gs;
        const std::uint32_t word = packed[r * (cols / per) + c / per];
        const auto code = static_cast<float>((word >> (bits * (c % per))) & ((1u << bits) - 1));
        EXPECT_LE(std::fabs(scales[g] * code + biases[g] - w[i]), std::fabs(scales[g]) * 1.5f + 1e-7f)
            << bits << " bits, group " << gs << ", element " << i;
      }
    }
}

TEST(ExportConfig, RopeParametersGetTopLevelTheta) {
  const std::string text = R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64,
    "rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"}, "tie_word_embeddings": false,
    "vocab_size": 100})";
  json cfg = json::parse(text);
  ASSERT_TRUE(exporting::config_rope_top_level(cfg));
  EXPECT_EQ(cfg["rope_theta"], 500000.0);
  EXPECT_FALSE(cfg.contains("rope_scaling"));  // default rope: nothing to scale
  // Right after rope_parameters; everything else as it was, in order.
  std::vector<std::string> keys;
  for (auto it = cfg.begin(); it != cfg.end(); ++it) keys.push_back(it.key());
  EXPECT_EQ(keys, (std::vector<std::string>{"architectures", "hidden_size", "rope_parameters", "rope_theta",
                                            "tie_word_embeddings", "vocab_size"}));
  cfg.erase("rope_theta");
  EXPECT_EQ(cfg.dump(), json::parse(text).dump());
}

TEST(ExportConfig, ScaledRopeAlsoGetsRopeScaling) {
  json cfg = json::parse(R"({"rope_scaling": null, "rope_parameters": {"rope_type": "llama3", "factor": 8.0,
    "rope_theta": 500000.0, "low_freq_factor": 1.0}, "vocab_size": 100})");
  ASSERT_TRUE(exporting::config_rope_top_level(cfg));
  EXPECT_EQ(cfg.dump(), json::parse(R"({"rope_scaling": {"rope_type": "llama3", "factor": 8.0,
    "low_freq_factor": 1.0}, "rope_parameters": {"rope_type": "llama3", "factor": 8.0, "rope_theta": 500000.0,
    "low_freq_factor": 1.0}, "rope_theta": 500000.0, "vocab_size": 100})")
                            .dump());
}

TEST(ExportConfig, ConfigWithTopLevelThetaIsUntouched) {
  for (const char* text : {R"({"rope_theta": 10000.0, "rope_parameters": {"rope_theta": 500000.0}})",
                           R"({"rope_theta": 10000.0, "rope_scaling": null})", R"({"vocab_size": 3})",
                           R"({"rope_parameters": {"rope_type": "default"}})"}) {
    json cfg = json::parse(text);
    EXPECT_FALSE(exporting::config_rope_top_level(cfg)) << text;
    EXPECT_EQ(cfg.dump(), json::parse(text).dump());
  }
}

// A tiny base (hidden 64, intermediate 176: down_proj's rows divide by no group size) and a
// random adapter on every projection.
struct MlxFixture {
  test::TempDir tmp{"export_mlx"};
  model::ModelSpec spec = *model::model_preset("tiny-tied");
  std::string base = tmp.str() + "/base";
  model::LoraSpec lora;
  std::vector<float> params;

  MlxFixture() {
    fs::create_directories(base);
    model::InitOptions o;
    o.seed = 5;
    model::model_init_write(spec, base, o);
    io::write_text_file_atomic(base + "/tokenizer.json", "{}\n");
    lora.rank = 4;
    lora.alpha = 8;
    lora.targets.fill(true);
    std::mt19937 rng(9);
    std::normal_distribution<float> nd(0.0f, 0.05f);
    params.resize(static_cast<std::size_t>(model::LoraLayout(spec, lora).size()));
    for (auto& x : params) x = nd(rng);
  }
  exporting::ExportAdapter adapter() const { return {spec, lora, params.data(), base, {}, 1}; }
};

std::vector<double> values(const io::SafetensorsModel& m, const std::string& name) {
  const auto* e = m.find(name);
  EXPECT_NE(e, nullptr) << name;
  if (!e) return {};
  const TensorView v = e->file->view(*e->info);
  std::vector<double> out(static_cast<std::size_t>(v.numel()));
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = dtype_load_as_f64(v.data, v.dtype, i);
  return out;
}

TEST(ExportMlx, QuantizedModulesDequantizeToTheDenseExport) {
  MlxFixture f;
  exporting::ExportOptions dense;
  dense.format = exporting::ExportFormat::export_format_mlx;
  dense.dtype = DType::dtype_bf16;
  exporting::export_to_dir(f.adapter(), f.tmp.str() + "/dense", dense, {});
  exporting::ExportOptions q4 = dense;
  q4.mlx_bits = 4;
  const auto s = exporting::export_to_dir(f.adapter(), f.tmp.str() + "/q4", q4, {});
  EXPECT_EQ(s.merged, model::LoraLayout(f.spec, f.lora).slots().size());

  const auto want = io::SafetensorsModel::open(f.tmp.str() + "/dense");
  const auto got = io::SafetensorsModel::open(f.tmp.str() + "/q4");
  std::size_t quantized = 0;
  for (const auto& file : want.files())
    for (const auto& t : file.tensors()) {
      const bool quantizes = t.shape.rank() == 2 && t.shape[1] % 64 == 0;
      const std::string module = t.name.substr(0, t.name.rfind('.'));
      EXPECT_EQ(got.find(module + ".scales") != nullptr, quantizes) << t.name;
      if (!quantizes) {
        EXPECT_EQ(values(got, t.name), values(want, t.name)) << t.name;
        continue;
      }
      ++quantized;
      const auto w = values(want, t.name), scales = values(got, module + ".scales"),
                 biases = values(got, module + ".biases");
      const auto* e = got.find(t.name);
      ASSERT_EQ(e->info->dtype, DType::dtype_u32);
      ASSERT_EQ(e->info->shape, (Shape{t.shape[0], t.shape[1] / 8}));
      const TensorView packed = e->file->view(*e->info);
      const auto* words = static_cast<const std::uint32_t*>(packed.data);
      for (std::size_t i = 0; i < w.size(); ++i) {
        const std::size_t g = i / 64;
        const double code = (words[i / 8] >> (4 * (i % 8))) & 15u;
        // As above, plus the bf16 rounding of the stored scale over 15 steps.
        EXPECT_LE(std::fabs(scales[g] * code + biases[g] - w[i]), std::fabs(scales[g]) * (1.5 + 15 * 0.004))
            << t.name << " " << i;
      }
    }
  EXPECT_GT(quantized, 0u);
  EXPECT_EQ(got.find("model.layers.0.mlp.down_proj.scales"), nullptr);  // 176 columns
  const auto cfg = json::parse(io::read_text_file(f.tmp.str() + "/q4/config.json"));
  const json block = {{"group_size", 64}, {"bits", 4}, {"mode", "affine"}};
  EXPECT_EQ(cfg["quantization"], block);
  EXPECT_EQ(cfg["quantization_config"], block);
  EXPECT_EQ(cfg["torch_dtype"], "bfloat16");
  EXPECT_TRUE(fs::exists(f.tmp.str() + "/q4/tokenizer.json"));
}

TEST(ExportMlx, RanksTogetherWriteWhatOneProcessWrites) {
  MlxFixture f;
  exporting::ExportOptions o;
  o.format = exporting::ExportFormat::export_format_mlx;
  o.mlx_bits = 8;
  o.mlx_group_size = 32;
  o.max_shard_bytes = 20'000;  // several shards, scales and biases apart from their weights
  const std::string one = f.tmp.str() + "/one", two = f.tmp.str() + "/two";
  fs::create_directories(one);
  fs::create_directories(two);
  const auto whole = exporting::export_mlx_merged(f.adapter(), one, o);
  ASSERT_GT(whole.shards, 2u);
  std::size_t tensors = 0, merged = 0;
  for (int rank : {0, 1}) {
    const auto part = exporting::export_mlx_merged(f.adapter(), two, o, exporting::ShardRanks{rank, 2});
    tensors += part.tensors;
    merged += part.merged;
  }
  EXPECT_EQ(tensors, whole.tensors);
  EXPECT_EQ(merged, whole.merged);
  for (const auto& entry : fs::directory_iterator(one)) {
    const std::string name = entry.path().filename().string();
    EXPECT_EQ(io::read_text_file(entry.path().string()), io::read_text_file(two + "/" + name)) << name;
  }
}

TEST(ExportMlx, UnsupportedQuantizationIsRefused) {
  MlxFixture f;
  exporting::ExportOptions o;
  o.format = exporting::ExportFormat::export_format_mlx;
  o.mlx_bits = 3;
  const Error e = test::error_of([&] { exporting::export_to_dir(f.adapter(), f.tmp.str() + "/q3", o, {}); });
  EXPECT_NE(std::string(e.what()).find("--bits"), std::string::npos) << e.what();
  EXPECT_FALSE(fs::exists(f.tmp.str() + "/q3"));
}

}  // namespace
}  // namespace anvil
