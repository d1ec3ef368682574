#include "data/chat_template.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <span>
#include <filesystem>

#include "core/error.h"
#include "data/jinja.h"
#include "data/tokenizer.h"
#include "io/files.h"

namespace anvil::data {
namespace {

std::string options_text() {
  std::string s;
  for (const std::string& n : chat_template_names()) s += (s.empty() ? "" : ", ") + n;
  return s;
}

enum class Role { system, user, assistant };

std::optional<Role> role_of(std::string_view role) {
  if (role == "system") return Role::system;
  if (role == "user") return Role::user;
  if (role == "assistant") return Role::assistant;
  return std::nullopt;
}

// What every template takes: known roles, a system message only first.
std::optional<ChatProblem> check_roles(const std::vector<ChatMessage>& messages) {
  for (std::size_t i = 0; i < messages.size(); ++i) {
    const std::optional<Role> role = role_of(messages[i].role);
    if (!role)
      return ChatProblem{false, str_cat("message ", i, ": role \"", messages[i].role,
                                        "\" is not one of system, user, assistant")};
    if (*role == Role::system && i > 0)
      return ChatProblem{false, str_cat("message ", i, ": a system message must come first")};
  }
  return std::nullopt;
}

bool is_blank(std::string_view s) {
  return s.find_first_not_of(" \t\n\r\f\v") == std::string_view::npos;
}

// The <|...|> markers a rendering writes: special tokens the tokenizer must have.
std::vector<std::string> markers_in(std::string_view text) {
  std::vector<std::string> out;
  for (std::size_t at = text.find("<|"); at != std::string_view::npos; at = text.find("<|", at + 2)) {
    const std::size_t end = text.find("|>", at + 2);
    if (end == std::string_view::npos || end - at > 64) continue;
    const std::string_view m = text.substr(at, end + 2 - at);
    if (m.find_first_of(" \n") == std::string_view::npos) out.emplace_back(m);
  }
  return out;
}

// The rendering of messages[0, count); a template error is returned as a problem.
std::optional<ChatProblem> render_text(const ChatTemplateUse& use, const std::vector<ChatMessage>& messages,
                                       std::size_t count, bool add_generation_prompt, std::string& text,
                                       std::vector<std::pair<std::size_t, std::size_t>>* generation) {
  nlohmann::ordered_json context = nlohmann::ordered_json::object();
  nlohmann::ordered_json& list = context["messages"] = nlohmann::ordered_json::array();
  for (std::size_t i = 0; i < count; ++i) list.push_back({{"role", messages[i].role}, {"content", messages[i].content}});
  context["add_generation_prompt"] = add_generation_prompt;
  // transformers always passes these (None when not given): `tools is defined` holds
  context["tools"] = nullptr;
  context["documents"] = nullptr;
  if (!use.bos.empty()) context["bos_token"] = use.bos;
  if (!use.eos.empty()) context["eos_token"] = use.eos;
  try {
    jinja::Rendered r = use.parsed.render(context);
    text = std::move(r.text);
    if (generation) *generation = std::move(r.generation);
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::user) throw;
    return ChatProblem{false, e.what()};
  }
  return std::nullopt;
}

}  // namespace

const std::vector<std::string>& chat_template_names() {
  static const std::vector<std::string> names{"llama3", "chatml", "mistral"};
  return names;
}

