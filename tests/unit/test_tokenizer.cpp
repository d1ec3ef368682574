// Tokenizer pieces on small tokenizer.json files written here: UTF-8 handling, the regex
// translation, BPE merge order, config overrides, and the errors for what is refused.
// Parity with Hugging Face on trained tokenizers is in test_tokenizer_parity.cpp.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/bpe_model.h"
#include "data/pretokenize.h"
#include "data/pretokenize_regex.h"
#include "data/tokenizer.h"
#include "data/tokenizer_normalize.h"
#include "data/tokenizer_utf8.h"

namespace {

using namespace anvil::data;
using nlohmann::json;

// A byte-level tokenizer.json: the 256 byte tokens (ids 0..255, in byte order), then one
// token per merge (given as raw strings), then the added tokens.
json tiny_tokenizer(const std::vector<std::pair<std::string, std::string>>& merges) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[bytes_to_byte_level(std::string(1, char(b)))] = b;
  json merge_list = json::array();
  for (const auto& [l, r] : merges) {
    const std::string merged = bytes_to_byte_level(l + r);
    if (!vocab.contains(merged)) vocab[merged] = static_cast<int>(vocab.size());
    merge_list.push_back(bytes_to_byte_level(l) + " " + bytes_to_byte_level(r));
  }
  return {
      {"version", "1.0"},
      {"added_tokens", json::array({{{"id", 1000},
                                     {"content", "<|end|>"},
                                     {"single_word", false},
                                     {"lstrip", false},
                                     {"rstrip", false},
                                     {"normalized", false},
                                     {"special", true}}})},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "ByteLevel"},
        {"add_prefix_space", false},
        {"trim_offsets", true},
        {"use_regex", true}}},
      {"post_processor", nullptr},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model",
       {{"type", "BPE"}, {"vocab", vocab}, {"merges", merge_list}, {"ignore_merges", false}}},
  };
}

Tokenizer from(const json& j, const json& config = json()) {
  return Tokenizer::from_json(j.dump(), config.is_null() ? "" : config.dump(), "", "test");
}

// Runs `f`, expecting a user error whose message contains every one of `parts`.
template <typename F>
void expect_user_error(F&& f, std::initializer_list<const char*> parts) {
  try {
    f();
    FAIL() << "no error thrown";
  } catch (const anvil::Error& e) {
    EXPECT_EQ(e.kind(), anvil::ErrorKind::user) << e.what();
    for (const char* part : parts)
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos)
          << "'" << part << "' not in: " << e.what();
  }
}

TEST(TokenizerUtf8, LossyDecodingReplacesMaximalSubparts) {
  // The example of the Unicode Standard (section 3.9, U+FFFD substitution).
  const std::string bytes = "\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64";
  std::string out;
  utf8_append_lossy(bytes, out);
  EXPECT_EQ(out, "a\uFFFD\uFFFD\uFFFDb\uFFFDc\uFFFD\uFFFDd");
  EXPECT_EQ(utf8_find_invalid(bytes), 1u);
  EXPECT_EQ(utf8_find_invalid("h\xC3\xA9llo \xF0\x9F\x98\x80"), std::string_view::npos);
  EXPECT_EQ(utf8_find_invalid("\xED\xA0\x80"), 0u);  // a surrogate
  EXPECT_EQ(utf8_find_invalid("ab\xC0\xAF"), 2u);    // an overlong '/'
}

TEST(TokenizerRegex, TranslatesOnigurumaSpaces) {
  EXPECT_EQ(onig_to_pcre2(R"(\s+(?!\S))"),
            R"([\x{09}-\x{0D}\x{85}\p{Z}]+(?![^\x{09}-\x{0D}\x{85}\p{Z}]))");
  EXPECT_EQ(onig_to_pcre2(R"([^\s\p{Nd}])"), R"([^\x{09}-\x{0D}\x{85}\p{Z}\p{Nd}])");
  EXPECT_EQ(onig_to_pcre2(R"([]\s])"), R"([]\x{09}-\x{0D}\x{85}\p{Z}])");
  EXPECT_EQ(onig_to_pcre2(R"(\h+)"), "[0-9a-fA-F]+");
  // U+180E is not White_Space (PCRE2's own \s would take it).
  const Regex re = Regex::compile(R"(\s+)", "test");
  std::vector<TextSpan> spans;
  re.find_all("a \xE1\xA0\x8E b", spans);
  ASSERT_EQ(spans.size(), 2u);
  EXPECT_EQ(spans[0].begin, 1u);
  EXPECT_EQ(spans[0].end, 2u);
}

