// Chat templates outside the data path: where a model's template is found (the configured
// name or .jinja file, chat_template.jinja, tokenizer_config.json, in that order), the
// prompt a chat model is given (the conversation and the generation prompt) and the token
// where its answer ends. On the byte-level tokenizer of test_dataset.cpp (256 BOS, 257
// EOS, 259-261 the Llama-3 markers) with ChatML's markers added as 262 and 263.
#include <gtest/gtest.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "data/bytelevel_tokenizer_json.h"
#include "data/chat_template.h"
#include "data/tokenizer.h"
#include "error_test_util.h"

namespace {

using namespace anvil::data;
using anvil::test::contains;
using anvil::test::error_of;
constexpr TrainOn kAnswers = TrainOn::train_on_assistant;

class ChatTemplateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ("anvil_chat_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "_" +
            std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
    write_bytelevel_tokenizer(dir_.string(), 64);  // its tokenizer_config.json holds the llama3 template
    nlohmann::json tok = nlohmann::json::parse(slurp("tokenizer.json"));
    for (int id : {262, 263})
      tok["added_tokens"].push_back({{"id", id}, {"content", id == 262 ? "<|im_start|>" : "<|im_end|>"},
                                     {"special", true}, {"normalized", false}, {"lstrip", false},
                                     {"rstrip", false}, {"single_word", false}});
    put("tokenizer.json", tok.dump());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string slurp(const std::string& name) const {
    std::ifstream in(dir_ / name, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  std::string put(const std::string& name, const std::string& text) const {
    std::ofstream(dir_ / name, std::ios::binary) << text;
    return (dir_ / name).string();
  }
  std::string prompt(ChatTemplate t, const std::vector<ChatMessage>& messages) const {
    const ChatRenderer renderer(t, Tokenizer::load(dir_.string()));
    std::string out;
    const auto problem = renderer.render_prompt(messages, out);
    EXPECT_FALSE(problem) << problem->message;
    return out;
  }

  std::filesystem::path dir_;
};

TEST_F(ChatTemplateTest, FoundInTheConfigThenTheModelsJinjaFileThenTokenizerConfig) {
  const std::string dir = dir_.string();
  ChatTemplateSource s = chat_template_find(dir);
  EXPECT_EQ(s.where, dir + "/tokenizer_config.json: chat_template");
  EXPECT_EQ(s.text, chat_template_jinja(ChatTemplate::chat_llama3));
  // chat_template.jinja, as current transformers saves it, comes before tokenizer_config.json.
  const std::string jinja = put("chat_template.jinja", chat_template_jinja(ChatTemplate::chat_chatml));
  s = chat_template_find(dir);
  EXPECT_EQ(s.where, jinja);
  EXPECT_EQ(s.text, chat_template_jinja(ChatTemplate::chat_chatml));
  // The configured template comes first: a name, or any file.
  EXPECT_EQ(chat_template_find(dir, "mistral").text, chat_template_jinja(ChatTemplate::chat_mistral));
  const std::string mine = put("mine.jinja", "{{ bos_token }}<|start_header_id|>...");
  s = chat_template_find(dir, mine);
  EXPECT_EQ(s.where, mine);
  EXPECT_EQ(s.text, "{{ bos_token }}<|start_header_id|>...");
  // Errors name the file the template came from, even when a later source would do.
  put("chat_template.jinja", "{% for m in messages %}{{ m.content }{% endfor %}");
  auto e = error_of([&] { ChatRenderer(chat_template_find(dir), Tokenizer::load(dir)); });
  EXPECT_EQ(e.kind(), anvil::ErrorKind::user);
  EXPECT_TRUE(contains(e, jinja)) << e.what();
  e = error_of([&] { chat_template_find(dir, dir + "/missing.jinja"); });
  EXPECT_TRUE(contains(e, "chat template '" + dir + "/missing.jinja': not one of llama3, chatml, mistral"))
      << e.what();
  e = error_of([&] { chat_template_check(jinja); });
  EXPECT_TRUE(contains(e, jinja)) << e.what();
  std::string why;
  std::filesystem::remove(jinja);
  std::filesystem::remove(dir_ / "tokenizer_config.json");
  EXPECT_EQ(chat_template_try_find(dir, why), std::nullopt);
  EXPECT_TRUE(why.find("no chat_template.jinja and no tokenizer_config.json") != std::string::npos) << why;
}

TEST_F(ChatTemplateTest, AnyTemplateRendersAndItsAnswersAreTrained) {
  // Not one of anvil's: a default system message, a role prefix, answers between markers.
  const std::string text =
      "{% if messages[0]['role'] != 'system' %}{{ 'SYS: be brief\n' }}{% endif %}"
      "{% for m in messages %}{% if m['role'] == 'assistant' %}{{ '<|im_start|>' + m['content'] + '<|im_end|>\n' }}"
      "{% else %}{{ m['role'] | upper + ': ' + m['content'] + '\n' }}{% endif %}{% endfor %}"
      "{% if add_generation_prompt %}{{ '<|im_start|>' }}{% endif %}";
  const ChatRenderer r(ChatTemplateSource{text, "t.jinja"}, Tokenizer::load(dir_.string()));
  RenderedChat out;
  ASSERT_FALSE(r.render({{"user", "a"}, {"assistant", "b"}, {"user", "c"}, {"assistant", "d"}}, kAnswers, out));
  EXPECT_EQ(out.text, "SYS: be brief\nUSER: a\n<|im_start|>b<|im_end|>\nUSER: c\n<|im_start|>d<|im_end|>\n");
  ASSERT_EQ(out.trained.size(), 2u);
  EXPECT_EQ(out.text.substr(out.trained[0].first, out.trained[0].second - out.trained[0].first), "b<|im_end|>");
  EXPECT_EQ(out.text.substr(out.trained[1].first, out.trained[1].second - out.trained[1].first), "d<|im_end|>");
  EXPECT_EQ(r.end_of_turn_id(), 263);
  std::string prompt;
  ASSERT_FALSE(r.render_prompt({{"user", "a"}}, prompt));
  EXPECT_EQ(prompt, "SYS: be brief\nUSER: a\n<|im_start|>");

  // {% generation %} blocks say what is trained.
  const std::string marked =
      "{% for m in messages %}{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] }}{% endgeneration %}"
      "{{ '<|im_end|>' }}{% else %}{{ m['content'] }}{% endif %}{% endfor %}";
  const ChatRenderer g(ChatTemplateSource{marked, "g.jinja"}, Tokenizer::load(dir_.string()));
  ASSERT_FALSE(g.render({{"user", "a"}, {"assistant", "bc"}}, kAnswers, out));
  EXPECT_EQ(out.text, "abc<|im_end|>");
  ASSERT_EQ(out.trained.size(), 1u);
  EXPECT_EQ(out.trained[0], (std::pair<std::size_t, std::size_t>{1, 3}));

  // A template that rewrites earlier turns once later ones follow is refused, named.
  const std::string unstable =
      "{% for m in messages %}{% if loop.last %}{{ 'LAST ' }}{% endif %}{{ m['content'] + '<|im_end|>' }}{% endfor %}";
  const ChatRenderer u(ChatTemplateSource{unstable, "u.jinja"}, Tokenizer::load(dir_.string()));
  const auto problem = u.render({{"user", "a"}, {"assistant", "b"}, {"user", "c"}, {"assistant", "d"}}, kAnswers, out);
  ASSERT_TRUE(problem.has_value());
  EXPECT_TRUE(problem->message.find("message 1: u.jinja renders the conversation") != std::string::npos)
      << problem->message;
  // raise_exception is the conversation's problem, with the template's message.
  const ChatRenderer x(ChatTemplateSource{"{% if messages|length > 2 %}{{ raise_exception('one turn only') }}"
                                          "{% endif %}{% for m in messages %}{{ m['content'] }}{% endfor %}", "x.jinja"},
                       Tokenizer::load(dir_.string()));
  const auto raised = x.render({{"user", "a"}, {"assistant", "b"}, {"user", "c"}}, kAnswers, out);
  ASSERT_TRUE(raised.has_value());
  EXPECT_FALSE(raised->nothing_to_train);
  EXPECT_TRUE(raised->message.find("one turn only") != std::string::npos) << raised->message;
}

TEST_F(ChatTemplateTest, PromptIsTheConversationAndTheGenerationPrompt) {
  const std::vector<ChatMessage> turn{{"system", "S"}, {"user", " a "}};
  EXPECT_EQ(prompt(ChatTemplate::chat_llama3, turn),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\na<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(prompt(ChatTemplate::chat_chatml, turn),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n a <|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(prompt(ChatTemplate::chat_mistral, turn), "<|begin_of_text|>[INST] S\n\n a  [/INST]");
  const std::vector<ChatMessage> two{{"user", "a"}, {"assistant", "b"}, {"user", "c"}};
  EXPECT_EQ(prompt(ChatTemplate::chat_chatml, two),
            "<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\nb<|im_end|>\n<|im_start|>user\nc<|im_end|>\n"
            "<|im_start|>assistant\n");
  EXPECT_EQ(prompt(ChatTemplate::chat_mistral, two),
            "<|begin_of_text|>[INST] a [/INST]b<|end_of_text|>[INST] c [/INST]");
}

TEST_F(ChatTemplateTest, PromptMustEndWithAUserMessage) {
  const Tokenizer tok = Tokenizer::load(dir_.string());
  std::string out;
  for (ChatTemplate t : {ChatTemplate::chat_llama3, ChatTemplate::chat_chatml, ChatTemplate::chat_mistral}) {
    const ChatRenderer r(t, tok);
    for (const std::vector<ChatMessage>& bad :
         {std::vector<ChatMessage>{}, {{"user", "a"}, {"assistant", "b"}}, {{"system", "s"}}}) {
      const auto problem = r.render_prompt(bad, out);
      ASSERT_TRUE(problem.has_value());
      EXPECT_EQ(problem->message, "the conversation to answer must end with a user message");
    }
    // A conversation render() refuses is refused here too.
    const auto problem = r.render_prompt({{"user", "a"}, {"system", "s"}, {"user", "b"}}, out);
    ASSERT_TRUE(problem.has_value());
    EXPECT_TRUE(problem->message.find("system message must come first") != std::string::npos) << problem->message;
  }
  const auto problem = ChatRenderer(ChatTemplate::chat_mistral, tok).render_prompt({{"user", "a"}, {"user", "b"}}, out);
  ASSERT_TRUE(problem.has_value());
  EXPECT_TRUE(problem->message.find("alternate user and assistant") != std::string::npos) << problem->message;
}

TEST_F(ChatTemplateTest, AnswersEndAtTheTemplatesEndOfTurnToken) {
  const Tokenizer tok = Tokenizer::load(dir_.string());
  EXPECT_EQ(ChatRenderer(ChatTemplate::chat_llama3, tok).end_of_turn_id(), 261);  // <|eot_id|>
  EXPECT_EQ(ChatRenderer(ChatTemplate::chat_chatml, tok).end_of_turn_id(), 263);  // <|im_end|>
  EXPECT_EQ(ChatRenderer(ChatTemplate::chat_mistral, tok).end_of_turn_id(), 257);  // EOS
}

}  // namespace
