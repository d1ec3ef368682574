// Training data on a byte-level tokenizer (every byte its own id, 256 BOS, 257 EOS,
// 258 pad, 259-261 the Llama-3 chat markers), so every expected row below can be written
// out by hand: targets, positions and segments of text, prompt/completion and chat
// records, packing, overflow, padding; the bad-input table (each kind counted and shown
// with its line, or fatal); the token cache (the same bytes from any number of ranks,
// weights, the eval split, its key); then the sampler's order.
#include <gtest/gtest.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/bytelevel_tokenizer_json.h"
#include "data/chat_template.h"
#include "data/dataset.h"
#include "data/sampler.h"
#include "data/token_cache.h"
#include "data/tokenizer.h"

namespace {

using namespace anvil::data;
using Ids = std::vector<std::int32_t>;

constexpr std::int32_t B = 256, E = 257, P = 258, SH = 259, EH = 260, EOT = 261, I = kIgnoreTarget;

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Runs `f`, expecting a user error whose message contains every one of `parts`.
template <typename F>
void expect_user_error(F&& f, std::initializer_list<std::string> parts) {
  try {
    f();
    FAIL() << "no error thrown";
  } catch (const anvil::Error& e) {
    EXPECT_EQ(e.kind(), anvil::ErrorKind::user) << e.what();
    for (const std::string& part : parts)
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << "'" << part << "' not in: " << e.what();
  }
}

// A set expanded as the trainer reads it.
struct Rows {
  std::int64_t count = 0;
  Ids ids, targets, positions, segments;
  PackStats stats;
};

Rows expand(const SequenceSet& s) {
  Rows r;
  r.count = s.count;
  r.stats = s.stats;
  const auto n = static_cast<std::size_t>(s.count * s.seq_len);
  r.ids.resize(n);
  r.targets.resize(n);
  r.positions.resize(n);
  r.segments.resize(n);
  for (std::int64_t row = 0; row < s.count; ++row) {
    const std::int64_t o = row * s.seq_len;
    s.expand_row(row, r.ids.data() + o, r.targets.data() + o, r.positions.data() + o, r.segments.data() + o);
  }
  return r;
}

Ids bytes(const std::string& s) { return Ids(s.begin(), s.end()); }
Ids cat(std::initializer_list<Ids> parts) {
  Ids out;
  for (const Ids& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

class Dataset : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ("anvil_dataset_" + std::string(info->name()) + "_" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
    write_bytelevel_tokenizer(dir_.string(), 64);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  Tokenizer tokenizer() const { return Tokenizer::load(dir_.string()); }
  // The byte-level tokenizer with another tokenizer_config.json.
  Tokenizer tokenizer_with_config(const std::string& config) const {
    return Tokenizer::from_json(read_text(dir_ / "tokenizer.json"), config, "", "test");
  }
  // The byte-level tokenizer plus ChatML's markers as ids 262 and 263.
  Tokenizer chatml_tokenizer() const {
    nlohmann::json tok = nlohmann::json::parse(read_text(dir_ / "tokenizer.json"));
    int id = 262;
    for (const char* content : {"<|im_start|>", "<|im_end|>"})
      tok["added_tokens"].push_back({{"id", id++}, {"content", content}, {"single_word", false}, {"lstrip", false},
                                     {"rstrip", false}, {"normalized", false}, {"special", true}});
    return Tokenizer::from_json(tok.dump(), read_text(dir_ / "tokenizer_config.json"), "", "chatml");
  }

  std::string write(const std::string& name, const std::string& content) const {
    const std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary) << content;
    return path;
  }

  Rows load(const std::string& jsonl, std::int64_t seq_len, bool packing = true, bool add_eos = true,
            Overflow overflow = Overflow::overflow_truncate) const {
    DatasetOptions opt;
    opt.seq_len = seq_len;
    opt.packing = packing;
    opt.overflow = overflow;
    opt.records.add_eos = add_eos;
    return expand(dataset_load_jsonl(write("data.jsonl", jsonl), tokenizer(), opt));
  }

  // Chat records with `t` on tokenizer `tok`: ids and targets of the one row of seq_len 128.
  Rows load_chat(const std::string& jsonl, const Tokenizer& tok, ChatTemplate t,
                 TrainOn train_on = TrainOn::train_on_assistant) const {
    ChatRenderer renderer(t, tok);
    DatasetOptions opt;
    opt.seq_len = 128;
    opt.records.format = RecordFormat::record_chat;
    opt.records.chat = &renderer;
    opt.records.train_on = train_on;
    return expand(dataset_load_jsonl(write("chat.jsonl", jsonl), tok, opt));
  }

  std::filesystem::path dir_;
};

// Every trained target is the next token of the same row and the same sample.
void expect_no_cross_boundary_targets(const Rows& s, std::int64_t seq_len) {
  for (std::int64_t r = 0; r < s.count; ++r) {
    for (std::int64_t t = 0; t < seq_len; ++t) {
      const std::int64_t i = r * seq_len + t;
      if (s.targets[i] == I) continue;
      ASSERT_LT(t + 1, seq_len) << "row " << r;
      EXPECT_EQ(s.targets[i], s.ids[i + 1]) << "row " << r << " position " << t;
      EXPECT_EQ(s.segments[i], s.segments[i + 1]) << "row " << r << " position " << t;
      EXPECT_EQ(s.positions[i] + 1, s.positions[i + 1]) << "row " << r << " position " << t;
    }
  }
}

TEST_F(Dataset, TextTrainsEveryPrediction) {
  const Rows s = load(R"({"text": "ab"})" "\n", 8);
  EXPECT_EQ(s.count, 1);
  EXPECT_EQ(s.ids, (Ids{B, 'a', 'b', E, P, P, P, P}));
  EXPECT_EQ(s.targets, (Ids{'a', 'b', E, I, I, I, I, I}));
  EXPECT_EQ(s.positions, (Ids{0, 1, 2, 3, 0, 1, 2, 3}));
  EXPECT_EQ(s.segments, (Ids{0, 0, 0, 0, 1, 1, 1, 1}));
  EXPECT_EQ(s.stats.trained_tokens, 3);
}

TEST_F(Dataset, TextWithoutEos) {
  const Rows s = load(R"({"text": "ab"})", 4, true, false);
  EXPECT_EQ(s.ids, (Ids{B, 'a', 'b', P}));
  EXPECT_EQ(s.targets, (Ids{'a', 'b', I, I}));
}

TEST_F(Dataset, PromptCompletionTrainsOnlyTheCompletionAndEos) {
  const Rows s = load(R"({"prompt": "ab", "completion": "cd", "id": 7})", 8);
  EXPECT_EQ(s.ids, (Ids{B, 'a', 'b', 'c', 'd', E, P, P}));
  // Predicting c from b is the first trained prediction.
  EXPECT_EQ(s.targets, (Ids{I, I, 'c', 'd', E, I, I, I}));
}

TEST_F(Dataset, PromptCompletionWithEmptyPrompt) {
  const Rows s = load(R"({"prompt": "", "completion": "x"})", 4);
  EXPECT_EQ(s.ids, (Ids{B, 'x', E, P}));
  EXPECT_EQ(s.targets, (Ids{'x', E, I, I}));
}

TEST_F(Dataset, TrainOnPromptTrainsEverything) {
  DatasetOptions opt;
  opt.seq_len = 8;
  opt.records.train_on = TrainOn::train_on_all;
  const Rows s = expand(dataset_load_jsonl(write("pc.jsonl", R"({"prompt": "ab", "completion": "cd"})"), tokenizer(), opt));
  EXPECT_EQ(s.targets, (Ids{'a', 'b', 'c', 'd', E, I, I, I}));
}

TEST_F(Dataset, TokenizerThatAddsEosGetsNoSecondOneAndNoneAfterThePrompt) {
  const Tokenizer tok = tokenizer_with_config(
      R"({"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>", "add_bos_token": true, "add_eos_token": true})");
  DatasetOptions opt;
  opt.seq_len = 6;
  const Rows text = expand(dataset_load_jsonl(write("t.jsonl", R"({"text": "ab"})"), tok, opt));
  EXPECT_EQ(text.ids, (Ids{B, 'a', 'b', E, E, E}));  // no pad token: EOS pads
  EXPECT_EQ(text.targets, (Ids{'a', 'b', E, I, I, I}));
  const Rows pc = expand(dataset_load_jsonl(write("pc.jsonl", R"({"prompt": "a", "completion": "b"})"), tok, opt));
  EXPECT_EQ(pc.ids, (Ids{B, 'a', 'b', E, E, E}));
  EXPECT_EQ(pc.targets, (Ids{I, 'b', E, I, I, I}));
}

TEST_F(Dataset, PackingRestartsPositionsAndSegments) {
  // Samples of 3, 4 and 3 tokens in rows of 8: the first two share a row, the third
  // does not fit after them.
  const Rows s = load("{\"text\": \"a\"}\n{\"text\": \"bc\"}\n\n{\"text\": \"d\"}\n", 8);
  ASSERT_EQ(s.count, 2);
  EXPECT_EQ(s.ids, (Ids{B, 'a', E, B, 'b', 'c', E, P,  //
                        B, 'd', E, P, P, P, P, P}));
  EXPECT_EQ(s.targets, (Ids{'a', E, I, 'b', 'c', E, I, I,  //
                            'd', E, I, I, I, I, I, I}));
  EXPECT_EQ(s.positions, (Ids{0, 1, 2, 0, 1, 2, 3, 0,  //
                              0, 1, 2, 0, 1, 2, 3, 4}));
  EXPECT_EQ(s.segments, (Ids{0, 0, 0, 1, 1, 1, 1, 2,  //
                             0, 0, 0, 1, 1, 1, 1, 1}));
  EXPECT_EQ(s.stats.samples, 3);
  EXPECT_EQ(s.stats.tokens, 10);
  EXPECT_EQ(s.stats.trained_tokens, 7);
  expect_no_cross_boundary_targets(s, 8);
}

TEST_F(Dataset, PackingFillsRowsExactly) {
  // Two samples of 4 tokens fill a row of 8 with no padding.
  const Rows s = load(R"({"prompt": "a", "completion": "b"})" "\n"
                      R"({"prompt": "c", "completion": "d"})" "\n", 8);
  ASSERT_EQ(s.count, 1);
  EXPECT_EQ(s.ids, (Ids{B, 'a', 'b', E, B, 'c', 'd', E}));
  EXPECT_EQ(s.targets, (Ids{I, 'b', E, I, I, 'd', E, I}));
  EXPECT_EQ(s.segments, (Ids{0, 0, 0, 0, 1, 1, 1, 1}));
  expect_no_cross_boundary_targets(s, 8);
}

TEST_F(Dataset, LongSampleIsTruncatedToSeqLen) {
  const Rows s = load("{\"text\": \"x\"}\n{\"text\": \"abcdefgh\"}\n", 4);
  ASSERT_EQ(s.count, 2);
  EXPECT_EQ(s.ids, (Ids{B, 'x', E, P, B, 'a', 'b', 'c'}));
  EXPECT_EQ(s.targets, (Ids{'x', E, I, I, 'a', 'b', 'c', I}));
  EXPECT_EQ(s.positions, (Ids{0, 1, 2, 0, 0, 1, 2, 3}));
  EXPECT_EQ(s.stats.truncated, 1);
  EXPECT_EQ(s.stats.samples, 2);
  expect_no_cross_boundary_targets(s, 4);
}

TEST_F(Dataset, LongSampleIsSplitIntoDocuments) {
  // B a b c d e f g h E: pieces of 4, 4 and 2 tokens, each a document of its own whose
  // first token is not predicted from the piece before.
  const Rows s = load("{\"text\": \"abcdefgh\"}\n", 4, true, true, Overflow::overflow_split);
  ASSERT_EQ(s.count, 3);
  EXPECT_EQ(s.ids, (Ids{B, 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', E, P, P}));
  EXPECT_EQ(s.targets, (Ids{'a', 'b', 'c', I, 'e', 'f', 'g', I, E, I, I, I}));
  EXPECT_EQ(s.positions, (Ids{0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 0, 1}));
  EXPECT_EQ(s.stats.split, 1);
  EXPECT_EQ(s.stats.samples, 1);
  EXPECT_EQ(s.stats.documents, 3);
  EXPECT_EQ(s.stats.trained_tokens, 7);
  expect_no_cross_boundary_targets(s, 4);
}

TEST_F(Dataset, LongSampleIsDropped) {
  const Rows s = load("{\"text\": \"x\"}\n{\"text\": \"abcdefgh\"}\n", 4, true, true, Overflow::overflow_drop);
  ASSERT_EQ(s.count, 1);
  EXPECT_EQ(s.ids, (Ids{B, 'x', E, P}));
  EXPECT_EQ(s.stats.dropped_long, 1);
  EXPECT_EQ(s.stats.samples, 1);
}

TEST_F(Dataset, SampleWithNothingTrainedWithinSeqLenIsDropped) {
  const Rows s = load(R"({"prompt": "abcdef", "completion": "x"})" "\n"
                      R"({"prompt": "a", "completion": "b"})" "\n", 4);
  EXPECT_EQ(s.count, 1);
  EXPECT_EQ(s.ids, (Ids{B, 'a', 'b', E}));
  EXPECT_EQ(s.stats.dropped_untrained, 1);
  EXPECT_EQ(s.stats.truncated, 1);
  EXPECT_EQ(s.stats.samples, 1);
}

TEST_F(Dataset, WithoutPackingEverySampleHasItsRow) {
  const Rows s = load("{\"text\": \"a\"}\n{\"text\": \"b\"}\n", 5, false);
  ASSERT_EQ(s.count, 2);
  EXPECT_EQ(s.ids, (Ids{B, 'a', E, P, P, B, 'b', E, P, P}));
  EXPECT_EQ(s.targets, (Ids{'a', E, I, I, I, 'b', E, I, I, I}));
  EXPECT_EQ(s.positions, (Ids{0, 1, 2, 0, 1, 0, 1, 2, 0, 1}));
  EXPECT_EQ(s.segments, (Ids{0, 0, 0, 1, 1, 0, 0, 0, 1, 1}));
}

TEST_F(Dataset, PadIsEosWhenTheTokenizerHasNoPad) {
  const Tokenizer tok = tokenizer_with_config(R"({"eos_token": "<|end_of_text|>"})");
  EXPECT_EQ(dataset_pad_id(tok), E);
  EXPECT_EQ(dataset_pad_id(tokenizer_with_config("")), 0);
  EXPECT_EQ(dataset_pad_id(tokenizer()), P);
}

// ---- chat

TEST_F(Dataset, ChatLlama3TrainsAssistantTurnsAndTheirEot) {
  const Rows s = load_chat(
      R"({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": " hi "},)"
      R"( {"role": "assistant", "content": "yo"}, {"role": "user", "content": "?"}, {"role": "assistant", "content": "!"}]})",
      tokenizer(), ChatTemplate::chat_llama3);
  const Ids header_user = cat({{SH}, bytes("user"), {EH}, bytes("\n\n")});
  const Ids header_assistant = cat({{SH}, bytes("assistant"), {EH}, bytes("\n\n")});
  const Ids expected = cat({{B, SH}, bytes("system"), {EH}, bytes("\n\nS"), {EOT},  //
                            header_user, bytes("hi"), {EOT},                           // content trimmed
                            header_assistant, bytes("yo"), {EOT},                      //
                            header_user, bytes("?"), {EOT},                            //
                            header_assistant, bytes("!"), {EOT}});
  ASSERT_LE(expected.size(), 128u);
  EXPECT_EQ(Ids(s.ids.begin(), s.ids.begin() + static_cast<std::ptrdiff_t>(expected.size())), expected);
  // The trained targets, in order: y o EOT, then ! EOT.
  Ids trained;
  for (const std::int32_t t : s.targets)
    if (t != I) trained.push_back(t);
  EXPECT_EQ(trained, (Ids{'y', 'o', EOT, '!', EOT}));
  expect_no_cross_boundary_targets(s, 128);
}

TEST_F(Dataset, ChatTrainOnLastAssistantTrainsOnlyTheLastAnswer) {
  const Rows s = load_chat(
      R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "yo"},)"
      R"( {"role": "user", "content": "?"}, {"role": "assistant", "content": "!"}]})",
      tokenizer(), ChatTemplate::chat_llama3, TrainOn::train_on_last_assistant);
  Ids trained;
  for (const std::int32_t t : s.targets)
    if (t != I) trained.push_back(t);
  EXPECT_EQ(trained, (Ids{'!', EOT}));
}

TEST_F(Dataset, ChatTrainOnPromptTrainsEveryPrediction) {
  const Rows s = load_chat(R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})",
                           tokenizer(), ChatTemplate::chat_llama3, TrainOn::train_on_all);
  std::int64_t tokens = 0;
  for (const std::int32_t id : s.ids) tokens += id != P;
  EXPECT_EQ(s.stats.trained_tokens, tokens - 1);  // every prediction but the first token's
}

