#include "data/chat_template.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>

#include "core/error.h"
#include "data/tokenizer.h"
#include "data/tokenizer_utf8.h"
#include "io/files.h"

namespace anvil::data {
namespace {

std::string options_text() {
  std::string s;
  for (const std::string& n : chat_template_names()) s += (s.empty() ? "" : ", ") + n;
  return s;
}

// Python's str.isspace(), which Jinja's trim (str.strip()) uses: Unicode White_Space
// plus the separators U+001C..U+001F.
bool python_space(char32_t c) { return unicode_is_white_space(c) || (c >= 0x1C && c <= 0x1F); }

// Jinja's trim: whitespace off both ends. `s` is valid UTF-8 (the JSON reader checked it).
std::string_view trim(std::string_view s) {
  std::size_t begin = 0, end = 0, i = 0;
  bool seen = false;
  while (i < s.size()) {
    const std::size_t at = i;
    const char32_t c = utf8_next(s, i);
    if (python_space(c)) continue;
    if (!seen) begin = at;
    seen = true;
    end = i;
  }
  return seen ? s.substr(begin, end - begin) : std::string_view{};
}

enum class Role { system, user, assistant };

std::optional<Role> role_of(std::string_view role) {
  if (role == "system") return Role::system;
  if (role == "user") return Role::user;
  if (role == "assistant") return Role::assistant;
  return std::nullopt;
}

// Appends text; a trained piece extends the last trained range when they touch.
class Builder {
 public:
  explicit Builder(RenderedChat& out) : out_(out) {
    out_.text.clear();
    out_.trained.clear();
  }
  void add(std::string_view s, bool trained) {
    const std::size_t b = out_.text.size();
    out_.text += s;
    if (!trained || s.empty()) return;
    if (!out_.trained.empty() && out_.trained.back().second == b)
      out_.trained.back().second = out_.text.size();
    else
      out_.trained.emplace_back(b, out_.text.size());
  }