TEST(TokenizerRegex, LettersAndNumbersOfUnicode16) {
  // CJK Extension H (Unicode 15) and Garay digits (Unicode 16), which HF sees as L and N.
  std::vector<TextSpan> spans;
  Regex::compile(R"(\p{L}+)", "test")
      .find_all(
          "a\xF0\xB1\x8D\x90"
          "b",
          spans);
  ASSERT_EQ(spans.size(), 1u);
  EXPECT_EQ(spans[0].end, 6u);
  EXPECT_TRUE(Regex::compile(R"([^\p{N}x])", "test").matches_at("y", 0));
  EXPECT_FALSE(Regex::compile(R"(\pN)", "test").matches_at("a", 0));
  EXPECT_TRUE(Regex::compile(R"(\pN)", "test").matches_at("\xF0\x90\xB5\x80", 0));
  // The subclasses of Llama 4's split too: Cyrillic TJE U+1C89 (Lu) / U+1C8A (Ll), Garay
  // U+10D4A (Lo) and U+10D4E (Lm), Arabic pepet U+0897 (Mn), all Unicode 16.
  EXPECT_TRUE(Regex::compile(R"(\p{Lu})", "test").matches_at("\xE1\xB2\x89", 0));
  EXPECT_FALSE(Regex::compile(R"(\p{Lu})", "test").matches_at("\xE1\xB2\x8A", 0));
  EXPECT_TRUE(Regex::compile(R"(\p{Ll})", "test").matches_at("\xE1\xB2\x8A", 0));
  EXPECT_TRUE(Regex::compile(R"([\p{Lo}])", "test").matches_at("\xF0\x90\xB5\x8A", 0));
  EXPECT_TRUE(Regex::compile(R"([\p{Lm}])", "test").matches_at("\xF0\x90\xB5\x8E", 0));
  EXPECT_TRUE(Regex::compile(R"(\p{M})", "test").matches_at("\xE0\xA2\x97", 0));
  EXPECT_FALSE(Regex::compile(R"([^\p{M}])", "test").matches_at("\xE0\xA2\x97", 0));
}

TEST(TokenizerRegex, EmptyMatchesFollowOnigurumaIteration) {
  const Regex re = Regex::compile("a*", "test");
  std::vector<TextSpan> spans;
  re.find_all("baa", spans);
  ASSERT_EQ(spans.size(), 2u);  // (0,0) and (1,3): no empty match right after (1,3)
  EXPECT_EQ(spans[1].begin, 1u);
  EXPECT_EQ(spans[1].end, 3u);
  expect_user_error([] { Regex::compile("(unclosed", "file.json: pre_tokenizer"); },
                    {"file.json: pre_tokenizer", "(unclosed"});
}

TEST(TokenizerPreTokenize, Gpt2Pattern) {
  PreTokenizeStep step;
  step.kind = PreTokenizeKind::pretok_byte_level;
  step.regex = std::make_shared<Regex>(Regex::compile(gpt2_pretokenize_pattern, "test"));
  const PreTokenizer pre({step});
  EXPECT_EQ(pre.pieces("Hello  world's 123!!\n\n x"),
            (std::vector<std::string>{"Hello", " ", " world", "'s", " 123", "!!", "\n\n", " x"}));
  step.add_prefix_space = true;
  EXPECT_EQ(PreTokenizer({step}).pieces("Hi"), (std::vector<std::string>{" Hi"}));
}