TEST_F(Dataset, ChatmlTrainsContentAndImEndNotTheNewline) {
  const Tokenizer tok = chatml_tokenizer();
  const Rows s = load_chat(R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "bc"}]})",
                           tok, ChatTemplate::chat_chatml);
  constexpr std::int32_t S = 262, N = 263;
  const Ids expected = cat({{S}, bytes("user\na"), {N}, bytes("\n"), {S}, bytes("assistant\nbc"), {N}, bytes("\n")});
  EXPECT_EQ(Ids(s.ids.begin(), s.ids.begin() + static_cast<std::ptrdiff_t>(expected.size())), expected);
  Ids trained;
  for (const std::int32_t t : s.targets)
    if (t != I) trained.push_back(t);
  EXPECT_EQ(trained, (Ids{'b', 'c', N}));
}

TEST_F(Dataset, ChatMistralPutsTheSystemMessageInTheFirstTurn) {
  const Rows s = load_chat(R"({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "a"},)"
                           R"( {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"},)"
                           R"( {"role": "assistant", "content": "d"}]})",
                           tokenizer(), ChatTemplate::chat_mistral);
  const Ids expected = cat({{B}, bytes("[INST] S\n\na [/INST]b"), {E}, bytes("[INST] c [/INST]d"), {E}});
  EXPECT_EQ(Ids(s.ids.begin(), s.ids.begin() + static_cast<std::ptrdiff_t>(expected.size())), expected);
  Ids trained;
  for (const std::int32_t t : s.targets)
    if (t != I) trained.push_back(t);
  EXPECT_EQ(trained, (Ids{'b', E, 'd', E}));
}