 private:
  RenderedChat& out_;
};

std::string token_spelling(const Tokenizer& tok, std::optional<std::int32_t> id, const char* what,
                           ChatTemplate t) {
  ANVIL_CHECK_INPUT(id.has_value(), "chat template ", chat_template_name(t), " needs the tokenizer's ", what,
                    " token, and it has none");
  return *tok.id_to_token(*id);
}

void require_token(const Tokenizer& tok, const char* token, ChatTemplate t) {
  ANVIL_CHECK_INPUT(tok.token_to_id(token).has_value(), "chat template ", chat_template_name(t),
                    " needs the token ", token, ", which the model's tokenizer does not have (is it the "
                    "right template for this model? the options are ", options_text(), ")");
}

}  // namespace

const std::vector<std::string>& chat_template_names() {
  static const std::vector<std::string> names{"llama3", "chatml", "mistral"};
  return names;
}

const std::string& chat_template_name(ChatTemplate t) {
  return chat_template_names().at(static_cast<std::size_t>(t));
}

std::optional<ChatTemplate> chat_template_from_name(std::string_view name) {
  const auto& names = chat_template_names();
  const auto it = std::find(names.begin(), names.end(), name);
  if (it == names.end()) return std::nullopt;
  return static_cast<ChatTemplate>(it - names.begin());
}

ChatTemplate chat_template_detect_text(std::string_view jinja, const std::string& where) {
  // llama3 before mistral: nothing else carries these markers, and they never co-occur
  // in the templates of the families anvil trains.
  if (jinja.find("<|start_header_id|>") != std::string_view::npos) return ChatTemplate::chat_llama3;
  if (jinja.find("<|im_start|>") != std::string_view::npos) return ChatTemplate::chat_chatml;
  if (jinja.find("[INST]") != std::string_view::npos) return ChatTemplate::chat_mistral;
  throw_user_error(where, ": the chat template is none that anvil knows (it has none of the markers "
                   "<|start_header_id|>, <|im_start|>, [INST]); set data.chat_template (anvil generate/eval/"
                   "tokenize: --template) to one of ", options_text());
}

const std::string& chat_template_jinja(ChatTemplate t) {
  // The layouts of the header comment; llama3's is also what anvil init-model writes.
  static const std::vector<std::string> texts{
      "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
      "'<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
      "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}",
      "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
      "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
      "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + "
      "(messages[0]['content'] + '\n\n' if loop.index0 == 1 and messages[0]['role'] == 'system' else '') + "
      "message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
      "{{ message['content'] + eos_token }}{% endif %}{% endfor %}"};
  return texts.at(static_cast<std::size_t>(t));
}

ChatTemplateSource chat_template_find(const std::string& model_dir, const std::string& configured) {
  const std::string hint = "; set data.chat_template (anvil generate/eval/tokenize: --template) to one of " +
                           options_text() + " or a .jinja file";
  if (!configured.empty()) {
    if (const auto t = chat_template_from_name(configured))
      return {chat_template_jinja(*t), "chat template " + configured};
    std::error_code ec;
    ANVIL_CHECK_INPUT(std::filesystem::is_regular_file(configured, ec), "chat template '", configured,
                      "': not one of ", options_text(), ", and no such file (a .jinja file holding the template)");
    return {io::read_text_file(configured), configured};
  }
  // Current transformers saves the template beside tokenizer_config.json, not in it.
  const std::string jinja = (std::filesystem::path(model_dir) / "chat_template.jinja").string();
  if (std::filesystem::exists(jinja)) return {io::read_text_file(jinja), jinja};
  const std::string path = (std::filesystem::path(model_dir) / "tokenizer_config.json").string();
  ANVIL_CHECK_INPUT(std::filesystem::exists(path), model_dir, ": has no chat_template.jinja and no "
                    "tokenizer_config.json to take the chat template from", hint);
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(io::read_text_file(path));
  } catch (const nlohmann::json::parse_error& e) {
    throw_user_error(path, ": not valid JSON: ", e.what());
  }
  const auto it = config.find("chat_template");
  ANVIL_CHECK_INPUT(config.is_object() && it != config.end() && !it->is_null(), path,
                    ": has no \"chat_template\" (and there is no chat_template.jinja beside it)", hint);
  if (it->is_string()) return {it->get<std::string>(), path + ": chat_template"};
  if (it->is_array()) {
    for (const auto& entry : *it) {
      if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template") &&
          entry["template"].is_string())
        return {entry["template"].get<std::string>(), path + ": chat_template \"default\""};
    }
  }
  throw_user_error(path, ": \"chat_template\" is neither a string nor a list with a \"default\" entry", hint);
}

ChatTemplate chat_template_detect(const std::string& model_dir, const std::string& configured) {
  const ChatTemplateSource source = chat_template_find(model_dir, configured);
  return chat_template_detect_text(source.text, source.where);
}

std::optional<ChatTemplate> chat_template_try_detect(const std::string& model_dir, std::string& why,
                                                     const std::string& configured) {
  try {
    return chat_template_detect(model_dir, configured);
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::user) throw;
    why = e.what();
    return std::nullopt;
  }
}

ChatRenderer::ChatRenderer(ChatTemplate t, const Tokenizer& tok) : kind_(t) {
  switch (t) {
    case ChatTemplate::chat_llama3:
      bos_ = token_spelling(tok, tok.bos_id(), "BOS", t);
      for (const char* token : {"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"}) require_token(tok, token, t);
      end_of_turn_ = *tok.token_to_id("<|eot_id|>");
      break;
    case ChatTemplate::chat_chatml:
      for (const char* token : {"<|im_start|>", "<|im_end|>"}) require_token(tok, token, t);
      end_of_turn_ = *tok.token_to_id("<|im_end|>");
      break;
    case ChatTemplate::chat_mistral:
      bos_ = token_spelling(tok, tok.bos_id(), "BOS", t);
      eos_ = token_spelling(tok, tok.eos_id(), "EOS", t);
      end_of_turn_ = *tok.eos_id();
      break;
  }
}