TEST(TokenizerBpe, MergesLowestRankFirstLeftmostOnTies) {
  // Rank 0 "b"+"c" beats rank 1 "a"+"b", so "abc" is "a" + "bc", and "bc"+"a"... merges on.
  const Tokenizer tok = from(tiny_tokenizer({{"b", "c"}, {"a", "b"}, {"a", "bc"}, {"a", "a"}}));
  const auto abc = *tok.token_to_id("abc");
  EXPECT_EQ(tok.encode("abc", false), std::vector<std::int32_t>{abc});
  // "aaa": equal ranks, the leftmost pair merges first.
  const auto aa = *tok.token_to_id("aa");
  EXPECT_EQ(tok.encode("aaa", false), (std::vector<std::int32_t>{aa, 'a'}));
  EXPECT_EQ(tok.encode("xab", false), (std::vector<std::int32_t>{'x', *tok.token_to_id("ab")}));
  EXPECT_EQ(tok.decode(tok.encode("abc aaa<|end|>", false)), "abc aaa<|end|>");
  EXPECT_EQ(tok.encode("<|end|>", false), std::vector<std::int32_t>{1000});
  EXPECT_EQ(tok.vocab_size(), 1001u);
}

TEST(TokenizerBpe, LongPiecesAndRepeats) {
  const Tokenizer tok = from(tiny_tokenizer({{"a", "a"}, {"aa", "aa"}, {" ", " "}}));
  const std::string long_word(100000, 'a');
  const auto ids = tok.encode(long_word, false);
  EXPECT_EQ(ids.size(), 25000u);
  EXPECT_EQ(tok.decode(ids), long_word);
  const std::string spaces = std::string(300000, ' ') + "x";
  EXPECT_EQ(tok.decode(tok.encode(spaces, false)), spaces);
  EXPECT_EQ(tok.encode("aaaa aaaa aaaa", false), tok.encode("aaaa aaaa aaaa", false));
}

TEST(TokenizerBpe, InvalidInputAndIds) {
  const Tokenizer tok = from(tiny_tokenizer({}));
  expect_user_error([&] { tok.encode("ok \xFF", false); }, {"not valid UTF-8", "byte 3"});
  expect_user_error([&] { tok.decode(std::vector<std::int32_t>{5, 700}); }, {"700"});
  // Bytes that are not UTF-8 come back as U+FFFD, as in HF.
  EXPECT_EQ(tok.decode(std::vector<std::int32_t>{0xE2, 'x'}), "\uFFFDx");
  EXPECT_EQ(tok.decode(std::vector<std::int32_t>{'a', 1000, 'b'}, true), "ab");
}

// ids and offsets of encode_append_offsets, checking that the ids are encode's.
std::pair<std::vector<std::int32_t>, std::vector<std::uint32_t>> with_offsets(
    const Tokenizer& tok, std::string_view text, bool add_special = false) {
  std::vector<std::int32_t> ids;
  std::vector<std::uint32_t> offsets;
  tok.encode_append_offsets(text, add_special, ids, offsets);
  EXPECT_EQ(ids, tok.encode(text, add_special)) << text;
  EXPECT_EQ(ids.size(), offsets.size()) << text;
  return {ids, offsets};
}

TEST(TokenizerOffsets, AddedTokensAndMultiByteText) {
  json j = tiny_tokenizer({{"\xC3", "\xA9"}, {"h", "\xC3\xA9"}});
  j["added_tokens"].push_back({{"id", 1001}, {"content", "<m>"}, {"special", true},
                               {"normalized", false}, {"lstrip", true}, {"rstrip", true}});
  const Tokenizer tok = from(j);
  // "hé" merges whole; "é" alone too; the emoji is four byte tokens, each at its own byte.
  const std::string text = "h\xC3\xA9 <|end|>x  <m>  \xC3\xA9\xF0\x9F\x98\x80";
  const auto [ids, offsets] = with_offsets(tok, text);
  const auto he = *tok.token_to_id(bytes_to_byte_level("h\xC3\xA9"));
  const auto e_acute = *tok.token_to_id(bytes_to_byte_level("\xC3\xA9"));
  EXPECT_EQ(ids, (std::vector<std::int32_t>{he, ' ', 1000, 'x', 1001, e_acute, 0xF0, 0x9F, 0x98,
                                            0x80}));
  // <m> swallows the spaces on both sides: its offset is where those begin (byte 12).
  EXPECT_EQ(offsets, (std::vector<std::uint32_t>{0, 3, 4, 11, 12, 19, 21, 22, 23, 24}));
}