TEST_F(Dataset, ChatTemplateNeedsItsTokens) {
  expect_user_error([&] { ChatRenderer(ChatTemplate::chat_chatml, tokenizer()); }, {"chatml", "<|im_start|>", "llama3"});
  expect_user_error([&] { ChatRenderer(ChatTemplate::chat_llama3, tokenizer_with_config("")); }, {"llama3", "BOS"});
}

TEST_F(Dataset, ChatTemplateIsTheModelsOwnText) {
  EXPECT_EQ(chat_template_find(dir_.string()).text, chat_template_jinja(ChatTemplate::chat_llama3));  // the generated tokenizer's
  write("tokenizer_config.json", R"({"chat_template": [{"name": "tool_use", "template": "x"},)"
                                 R"( {"name": "default", "template": "<|im_start|>"}]})");
  EXPECT_EQ(chat_template_find(dir_.string()).text, "<|im_start|>");
  write("tokenizer_config.json", R"({"eos_token": "x"})");
  expect_user_error([&] { chat_template_find(dir_.string()); }, {"tokenizer_config.json", "no \"chat_template\"", "mistral"});
  EXPECT_EQ(chat_template_from_name("chatml"), ChatTemplate::chat_chatml);
  EXPECT_EQ(chat_template_from_name("vicuna"), std::nullopt);
}

