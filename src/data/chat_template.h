// Chat templates: a conversation ({"messages": [{"role", "content"}, ...]}) rendered into
// the one string the model's own chat template renders (transformers'
// apply_chat_template, which vLLM and llama.cpp servers apply at inference), together
// with the byte ranges that are trained: each assistant turn's content and the token that
// ends it. The string is tokenized whole, as the server tokenizes it, and a token is
// trained when its text reaches into a trained range (data/dataset.cpp).
//
// Where the template comes from, in this order (chat_template_find): data.chat_template
// (or --template: a name below, or a path to a .jinja file), chat_template.jinja in the
// model directory (where current transformers saves it), tokenizer_config.json's
// "chat_template". Until anvil renders Jinja itself the text is recognised as one of
// three templates by its marker; a template that is none of them is a user error.
//
// Templates, by name and the marker that detects them in a template's text:
//   llama3   <|start_header_id|>  BOS, then per message
//            <|start_header_id|>ROLE<|end_header_id|>\n\nCONTENT<|eot_id|>  (content trimmed)
//   chatml   <|im_start|>         <|im_start|>ROLE\nCONTENT<|im_end|>\n  (Qwen2, SmolLM2)
//   mistral  [INST]               BOS [INST] USER [/INST]ASSISTANT</s>[INST] ... ; a system
//            message is put in front of the first user message, followed by a blank line
// anvil adds no default system message (some Qwen2/SmolLM2 templates do): put one in the
// data when the model expects it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace anvil::data {

class Tokenizer;

enum class ChatTemplate { chat_llama3, chat_chatml, chat_mistral };

// "llama3", "chatml", "mistral", in enum order.
const std::vector<std::string>& chat_template_names();
const std::string& chat_template_name(ChatTemplate t);
std::optional<ChatTemplate> chat_template_from_name(std::string_view name);

// anvil's own text of each template, as transformers writes chat templates (Jinja, with
// the generation prompt where the template has one).
const std::string& chat_template_jinja(ChatTemplate t);

// A chat template's Jinja text and `where` it was found, which errors about it name.
struct ChatTemplateSource {
  std::string text;
  std::string where;
};

// The template for `model_dir`, looked up in the order above. `configured` is
// data.chat_template (empty: none): a name gives chat_template_jinja's text, anything else
// is read as a file. In tokenizer_config.json "chat_template" is a string, or a list of
// {name, template} where "default" is used. A user error names what was looked at when
// there is no template.
ChatTemplateSource chat_template_find(const std::string& model_dir, const std::string& configured = "");

// chat_template_find's template recognised by its markers. A user error names the file
// and the options when there is none or it is not one of ours.
ChatTemplate chat_template_detect(const std::string& model_dir, const std::string& configured = "");
// The same, but without a usable template it returns nullopt and `why` (the error text):
// for data where chat records may not occur, so that only a chat record fails.
std::optional<ChatTemplate> chat_template_try_detect(const std::string& model_dir, std::string& why,
                                                     const std::string& configured = "");
// The same for the template text; `where` names its source in errors.
ChatTemplate chat_template_detect_text(std::string_view jinja, const std::string& where);

struct ChatMessage {
  std::string_view role;  // system, user, assistant
  std::string_view content;
};

struct RenderedChat {
  std::string text;
  std::vector<std::pair<std::size_t, std::size_t>> trained;  // [begin, end) byte ranges, ascending
};

struct ChatProblem {
  bool nothing_to_train = false;  // else the conversation is malformed
  std::string message;
};

// The special-token spellings a template needs, checked against the tokenizer once.
class ChatRenderer {
 public:
  // A user error names the template and the token when the tokenizer lacks one of them.
  ChatRenderer(ChatTemplate t, const Tokenizer& tok);

  // Renders `messages` into `out` (replacing it). train_on_prompt: everything is trained.
  // Returns what is wrong with the conversation instead (an unknown role, roles out of
  // order; or nothing to train: no messages, no assistant turn with content); the caller
  // adds file and line.
  std::optional<ChatProblem> render(const std::vector<ChatMessage>& messages, bool train_on_prompt,
                                    RenderedChat& out) const;
  // What a chat model is prompted with (transformers' add_generation_prompt=True): the
  // conversation so far, which must end with a user message, then what the template puts
  // in front of an assistant's content. Into `out` (replacing it); a problem as render's.
  std::optional<ChatProblem> render_prompt(const std::vector<ChatMessage>& messages, std::string& out) const;
  // The token that ends an assistant turn (<|eot_id|>, <|im_end|>, EOS for mistral):
  // where generation stops.
  std::int32_t end_of_turn_id() const { return end_of_turn_; }
  ChatTemplate kind() const { return kind_; }

 private:
  ChatTemplate kind_;
  std::string bos_, eos_;
  std::int32_t end_of_turn_ = -1;
};

}  // namespace anvil::data
