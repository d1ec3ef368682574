// The chat side of anvil generate, eval and tokenize: prompts wrapped in the model's chat
// template (data/chat_template.h: --template, else the model directory's) and tokenized
// as training tokenizes chat records, so that a fine-tune is prompted with what it was
// trained to continue.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/chat_template.h"
#include "data/tokenizer.h"

namespace anvil::cli {

class ChatPrompter {
 public:
  // `template_flag`: --template (a name or a .jinja file; empty: the model's template).
  ChatPrompter(const std::string& model_dir, const std::string& template_flag, const data::Tokenizer& tok);

  // The ids of `messages` (ending with a user message) and the template's generation
  // prompt (unless `generation_prompt` is false): special tokens parsed, BOS only where the
  // template writes it. A bad conversation is a user error starting with `where` (e.g.
  // "data.jsonl:3").
  std::vector<std::int32_t> ids(const std::vector<data::ChatMessage>& messages, const std::string& where,
                                bool generation_prompt = true) const;
  // A user turn `prompt`, after a system message when `system` is not empty.
  std::vector<std::int32_t> user_turn_ids(const std::string& system, const std::string& prompt,
                                          const std::string& where, bool generation_prompt = true) const;
  // Where generation stops besides EOS: the token that ends an assistant turn.
  std::int32_t end_of_turn_id() const { return renderer_.end_of_turn_id(); }

 private:
  const data::Tokenizer& tok_;
  data::ChatRenderer renderer_;
};

}  // namespace anvil::cli