TEST_F(Dataset, ChatRecordWithoutATemplateSaysWhy) {
  DatasetOptions opt;
  opt.seq_len = 16;
  opt.records.chat_problem = "no chat template: none configured";
  const std::string path = write("c.jsonl", R"({"messages": [{"role": "user", "content": "a"}]})");
  expect_user_error([&] { dataset_load_jsonl(path, tokenizer(), opt); }, {path + ":1:", "none configured"});
}

// ---- bad input: each kind counted per file with its line, or fatal with on_error: fail

struct BadCase {
  std::string record;
  std::string kind;
  std::string message;
};

TEST_F(Dataset, BadInputTable) {
  const std::vector<BadCase> cases{
      {R"({"text": "a")", "invalid JSON", "invalid JSON at column"},
      {R"(["a"])", "not an object", "must be a JSON object"},
      {"{\"text\": \"a\xff\"}", "invalid UTF-8", "ill-formed UTF-8 at column 12"},
      {R"({"text": 5})", "wrong type", "field \"text\" must be a string"},
      {R"({"text": null})", "wrong type", "must be a string"},
      {R"({"text": ""})", "empty sample", "empty \"text\""},
      {R"({"foo": "a"})", "unknown format", "unknown record format"},
      {R"({"text": "a", "prompt": "b", "completion": "c"})", "unknown format", "more than one format"},
      {R"({"prompt": "a"})", "missing field", "missing field \"completion\""},
      {R"({"prompt": "a", "completion": ""})", "empty sample", "empty \"completion\""},
      {R"({"messages": "hi"})", "wrong type", "must be a list"},
      {R"({"messages": []})", "empty sample", "\"messages\" is empty"},
      {R"({"messages": [{"role": "user"}]})", "missing field", "needs \"role\" and \"content\""},
      {R"({"messages": [{"role": "robot", "content": "x"}]})", "bad conversation", "role \"robot\""},
      {R"({"messages": [{"role": "user", "content": "x"}, {"role": "system", "content": "s"}]})", "bad conversation",
       "system message must come first"},
      {R"({"messages": [{"role": "user", "content": "x"}]})", "empty sample", "no assistant message"},
  };
  const Tokenizer tok = tokenizer();
  ChatRenderer renderer(ChatTemplate::chat_llama3, tok);
  for (const BadCase& c : cases) {
    SCOPED_TRACE(c.record);
    // Line 3, after a good record and a blank line.
    const std::string path = write("bad.jsonl", "{\"text\": \"a\"}\n\n" + c.record + "\n{\"text\": \"b\"}\n");
    DatasetOptions opt;
    opt.seq_len = 16;
    opt.records.chat = &renderer;
    FileReport report;
    const Rows s = expand(dataset_load_jsonl(path, tok, opt, &report));
    EXPECT_EQ(report.records, 3);
    EXPECT_EQ(report.samples, 2);
    EXPECT_EQ(s.stats.samples, 2);
    EXPECT_EQ(report.bad, (std::map<std::string, std::int64_t>{{c.kind, 1}}));
    ASSERT_EQ(report.shown.size(), 1u);
    EXPECT_EQ(report.shown[0].first, 3);
    EXPECT_NE(report.shown[0].second.find(c.message), std::string::npos) << report.shown[0].second;
    EXPECT_NE(report.summary().find(path + ":3: "), std::string::npos) << report.summary();

    opt.records.on_error = OnError::on_error_fail;
    expect_user_error([&] { dataset_load_jsonl(path, tok, opt); }, {path + ":3: ", c.message, "on_error"});
  }
}