const std::vector<std::string>& train_on_names() {
  static const std::vector<std::string> names{"assistant", "all", "last_assistant"};
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

const std::string& chat_template_jinja(ChatTemplate t) {
  // The layouts of the header comment; llama3's is also what anvil init-model writes.
  static const std::vector<std::string> texts{
      "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
      "'<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
      "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}",
      "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
      "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
      "{{ bos_token }}{% set offset = 1 if messages and messages[0]['role'] == 'system' else 0 %}"
      "{% for message in messages %}{% if message['role'] != 'system' and (message['role'] == 'user') != "
      "((loop.index0 - offset) % 2 == 0) %}{{ raise_exception('mistral conversations alternate user and "
      "assistant, starting with user (after an optional system message)') }}{% endif %}"
      "{% if message['role'] == 'user' %}{{ '[INST] ' + "
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

std::optional<ChatTemplateSource> chat_template_try_find(const std::string& model_dir, std::string& why,
                                                         const std::string& configured) {
  try {
    return chat_template_find(model_dir, configured);
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::user) throw;
    why = e.what();
    return std::nullopt;
  }
}

void chat_template_check(const std::string& configured) {
  const ChatTemplateSource source = chat_template_find("", configured);
  const jinja::Template parsed(source.text, source.where);
}

ChatRenderer::ChatRenderer(ChatTemplate t, const Tokenizer& tok)
    : ChatRenderer(ChatTemplateSource{chat_template_jinja(t), "chat template " + chat_template_name(t)}, tok) {}

ChatRenderer::~ChatRenderer() = default;

ChatRenderer::ChatRenderer(const ChatTemplateSource& source, const Tokenizer& tok)
    : where_(source.where), template_(std::make_unique<jinja::Template>(source.text, source.where)) {
  // transformers passes the tokenizer's special tokens; a template that uses one the
  // tokenizer lacks would quietly render nothing for it.
  if (const auto id = tok.bos_id()) bos_ = *tok.id_to_token(*id);
  if (const auto id = tok.eos_id()) eos_ = *tok.id_to_token(*id);
  ANVIL_CHECK_INPUT(!(bos_.empty() && source.text.find("bos_token") != std::string::npos), where_,
                    ": the chat template writes bos_token, but the model's tokenizer has no BOS token");
  ANVIL_CHECK_INPUT(!(eos_.empty() && source.text.find("eos_token") != std::string::npos), where_,
                    ": the chat template writes eos_token, but the model's tokenizer has no EOS token");
  // A probe conversation: its markers must be the tokenizer's tokens, and what follows the
  // answer is the end of a turn.
  const std::vector<ChatMessage> probe{{"user", "Hi"}, {"assistant", "Hello"}};
  std::string asked, answered;
  const auto p1 = render_text(use(), probe, 1, true, asked, nullptr);
  const auto p2 = render_text(use(), probe, 2, false, answered, nullptr);
  if (p1 || p2) throw_user_error(where_, ": the chat template does not render a user and an assistant message: ",
                                 (p1 ? p1 : p2)->message);
  for (const std::string& m : markers_in(answered))
    ANVIL_CHECK_INPUT(tok.token_to_id(m).has_value(), where_, ": the chat template writes ", m,
                      ", which the model's tokenizer does not have (is it the right template for this model? "
                      "anvil's own are ", options_text(), ")");
  const std::size_t answer = answered.find("Hello", answered.starts_with(asked) ? asked.size() : 0);
  std::string_view after = answer == std::string::npos ? std::string_view{} : std::string_view(answered).substr(answer + 5);
  after.remove_prefix(std::min(after.size(), after.find_first_not_of(" \t\n")));
  const std::vector<std::int32_t> ids = tok.encode(after, false);
  const std::span<const std::int32_t> first(ids.data(), ids.empty() ? 0 : 1);
  if (!ids.empty() && tok.decode(first, true).empty() && !tok.decode(first, false).empty())
    end_of_turn_ = ids.front();  // a special token
  else if (const auto eos = tok.eos_id())
    end_of_turn_ = *eos;
}

std::optional<ChatProblem> ChatRenderer::render_prompt(const std::vector<ChatMessage>& messages,
                                                      std::string& out, bool generation_prompt) const {
  if (messages.empty() || messages.back().role != "user")
    return ChatProblem{false, "the conversation to answer must end with a user message"};
  if (auto problem = check_roles(messages)) return problem;
  return render_text(use(), messages, messages.size(), generation_prompt, out, nullptr);
}

namespace {

ChatProblem rewrites_earlier_turns(const ChatTemplateUse& use, std::size_t i) {
  return ChatProblem{false, str_cat("message ", i, ": ", use.where, " renders the conversation before this answer "
                                    "differently once later messages follow, so anvil cannot tell which tokens "
                                    "are the answer (train on the last answer alone, or use a template with "
                                    "{% generation %} blocks)")};
}

// Where answer i starts in `answered` (the conversation rendered through it) when the
// generation prompt `asked` is not a prefix of it: a template whose generation prompt holds
// text the answer's own rendering does not (DeepSeek-R1's "<think>\n" after the assistant
// header). The answer then starts where the two part, provided the conversation before it
// renders unchanged (else nothing), at a marker, line or word boundary.
std::optional<std::size_t> answer_start(const ChatTemplateUse& use, const std::vector<ChatMessage>& messages,
                                        std::size_t i, const std::string& asked, const std::string& answered) {
  std::string before;
  if (render_text(use, messages, i, false, before, nullptr)) return std::nullopt;
  const auto parted = std::mismatch(asked.begin(), asked.end(), answered.begin(), answered.end());
  auto start = static_cast<std::size_t>(parted.second - answered.begin());
  if (!answered.starts_with(before) || start < before.size()) return std::nullopt;
  // Not inside a marker or a word the two happen to begin alike ("<think>" and "</think>"
  // share "<"): back to the end of the last marker, line or word before the parting.
  while (start > before.size() && std::string_view(">]\n ").find(answered[start - 1]) == std::string_view::npos)
    --start;
  return start;
}

}  // namespace

std::optional<ChatProblem> chat_render(const ChatTemplateUse& use, const std::vector<ChatMessage>& messages,
                                       TrainOn train_on, RenderedChat& out) {
  if (messages.empty()) return ChatProblem{true, "\"messages\" is empty"};
  if (auto problem = check_roles(messages)) return problem;
  bool has_answer = false;
  for (const ChatMessage& m : messages) has_answer = has_answer || (m.role == "assistant" && !is_blank(m.content));
  if (!has_answer) return ChatProblem{true, "no assistant message with content: nothing to train"};

  out.trained.clear();
  std::vector<std::pair<std::size_t, std::size_t>> generation;
  if (auto problem = render_text(use, messages, messages.size(), false, out.text, &generation)) return problem;
  if (train_on == TrainOn::train_on_all) {
    out.trained.emplace_back(0, out.text.size());
    return std::nullopt;
  }
  const bool last_only = train_on == TrainOn::train_on_last_assistant;
  if (use.parsed.has_generation_blocks()) {
    if (last_only && generation.size() > 1) generation.erase(generation.begin(), generation.end() - 1);
    out.trained = std::move(generation);
    return std::nullopt;
  }
  std::size_t last = 0;
  for (std::size_t i = 0; i < messages.size(); ++i)
    if (messages[i].role == "assistant") last = i;
  // Each answer: what the conversation through it renders beyond its generation prompt.
  std::string asked, answered;
  for (std::size_t i = last_only ? last : 0; i < messages.size(); ++i) {
    if (messages[i].role != "assistant") continue;
    if (auto problem = render_text(use, messages, i, true, asked, nullptr)) return problem;
    if (auto problem = render_text(use, messages, i + 1, false, answered, nullptr)) return problem;
    std::size_t start = asked.size();
    if (!answered.starts_with(asked)) {
      const std::optional<std::size_t> parted = answer_start(use, messages, i, asked, answered);
      if (!parted) return rewrites_earlier_turns(use, i);
      start = *parted;
    }
    if (!out.text.starts_with(answered)) return rewrites_earlier_turns(use, i);
    std::size_t end = answered.size();
    while (end > start && std::string_view(" \t\n\r").find(answered[end - 1]) != std::string_view::npos) --end;
    if (end == start) continue;
    if (!out.trained.empty() && out.trained.back().second == start)
      out.trained.back().second = end;
    else
      out.trained.emplace_back(start, end);
  }
  return std::nullopt;
}

std::optional<ChatProblem> ChatRenderer::render(const std::vector<ChatMessage>& messages, TrainOn train_on,
                                               RenderedChat& out) const {
  return chat_render(use(), messages, train_on, out);
}

}  // namespace anvil::data
