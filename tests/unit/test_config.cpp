// The training config: schema table, types, defaults, overrides, error reporting, the
// derived batch layout, and that configs/README.md and the example configs keep up.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "core/error.h"
#include "train/config.h"
#include "train/config_schema.h"
#include "train/config_suggest.h"

namespace anvil::train {
namespace {

namespace fs = std::filesystem;

const std::string kMinimal = "output_dir: out\nmodel:\n  path: m\ndata:\n  train: t.jsonl\n";

TrainConfig load(const std::string& text, const std::vector<std::string>& sets = {}, int world = 0) {
  ConfigContext ctx;
  ctx.check_files = false;
  ctx.world_size = world;
  return config_load_from_string(text, "c.yaml", sets, ctx);
}

// The message of the user error that loading must raise.
std::string load_error(const std::string& text, const std::vector<std::string>& sets = {}, int world = 0,
                       const ConfigContext* files_ctx = nullptr) {
  try {
    if (files_ctx)
      config_load_from_string(text, "c.yaml", sets, *files_ctx);
    else
      load(text, sets, world);
  } catch (const Error& e) {
    EXPECT_EQ(e.exit_code(), 2) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no error for:\n" << text;
  return "";
}

#define EXPECT_HAS(haystack, needle) \
  EXPECT_NE((haystack).find(needle), std::string::npos) << "missing: " << (needle) << "\nin:\n" << (haystack)

std::string read_text(const fs::path& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

TEST(ConfigSchema, DefaultsParseAndSectionsAreContiguous) {
  const TrainConfig d = config_defaults();  // throws (internal) if a default fails its own row
  EXPECT_TRUE(d.output_dir.empty());
  std::vector<std::string> order;
  for (const ConfigKey& key : config_schema()) {
    EXPECT_FALSE(key.doc.empty()) << key.path;
    EXPECT_TRUE(key.section().empty() || std::count(config_sections().begin(), config_sections().end(),
                                                    std::string(key.section())) == 1)
        << key.path;
    if (key.type == KeyType::key_choice || key.type == KeyType::key_list) {
      EXPECT_FALSE(key.choices.empty()) << key.path;
    }
    if (order.empty() || order.back() != key.section()) order.emplace_back(key.section());
  }
  std::vector<std::string> expected{""};
  expected.insert(expected.end(), config_sections().begin(), config_sections().end());
  EXPECT_EQ(order, expected) << "top-level keys first, then each section once, in config_sections() order";
}

TEST(ConfigSchema, DefaultsLandInTheStruct) {
  const TrainConfig c = load(kMinimal);
  EXPECT_EQ(c.output_dir, "out");
  EXPECT_EQ(c.model.path, "m");
  EXPECT_EQ(c.model.dtype, WeightDtype::weight_auto);
  EXPECT_EQ(c.lora.rank, 16);
  EXPECT_DOUBLE_EQ(c.lora.alpha, 32.0);
  EXPECT_EQ(c.lora.targets.size(), 7u);
  EXPECT_FALSE(c.data.eval.has_value());
  EXPECT_EQ(c.data.seq_len, 2048);
  EXPECT_TRUE(c.data.packing);
  EXPECT_DOUBLE_EQ(c.train.lr, 2e-4);
  EXPECT_EQ(c.train.lr_schedule, LrSchedule::lr_cosine);
  EXPECT_EQ(c.parallel.dp, 0);  // auto
  EXPECT_EQ(c.checkpoint.resume, "auto");
  EXPECT_EQ(c.log.level, LogLevel::log_info);
  TrainConfig d = config_defaults();
  d.output_dir = "out", d.model.path = "m", d.data.train = {{"t.jsonl", 1.0}};
  EXPECT_EQ(c, d);
}

TEST(ConfigSchema, ReadmeDocumentsEveryKeyWithItsTypeAndDefault) {
  const std::string readme = read_text(fs::path(ANVIL_SOURCE_DIR) / "configs" / "README.md");
  ASSERT_FALSE(readme.empty()) << "configs/README.md";
  for (const ConfigKey& key : config_schema()) {
    // | `train.lr` | float | `2e-4` | ... |
    const std::string def = key.required() ? "required" : "`" + key.default_yaml + "`";
    const std::string row = "| `" + key.path + "` | " + key_type_name(key.type) + " | " + def + " | ";
    EXPECT_HAS(readme, row);
  }
  // And no row for a key the schema does not have.
  const std::regex row_key(R"(\n\| `([a-z_.]+)` \|)");
  for (auto it = std::sregex_iterator(readme.begin(), readme.end(), row_key); it != std::sregex_iterator();
       ++it)
    EXPECT_NE(config_schema_find((*it)[1].str()), nullptr) << "README documents unknown key " << (*it)[1];
}

TEST(ConfigSchema, ExampleConfigsLoad) {
  int n = 0;
  for (const auto& entry : fs::directory_iterator(fs::path(ANVIL_SOURCE_DIR) / "configs")) {
    if (entry.path().extension() != ".yaml") continue;
    ++n;
    ConfigContext ctx;
    ctx.check_files = false;
    EXPECT_NO_THROW(config_load(entry.path().string(), {}, ctx)) << entry.path();
  }
  EXPECT_GE(n, 2);
}

// Checkpoints written before data.train_on replaced data.train_on_prompt carry the old
// key in their config; it still loads, as the train_on it meant.
TEST(ConfigSchema, LegacyTrainOnPromptLoadsAsTrainOn) {
  const std::string base = "output_dir: out\nmodel:\n  path: m\ndata:\n  train: t.jsonl\n";
  EXPECT_EQ(load(base + "  train_on_prompt: true\n").data.train_on, data::TrainOn::train_on_all);
  EXPECT_EQ(load(base + "  train_on_prompt: false\n").data.train_on, data::TrainOn::train_on_assistant);
  // An explicit train_on wins, in either order.
  EXPECT_EQ(load(base + "  train_on_prompt: true\n  train_on: last_assistant\n").data.train_on,
            data::TrainOn::train_on_last_assistant);
  EXPECT_EQ(load(base + "  train_on: last_assistant\n  train_on_prompt: true\n").data.train_on,
            data::TrainOn::train_on_last_assistant);
  EXPECT_HAS(load_error(base + "  train_on_prompt: maybe\n"), "data.train_on_prompt");
}

TEST(ConfigTypes, EachTypeParses) {
  const TrainConfig c =
      load(kMinimal +
           "lora: {rank: 8, alpha: 16, dropout: 0.05, rslora: true, targets: [q_proj, v_proj]}\n"
           "train: {lr: 1e-4, steps: 100, lr_schedule: linear, min_lr_ratio: 1}\n"
           "parallel: {dp: 2, backend: cpu, comm: mpi}\n"
           "log: {level: debug}\n");
  EXPECT_EQ(c.lora.rank, 8);
  EXPECT_DOUBLE_EQ(c.lora.alpha, 16.0);  // an integer is a fine float
  EXPECT_TRUE(c.lora.rslora);
  EXPECT_EQ(c.lora.targets, (std::vector<std::string>{"q_proj", "v_proj"}));
  EXPECT_DOUBLE_EQ(c.train.lr, 1e-4);  // no dot needed, unlike YAML 1.1 readers
  EXPECT_EQ(c.train.lr_schedule, LrSchedule::lr_linear);
  EXPECT_EQ(c.parallel.dp, 2);
  EXPECT_EQ(c.parallel.backend, BackendKind::backend_cpu);
  EXPECT_EQ(c.log.level, LogLevel::log_debug);
}

TEST(ConfigTypes, WrongTypesAndRangesNameKeyAndLine) {
  struct Case {
    std::string yaml, expected;
  };
  const std::vector<Case> cases{
      {"train:\n  lr: fast\n", "c.yaml:3: train.lr: expected a number, got 'fast'"},
      {"lora:\n  rank: 8.5\n", "c.yaml:3: lora.rank: expected an integer, got '8.5'"},
      {"lora:\n  rank: \"8\"\n", "lora.rank: expected an integer, got the quoted string '8'"},
      {"lora:\n  rank: 99999999999\n", "lora.rank: must be in [1, 65536], got 99999999999"},
      {"lora:\n  rank: 123456789012345678901234\n", "lora.rank: must be in [1, 65536]"},
      {"lora:\n  dropout: 1.0\n", "c.yaml:3: lora.dropout: must be in [0, 1), got 1.0"},
      {"train:\n  lr: 0\n", "train.lr: must be > 0, got 0"},
      {"train:\n  lr: .inf\n", "train.lr: expected a number, got '.inf'"},
      {"train:\n  steps: -5\n", "train.steps: must be >= 0, got -5"},
      {"train:\n  global_batch: 99999999999\n", "train.global_batch: must be <= 2147483647, got 99999999999"},
      {"data:\n  packing: maybe\n", "data.packing: expected true or false, got 'maybe'"},
      {"train:\n  lr_schedule: cosin\n",
       "train.lr_schedule: expected one of constant, linear, cosine, got 'cosin' (did you mean 'cosine'?)"},
      {"model:\n  dtype: BF16\n",
       "model.dtype: expected one of auto, f32, bf16, got 'BF16' (did you mean 'bf16'?)"},
      {"lora:\n  targets: q_proj\n",
       "lora.targets: expected a list such as [q_proj, experts.down_proj], got 'q_proj'"},
      {"lora:\n  targets:\n    - q_proj\n    - qproj\n", "c.yaml:5: lora.targets: 'qproj' is not one of"},
      {"lora:\n  targets: [v_proj, v_proj]\n", "lora.targets: 'v_proj' is listed twice"},
      {"lora:\n  targets: []\n", "lora.targets: must name at least one of q_proj"},
      {"parallel:\n  dp: many\n", "parallel.dp: expected auto or an integer, got 'many'"},
      {"parallel:\n  dp: 0\n", "parallel.dp: must be in [1, 1048576], got 0"},
      // The one user-facing check of a tp below 1 (ProcessGrid only asserts it).
      {"parallel:\n  tp: 0\n", "c.yaml:3: parallel.tp: must be in [1, 1024], got 0"},
      {"data:\n  chat_template: [a]\n", "data.chat_template: expected a string, got a list"},
      {"train: 5\n", "c.yaml:2: train: expected a mapping of keys"},
  };
  // The required keys come from --set so that each case can hold any section; the case's
  // own first line is line 2 of the file.
  for (const Case& c : cases)
    EXPECT_HAS(load_error("output_dir: out\n" + c.yaml, {"model.path=m", "data.train=t.jsonl"}), c.expected);
}

TEST(ConfigTypes, NullOnlyForOptionalKeys) {
  EXPECT_FALSE(load(kMinimal, {"data.eval=null"}).data.eval.has_value());
  EXPECT_EQ(load(kMinimal, {"data.eval=e.jsonl"}).data.eval, "e.jsonl");
  EXPECT_HAS(load_error(kMinimal + "train:\n  lr:\n"), "c.yaml:7: train.lr: expected a number, got nothing");
  EXPECT_HAS(load_error("output_dir: ~\nmodel: {path: m}\ndata: {train: t}\n"),
             "c.yaml:1: output_dir: expected a path, got nothing");
}

TEST(ConfigErrors, MissingRequiredKeysPointAtTheirSection) {
  const std::string msg = load_error("model:\n  dtype: bf16\ndata:\n  shuffle: false\n");
  EXPECT_HAS(msg, "c.yaml: 3 problems in the config");
  EXPECT_HAS(msg, "c.yaml:1: model.path: required key is missing");
  EXPECT_HAS(msg, "c.yaml:3: data.train: required key is missing");
  EXPECT_HAS(msg, "\nc.yaml: output_dir: required key is missing");
}

TEST(ConfigErrors, UnknownKeysSuggestTheLikelyOne) {
  EXPECT_HAS(load_error(kMinimal + "lora:\n  rnak: 8\n"),
             "c.yaml:7: lora.rnak: unknown key (did you mean 'lora.rank'?)");
  EXPECT_HAS(load_error(kMinimal + "trian:\n  lr: 1\n"),
             "c.yaml:6: trian: unknown section (did you mean 'train'?)");
  EXPECT_HAS(load_error(kMinimal + "train:\n  seq_len: 512\n"),
             "train.seq_len: unknown key (did you mean 'data.seq_len'?)");
  EXPECT_HAS(load_error(kMinimal + "lr: 1e-4\n"), "c.yaml:6: lr: unknown key (did you mean 'train.lr'?)");
  EXPECT_HAS(load_error(kMinimal + "train:\n  warmup: 10\n"), "(did you mean 'train.warmup_steps'?)");
  const std::string garbage = load_error(kMinimal + "zzzzzzzz: 1\n");
  EXPECT_HAS(garbage, "zzzzzzzz: unknown key");
  EXPECT_EQ(garbage.find("did you mean"), std::string::npos) << garbage;
}

TEST(ConfigErrors, DuplicatesAndSyntaxAndShape) {
  EXPECT_HAS(load_error(kMinimal + "train:\n  lr: 1\n  lr: 2\n"),
             "c.yaml:8: train.lr: appears twice (first on line 7)");
  EXPECT_HAS(load_error("a: [1, 2\nb: 3\n"), "c.yaml:2: YAML syntax error:");
  EXPECT_HAS(load_error(""), "c.yaml: output_dir: required key is missing");
  EXPECT_EQ(load("", {"output_dir=o", "model.path=m", "data.train=t"}).output_dir, "o");
  EXPECT_EQ(
      load_error("- a\n- b\n"),  // and nothing else
      "c.yaml:1: expected a mapping of keys and sections (output_dir:, model:, lora:, ...) at the top level");
}

TEST(ConfigErrors, AllProblemsReportedTogetherInLineOrder) {
  const std::string yaml =
      "output_dir: out\n"        // 1
      "model:\n"                 // 2
      "  path: m\n"              // 3
      "  dtyp: bf16\n"           // 4  unknown key
      "lora:\n"                  // 5
      "  rank: 0\n"              // 6  out of range
      "data:\n"                  // 7
      "  train: t.jsonl\n"       // 8
      "  packing: yes please\n"  // 9  not a bool
      "train:\n"                 // 10
      "  steps: 10\n"            // 11
      "  warmup_steps: 20\n"     // 12 cross-key rule
      "  lr: fast\n";            // 13 not a number
  const std::string msg = load_error(yaml, {"log.every=0"});
  const std::vector<std::string> lines{"c.yaml: 6 problems in the config",
                                       "c.yaml:4: model.dtyp: unknown key (did you mean 'model.dtype'?)",
                                       "c.yaml:6: lora.rank: must be in [1, 65536], got 0",
                                       "c.yaml:9: data.packing: expected true or false, got 'yes please'",
                                       "c.yaml:12: train.warmup_steps: 20 is more than train.steps (10)",
                                       "c.yaml:13: train.lr: expected a number, got 'fast'",
                                       "--set log.every=0: log.every: must be >= 1, got 0"};
  std::string expected;
  for (const std::string& l : lines) expected += (expected.empty() ? "" : "\n") + l;
  EXPECT_EQ(msg, expected);
}

TEST(ConfigOverrides, SetAnyKeyTypedLikeYaml) {
  const TrainConfig c =
      load(kMinimal + "train:\n  lr: 3e-4\n",
           {"train.lr=1e-5", "lora.targets=[q_proj, k_proj]", "data.eval=e.jsonl", "data.eval=null",
            "model.path='123'", "parallel.dp=auto", "lora.rank=4", "lora.rank=8"});
  EXPECT_DOUBLE_EQ(c.train.lr, 1e-5);  // --set beats the file
  EXPECT_EQ(c.lora.targets, (std::vector<std::string>{"q_proj", "k_proj"}));
  EXPECT_FALSE(c.data.eval.has_value());  // the later --set wins
  EXPECT_EQ(c.model.path, "123");
  EXPECT_EQ(c.parallel.dp, 0);
  EXPECT_EQ(c.lora.rank, 8);
  // A required key may come from --set alone.
  EXPECT_EQ(load("model: {path: m}\ndata: {train: t}\n", {"output_dir=runs/x"}).output_dir, "runs/x");
}

TEST(ConfigOverrides, BadOverridesAreNamed) {
  EXPECT_HAS(load_error(kMinimal, {"train.lr=fast"}),
             "--set train.lr=fast: train.lr: expected a number, got 'fast'");
  EXPECT_HAS(load_error(kMinimal, {"train.lrr=1"}),
             "--set train.lrr=1: train.lrr: unknown key (did you mean 'train.lr'?)");
  EXPECT_HAS(load_error(kMinimal, {"train.lr"}), "--set train.lr: expected KEY=VALUE");
  EXPECT_HAS(load_error(kMinimal, {"lora=8"}),
             "--set lora=8: lora: is a section; set one of its keys, e.g. lora.rank");
  EXPECT_HAS(load_error(kMinimal, {"lora.targets=[q_proj"}),
             "--set lora.targets=[q_proj: lora.targets: YAML syntax error");
}

TEST(ConfigRules, CrossKeyRules) {
  EXPECT_HAS(load_error(kMinimal + "train: {eval_every: 50}\n"),
             "c.yaml:6: train.eval_every: 50 needs an evaluation set");
  EXPECT_NO_THROW(load(kMinimal + "train: {eval_every: 50}\n", {"data.eval=e.jsonl"}));
  EXPECT_HAS(load_error(kMinimal + "parallel: {backend: cpu, comm: nccl}\n"),
             "parallel.comm: nccl needs GPUs");
  EXPECT_NO_THROW(load(kMinimal + "train: {steps: 0, warmup_steps: 100}\n"));  // epochs: checked at run time
  // A rule about a key that failed on its own stays quiet.
  const std::string msg = load_error(kMinimal + "train: {steps: x, warmup_steps: 100}\n");
  EXPECT_EQ(msg.find("warmup_steps"), std::string::npos) << msg;
}

TEST(ConfigRules, BatchLayoutAndGradAccumulation) {
  const TrainConfig c = load(kMinimal + "train: {global_batch: 64, micro_batch: 2}\n", {}, 8);
  EXPECT_EQ(config_data_parallel(c, 8), 8);
  EXPECT_EQ(config_grad_accumulation(c, 8), 4);  // 64 / (2 x 8)
  EXPECT_EQ(config_grad_accumulation(c, 1), 32);
  EXPECT_EQ(config_world_size(c, 0), 1);  // dp auto, tp 1
  const TrainConfig tp2 =
      load(kMinimal + "train: {global_batch: 64, micro_batch: 2}\nparallel: {tp: 2, dp: 4}\n");
  EXPECT_EQ(config_world_size(tp2, 0), 8);
  EXPECT_EQ(config_grad_accumulation(tp2, 0), 8);  // 64 / (2 x 4)
  EXPECT_EQ(config_grad_accumulation(tp2, 8), 8);
  EXPECT_THROW(config_grad_accumulation(tp2, 6), Error);  // tp 2 x dp 4 != 6
  EXPECT_THROW(config_grad_accumulation(c, 3), Error);    // 64 % (2 x 3)
  try {
    config_data_parallel(tp2, 7);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "parallel.tp: 2 does not divide the world size 7");
  }
  EXPECT_HAS(load_error(kMinimal + "train:\n  global_batch: 12\n  micro_batch: 5\n"),
             "c.yaml:7: train.global_batch: 12 is not a multiple of micro_batch x dp = 5 x 1 = 5");
  EXPECT_HAS(load_error(kMinimal + "parallel:\n  tp: 2\n  dp: 2\n", {}, 8),
             "c.yaml:8: parallel.dp: tp 2 x dp 2 = 4 ranks, but the world size is 8");
  EXPECT_HAS(load_error(kMinimal + "parallel:\n  tp: 3\n", {}, 8),
             "c.yaml:7: parallel.tp: 3 does not divide the world size 8");
}

// The backend limit table (backend/backend_support.h) as config errors: the key, its line,
// and the limit; the CPU backend takes any rank.
TEST(ConfigRules, BackendLimitsAreConfigErrors) {
  EXPECT_HAS(load_error(kMinimal + "lora:\n  rank: 128\nparallel:\n  backend: cuda\n"),
             "c.yaml:7: lora.rank: 128 is more than the CUDA backend's LoRA kernels take (at most 64)");
  EXPECT_EQ(load(kMinimal + "lora:\n  rank: 64\nparallel:\n  backend: cuda\n").lora.rank, 64);
  EXPECT_EQ(load(kMinimal + "lora:\n  rank: 128\nparallel:\n  backend: cpu\n").lora.rank, 128);
}

// model.quant / model.quant_skip: defaults, the policy the loader gets, and bad values
// named with their key (exit 2); the CUDA backend (whose dequantization is unrun on a GPU)
// takes them with the LM head dense.
TEST(ConfigQuant, QuantKeysParseAndBadValuesAreNamed) {
  const TrainConfig d = load(kMinimal);
  EXPECT_EQ(d.model.quant, QuantMode::quant_none);
  EXPECT_EQ(d.model.quant_skip, (std::vector<std::string>{"lm_head", "embed_tokens", "router"}));
  EXPECT_EQ(quant_policy_from_config(d).kind, quant::QuantKind::quant_none);
  const TrainConfig q = load(kMinimal, {"model.quant=nf4", "model.quant_skip=[lm_head, down_proj]"});
  const quant::QuantPolicy p = quant_policy_from_config(q);
  EXPECT_EQ(p.kind, quant::QuantKind::quant_nf4);
  EXPECT_TRUE(p.applies("model.layers.0.self_attn.q_proj.weight"));
  EXPECT_FALSE(p.applies("model.layers.0.mlp.down_proj.weight"));
  EXPECT_FALSE(p.applies("lm_head.weight"));
  EXPECT_EQ(quant_policy_from_config(load(kMinimal, {"model.quant=fp8"})).kind, quant::QuantKind::quant_fp8);
  EXPECT_HAS(load_error(kMinimal, {"model.quant=int4"}), "model.quant");
  EXPECT_HAS(load_error(kMinimal, {"model.quant_skip=[lm_head, mlp]"}), "model.quant_skip");
  const TrainConfig cuda = load(kMinimal + "parallel:\n  backend: cuda\n", {"model.quant=nf4"});
  EXPECT_EQ(cuda.model.quant, QuantMode::quant_nf4);
  EXPECT_HAS(load_error(kMinimal + "parallel:\n  backend: cuda\n", {"model.quant=fp8", "model.quant_skip=[router]"}),
             "model.quant: fp8 base weights on the CUDA backend need lm_head in model.quant_skip");
}

class ConfigFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("anvil_test_config_" + std::to_string(::getpid()));
    fs::create_directories(dir_ / "model");
    std::ofstream(dir_ / "model" / "config.json")
        << R"({"model_type": "llama", "hidden_size": 64, "intermediate_size": 90, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256,
              "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "torch_dtype": "float32"})";
    std::ofstream(dir_ / "train.jsonl") << "{\"text\": \"hi\"}\n";
    yaml_ = "output_dir: " + (dir_ / "out").string() + "\nmodel:\n  path: " + (dir_ / "model").string() +
            "\ndata:\n  train: " + (dir_ / "train.jsonl").string() + "\n";
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string error(const std::string& extra, std::vector<std::string> sets = {}, int world = 0) {
    ConfigContext ctx;
    ctx.world_size = world;
    return load_error(yaml_ + extra, sets, world, &ctx);
  }
  fs::path dir_;
  std::string yaml_;
};

TEST_F(ConfigFiles, ExistingFilesPass) {
  ConfigContext ctx;
  ctx.world_size = 2;
  EXPECT_NO_THROW(config_load_from_string(yaml_ + "parallel: {tp: 2}\n", "c.yaml", {}, ctx));
}

TEST_F(ConfigFiles, MissingFilesNameTheirKeys) {
  EXPECT_HAS(
      error("", {"model.path=/nonexistent/model"}),
      "--set model.path=/nonexistent/model: model.path: directory '/nonexistent/model' does not exist");
  EXPECT_HAS(error("", {"data.train=/nonexistent.jsonl"}),
             "data.train: file '/nonexistent.jsonl' does not exist");
  EXPECT_HAS(error("", {"data.train=" + dir_.string()}),
             "data.train: '" + dir_.string() + "' is a directory");
  EXPECT_HAS(error("", {"data.eval=/nonexistent.jsonl"}),
             "data.eval: file '/nonexistent.jsonl' does not exist");
  EXPECT_HAS(error("", {"checkpoint.resume=/nonexistent.h5"}),
             "checkpoint.resume: checkpoint '/nonexistent.h5' does not exist");
  fs::create_directories(dir_ / "empty_model");
  EXPECT_HAS(error("", {"model.path=" + (dir_ / "empty_model").string()}), "model.path: ");
}

TEST_F(ConfigFiles, TensorParallelMustDivideTheModel) {
  const std::string msg = error("parallel:\n  tp: 3\n", {}, 3);
  EXPECT_HAS(msg, "c.yaml:7: parallel.tp: 3 does not divide the model's num_attention_heads (4)");
  EXPECT_HAS(msg, "parallel.tp: 3 neither divides the model's num_key_value_heads (2) nor is a multiple of it");
  EXPECT_HAS(msg, "parallel.tp: 3 does not divide the model's vocab_size (256)");
  EXPECT_EQ(msg.find("intermediate_size"), std::string::npos) << msg;  // 90 rows split fine
}

TEST_F(ConfigFiles, TensorParallelBeyondKvHeadsReplicatesThem) {
  // tp 4 > 2 KV heads: each KV head lives on two ranks; only the MLP rows do not split.
  const std::string msg = error("parallel:\n  tp: 4\n", {}, 4);
  EXPECT_HAS(msg, "c.yaml:7: parallel.tp: 4 does not divide the model's intermediate_size (90)");
  EXPECT_EQ(msg.find("num_key_value_heads"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("num_attention_heads"), std::string::npos) << msg;
}

// The model's head_dim against the backend limit table: 16 here, which the CPU reference
// takes and the CUDA attention kernels (64, 128) do not; a config error on model.path.
TEST_F(ConfigFiles, HeadDimTheBackendDoesNotTakeIsAConfigError) {
  ConfigContext ctx;
  EXPECT_NO_THROW(config_load_from_string(yaml_ + "parallel:\n  backend: cpu\n", "c.yaml", {}, ctx));
  const std::string msg = error("parallel:\n  backend: cuda\n");
  EXPECT_HAS(msg, "c.yaml:3: model.path: " + (dir_ / "model").string() +
                      "/config.json: head_dim is 16; the CUDA backend's attention kernels take head_dim 64 or 128");
}

TEST(ConfigYaml, ResolvedConfigRoundTrips) {
  TrainConfig c =
      load(kMinimal +
               "lora: {targets: [up_proj, down_proj], rslora: true}\n"
               "train: {lr: 3.3e-5, adam_eps: 1e-10, seed: 7, global_batch: 12}\nparallel: {dp: 3, tp: 2}\n",
           {"data.eval=true", "output_dir='null'", "data.chat_template=chatml", "model.path=\"a: b\"",
            "data.train=[a.jsonl, {path: 'null', weight: 2.5}, {path: b.jsonl}]"});
  const std::string yaml = config_to_yaml(c);
  for (const ConfigKey& key : config_schema()) EXPECT_HAS(yaml, std::string(key.leaf()) + ":");
  EXPECT_HAS(yaml, "dp: 3");
  EXPECT_HAS(yaml, "eval: \"true\"");
  EXPECT_HAS(yaml, "{path: \"null\", weight: 2.5}");
  EXPECT_EQ(load(yaml), c) << yaml;
  c.data.eval.reset();
  EXPECT_HAS(config_to_yaml(c), "eval: null");
  EXPECT_EQ(load(config_to_yaml(c)), c);
}

TEST(ConfigLoad, DataTrainIsAPathOrAWeightedList) {
  EXPECT_EQ(load(kMinimal).data.train, (std::vector<DataSource>{{"t.jsonl", 1.0}}));
  const TrainConfig c = load(kMinimal, {"data.train=[a.jsonl, {path: b.jsonl, weight: 0.5}, {weight: 3, path: c.jsonl}]"});
  EXPECT_EQ(c.data.train, (std::vector<DataSource>{{"a.jsonl", 1.0}, {"b.jsonl", 0.5}, {"c.jsonl", 3.0}}));
  EXPECT_HAS(load_error(kMinimal, {"data.train=[]"}), "data.train: must name at least one file");
  EXPECT_HAS(load_error(kMinimal, {"data.train=[{path: a, wieght: 2}]"}),
             "'wieght' is not a key of a data source (path, weight) (did you mean 'weight'?)");
  EXPECT_HAS(load_error(kMinimal, {"data.train=[{path: a, weight: 0}]"}), "weight must be a number in (0, 1000]");
  EXPECT_HAS(load_error(kMinimal, {"data.train=[{path: a, weight: '2'}]"}), "weight must be a number");
  EXPECT_HAS(load_error(kMinimal, {"data.train=[{weight: 2}]"}), "a data source needs 'path: FILE'");
  EXPECT_HAS(load_error(kMinimal, {"data.train=[[a]]"}), "expected a path or {path, weight}, got a list");
  EXPECT_HAS(load_error(kMinimal, {"data.train={path: a}"}), "expected a path or a list of paths");
  // The line of the bad element.
  EXPECT_HAS(load_error("output_dir: o\nmodel: {path: m}\ndata:\n  train:\n    - a.jsonl\n    - {path: b, weight: -1}\n"),
             "c.yaml:6: data.train: weight must be");
}

TEST(ConfigCheck, EvalFractionIsAnEvalSetButNotBesideOne) {
  EXPECT_NO_THROW(load(kMinimal + "train: {eval_every: 50}\n", {"data.eval_fraction=0.05"}));
  EXPECT_HAS(load_error(kMinimal, {"data.eval=e.jsonl", "data.eval_fraction=0.1"}),
             "data.eval_fraction: set data.eval or data.eval_fraction, not both");
  EXPECT_HAS(load_error(kMinimal, {"data.eval_fraction=0.9"}), "data.eval_fraction: must be in [0, 0.5]");
  EXPECT_HAS(load_error(kMinimal, {"data.chat_template=vicuna"}),
             "expected one of llama3, chatml, mistral or a path to a .jinja file, got 'vicuna'");
  EXPECT_HAS(load_error(kMinimal, {"data.chat_template=chatlm"}), "(did you mean 'chatml'?)");
  EXPECT_EQ(*load(kMinimal, {"data.chat_template=my/chat.jinja"}).data.chat_template, "my/chat.jinja");
  EXPECT_HAS(load_error(kMinimal, {"data.overflow=wrap"}), "expected one of truncate, split, drop");
}

TEST(ConfigSuggest, EditDistance) {
  EXPECT_EQ(edit_distance("rank", "rank"), 0u);
  EXPECT_EQ(edit_distance("rnak", "rank"), 1u);  // one swap
  EXPECT_EQ(edit_distance("BF16", "bf16"), 0u);
  EXPECT_EQ(edit_distance("", "abc"), 3u);
  EXPECT_EQ(edit_distance("lr", "seed"), 4u);
  EXPECT_EQ(closest_match("grad_clipping", {"grad_clip", "seed"}), "grad_clip");  // prefix
  EXPECT_EQ(closest_match("xyz", {"grad_clip", "seed"}), "");
  EXPECT_EQ(did_you_mean("trian", {"train", "data"}), " (did you mean 'train'?)");
}

}  // namespace
}  // namespace anvil::train