TEST_F(Dataset, ReportShowsTheFirstFewBadLinesAndCountsTheRest) {
  std::string jsonl = "{\"text\": \"a\"}\n";
  for (int i = 0; i < 8; ++i) jsonl += "{\"text\": 1}\n";
  jsonl += "{oops\n";
  FileReport report;
  DatasetOptions opt;
  opt.seq_len = 8;
  dataset_load_jsonl(write("many.jsonl", jsonl), tokenizer(), opt, &report);
  EXPECT_EQ(report.bad_count(), 9);
  EXPECT_EQ(report.bad.at("wrong type"), 8);
  EXPECT_EQ(report.bad.at("invalid JSON"), 1);
  ASSERT_EQ(report.shown.size(), FileReport::kShown);
  EXPECT_EQ(report.shown.front().first, 2);
  EXPECT_EQ(report.shown.back().first, 6);
  EXPECT_NE(report.summary().find("... and 4 more"), std::string::npos) << report.summary();
  EXPECT_NE(report.summary().find("invalid JSON 1, wrong type 8"), std::string::npos) << report.summary();
}

TEST_F(Dataset, EmptyFileIsAnError) {
  DatasetOptions opt;
  opt.seq_len = 8;
  for (const char* content : {"", "\n\n  \n"}) {
    const std::string path = write("empty.jsonl", content);
    expect_user_error([&] { dataset_load_jsonl(path, tokenizer(), opt); }, {path, "no records"});
  }
  expect_user_error([&] { dataset_load_jsonl((dir_ / "missing.jsonl").string(), tokenizer(), opt); },
                    {"missing.jsonl", "cannot open"});
  const std::string all_bad = write("bad.jsonl", "{\"text\": 1}\n");
  expect_user_error([&] { dataset_load_jsonl(all_bad, tokenizer(), opt); }, {all_bad, "none of the 1 records", "wrong type"});
}

