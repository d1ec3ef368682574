// anvil generate MODEL_DIR [--adapter DIR] (--prompt TEXT | --file FILE) [--max-new-tokens N]
//                [--chat [--system TEXT] [--template T]]
// anvil eval MODEL_DIR [--adapter DIR] --data FILE.jsonl [--max-new-tokens N] [--json]
//            [--chat [--system TEXT] [--template T]]
//
// generate: greedy continuation of each prompt (a --file has one prompt per line), printed
// one per line. eval: exact-match accuracy on {"prompt", "completion"} records: the greedy
// continuation, up to EOS, must equal the completion. With --chat each prompt is a user
// turn in the model's chat template (cli/chat_prompt.h) followed by its generation prompt,
// generation also stops at the template's end-of-turn token, and eval also takes
// {"messages": [...]} records whose last message, the assistant's, is the completion.
#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "cli/chat_prompt.h"
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
  bool chat = false;
  std::string system;         // with --chat: the system message in front of each prompt
  std::string chat_template;  // with --chat: --template; empty = the model's
};

// Everything generation needs, loaded once.
struct LoadedModel {
  model::ModelSpec spec;
  data::Tokenizer tokenizer;
  model::BaseWeights base;
  std::optional<exporting::PeftAdapter> adapter;
  std::optional<model::LoraLayout> layout;
  std::unique_ptr<backend::Backend> backend;
  std::optional<ChatPrompter> chat;  // with --chat

  explicit LoadedModel(const GenerateArgs& a)
      : spec(model::model_spec_from_dir(a.model_dir)),
        tokenizer(data::Tokenizer::load(a.model_dir)),
        base(model::base_weights_load(spec, a.model_dir, DType::dtype_f32, model::tp_shard(spec, 0, 1))),
        backend(backend::make_cpu_backend()) {
    if (a.chat) chat.emplace(a.model_dir, a.chat_template, tokenizer);
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
    if (chat) o.stop_ids.push_back(chat->end_of_turn_id());
    return o;
  }
  // The ids `prompt` is generated from: with --chat a user turn in the chat template.
  std::vector<std::int32_t> prompt_ids(const GenerateArgs& a, const std::string& prompt, const std::string& where) {
    return chat ? chat->user_turn_ids(a.system, prompt, where) : tokenizer.encode(prompt, true);
  }
};

void check_chat_flags(const GenerateArgs& a, const char* verb) {
  ANVIL_CHECK_INPUT(a.chat || (a.system.empty() && a.chat_template.empty()), verb,
                    ": --system and --template need --chat");
}

void run_generate(const GenerateArgs& a) {
  ANVIL_CHECK_INPUT(a.prompt.empty() != a.file.empty(), "generate: give exactly one of --prompt or --file");
  check_chat_flags(a, "generate");
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
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    const auto ids = m.prompt_ids(a, prompts[i], a.prompt.empty() ? str_cat(a.file, ": prompt ", i + 1) : "--prompt");
    const auto out = gen.generate(ids, opt);
    std::printf("%s\n", m.tokenizer.decode(out, true).c_str());
  }
}

// One eval record: the ids to generate from, the prompt as shown, the expected answer.
struct EvalCase {
  std::vector<std::int32_t> ids;
  std::string prompt;
  std::string want;
};

bool has_string(const nlohmann::json& j, const char* key) {
  return j.is_object() && j.contains(key) && j[key].is_string();
}

// With --chat, {"messages": [...]}: the conversation before its last message (the
// assistant's) is the prompt, that message's content the expected answer.
EvalCase eval_chat_case(const ChatPrompter& chat, const nlohmann::json& list, const std::string& where) {
  ANVIL_CHECK_INPUT(list.is_array() && !list.empty(), where, ": \"messages\" must be a non-empty list");
  std::vector<data::ChatMessage> messages;
  for (std::size_t i = 0; i < list.size(); ++i) {
    ANVIL_CHECK_INPUT(has_string(list[i], "role") && has_string(list[i], "content"), where, ": messages[", i,
                      "] needs string fields \"role\" and \"content\"");
    messages.push_back(
        {list[i]["role"].get_ref<const std::string&>(), list[i]["content"].get_ref<const std::string&>()});
  }
  ANVIL_CHECK_INPUT(messages.back().role == "assistant", where, ": the last message must be the assistant's (the "
                    "expected answer), not \"", messages.back().role, "\"");
  EvalCase c;
  c.want = messages.back().content;
  messages.pop_back();
  c.ids = chat.ids(messages, where);
  c.prompt = messages.back().content;
  return c;
}

EvalCase eval_case(LoadedModel& m, const GenerateArgs& a, const std::string& line, const std::string& where) {
  const auto rec = nlohmann::json::parse(line, nullptr, false);
  if (m.chat && rec.is_object() && rec.contains("messages")) return eval_chat_case(*m.chat, rec["messages"], where);
  ANVIL_CHECK_INPUT(has_string(rec, "prompt") && has_string(rec, "completion"), where,
                    ": expected a JSON object with string fields \"prompt\" and \"completion\"",
                    m.chat ? ", or \"messages\"" : "");
  EvalCase c;
  c.prompt = rec["prompt"].get<std::string>();
  c.want = rec["completion"].get<std::string>();
  c.ids = m.prompt_ids(a, c.prompt, where);
  return c;
}

void run_eval(const GenerateArgs& a) {
  check_chat_flags(a, "eval");
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
    const EvalCase c = eval_case(m, a, line, str_cat(a.data, ":", line_no));
    const auto got = m.tokenizer.decode(gen.generate(c.ids, opt), true);
    ++total;
    if (got == c.want) ++correct;
    if (static_cast<int>(shown.size()) < a.show)
      shown.push_back(str_cat("  ", nlohmann::json(c.prompt).dump(), " -> ", nlohmann::json(got).dump(),
                              got == c.want ? "  (ok)" : str_cat("  (want ", nlohmann::json(c.want).dump(), ")")));
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
  cmd->add_flag("--chat", a.chat,
                "Wrap each prompt as a user turn in the model's chat template, with its generation prompt; "
                "stop at its end-of-turn token");
  cmd->add_option("--system", a.system, "With --chat: a system message in front of each prompt");
  cmd->add_option("--template", a.chat_template,
                  "With --chat: chat template llama3, chatml, mistral or a .jinja file (default: the model's)");
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
  cmd->add_option("--data", a->data,
                  "JSONL with {\"prompt\", \"completion\"} records (with --chat also {\"messages\": [...]}, "
                  "the last message the assistant's expected answer)")
      ->required();
  cmd->add_option("--show", a->show, "Print this many examples first");
  cmd->add_flag("--json", a->json, "Print one JSON object {exact_match, correct, total}");
  cmd->callback([a] { run_eval(*a); });
}

}  // namespace anvil::cli