std::optional<ChatProblem> ChatRenderer::render_prompt(const std::vector<ChatMessage>& messages,
                                                      std::string& out) const {
  if (messages.empty() || messages.back().role != "user")
    return ChatProblem{false, "the conversation to answer must end with a user message"};
  // The generation prompt is, by construction, the text render() puts in front of an
  // assistant's content: the text the model was trained to continue. Rendered with a
  // placeholder answer and cut where the answer's trained range begins.
  std::vector<ChatMessage> with_answer = messages;
  with_answer.push_back({"assistant", "x"});
  RenderedChat rendered;
  if (auto problem = render(with_answer, false, rendered)) return problem;
  ANVIL_CHECK(!rendered.trained.empty(), "a rendered answer has no trained range");
  out.assign(rendered.text, 0, rendered.trained.back().first);
  return std::nullopt;
}

std::optional<ChatProblem> ChatRenderer::render(const std::vector<ChatMessage>& messages, bool train_on_prompt,
                                               RenderedChat& out) const {
  if (messages.empty()) return ChatProblem{true, "\"messages\" is empty"};
  bool has_answer = false;
  std::size_t first = 0;  // the first message after an optional system message
  std::string_view system;
  for (std::size_t i = 0; i < messages.size(); ++i) {
    const std::optional<Role> role = role_of(messages[i].role);
    if (!role)
      return ChatProblem{false, str_cat("message ", i, ": role \"", messages[i].role,
                                        "\" is not one of system, user, assistant")};
    if (*role == Role::system && i > 0)
      return ChatProblem{false, str_cat("message ", i, ": a system message must come first")};
    if (*role == Role::system) {
      system = messages[i].content;
      first = 1;
    }
    if (kind_ == ChatTemplate::chat_mistral && i >= first && (*role == Role::user) != ((i - first) % 2 == 0))
      return ChatProblem{false, str_cat("message ", i, ": mistral conversations alternate user and assistant, "
                                        "starting with user (after an optional system message); found \"",
                                        messages[i].role, "\"")};
    if (*role == Role::assistant && !trim(messages[i].content).empty()) has_answer = true;
  }
  if (!has_answer) return ChatProblem{true, "no assistant message with content: nothing to train"};

  Builder b(out);
  const bool all = train_on_prompt;
  switch (kind_) {
    case ChatTemplate::chat_llama3:
      b.add(bos_, all);
      for (const ChatMessage& m : messages) {
        const bool answer = m.role == "assistant";
        b.add("<|start_header_id|>", all);
        b.add(m.role, all);
        b.add("<|end_header_id|>\n\n", all);
        b.add(trim(m.content), all || answer);
        b.add("<|eot_id|>", all || answer);
      }
      break;
    case ChatTemplate::chat_chatml:
      for (const ChatMessage& m : messages) {
        const bool answer = m.role == "assistant";
        b.add("<|im_start|>", all);
        b.add(m.role, all);
        b.add("\n", all);
        b.add(m.content, all || answer);
        b.add("<|im_end|>", all || answer);
        b.add("\n", all);
      }
      break;
    case ChatTemplate::chat_mistral:
      b.add(bos_, all);
      for (std::size_t i = first; i < messages.size(); ++i) {
        const ChatMessage& m = messages[i];
        if ((i - first) % 2 == 0) {  // a user turn (checked above)
          b.add("[INST] ", all);
          if (i == first && first == 1) {
            b.add(system, all);
            b.add("\n\n", all);
          }
          b.add(m.content, all);
          b.add(" [/INST]", all);
        } else {
          b.add(m.content, true);
          b.add(eos_, true);
        }
      }
      break;
  }
  return std::nullopt;
}

}  // namespace anvil::data
