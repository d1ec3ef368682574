// The tokenizer.* GGUF metadata of hand-written model directories: what
// convert_hf_to_gguf.py would write for each (values, types, key order) and the refusals.
// tests/e2e/test_gguf_tokenizer_meta.py checks it against llama.cpp's own GGUFs by a round
// trip through anvil import.
#include <filesystem>
#include <nlohmann/json.hpp>

#include "error_test_util.h"
#include "data/hf_pre_tokenizers.h"
#include "export/gguf_tokenizer_meta.h"
#include "io/files.h"
#include "llama_test_util.h"

namespace anvil {
namespace {

using exporting::GgufKv;
using io::GgufValueType;
using json = nlohmann::json;
using test::error_of;
namespace fs = std::filesystem;

struct Dir {
  test::TempDir tmp;
  explicit Dir(const std::string& tag) : tmp("gguf_tok_" + tag) {}
  void write(const std::string& name, const json& j) const { write_text(name, j.dump(2)); }
  void write_text(const std::string& name, const std::string& text) const {
    io::write_text_file_atomic(tmp.str() + "/" + name, text);
  }
};

json byte_level(bool use_regex) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", use_regex}};
}

// A byte-level BPE: four model tokens, an added special token at id 5 (id 4 has none).
json byte_level_tokenizer(json pre_tokenizer, json post_processor) {
  return {{"version", "1.0"},
          {"added_tokens",
           {{{"id", 5}, {"content", "<|end|>"}, {"special", true}, {"normalized", false}},
            {{"id", 3}, {"content", "ab"}, {"special", false}, {"normalized", false}}}},
          {"normalizer", nullptr},
          {"pre_tokenizer", std::move(pre_tokenizer)},
          {"post_processor", std::move(post_processor)},
          {"decoder", byte_level(true)},
          {"model",
           {{"type", "BPE"},
            {"ignore_merges", false},
            {"vocab", {{"a", 0}, {"b", 1}, {"Ġ", 2}, {"ab", 3}}},
            {"merges", json::array({json::array({"a", "b"}), json::array({"Ġ", "a"})})}}}};
}

const io::GgufValue& find(const std::vector<GgufKv>& kv, const std::string& key) {
  for (const GgufKv& e : kv)
    if (e.key == key) return e.value;
  ADD_FAILURE() << "no key " << key;
  static const io::GgufValue none;
  return none;
}

std::vector<std::string> keys(const std::vector<GgufKv>& kv) {
  std::vector<std::string> k;
  for (const GgufKv& e : kv) k.push_back(e.key);
  return k;
}

std::vector<std::string> strings(const io::GgufValue& v) {
  std::vector<std::string> s;
  for (const io::GgufValue& i : v.items) s.push_back(i.s);
  return s;
}

std::vector<std::int64_t> ints(const io::GgufValue& v) {
  std::vector<std::int64_t> s;
  for (const io::GgufValue& i : v.items) s.push_back(i.i);
  return s;
}

TEST(GgufTokenizerMeta, ByteLevelAsTheConverterWritesIt) {
  Dir d("gpt2");
  d.write("tokenizer.json", byte_level_tokenizer(byte_level(true), byte_level(true)));
  d.write("tokenizer_config.json", {{"eos_token", "<|end|>"}, {"add_bos_token", true}, {"add_prefix_space", false}});
  d.write("config.json", {{"architectures", {"Qwen2ForCausalLM"}}, {"vocab_size", 7}, {"bos_token_id", 0}});
  d.write_text("chat_template.jinja", "{{ messages }}");
  const auto kv = exporting::gguf_tokenizer_metadata(d.tmp.str());
  // Qwen2's converter writes no add_space_prefix; the ByteLevel post-processor's
  // add_bos false wins over tokenizer_config's true; config.json gives the bos id.
  EXPECT_EQ(keys(kv), (std::vector<std::string>{
                          "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens",
                          "tokenizer.ggml.token_type", "tokenizer.ggml.merges", "tokenizer.ggml.eos_token_id",
                          "tokenizer.ggml.bos_token_id", "tokenizer.ggml.add_bos_token",
                          "tokenizer.ggml.add_eos_token", "tokenizer.chat_template"}));
  EXPECT_EQ(find(kv, "tokenizer.ggml.model").s, "gpt2");
  EXPECT_EQ(find(kv, "tokenizer.ggml.pre").s, "gpt-2");
  EXPECT_EQ(find(kv, "tokenizer.ggml.tokens").elem_type, GgufValueType::gguf_string);
  EXPECT_EQ(strings(find(kv, "tokenizer.ggml.tokens")),
            (std::vector<std::string>{"a", "b", "Ġ", "ab", "[PAD4]", "<|end|>", "[PAD6]"}));
  EXPECT_EQ(find(kv, "tokenizer.ggml.token_type").elem_type, GgufValueType::gguf_i32);
  EXPECT_EQ(ints(find(kv, "tokenizer.ggml.token_type")), (std::vector<std::int64_t>{1, 1, 1, 4, 5, 3, 5}));
  EXPECT_EQ(strings(find(kv, "tokenizer.ggml.merges")), (std::vector<std::string>{"a b", "Ġ a"}));
  EXPECT_EQ(find(kv, "tokenizer.ggml.eos_token_id").type, GgufValueType::gguf_u32);
  EXPECT_EQ(find(kv, "tokenizer.ggml.eos_token_id").u, 5u);
  EXPECT_EQ(find(kv, "tokenizer.ggml.bos_token_id").u, 0u);
  EXPECT_EQ(find(kv, "tokenizer.ggml.add_bos_token").type, GgufValueType::gguf_bool);
  EXPECT_EQ(find(kv, "tokenizer.ggml.add_bos_token").u, 0u);
  EXPECT_EQ(find(kv, "tokenizer.chat_template").s, "{{ messages }}");
}

TEST(GgufTokenizerMeta, Llama3TemplateProcessingAndNamedTemplates) {
  Dir d("llama3");
  const json pre = {{"type", "Sequence"},
                    {"pretokenizers",
                     {{{"type", "Split"},
                       {"pattern",
                        {{"Regex",
                          "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                          "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}}},
                       {"behavior", "Isolated"},
                       {"invert", false}},
                      byte_level(false)}}};
  const json bos = {{"SpecialToken", {{"id", "<|end|>"}, {"type_id", 0}}}};
  const json post = {{"type", "TemplateProcessing"},
                     {"single", {bos, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
                     {"pair", {bos, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}, bos,
                               {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}}};
  json tok = byte_level_tokenizer(pre, post);
  tok["model"]["ignore_merges"] = true;
  d.write("tokenizer.json", tok);
  d.write("tokenizer_config.json",
          {{"bos_token", "<|end|>"},
           {"add_prefix_space", false},
           {"chat_template", {{{"name", "default"}, {"template", "D"}}, {{"name", "tool-use"}, {"template", "T"}}}}});
  d.write("config.json", {{"architectures", {"LlamaForCausalLM"}}});
  const auto kv = exporting::gguf_tokenizer_metadata(d.tmp.str());
  // Llama's converter writes add_prefix_space first; a leading special token in the
  // template is add_bos, the same one between A and B is no separator.
  EXPECT_EQ(keys(kv), (std::vector<std::string>{
                          "tokenizer.ggml.add_space_prefix", "tokenizer.ggml.model", "tokenizer.ggml.pre",
                          "tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges",
                          "tokenizer.ggml.bos_token_id", "tokenizer.ggml.add_bos_token",
                          "tokenizer.ggml.add_sep_token", "tokenizer.chat_template.tool_use",
                          "tokenizer.chat_templates", "tokenizer.chat_template"}));
  EXPECT_EQ(find(kv, "tokenizer.ggml.pre").s, "llama-bpe");
  EXPECT_EQ(strings(find(kv, "tokenizer.ggml.tokens")).size(), 6u);  // no config vocab_size: up to the last id
  EXPECT_EQ(find(kv, "tokenizer.ggml.add_bos_token").u, 1u);
  EXPECT_EQ(find(kv, "tokenizer.ggml.add_sep_token").u, 0u);
  EXPECT_EQ(strings(find(kv, "tokenizer.chat_templates")), std::vector<std::string>{"tool_use"});
  EXPECT_EQ(find(kv, "tokenizer.chat_template").s, "D");
}

// Llama 4's tokenizer.json as transformers' converter writes it: the o200k split, merges
// ignored for whole words. llama.cpp's "llama4" takes it (llama.cpp applies the merges, as
// for the files its own converter writes); the same split with the merges used is "llama4"
// too, and the Llama 3 split with ignore_merges is still "llama-bpe".
TEST(GgufTokenizerMeta, Llama4SplitIsLlamaCppsLlama4) {
  Dir d("llama4");
  const json bos = {{"SpecialToken", {{"id", "<|end|>"}, {"type_id", 0}}}};
  const json post = {{"type", "Sequence"},
                     {"processors",
                      {{{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}},
                       {{"type", "TemplateProcessing"},
                        {"single", {bos, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
                        {"pair", {bos, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}, bos,
                                  {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}}}}}};
  json tok = byte_level_tokenizer(data::hf_pre_tokenizer("llama4"), post);
  d.write("config.json", {{"architectures", {"Llama4ForConditionalGeneration"}}});
  d.write("tokenizer_config.json", {{"bos_token", "<|end|>"}});
  for (const bool ignore : {true, false}) {
    tok["model"]["ignore_merges"] = ignore;
    d.write("tokenizer.json", tok);
    const auto kv = exporting::gguf_tokenizer_metadata(d.tmp.str());
    EXPECT_EQ(find(kv, "tokenizer.ggml.pre").s, "llama4");
    EXPECT_EQ(find(kv, "tokenizer.ggml.add_bos_token").u, 1u);
  }
  auto pattern = data::hf_pre_tokenizer("llama4");
  EXPECT_EQ(pattern, data::hf_pre_tokenizer("gpt-4o"));
  EXPECT_NE(pattern, data::hf_pre_tokenizer("llama-bpe"));
}

// SentencePiece-style: <unk> <s> </s>, two byte tokens, "▁", "a", "▁a", "▁a▁a" and a
// user-defined "<x▁y>".
json sentencepiece_tokenizer(const std::string& prepend_scheme) {
  return {{"version", "1.0"},
          {"added_tokens",
           {{{"id", 0}, {"content", "<unk>"}, {"special", true}},
            {{"id", 1}, {"content", "<s>"}, {"special", true}},
            {{"id", 2}, {"content", "</s>"}, {"special", true}},
            {{"id", 9}, {"content", "<x\u2581y>"}, {"special", false}}}},
          {"normalizer", nullptr},
          {"pre_tokenizer",
           {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", prepend_scheme}, {"split", false}}},
          {"post_processor", nullptr},
          {"decoder", {{"type", "Sequence"}, {"decoders", json::array()}}},
          {"model",
           {{"type", "BPE"},
            {"byte_fallback", true},
            {"fuse_unk", true},
            {"unk_token", "<unk>"},
            {"vocab",
             {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}, {"<0x0A>", 3}, {"<0xFF>", 4}, {"\u2581", 5}, {"a", 6},
              {"\u2581a", 7}, {"\u2581a\u2581a", 8}, {"<x\u2581y>", 9}}},
            {"merges", {"\u2581a \u2581a", "\u2581 a"}}}}};
}

TEST(GgufTokenizerMeta, SentencePieceTokensScoresAndTypes) {
  Dir d("spm");
  d.write("tokenizer.json", sentencepiece_tokenizer("never"));
  d.write("tokenizer_config.json", {{"bos_token", "<s>"}, {"eos_token", "</s>"}, {"unk_token", "<unk>"},
                                    {"add_bos_token", true}, {"add_eos_token", false}});
  d.write("config.json", {{"architectures", {"LlamaForCausalLM"}}, {"vocab_size", 11}});
  const auto kv = exporting::gguf_tokenizer_metadata(d.tmp.str());
  EXPECT_EQ(keys(kv), (std::vector<std::string>{
                          "tokenizer.ggml.add_space_prefix", "tokenizer.ggml.model", "tokenizer.ggml.pre",
                          "tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
                          "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                          "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.add_bos_token",
                          "tokenizer.ggml.add_eos_token"}));
  EXPECT_EQ(find(kv, "tokenizer.ggml.add_space_prefix").u, 0u);  // prepend_scheme "never"
  EXPECT_EQ(find(kv, "tokenizer.ggml.model").s, "llama");
  EXPECT_EQ(find(kv, "tokenizer.ggml.pre").s, "default");
  EXPECT_EQ(strings(find(kv, "tokenizer.ggml.tokens")),
            (std::vector<std::string>{"<unk>", "<s>", "</s>", "<0x0A>", "<0xFF>", "\u2581", "a", "\u2581a",
                                      "\u2581a\u2581a", "<x y>", "[PAD10]"}));
  EXPECT_EQ(ints(find(kv, "tokenizer.ggml.token_type")), (std::vector<std::int64_t>{2, 3, 3, 6, 6, 1, 1, 1, 1, 4, 5}));
  // Each token made by a merge scores -(1 + that merge's rank): "▁a▁a" (rank 0) above "▁a".
  const io::GgufValue& scores = find(kv, "tokenizer.ggml.scores");
  EXPECT_EQ(scores.elem_type, GgufValueType::gguf_f32);
  std::vector<double> got;
  for (const io::GgufValue& s : scores.items) got.push_back(s.f);
  EXPECT_EQ(got, (std::vector<double>{0, 0, 0, 0, 0, 0, 0, -2, -1, 0, -10000}));
  EXPECT_EQ(find(kv, "tokenizer.ggml.unknown_token_id").u, 0u);
  EXPECT_EQ(find(kv, "tokenizer.ggml.add_bos_token").u, 1u);

  d.write("tokenizer.json", sentencepiece_tokenizer("first"));
  EXPECT_EQ(keys(exporting::gguf_tokenizer_metadata(d.tmp.str()))[0], "tokenizer.ggml.model");
}

TEST(GgufTokenizerMeta, RefusesWhatLlamaCppWouldSplitOtherwise) {
  Dir d("refuse");
  const std::string file = d.tmp.str() + "/tokenizer.json";
  const json falcon = {{"type", "Sequence"},
                       {"pretokenizers",
                        {{{"type", "Punctuation"}, {"behavior", "contiguous"}},
                         {{"type", "Split"}, {"pattern", {{"Regex", "[0-9][0-9][0-9]"}}}, {"behavior", "Isolated"}},
                         byte_level(true)}}};
  d.write("tokenizer.json", byte_level_tokenizer(falcon, byte_level(true)));
  auto e = error_of([&] { exporting::gguf_tokenizer_metadata(d.tmp.str()); });
  EXPECT_EQ(e.kind(), ErrorKind::user);
  EXPECT_TRUE(test::contains(e, file + ": pre_tokenizer Sequence[Punctuation, Split({\"Regex\":\"[0-9][0-9][0-9]\"}), "
                                       "ByteLevel] is not supported for GGUF export"))
      << e.what();

  json tok = byte_level_tokenizer(byte_level(true), byte_level(true));
  tok["model"]["ignore_merges"] = true;
  d.write("tokenizer.json", tok);
  e = error_of([&] { exporting::gguf_tokenizer_metadata(d.tmp.str()); });
  EXPECT_TRUE(test::contains(e, "model.ignore_merges true with the gpt-2 pre-tokenizer is not supported")) << e.what();

  tok = byte_level_tokenizer(byte_level(true), byte_level(true));
  tok["normalizer"] = {{"type", "Lowercase"}};
  d.write("tokenizer.json", tok);
  e = error_of([&] { exporting::gguf_tokenizer_metadata(d.tmp.str()); });
  EXPECT_TRUE(test::contains(e, file + ": normalizer Lowercase is not supported")) << e.what();

  tok["normalizer"] = nullptr;
  tok["model"]["type"] = "WordPiece";
  d.write("tokenizer.json", tok);
  e = error_of([&] { exporting::gguf_tokenizer_metadata(d.tmp.str()); });
  EXPECT_TRUE(test::contains(e, file + ": model.type \"WordPiece\" is not supported for GGUF export")) << e.what();

  tok = sentencepiece_tokenizer("first");
  tok["pre_tokenizer"]["split"] = true;
  d.write("tokenizer.json", tok);
  e = error_of([&] { exporting::gguf_tokenizer_metadata(d.tmp.str()); });
  EXPECT_TRUE(test::contains(e, file + ": a byte-fallback BPE tokenizer with pre_tokenizer Metaspace")) << e.what();

  d.write_text("tokenizer.json", "{\"model\": ");
  e = error_of([&] { exporting::gguf_tokenizer_metadata(d.tmp.str()); });
  EXPECT_TRUE(test::contains(e, file + ": not valid JSON")) << e.what();

  fs::remove(file);
  e = error_of([&] { exporting::gguf_tokenizer_metadata(d.tmp.str()); });
  EXPECT_TRUE(test::contains(e, d.tmp.str() + ": has no tokenizer.json")) << e.what();
}

}  // namespace
}  // namespace anvil
