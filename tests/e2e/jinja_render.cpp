// Test tool for the Jinja parity test: renders TEMPLATE_FILE with the JSON object in
// CONTEXT_FILE and prints the text (no newline added). With --generation it prints a
// JSON object {"text", "generation"} instead. Errors go to stderr with the exit code
// main() gives them (2 for a template's error or an unsupported construct). With
// --trained TRAIN_ON it renders the context's messages (role and content) as training does
// (data/chat_template.h: chat_render, with the context's bos_token / eos_token) and prints
// {"text", "trained": [[begin, end], ...]} (byte ranges), or {"problem", "nothing_to_train"}.
//   jinja_render TEMPLATE_FILE CONTEXT_FILE [--strftime "YYYY-MM-DD"] [--generation]
//                [--trained assistant|all|last_assistant]
#include "core/error.h"
#include "data/chat_template.h"
#include "data/jinja.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  ANVIL_CHECK_INPUT(in, "cannot open ", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The context's conversation rendered as training renders it, as JSON.
nlohmann::ordered_json trained_json(const anvil::data::jinja::Template& t, const std::string& where,
                                    const nlohmann::ordered_json& context, const std::string& train_on) {
  using namespace anvil::data;
  const auto& names = train_on_names();
  const auto it = std::find(names.begin(), names.end(), train_on);
  ANVIL_CHECK_INPUT(it != names.end(), "--trained: not one of assistant, all, last_assistant: ", train_on);
  std::vector<ChatMessage> messages;
  for (const auto& m : context.at("messages"))
    messages.push_back({m.at("role").get_ref<const std::string&>(), m.at("content").get_ref<const std::string&>()});
  const std::string bos = context.value("bos_token", ""), eos = context.value("eos_token", "");
  RenderedChat out;
  const auto problem = chat_render({t, where, bos, eos}, messages, static_cast<TrainOn>(it - names.begin()), out);
  if (problem) return {{"problem", problem->message}, {"nothing_to_train", problem->nothing_to_train}};
  return {{"text", out.text}, {"trained", out.trained}};
}

}  // namespace

int main(int argc, char** argv) {
  try {
    ANVIL_CHECK_INPUT(argc >= 3, "usage: jinja_render TEMPLATE_FILE CONTEXT_FILE [--strftime DATE] [--generation]");
    anvil::data::jinja::RenderOptions opt;
    bool generation = false;
    std::string trained;
    for (int k = 3; k < argc; ++k) {
      std::string a = argv[k];
      if (a == "--strftime" && k + 1 < argc) opt.strftime_now_fixed = argv[++k];
      else if (a == "--generation") generation = true;
      else if (a == "--trained" && k + 1 < argc) trained = argv[++k];
      else anvil::throw_user_error("unknown option ", a);
    }
    anvil::data::jinja::Template t(read_file(argv[1]), argv[1]);
    auto context = nlohmann::ordered_json::parse(read_file(argv[2]));
    if (!trained.empty()) {
      std::cout << trained_json(t, argv[1], context, trained).dump();
      return 0;
    }
    auto out = t.render(context, opt);
    if (generation) {
      nlohmann::ordered_json j = {{"text", out.text}, {"generation", out.generation}};
      std::cout << j.dump();
    } else {
      std::cout << out.text;
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << anvil::error_message(e) << "\n";
    return anvil::error_exit_code(e);
  }
}