TEST_F(Dataset, NothingToTrainIsAnError) {
  DatasetOptions opt;
  opt.seq_len = 3;
  const std::string path = write("long.jsonl", R"({"prompt": "abcdef", "completion": "x"})");
  expect_user_error([&] { dataset_load_jsonl(path, tokenizer(), opt); }, {path, "seq_len 3"});
}

TEST_F(Dataset, AddEosNeedsAnEosToken) {
  DatasetOptions opt;
  opt.seq_len = 8;
  const std::string path = write("data.jsonl", R"({"text": "a"})");
  expect_user_error([&] { dataset_load_jsonl(path, tokenizer_with_config(""), opt); }, {"no EOS"});
  opt.records.add_eos = false;
  // No pad and no EOS: 0 pads.
  EXPECT_EQ(expand(dataset_load_jsonl(path, tokenizer_with_config(""), opt)).ids, (Ids{B, 'a', 0, 0, 0, 0, 0, 0}));
}

TEST_F(Dataset, SeqLenBelowTwoIsAnError) {
  expect_user_error([&] { load(R"({"text": "a"})", 1); }, {"seq_len"});
}

// ---- the token cache

class TokenCacheTest : public Dataset {
 protected:
  PrepareSpec spec(std::vector<DataSource> train) const {
    PrepareSpec s;
    s.train = std::move(train);
    s.seq_len = 16;
    s.seed = 5;
    return s;
  }
  // Phase 1 on `world` ranks (in turn), then phase 2: the cache's path.
  std::string build(const PrepareSpec& s, int world, const std::string& name) const {
    const Tokenizer tok = tokenizer();
    std::vector<std::string> parts;
    for (int r = 0; r < world; ++r) {
      parts.push_back((dir_ / (name + ".part-" + std::to_string(r))).string());
      EXPECT_FALSE(prepare_write_part(s, tok, r, world, parts.back()).has_value());
    }
    const std::string path = (dir_ / (name + ".bin")).string();
    prepare_assemble(s, tok, parts, cache_key(s, dir_.string()), path);
    return path;
  }
  std::string records(int n, const std::string& tag) const {
    std::string out;
    for (int i = 0; i < n; ++i) out += "{\"text\": \"" + tag + std::to_string(i) + "\"}\n";
    return out;
  }
};

TEST_F(TokenCacheTest, AnyNumberOfRanksWritesTheSameBytes) {
  std::string jsonl = records(40, "r");
  jsonl += "{\"text\": 3}\n\n";  // a bad record and a blank line: counted the same way
  const PrepareSpec s = spec({{write("a.jsonl", jsonl), 1.0}, {write("b.jsonl", records(7, "b")), 1.0}});
  const std::string one = build(s, 1, "one"), three = build(s, 3, "three");
  EXPECT_EQ(read_text(one), read_text(three));
  const auto cache = token_cache_open(three, cache_key(s, dir_.string()), true);
  ASSERT_TRUE(cache.has_value());
  EXPECT_EQ(cache->train.stats.samples, 47);
  EXPECT_FALSE(cache->eval.has_value());
  ASSERT_EQ(cache->reports.size(), 2u);
  EXPECT_EQ(cache->reports[0].records, 41);
  EXPECT_EQ(cache->reports[0].bad.at("wrong type"), 1);
  EXPECT_EQ(cache->reports[0].shown.at(0).first, 41);
  EXPECT_EQ(cache->reports[1].samples, 7);
}

