// anvil generate MODEL_DIR [--adapter DIR] (--prompt TEXT | --file FILE) [--max-new-tokens N]
// anvil eval MODEL_DIR [--adapter DIR] --data FILE.jsonl [--max-new-tokens N] [--json]
//
// generate: greedy continuation of each prompt (a --file has one prompt per line), printed
// one per line. eval: exact-match accuracy on {"prompt", "completion"} records: the greedy
// continuation, up to EOS, must equal the completion.
#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "cli/commands.h"
#include "core/error.h"
#include "core/log.h"
#include "data/tokenizer.h"
#include "export/peft.h"
#include "model/llama_generate.h"
#include "model/llama_weights.h"
#include "model/lora.h"
#include "model/model_spec.h"

namespace anvil::cli {

namespace {

struct GenerateArgs {
  std::string model_dir;
  std::string adapter;
  std::string prompt;
  std::string file;
  std::string data;
  std::int64_t max_new_tokens = 64;
  int show = 3;
  bool json = false;
};

// Everything generation needs, loaded once.
struct LoadedModel {
  model::ModelSpec spec;
  data::Tokenizer tokenizer;
  model::BaseWeights base;
  std::optional<exporting::PeftAdapter> adapter;
  std::optional<model::LoraLayout> layout;
  std::unique_ptr<backend::Backend> backend;

  explicit LoadedModel(const GenerateArgs& a)
      : spec(model::model_spec_from_dir(a.model_dir)),
        tokenizer(data::Tokenizer::load(a.model_dir)),
        base(model::base_weights_load(spec, a.model_dir, DType::dtype_f32, model::tp_shard(spec, 0, 1))),
        backend(backend::make_cpu_backend()) {
    if (!a.adapter.empty()) {
      adapter = exporting::peft_load(a.adapter, spec);
      layout.emplace(spec, adapter->spec);
    }
  }
  model::Generator generator(std::int64_t max_len) {
    return model::Generator(spec, base, layout ? &*layout : nullptr,
                            adapter ? adapter->params.data() : nullptr, *backend, max_len);
  }
  model::GenerateOptions options(std::int64_t max_new_tokens) const {
    model::GenerateOptions o;
    o.max_new_tokens = max_new_tokens;
    o.vocab_limit = static_cast<std::int64_t>(tokenizer.vocab_size());
    if (auto eos = tokenizer.eos_id()) o.stop_ids.push_back(*eos);
    for (auto id : spec.eos_token_ids) o.stop_ids.push_back(static_cast<std::int32_t>(id));
    return o;
  }
};

void run_generate(const GenerateArgs& a) {
  ANVIL_CHECK_INPUT(a.prompt.empty() != a.file.empty(), "generate: give exactly one of --prompt or --file");
  std::vector<std::string> prompts;
  if (!a.prompt.empty()) {
    prompts.push_back(a.prompt);
  } else {
    std::ifstream in(a.file);
    ANVIL_CHECK_INPUT(in.good(), a.file, ": cannot open");
    for (std::string line; std::getline(in, line);)
      if (!line.empty()) prompts.push_back(line);
  }
  LoadedModel m(a);
  auto gen = m.generator(std::min<std::int64_t>(m.spec.max_position_embeddings, 4096));
  const auto opt = m.options(a.max_new_tokens);
  for (const auto& p : prompts) {
    const auto ids = m.tokenizer.encode(p, true);
    const auto out = gen.generate(ids, opt);
    std::printf("%s\n", m.tokenizer.decode(out, true).c_str());
  }
}

void run_eval(const GenerateArgs& a) {
  LoadedModel m(a);
  std::ifstream in(a.data);
  ANVIL_CHECK_INPUT(in.good(), a.data, ": cannot open");
  auto gen = m.generator(std::min<std::int64_t>(m.spec.max_position_embeddings, 4096));
  const auto opt = m.options(a.max_new_tokens);
  std::int64_t total = 0, correct = 0, line_no = 0;
  std::vector<std::string> shown;
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    if (line.empty()) continue;
    const auto rec = nlohmann::json::parse(line, nullptr, false);
    ANVIL_CHECK_INPUT(rec.is_object() && rec.contains("prompt") && rec["prompt"].is_string() &&
                          rec.contains("completion") && rec["completion"].is_string(),
                      a.data, ":", line_no, ": expected a JSON object with string fields "
                      "\"prompt\" and \"completion\"");
    const auto prompt = rec["prompt"].get<std::string>();
    const auto want = rec["completion"].get<std::string>();
    const auto got = m.tokenizer.decode(gen.generate(m.tokenizer.encode(prompt, true), opt), true);
    ++total;
    if (got == want) ++correct;
    if (static_cast<int>(shown.size()) < a.show)
      shown.push_back(str_cat("  ", nlohmann::json(prompt).dump(), " -> ", nlohmann::json(got).dump(),
                              got == want ? "  (ok)" : str_cat("  (want ", nlohmann::json(want).dump(), ")")));
  }
  ANVIL_CHECK_INPUT(total > 0, a.data, ": no records");
  const double acc = static_cast<double>(correct) / static_cast<double>(total);
  if (a.json) {
    std::printf("%s\n", nlohmann::json{{"exact_match", acc}, {"correct", correct}, {"total", total}}.dump().c_str());
    return;
  }
  for (const auto& s : shown) std::printf("%s\n", s.c_str());
  std::printf("exact match: %lld/%lld (%.1f%%)\n", static_cast<long long>(correct),
              static_cast<long long>(total), 100.0 * acc);
}

void add_model_options(CLI::App* cmd, GenerateArgs& a) {
  cmd->add_option("model_dir", a.model_dir, "Hugging Face model directory")->required();
  cmd->add_option("--adapter", a.adapter, "PEFT adapter directory (e.g. OUTPUT_DIR/adapter)");
  cmd->add_option("--max-new-tokens", a.max_new_tokens, "Stop after this many new tokens")
      ->check(CLI::Range(1, 1 << 20));
}

}  // namespace

void register_generate(CLI::App& app) {
  auto* cmd = app.add_subcommand("generate", "Greedy generation from a model (and adapter) for prompts");
  auto a = std::make_shared<GenerateArgs>();
  add_model_options(cmd, *a);
  cmd->add_option("--prompt", a->prompt, "The prompt text");
  cmd->add_option("--file", a->file, "A file of prompts, one per line");
  cmd->callback([a] { run_generate(*a); });
}

void register_eval(CLI::App& app) {
  auto* cmd = app.add_subcommand("eval", "Exact-match accuracy of greedy generation on prompt/completion JSONL");
  auto a = std::make_shared<GenerateArgs>();
  add_model_options(cmd, *a);
  cmd->add_option("--data", a->data, "JSONL with {\"prompt\", \"completion\"} records")->required();
  cmd->add_option("--show", a->show, "Print this many examples first");
  cmd->add_flag("--json", a->json, "Print one JSON object {exact_match, correct, total}");
  cmd->callback([a] { run_eval(*a); });
}

}  // namespace anvil::cli
