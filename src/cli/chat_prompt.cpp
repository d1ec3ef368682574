#include "cli/chat_prompt.h"

#include "core/error.h"

namespace anvil::cli {

ChatPrompter::ChatPrompter(const std::string& model_dir, const std::string& template_flag,
                           const data::Tokenizer& tok)
    : tok_(tok), renderer_(data::chat_template_find(model_dir, template_flag), tok) {}

std::vector<std::int32_t> ChatPrompter::ids(const std::vector<data::ChatMessage>& messages,
                                            const std::string& where, bool generation_prompt) const {
  std::string text;
  if (const auto problem = renderer_.render_prompt(messages, text, generation_prompt))
    throw_user_error(where, ": ", problem->message);
  // As data/dataset.cpp tokenizes a rendered conversation: the template writes its own BOS.
  return tok_.encode(text, false);
}

std::vector<std::int32_t> ChatPrompter::user_turn_ids(const std::string& system, const std::string& prompt,
                                                      const std::string& where, bool generation_prompt) const {
  std::vector<data::ChatMessage> messages;
  if (!system.empty()) messages.push_back({"system", system});
  messages.push_back({"user", prompt});
  return ids(messages, where, generation_prompt);
}

}  // namespace anvil::cli