TEST_F(TokenCacheTest, WeightsRepeatRecordsAndEvalFractionHoldsSomeOut) {
  PrepareSpec s = spec({{write("a.jsonl", records(200, "a")), 2.0}, {write("b.jsonl", records(200, "b")), 0.5}});
  s.packing = false;  // one sample a row: rows count samples
  const auto weighted = token_cache_open(build(s, 2, "w"), cache_key(s, dir_.string()), true);
  ASSERT_TRUE(weighted.has_value());
  const std::int64_t rows = weighted->train.count;
  EXPECT_GT(rows, 400 + 80);  // 400 uses of a.jsonl, about 100 of b.jsonl
  EXPECT_LT(rows, 400 + 120);
  // Every record of a.jsonl is there twice: count the rows whose text starts with 'a'.
  std::int64_t a_rows = 0;
  for (std::int64_t r = 0; r < rows; ++r) a_rows += weighted->train.ids[r * 16 + 1] == 'a';
  EXPECT_EQ(a_rows, 400);

  s.train = {{s.train[0].path, 1.0}};
  s.eval_fraction = 0.1;
  const auto split = token_cache_open(build(s, 1, "e"), cache_key(s, dir_.string()), true);
  ASSERT_TRUE(split.has_value() && split->eval.has_value());
  EXPECT_EQ(split->train.count + split->eval->count, 200);
  EXPECT_GT(split->eval->count, 8);
  EXPECT_LT(split->eval->count, 35);
  // Held-out records never reach training.
  std::set<Ids> train_rows, eval_rows;
  for (std::int64_t r = 0; r < split->train.count; ++r) train_rows.insert(Ids(split->train.ids + r * 16, split->train.ids + r * 16 + 16));
  for (std::int64_t r = 0; r < split->eval->count; ++r) eval_rows.insert(Ids(split->eval->ids + r * 16, split->eval->ids + r * 16 + 16));
  for (const Ids& row : eval_rows) EXPECT_EQ(train_rows.count(row), 0u);
}

TEST_F(TokenCacheTest, KeyFollowsEveryInput) {
  const std::string a = write("a.jsonl", records(3, "a"));
  const PrepareSpec base = spec({{a, 1.0}});
  const std::string k = cache_key(base, dir_.string());
  EXPECT_EQ(k.size(), 32u);
  EXPECT_EQ(cache_key(base, dir_.string()), k);
  PrepareSpec s = base;
  s.seq_len = 32;
  EXPECT_NE(cache_key(s, dir_.string()), k);
  s = base;
  s.train[0].weight = 2;
  EXPECT_NE(cache_key(s, dir_.string()), k);
  s = base;
  s.overflow = Overflow::overflow_split;
  EXPECT_NE(cache_key(s, dir_.string()), k);
  s = base;
  s.records.train_on = TrainOn::train_on_all;
  EXPECT_NE(cache_key(s, dir_.string()), k);
  s = base;
  s.chat_template = ChatTemplateSource{chat_template_jinja(ChatTemplate::chat_llama3), "llama3"};
  EXPECT_NE(cache_key(s, dir_.string()), k);
  write("a.jsonl", records(3, "b"));  // same size, other bytes
  EXPECT_NE(cache_key(base, dir_.string()), k);
  write("a.jsonl", records(3, "a"));
  EXPECT_EQ(cache_key(base, dir_.string()), k);
  write("tokenizer_config.json", "{}");
  EXPECT_NE(cache_key(base, dir_.string()), k);
}

TEST_F(TokenCacheTest, DamagedOrForeignCachesAreRefused) {
  const PrepareSpec s = spec({{write("a.jsonl", records(20, "a")), 1.0}});
  const std::string key = cache_key(s, dir_.string());
  const std::string path = build(s, 1, "c");
  EXPECT_FALSE(token_cache_open((dir_ / "none.bin").string(), key, true).has_value());
  expect_user_error([&] { token_cache_open(path, std::string(32, '0'), false); }, {path, "another key"});
  std::string bytes = read_text(path);
  bytes[bytes.size() - 3] ^= 1;
  const std::string flipped = write("flipped.bin", bytes);
  expect_user_error([&] { token_cache_open(flipped, key, true); }, {flipped, "checksum"});
  const std::string cut = write("cut.bin", bytes.substr(0, bytes.size() / 2));
  expect_user_error([&] { token_cache_open(cut, key, false); }, {cut, "not a complete"});
  EXPECT_FALSE(std::filesystem::exists(path + ".partial"));
}

