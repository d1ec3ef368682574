// anvil tokenize MODEL_DIR [--file F] [--add-special] | --decode [--skip-special]
//                | --chat [--system TEXT] [--template T] [--no-generation-prompt] | --records ...
//
// Encode: one JSON line {"ids": [...]} per input line (the line without its '\n').
// Decode: reads JSON lines holding "ids" (or a bare array of ids) and prints their text,
// one line each. --chat: each line is a user turn, encoded as `anvil generate --chat`
// prompts the model with it (--no-generation-prompt: the turn alone, as transformers'
// apply_chat_template(add_generation_prompt=False) renders it). A tool for checking a model's tokenizer against its Python
// twin.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "cli/chat_prompt.h"
#include "cli/commands.h"
#include "core/error.h"
#include "data/chat_template.h"
#include "data/dataset.h"
#include "data/tokenizer.h"

namespace anvil::cli {
namespace {

struct TokenizeOptions {
  std::string model_dir;
  std::string file;
  bool add_special = false;
  bool decode = false;
  bool skip_special = false;
  bool records = false;        // JSONL training records, as anvil train reads them
  std::string chat_template;   // with --records or --chat: empty = the model directory's
  std::string train_on = "assistant";
  bool show_text = false;      // with --records: each sample's text as it was tokenized
  bool chat = false;           // each line a user turn, with the chat template's generation prompt
  std::string system;          // with --chat: a system message in front of each line
  bool generation_prompt = true;  // with --chat: the template's generation prompt after the turn
};

void write_ids(const std::vector<std::int32_t>& ids, std::string& out) {
  out += "{\"ids\": [";
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (i > 0) out += ", ";
    out += std::to_string(ids[i]);
  }
  out += "]}\n";
}

std::vector<std::int32_t> read_ids(const std::string& line) {
  const nlohmann::json j = nlohmann::json::parse(line);  // parse_error: caught by the caller
  const nlohmann::json& ids = j.is_object() ? j.at("ids") : j;
  return ids.get<std::vector<std::int32_t>>();
}

void run_tokenize(const TokenizeOptions& opt) {
  const data::Tokenizer tok = data::Tokenizer::load(opt.model_dir);
  std::optional<ChatPrompter> chat;
  if (opt.chat) chat.emplace(opt.model_dir, opt.chat_template, tok);
  std::ifstream file;
  if (!opt.file.empty()) {
    file.open(opt.file, std::ios::binary);
    ANVIL_CHECK_INPUT(file.good(), opt.file, ": cannot be opened");
  }
  std::istream& in = opt.file.empty() ? std::cin : file;
  const std::string source = opt.file.empty() ? "<stdin>" : opt.file;
  std::string line;
  std::string out;
  std::vector<std::int32_t> ids;
  for (std::size_t line_no = 1; std::getline(in, line); ++line_no) {
    try {
      if (opt.decode) {
        if (!line.empty()) out += tok.decode(read_ids(line), opt.skip_special);
        out += '\n';
      } else if (chat) {
        write_ids(chat->user_turn_ids(opt.system, line, "--chat", opt.generation_prompt), out);
      } else {
        ids.clear();
        tok.encode_append(line, opt.add_special, ids);
        write_ids(ids, out);
      }
    } catch (const Error& e) {
      throw Error(e.kind(), str_cat(source, ":", line_no, ": ", e.what()));
    } catch (const nlohmann::json::exception& e) {
      throw_user_error(source, ":", line_no, ": expected {\"ids\": [...]}: ", e.what());
    }
    if (out.size() > (1 << 16)) {
      std::fwrite(out.data(), 1, out.size(), stdout);
      out.clear();
    }
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  std::fflush(stdout);
}

// Each record of a JSONL training file as the trainer sees it: one line per sample,
// {"line": N, "ids": [...], "trained": [0, 1, ...]} (trained[i]: whether predicting ids[i]
// is trained), with --show-text also "text": what was tokenized; bad records go to the
// report on stderr.
void run_records(const TokenizeOptions& opt) {
  ANVIL_CHECK_INPUT(!opt.file.empty(), "tokenize --records needs --file (a JSONL file of training records)");
  const data::Tokenizer tok = data::Tokenizer::load(opt.model_dir);
  data::RecordOptions ro;
  const auto& names = data::train_on_names();  // --train-on is checked to be one of them
  ro.train_on = static_cast<data::TrainOn>(std::find(names.begin(), names.end(), opt.train_on) - names.begin());
  std::optional<data::ChatTemplateSource> source;
  if (!opt.chat_template.empty())
    source = data::chat_template_find(opt.model_dir, opt.chat_template);
  else
    source = data::chat_template_try_find(opt.model_dir, ro.chat_problem);
  std::optional<data::ChatRenderer> renderer;
  if (source) ro.chat = &renderer.emplace(*source, tok);
  data::RecordEncoder encoder(tok, ro);
  std::string out;
  const data::FileReport report = encoder.read_file(
      opt.file, 1, 0,
      [&](std::int64_t line, std::span<const std::int32_t> ids, std::span<const std::uint8_t> trained) {
        nlohmann::json j = {{"line", line}, {"ids", ids}, {"trained", trained}};
        if (opt.show_text) j["text"] = encoder.text();
        out += j.dump();
        out += '\n';
        if (out.size() > (1 << 16)) {
          std::fwrite(out.data(), 1, out.size(), stdout);
          out.clear();
        }
      });
  std::fwrite(out.data(), 1, out.size(), stdout);
  std::fflush(stdout);
  std::fprintf(stderr, "%s\n", report.summary().c_str());
}

}  // namespace

void register_tokenize(CLI::App& app) {
  auto opt = std::make_shared<TokenizeOptions>();
  auto* cmd =
      app.add_subcommand("tokenize", "Tokenize text with a model directory's tokenizer.json");
  cmd->add_option("model_dir", opt->model_dir, "HF model directory holding tokenizer.json")
      ->required();
  cmd->add_option("--file", opt->file, "Read lines from this file instead of standard input");
  cmd->add_flag("--add-special", opt->add_special,
                "Add the post-processor's special tokens (BOS for Llama-3)");
  cmd->add_flag("--decode", opt->decode, "Read JSON lines of ids and print their text");
  cmd->add_flag("--skip-special", opt->skip_special, "With --decode: leave out special tokens");
  cmd->add_flag("--records", opt->records,
                "Read JSONL training records (--file) and print each sample's ids and trained flags as "
                "anvil train sees them (chat templates applied)");
  cmd->add_option("--template", opt->chat_template,
                  "With --records or --chat: chat template llama3, chatml, mistral or a .jinja file (default: the "
                  "model's)");
  cmd->add_option("--train-on", opt->train_on, "With --records: as data.train_on (assistant, all, last_assistant)")
      ->check(CLI::IsMember(data::train_on_names()))
      ->default_val("assistant");
  cmd->add_flag("--show-text", opt->show_text,
                "With --records: add each sample's text as it was tokenized (a chat record as its template "
                "renders it) as \"text\"");
  cmd->add_flag("--chat", opt->chat,
                "Each line is a user turn: print the ids anvil generate --chat prompts the model with (the chat "
                "template and its generation prompt)");
  cmd->add_option("--system", opt->system, "With --chat: a system message in front of each line");
  cmd->add_flag("--generation-prompt,!--no-generation-prompt", opt->generation_prompt,
                "With --chat: end with the template's generation prompt (the default; transformers' "
                "add_generation_prompt), or not. --records never does (as training renders a "
                "conversation), so there --no-generation-prompt changes nothing");
  cmd->callback([opt] {
    ANVIL_CHECK_INPUT(!(opt->chat && (opt->records || opt->decode || opt->add_special)),
                      "tokenize: --chat goes with none of --records, --decode, --add-special (the chat template "
                      "writes its own special tokens)");
    ANVIL_CHECK_INPUT(opt->chat || opt->system.empty(), "tokenize: --system needs --chat");
    // --records renders each conversation as training does, which never ends with a
    // generation prompt: there --no-generation-prompt is what happens anyway.
    ANVIL_CHECK_INPUT(opt->chat || opt->records || opt->generation_prompt,
                      "tokenize: --no-generation-prompt needs --chat or --records");
    ANVIL_CHECK_INPUT(opt->records || !opt->show_text, "tokenize: --show-text needs --records");
    opt->records ? run_records(*opt) : run_tokenize(*opt);
  });
}

}  // namespace anvil::cli
