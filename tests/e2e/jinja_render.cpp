// Test tool for the Jinja parity test: renders TEMPLATE_FILE with the JSON object in
// CONTEXT_FILE and prints the text (no newline added). With --generation it prints a
// JSON object {"text", "generation"} instead. Errors go to stderr with the exit code
// main() gives them (2 for a template's error or an unsupported construct).
//   jinja_render TEMPLATE_FILE CONTEXT_FILE [--strftime "YYYY-MM-DD"] [--generation]
#include "core/error.h"
#include "data/jinja.h"

#include <nlohmann/json.hpp>

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

}  // namespace

int main(int argc, char** argv) {
  try {
    ANVIL_CHECK_INPUT(argc >= 3, "usage: jinja_render TEMPLATE_FILE CONTEXT_FILE [--strftime DATE] [--generation]");
    anvil::data::jinja::RenderOptions opt;
    bool generation = false;
    for (int k = 3; k < argc; ++k) {
      std::string a = argv[k];
      if (a == "--strftime" && k + 1 < argc) opt.strftime_now_fixed = argv[++k];
      else if (a == "--generation") generation = true;
      else anvil::throw_user_error("unknown option ", a);
    }
    anvil::data::jinja::Template t(read_file(argv[1]), argv[1]);
    auto context = nlohmann::ordered_json::parse(read_file(argv[2]));
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
