// Parity with Hugging Face `tokenizers`: for each fixture family written by
// scripts/fixtures/make_tokenizers.py (run by the CTest fixture `tokenizer_fixtures`),
// every corpus text must encode to HF's ids, with and without special tokens, and the
// ids must decode to HF's text.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "data/tokenizer.h"

namespace {

using anvil::data::Tokenizer;
using nlohmann::json;

std::string fixtures_dir() {
  const char* env = std::getenv("ANVIL_TOKENIZER_FIXTURES");
  return env != nullptr ? env : ANVIL_BINARY_DIR "/tokenizer_fixtures";
}

struct Record {
  std::string text;
  std::vector<std::int32_t> ids;
  std::vector<std::int32_t> ids_special;
  std::string decoded;
  std::string decoded_skip;
};

std::vector<Record> read_expected(const std::string& family_dir) {
  std::ifstream in(family_dir + "/expected.jsonl");
  std::vector<Record> records;
  std::string line;
  while (std::getline(in, line)) {
    const json j = json::parse(line);
    records.push_back(
        {j.at("text"), j.at("ids"), j.at("ids_special"), j.at("decoded"), j.at("decoded_skip")});
  }
  return records;
}

// The text with control and non-ASCII bytes escaped, for readable failure messages.
std::string printable(const std::string& text) { return json(text).dump(); }

std::string ids_string(const std::vector<std::int32_t>& ids) { return json(ids).dump(); }

class TokenizerParity : public ::testing::TestWithParam<std::string> {};

TEST_P(TokenizerParity, MatchesHuggingFace) {
  const std::string dir = fixtures_dir() + "/" + GetParam();
  ASSERT_TRUE(std::filesystem::exists(dir + "/expected.jsonl"))
      << dir << " is missing: run the tokenizer_fixtures test (ctest) first";
  const Tokenizer tok = Tokenizer::load(dir);
  const std::vector<Record> records = read_expected(dir);
  ASSERT_GT(records.size(), 1000u);
  int failures = 0;
  for (const Record& r : records) {
    const auto ids = tok.encode(r.text, false);
    const auto ids_special = tok.encode(r.text, true);
    const std::string decoded = tok.decode(r.ids);
    const std::string decoded_skip = tok.decode(r.ids, true);
    const bool ok = ids == r.ids && ids_special == r.ids_special && decoded == r.decoded &&
                    decoded_skip == r.decoded_skip;
    if (!ok && ++failures <= 5) {
      ADD_FAILURE() << "text " << printable(r.text) << "\n  hf ids    " << ids_string(r.ids)
                    << "\n  anvil ids " << ids_string(ids) << "\n  hf special    "
                    << ids_string(r.ids_special) << "\n  anvil special " << ids_string(ids_special)
                    << "\n  hf decoded    " << printable(r.decoded) << "\n  anvil decoded "
                    << printable(decoded) << "\n  hf skip    " << printable(r.decoded_skip)
                    << "\n  anvil skip " << printable(decoded_skip);
    }
  }
  EXPECT_EQ(failures, 0) << "of " << records.size() << " texts";
}

TEST_P(TokenizerParity, SameIdsFromSeveralThreads) {
  const std::string dir = fixtures_dir() + "/" + GetParam();
  if (!std::filesystem::exists(dir + "/expected.jsonl")) GTEST_SKIP() << dir << " missing";
  const Tokenizer tok = Tokenizer::load(dir);
  const std::vector<Record> records = read_expected(dir);
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 3; ++round) {
        for (std::size_t i = t; i < records.size(); i += 2) {
          if (tok.encode(records[i].text, false) != records[i].ids) ++mismatches[t];
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(mismatches[t], 0) << "thread " << t;
}

INSTANTIATE_TEST_SUITE_P(Families, TokenizerParity,
                         ::testing::Values("gpt2", "gpt2_prefix", "gpt2_unk", "gpt2_drop", "llama3",
                                           "qwen2", "smollm2", "splits"),
                         [](const auto& info) { return info.param; });

// A family with no normalizer, no prefix space and only ASCII added tokens gives the text
// back exactly. (gpt2's non-ASCII added tokens do not: HF's ByteLevel decoder reads their
// Latin-1 letters as byte-level characters, and anvil matches HF there too.)
TEST(TokenizerParityRoundTrip, DecodeOfEncodeIsTheText) {
  for (const char* family : {"llama3"}) {
    const std::string dir = fixtures_dir() + "/" + family;
    if (!std::filesystem::exists(dir + "/expected.jsonl")) GTEST_SKIP() << dir << " missing";
    const Tokenizer tok = Tokenizer::load(dir);
    for (const Record& r : read_expected(dir)) {
      EXPECT_EQ(tok.decode(tok.encode(r.text, false)), r.text)
          << family << ": " << printable(r.text);
      // The template only adds special tokens, which skip_special drops again.
      EXPECT_EQ(tok.decode(tok.encode(r.text, true), true), tok.decode(r.ids, true)) << family;
    }
  }
}

TEST(TokenizerParityConfig, SpecialTokensFromConfigFiles) {
  const std::string root = fixtures_dir();
  if (!std::filesystem::exists(root + "/llama3")) GTEST_SKIP() << root << " missing";
  const Tokenizer llama = Tokenizer::load(root + "/llama3");
  EXPECT_EQ(llama.bos_id(), llama.token_to_id("<|begin_of_text|>"));
  EXPECT_EQ(llama.eos_id(), llama.token_to_id("<|eot_id|>"));
  EXPECT_TRUE(llama.adds_bos());
  EXPECT_FALSE(llama.pad_id().has_value());
  EXPECT_TRUE(llama.is_special(*llama.bos_id()));

  const Tokenizer qwen = Tokenizer::load(root + "/qwen2");
  EXPECT_FALSE(qwen.bos_id().has_value());
  EXPECT_EQ(qwen.eos_id(), qwen.token_to_id("<|im_end|>"));
  EXPECT_EQ(qwen.pad_id(), qwen.token_to_id("<|endoftext|>"));
  EXPECT_FALSE(qwen.adds_bos());

  // SmolLM2 names them only in special_tokens_map.json, in the {"content": ...} form.
  const Tokenizer smol = Tokenizer::load(root + "/smollm2");
  EXPECT_EQ(smol.bos_id(), smol.token_to_id("<|im_start|>"));
  EXPECT_EQ(smol.pad_id(), smol.token_to_id("<|im_end|>"));
  EXPECT_FALSE(smol.adds_bos());
  EXPECT_EQ(smol.vocab_size(), 1203u);
}

}  // namespace