TEST_F(TokenCacheTest, OnErrorFailReportsTheFirstBadRecordWhateverTheRanks) {
  PrepareSpec s = spec({{write("a.jsonl", records(5, "a") + "{\"text\": 1}\n" + records(5, "a") + "{x\n"), 1.0}});
  s.records.on_error = OnError::on_error_fail;
  const Tokenizer tok = tokenizer();
  for (int world : {1, 2, 3}) {
    std::optional<PartError> first;
    for (int r = 0; r < world; ++r) {
      const auto e = prepare_write_part(s, tok, r, world, (dir_ / ("p" + std::to_string(r))).string());
      if (e && (!first || std::tie(e->source, e->line) < std::tie(first->source, first->line))) first = e;
    }
    ASSERT_TRUE(first.has_value()) << world;
    EXPECT_EQ(first->line, 6) << world;
    EXPECT_NE(first->message.find("a.jsonl:6:"), std::string::npos) << first->message;
  }
}

// ---------------------------------------------------------------------------------------
// Sampler

TEST(Sampler, SplitMix64MatchesTheReference) {
  // The first outputs of Vigna's splitmix64.c seeded with 0.
  SplitMix64 gen(0);
  EXPECT_EQ(gen.next(), 0xE220A8397B1DCDAFULL);
  EXPECT_EQ(gen.next(), 0x6E789E6AA1B965F4ULL);
  EXPECT_EQ(gen.next(), 0x06C45D188009454FULL);
}

TEST(Sampler, PermutationIsFixedAcrossPlatforms) {
  // Written down once; data/make_demo_data.py implements the same generator.
  std::vector<std::int64_t> p;
  sampler_permutation(10, 42, 0, p);
  EXPECT_EQ(p, (std::vector<std::int64_t>{9, 4, 2, 8, 1, 3, 0, 6, 5, 7}));
  sampler_permutation(10, 42, 1, p);
  EXPECT_EQ(p, (std::vector<std::int64_t>{0, 9, 1, 6, 2, 8, 3, 4, 7, 5}));
}

TEST(Sampler, SameSeedSameStreamOtherSeedOrEpochOtherOrder) {
  std::vector<std::int64_t> a, b, e0, e1, other;
  Sampler s1(100, 7, true), s2(100, 7, true), s3(100, 8, true);
  s1.next(100, a);
  s2.next(100, b);
  EXPECT_EQ(a, b);
  sampler_permutation(100, 7, 0, e0);
  sampler_permutation(100, 7, 1, e1);
  EXPECT_EQ(a, e0);
  EXPECT_NE(e0, e1);
  s3.next(100, other);
  EXPECT_NE(a, other);
}

TEST(Sampler, EveryIndexOncePerEpochAcrossChunkBoundaries) {
  const std::int64_t count = 101;
  Sampler s(count, 3, true);
  std::vector<std::int64_t> stream, chunk;
  while (static_cast<std::int64_t>(stream.size()) < 3 * count) {
    s.next(7, chunk);
    ASSERT_EQ(chunk.size(), 7u);
    stream.insert(stream.end(), chunk.begin(), chunk.end());
  }
  EXPECT_EQ(s.epoch(), 3);
  for (int epoch = 0; epoch < 3; ++epoch) {
    const std::vector<std::int64_t> part(stream.begin() + epoch * count, stream.begin() + (epoch + 1) * count);
    EXPECT_EQ(std::set<std::int64_t>(part.begin(), part.end()).size(), static_cast<std::size_t>(count));
    std::vector<std::int64_t> expected;
    sampler_permutation(count, 3, epoch, expected);
    EXPECT_EQ(part, expected) << "epoch " << epoch;
  }
}

TEST(Sampler, WithoutShuffleFileOrder) {
  Sampler s(4, 9, false);
  std::vector<std::int64_t> out;
  s.next(10, out);
  EXPECT_EQ(out, (std::vector<std::int64_t>{0, 1, 2, 3, 0, 1, 2, 3, 0, 1}));
  EXPECT_EQ(s.state(), (Sampler::State{2, 2}));
}

TEST(Sampler, RestoreReproducesTheStream) {
  for (const std::int64_t first : {0, 13, 50, 64, 140}) {
    Sampler a(50, 11, true);
    std::vector<std::int64_t> skip, expected, got;
    a.next(first, skip);
    const Sampler::State saved = a.state();
    a.next(120, expected);

    Sampler b(50, 11, true);
    b.restore(saved);
    EXPECT_EQ(b.state(), saved);
    b.next(120, got);
    EXPECT_EQ(got, expected) << "restored after " << first;
    EXPECT_EQ(b.state(), a.state());
  }
}

TEST(Sampler, RestoreRejectsAStateOfAnotherDataSet) {
  Sampler s(10, 1, true);
  expect_user_error([&] { s.restore({0, 10}); }, {"does not fit", "10 sequences"});
  expect_user_error([&] { s.restore({-1, 0}); }, {"does not fit"});
}

}  // namespace