TEST(TokenizerOffsets, TemplateTokensAndPrefixSpace) {
  json j = tiny_tokenizer({{" ", "a"}});
  j["pre_tokenizer"]["add_prefix_space"] = true;
  j["added_tokens"].push_back(
      {{"id", 1001}, {"content", "<s>"}, {"special", true}, {"normalized", false}});
  const Tokenizer tok =
      from(j, {{"bos_token", "<s>"}, {"eos_token", "<|end|>"}, {"add_bos_token", true},
               {"add_eos_token", true}});
  // The prefix space ByteLevel adds to each piece stands where the piece starts.
  const auto [ids, offsets] = with_offsets(tok, "a<|end|>ab", true);
  const auto space_a = *tok.token_to_id(bytes_to_byte_level(" a"));
  EXPECT_EQ(ids, (std::vector<std::int32_t>{1001, space_a, 1000, space_a, 'b', 1000}));
  EXPECT_EQ(offsets, (std::vector<std::uint32_t>{0, 0, 1, 8, 9, 10}));
  // Appends after what the vectors hold.
  std::vector<std::int32_t> more_ids{5};
  std::vector<std::uint32_t> more_offsets{99};
  tok.encode_append_offsets("b", false, more_ids, more_offsets);
  EXPECT_EQ(more_offsets, (std::vector<std::uint32_t>{99, 0, 0}));
}

TEST(TokenizerOffsets, UnkTokensAndNormalizers) {
  // A vocabulary without the bytes F0 and 9F: they become unk, one fused unk for both in
  // an emoji, standing at the first.
  json j = tiny_tokenizer({{"a", "b"}});
  for (const int b : {0xF0, 0x9F}) {
    j["model"]["vocab"].erase(bytes_to_byte_level(std::string(1, char(b))));
  }
  j["model"]["unk_token"] = "<|end|>";
  j["model"]["fuse_unk"] = true;
  j["model"]["vocab"]["<|end|>"] = 1000;
  const Tokenizer unk = from(j);
  const auto [ids, offsets] = with_offsets(unk, "ab\xF0\x9F\x98\x80" "ab");
  EXPECT_EQ(ids, (std::vector<std::int32_t>{*unk.token_to_id("ab"), 1000, 0x98, 0x80,
                                            *unk.token_to_id("ab")}));
  EXPECT_EQ(offsets, (std::vector<std::uint32_t>{0, 2, 4, 5, 6}));
  if (!unicode_normalization_available()) GTEST_SKIP() << "built without utf8proc";
  // NFC: "e" + U+0301 composes into é (3 bytes -> 2): both tokens of é stand at the "e".
  json nfc = tiny_tokenizer({});
  nfc["normalizer"] = {{"type", "NFC"}};
  const Tokenizer tok = from(nfc);
  const auto [nfc_ids, nfc_offsets] = with_offsets(tok, "xe\xCC\x81y \xC3\xA9z");
  EXPECT_EQ(nfc_ids, (std::vector<std::int32_t>{'x', 0xC3, 0xA9, 'y', ' ', 0xC3, 0xA9, 'z'}));
  EXPECT_EQ(nfc_offsets, (std::vector<std::uint32_t>{0, 1, 1, 4, 5, 6, 7, 8}));
}

TEST(TokenizerOffsets, NormalizerPositions) {
  if (!unicode_normalization_available()) GTEST_SKIP() << "built without utf8proc";
  std::string out;
  std::vector<std::uint32_t> origin;
  // NFKC: the ligature ﬁ (3 bytes) becomes "fi": both letters stand at the ligature.
  Normalizer({{NormalizerKind::norm_nfkc, {}, {}}}).apply_mapped("a\xEF\xAC\x81" "b", out, origin);
  EXPECT_EQ(out, "afib");
  EXPECT_EQ(origin, (std::vector<std::uint32_t>{0, 1, 1, 4}));
  // NFD then a literal rewrite: positions compose through the chain.
  const Normalizer chain({{NormalizerKind::norm_nfd, {}, {}},
                          {NormalizerKind::norm_replace, " ", "\xE2\x96\x81"},
                          {NormalizerKind::norm_prepend, {}, "\xE2\x96\x81"}});
  chain.apply_mapped("\xC3\xA9 b", out, origin);
  EXPECT_EQ(out, "\xE2\x96\x81" "e\xCC\x81\xE2\x96\x81" "b");
  EXPECT_EQ(origin, (std::vector<std::uint32_t>{0, 0, 0, 0, 0, 0, 2, 2, 2, 3}));
  std::string plain;
  chain.apply("\xC3\xA9 b", plain);
  EXPECT_EQ(plain, out);
}

