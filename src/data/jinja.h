// A Jinja2 renderer with the semantics transformers gives chat templates
// (transformers/utils/chat_template_utils.py): an ImmutableSandboxedEnvironment with
// trim_blocks and lstrip_blocks, the loopcontrols extension, the `{% generation %}` tracker,
// a tojson filter that is json.dumps(ensure_ascii=False), and the globals raise_exception,
// strftime_now, namespace and dict. Values print as Python prints them, so the text a model
// is trained on is byte for byte the text transformers would render.
//
// A template is input: its recursion, output size and work are bounded, it can reach no
// file, environment or clock beyond strftime_now, and anything this renderer does not
// implement is a user error naming the construct and its line, never a different string.
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace anvil::data::jinja {

struct RenderOptions {
  std::size_t max_output_bytes = 16 << 20;  // a template is input: bounded output
  int max_depth = 64;                       // bounded recursion (macros, recursive loops, nesting)
  std::size_t max_steps = 5'000'000;       // evaluated nodes, loop iterations, items: bounded work
  std::string strftime_now_fixed;           // "YYYY-MM-DD[ HH:MM:SS]": strftime_now() formats
                                            // this fixed time (tests); empty: the local clock
};

struct Rendered {
  std::string text;
  // [begin, end) byte ranges of {% generation %} blocks, ascending
  std::vector<std::pair<std::size_t, std::size_t>> generation;
};

struct Node;

class Template {
 public:
  // Parses once. A syntax error or an unsupported construct is a user error naming `where`
  // (e.g. "MODEL/tokenizer_config.json: chat_template"), the line, and the construct.
  Template(std::string_view source, std::string where);
  ~Template();
  Template(Template&&) noexcept;
  Template& operator=(Template&&) noexcept;

  // `context` is an object: messages, add_generation_prompt, bos_token, eos_token, tools,
  // documents and any extra keys. Errors (raise_exception, a type error, a bound) are user
  // errors naming `where` and the line.
  Rendered render(const nlohmann::ordered_json& context, const RenderOptions& opt = {}) const;
  bool has_generation_blocks() const { return has_generation_; }
  const std::string& where() const { return where_; }

 private:
  std::string where_;
  std::vector<std::shared_ptr<Node>> body_;
  bool has_generation_ = false;
};

}  // namespace anvil::data::jinja
