// libFuzzer target: the Jinja parser and renderer on arbitrary template text, rendered with
// a small chat context under tight bounds. Any input must render or throw a user error; a
// crash, a sanitizer report, a hang or another exception is a bug.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/error.h"
#include "data/jinja.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const nlohmann::ordered_json context = nlohmann::ordered_json::parse(R"({
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi ü"},
                 {"role": "assistant", "content": "", "tool_calls": [{"type": "function",
                  "function": {"name": "f", "arguments": {"a": 1}}}]},
                 {"role": "tool", "content": "{\"r\": 2}"}, {"role": "assistant", "content": "ok"}],
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    "documents": null, "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>"})");
  anvil::data::jinja::RenderOptions opt;
  opt.max_output_bytes = 1 << 20;
  opt.max_steps = 200'000;
  opt.strftime_now_fixed = "2024-07-26";
  try {
    anvil::data::jinja::Template t(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
    (void)t.render(context, opt);
  } catch (const anvil::Error& e) {
    if (e.kind() != anvil::ErrorKind::user) __builtin_trap();
  }
  return 0;
}