// A Llama-2 style tokenizer.json: Prepend + Replace normalizer, no pre-tokenizer, BPE over
// characters with <0xNN> byte fallback, and the Replace/ByteFallback/Fuse/Strip decoder.
json sentencepiece_tokenizer() {
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  for (int b = 0; b < 256; ++b) {
    static const char* hex = "0123456789ABCDEF";
    vocab[std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">"] = 3 + b;
  }
  const std::string meta = "\xE2\x96\x81";
  int next = 259;
  for (const std::string& t : {meta, std::string("h"), std::string("i"), meta + "h",
                              meta + "hi", std::string("\xC3\xA9")}) {
    vocab[t] = next++;
  }
  return {
      {"added_tokens", json::array({{{"id", 0}, {"content", "<unk>"}, {"special", true}},
                                    {{"id", 1}, {"content", "<s>"}, {"special", true}},
                                    {{"id", 2}, {"content", "</s>"}, {"special", true}}})},
      {"normalizer",
       {{"type", "Sequence"},
        {"normalizers", json::array({{{"type", "Prepend"}, {"prepend", meta}},
                                     {{"type", "Replace"},
                                      {"pattern", {{"String", " "}}},
                                      {"content", meta}}})}}},
      {"pre_tokenizer", nullptr},
      {"post_processor", nullptr},
      {"decoder",
       {{"type", "Sequence"},
        {"decoders",
         json::array({{{"type", "Replace"}, {"pattern", {{"String", meta}}}, {"content", " "}},
                      {{"type", "ByteFallback"}},
                      {{"type", "Fuse"}},
                      {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}})}}},
      {"model",
       {{"type", "BPE"},
        {"unk_token", "<unk>"},
        {"fuse_unk", true},
        {"byte_fallback", true},
        {"vocab", vocab},
        {"merges", json::array({meta + " h", meta + "h i"})}}},
  };
}

TEST(TokenizerSentencePiece, CharactersByteFallbackAndDecode) {
  const Tokenizer tok = from(sentencepiece_tokenizer());
  const auto meta_hi = *tok.token_to_id("\xE2\x96\x81hi");
  const auto meta = *tok.token_to_id("\xE2\x96\x81");
  const auto e_acute = *tok.token_to_id("\xC3\xA9");
  // "hi hé€<s>": ▁hi ▁h é, € as its three bytes, then <s> (its own split: no ▁ before it).
  const std::string text = "hi h\xC3\xA9\xE2\x82\xAC<s>";
  const auto [ids, offsets] = with_offsets(tok, text);
  EXPECT_EQ(ids, (std::vector<std::int32_t>{meta_hi, *tok.token_to_id("\xE2\x96\x81h"), e_acute,
                                            3 + 0xE2, 3 + 0x82, 3 + 0xAC, 1}));
  EXPECT_EQ(offsets, (std::vector<std::uint32_t>{0, 2, 4, 6, 7, 8, 9}));
  EXPECT_EQ(tok.decode(ids), "hi h\xC3\xA9\xE2\x82\xAC<s>");
  EXPECT_EQ(tok.decode(ids, true), "hi h\xC3\xA9\xE2\x82\xAC");
  // Byte tokens that are not UTF-8 together: U+FFFD for each; the leading space stripped.
  EXPECT_EQ(tok.decode(std::vector<std::int32_t>{meta, 3 + 0xE2, 3 + 'A', meta_hi}),
            "\xEF\xBF\xBD\xEF\xBF\xBD hi");
  // Without byte fallback, a character with no token is <unk>, consecutive ones fused.
  json no_fallback = sentencepiece_tokenizer();
  no_fallback["model"]["byte_fallback"] = false;
  EXPECT_EQ(from(no_fallback).encode("\xE2\x82\xAC\xE2\x82\xAC h", false),
            (std::vector<std::int32_t>{meta, 0, *tok.token_to_id("\xE2\x96\x81h")}));
}

