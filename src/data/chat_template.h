// Chat templates: a conversation ({"messages": [{"role", "content"}, ...]}) rendered into
// the one string the model's own chat template renders (transformers'
// apply_chat_template, which vLLM and llama.cpp servers apply at inference), together
// with the byte ranges that are trained: each assistant turn's content and the markup that
// ends it. The string is tokenized whole, as the server tokenizes it, and a token is
// trained when its text reaches into a trained range (data/dataset.cpp).
//
// Where the template comes from, in this order (chat_template_find): data.chat_template
// (or --template: a name below, or a path to a .jinja file), chat_template.jinja in the
// model directory (where current transformers saves it), tokenizer_config.json's
// "chat_template". Any template is rendered by anvil's Jinja renderer (data/jinja.h) with
// transformers' semantics, byte for byte.
//
// Which bytes are an answer comes from the rendering itself, not from per-template code:
// the template's {% generation %} blocks where it has them (as transformers'
// return_assistant_tokens_mask reads them), otherwise each assistant turn is what the
// conversation up to that turn renders beyond its generation prompt (the conversation
// before it with add_generation_prompt), without trailing whitespace. A template whose
// earlier turns change once later ones follow cannot be read that way: such a conversation
// is refused, naming the message.
//
// anvil's own templates, by name (the texts of chat_template_jinja):
//   llama3   BOS, then per message
//            <|start_header_id|>ROLE<|end_header_id|>\n\nCONTENT<|eot_id|>  (content trimmed)
//   chatml   <|im_start|>ROLE\nCONTENT<|im_end|>\n  (Qwen2, SmolLM2 without their default system)
//   mistral  BOS [INST] USER [/INST]ASSISTANT</s>[INST] ... ; a system message is put in
//            front of the first user message, followed by a blank line
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace anvil::data {

namespace jinja {
class Template;
}
class Tokenizer;

// anvil's own templates, for data.chat_template by name.
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
// The same, but without a template it returns nullopt and `why` (the error text): for
// data where chat records may not occur, so that only a chat record fails.
std::optional<ChatTemplateSource> chat_template_try_find(const std::string& model_dir, std::string& why,
                                                         const std::string& configured = "");
// A configured template (a name or a .jinja file) read and parsed: a user error names the
// file and what in it anvil cannot render.
void chat_template_check(const std::string& configured);

// Which predictions train (data.train_on): completions and every assistant turn with the
// markup that ends it (assistant), every prediction (all: prompts, system and user turns
// too), or only a conversation's last assistant turn (last_assistant; a completion as
// assistant).
enum class TrainOn { train_on_assistant, train_on_all, train_on_last_assistant };
// "assistant", "all", "last_assistant", in enum order (data.train_on, tokenize --train-on).
const std::vector<std::string>& train_on_names();

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

// A parsed template and the special tokens it is rendered with (empty: left undefined).
struct ChatTemplateUse {
  const jinja::Template& parsed;
  const std::string& where;  // for errors
  const std::string& bos;
  const std::string& eos;
};

// `messages` rendered into `out` (replacing it) with the ranges `train_on` trains, or what
// is wrong with the conversation: ChatRenderer::render without a tokenizer (the mask test
// runs it on templates of models it has no tokenizer for).
std::optional<ChatProblem> chat_render(const ChatTemplateUse& use, const std::vector<ChatMessage>& messages,
                                       TrainOn train_on, RenderedChat& out);

// A template parsed once, with the tokenizer's special tokens it is rendered with.
class ChatRenderer {
 public:
  // A user error names the template when it cannot be parsed, uses bos_token / eos_token
  // and the tokenizer has none, or writes a <|...|> marker the tokenizer lacks (the wrong
  // template for this model).
  ChatRenderer(const ChatTemplateSource& source, const Tokenizer& tok);
  // One of anvil's own templates.
  ChatRenderer(ChatTemplate t, const Tokenizer& tok);
  ~ChatRenderer();

  // Renders `messages` into `out` (replacing it), with the trained ranges `train_on` asks for.
  // Returns what is wrong with the conversation instead (an unknown role, a misplaced
  // system message, the template's own raise_exception; or nothing to train: no messages,
  // no assistant turn with content); the caller adds file and line.
  std::optional<ChatProblem> render(const std::vector<ChatMessage>& messages, TrainOn train_on,
                                    RenderedChat& out) const;
  // What a chat model is prompted with (transformers' add_generation_prompt=True): the
  // conversation so far, which must end with a user message, then the template's
  // generation prompt (left out when `generation_prompt` is false). Into `out` (replacing
  // it); a problem as render's.
  std::optional<ChatProblem> render_prompt(const std::vector<ChatMessage>& messages, std::string& out,
                                           bool generation_prompt = true) const;
  // The token that ends an assistant turn (<|eot_id|>, <|im_end|>, EOS for mistral):
  // where generation stops. The first token the template writes after an answer; EOS when
  // it writes none; -1 when there is neither.
  std::int32_t end_of_turn_id() const { return end_of_turn_; }
  const std::string& where() const { return where_; }

 private:
  ChatTemplateUse use() const { return {*template_, where_, bos_, eos_}; }

  std::string where_;
  std::unique_ptr<jinja::Template> template_;
  std::string bos_, eos_;  // empty: the tokenizer has none (the context leaves them undefined)
  std::int32_t end_of_turn_ = -1;
};

}  // namespace anvil::data