TEST(TokenizerConfig, AddBosAndEosOverrideTheTemplate) {
  json j = tiny_tokenizer({});
  j["added_tokens"].push_back(
      {{"id", 1001}, {"content", "<s>"}, {"special", true}, {"normalized", false}});
  const json config = {{"bos_token", {{"content", "<s>"}}},
                       {"eos_token", "<|end|>"},
                       {"add_bos_token", true},
                       {"add_eos_token", true}};
  const Tokenizer tok = from(j, config);
  EXPECT_EQ(tok.encode("a", true), (std::vector<std::int32_t>{1001, 'a', 1000}));
  EXPECT_EQ(tok.encode("a", false), std::vector<std::int32_t>{'a'});
  EXPECT_TRUE(tok.adds_bos());
  EXPECT_TRUE(tok.adds_eos());
  expect_user_error(
      [&] {
        from(j, json{{"eos_token", "</s>"}});
      },
      {"tokenizer_config.json", "eos_token '</s>'"});
}

TEST(TokenizerLoad, RefusesWhatItDoesNotImplement) {
  json unigram = tiny_tokenizer({});
  unigram["model"] = {{"type", "Unigram"}, {"vocab", json::array()}};
  expect_user_error([&] { from(unigram); }, {"test/tokenizer.json", "Unigram", "Llama-2"});

  json metaspace_second = tiny_tokenizer({});
  metaspace_second["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers", json::array({{{"type", "Digits"}},
                                     {{"type", "Metaspace"}, {"replacement", "_"}}})}};
  metaspace_second["decoder"] = {{"type", "Fuse"}};
  expect_user_error([&] { from(metaspace_second); },
                    {"pre_tokenizer.pretokenizers[1]", "Metaspace", "first"});

  json fallback = tiny_tokenizer({});
  fallback["model"]["byte_fallback"] = true;
  expect_user_error([&] { from(fallback); }, {"byte_fallback", "ByteLevel"});

  json regex_replace = tiny_tokenizer({});
  regex_replace["normalizer"] = {
      {"type", "Replace"}, {"pattern", {{"Regex", " +"}}}, {"content", "_"}};
  expect_user_error([&] { from(regex_replace); }, {"normalizer.pattern", "Regex"});

  json mixed_decoder = tiny_tokenizer({});
  mixed_decoder["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "_"}};
  expect_user_error([&] { from(mixed_decoder); }, {"decoder", "ByteLevel"});

  json lowercase = tiny_tokenizer({});
  lowercase["normalizer"] = {{"type", "Sequence"},
                             {"normalizers", json::array({{{"type", "Lowercase"}}})}};
  expect_user_error([&] { from(lowercase); }, {"normalizer.normalizers[0]", "Lowercase"});

  json bad_merge = tiny_tokenizer({});
  bad_merge["model"]["merges"] = json::array({"a zz"});
  expect_user_error([&] { from(bad_merge); }, {"model.merges[0]", "zz"});

  json byte_level_first = tiny_tokenizer({});
  byte_level_first["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers", json::array({{{"type", "ByteLevel"}}, {{"type", "Digits"}}})}};
  expect_user_error([&] { from(byte_level_first); }, {"ByteLevel must be the one and last"});

  json roberta = tiny_tokenizer({});
  roberta["post_processor"] = {{"type", "RobertaProcessing"}};
  expect_user_error([&] { from(roberta); }, {"post_processor", "RobertaProcessing"});

  expect_user_error([] { Tokenizer::from_json("{not json", "", "", "dir"); },
                    {"dir/tokenizer.json", "not valid JSON"});
}

TEST(TokenizerLoad, ModelDirectoryErrors) {
  const auto dir = std::filesystem::temp_directory_path() / "anvil_test_tokenizer_dir";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "tokenizer.model") << "sentencepiece";
  expect_user_error([&] { Tokenizer::load(dir.string()); },
                    {"no tokenizer.json", "tokenizer.model", "convert"});
  std::ofstream(dir / "tokenizer.json") << tiny_tokenizer({{"h", "i"}}).dump();
  std::ofstream(dir / "tokenizer_config.json") << R"({"eos_token": "<|end|>"})";
  const Tokenizer tok = Tokenizer::load(dir.string());
  EXPECT_EQ(tok.eos_id(), 1000);
  EXPECT_EQ(tok.encode("hi", false), std::vector<std::int32_t>{*tok.token_to_id("hi")});
  std::filesystem::remove_all(dir);
}

}  // namespace
