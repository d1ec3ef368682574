// Parity with Hugging Face `tokenizers`: for each fixture family written by
// scripts/fixtures/make_tokenizers.py (run by the CTest fixture `tokenizer_fixtures`),
// every corpus text must encode to HF's ids, with and without special tokens, with HF's
// offsets, and the ids must decode to HF's text.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "data/hf_pre_tokenizers.h"
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
  std::optional<std::vector<std::uint32_t>> offsets;  // null where HF's are not meaningful
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
        {j.at("text"), j.at("ids"), j.at("ids_special"),
         j.at("offsets").is_null() ? std::nullopt
                                   : std::optional(j.at("offsets").get<std::vector<std::uint32_t>>()),
         j.at("decoded"), j.at("decoded_skip")});
  }
  return records;
}

// The text with control and non-ASCII bytes escaped, for readable failure messages.
std::string printable(const std::string& text) { return json(text).dump(); }

template <typename T>
std::string ids_string(const std::vector<T>& ids) {
  return json(ids).dump();
}

// Whether anvil's offsets (bytes) agree with HF's (character starts, turned into bytes by
// the fixture script). HF gives every token that starts inside a character (byte-level
// BPE splitting a multi-byte character into several tokens) the start of that character;
// anvil gives the byte where the token's bytes begin, which HF cannot express. So an
// anvil offset inside a character is compared by the character it falls in.
bool offsets_agree(const std::string& text, const std::vector<std::uint32_t>& anvil,
                   const std::optional<std::vector<std::uint32_t>>& hf_offsets) {
  if (!hf_offsets) return std::is_sorted(anvil.begin(), anvil.end());
  const std::vector<std::uint32_t>& hf = *hf_offsets;
  if (anvil.size() != hf.size()) return false;
  for (std::size_t i = 0; i < anvil.size(); ++i) {
    std::uint32_t at = anvil[i];
    while (at > 0 && at < text.size() && (static_cast<unsigned char>(text[at]) & 0xC0) == 0x80) {
      --at;
    }
    if (at != hf[i]) return false;
  }
  return true;
}

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
    std::vector<std::int32_t> offset_ids;
    std::vector<std::uint32_t> offsets;
    tok.encode_append_offsets(r.text, false, offset_ids, offsets);
    const bool ok = ids == r.ids && ids_special == r.ids_special && decoded == r.decoded &&
                    decoded_skip == r.decoded_skip && offset_ids == r.ids &&
                    offsets_agree(r.text, offsets, r.offsets);
    if (!ok && ++failures <= 5) {
      ADD_FAILURE() << "text " << printable(r.text) << "\n  hf ids    " << ids_string(r.ids)
                    << "\n  anvil ids " << ids_string(ids) << "\n  hf special    "
                    << ids_string(r.ids_special) << "\n  anvil special " << ids_string(ids_special)
                    << "\n  hf decoded    " << printable(r.decoded) << "\n  anvil decoded "
                    << printable(decoded) << "\n  hf skip    " << printable(r.decoded_skip)
                    << "\n  anvil skip " << printable(decoded_skip) << "\n  hf offsets    "
                    << (r.offsets ? ids_string(*r.offsets) : "null") << "\n  anvil offsets "
                    << ids_string(offsets);
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

// With the template: its ids at 0 and at the end, the ids in between as without it, and
// never a step back (the HF side has no byte offsets for the template's tokens).
TEST_P(TokenizerParity, OffsetsWithSpecialTokens) {
  const std::string dir = fixtures_dir() + "/" + GetParam();
  if (!std::filesystem::exists(dir + "/expected.jsonl")) GTEST_SKIP() << dir << " missing";
  const Tokenizer tok = Tokenizer::load(dir);
  int failures = 0;
  for (const Record& r : read_expected(dir)) {
    std::vector<std::int32_t> ids{7};  // appends after what is there
    std::vector<std::uint32_t> offsets{0};
    tok.encode_append_offsets(r.text, true, ids, offsets);
    const std::vector<std::int32_t> expected_ids = [&] {
      std::vector<std::int32_t> v{7};
      v.insert(v.end(), r.ids_special.begin(), r.ids_special.end());
      return v;
    }();
    bool ok = ids == expected_ids && offsets.size() == ids.size() &&
              std::is_sorted(offsets.begin(), offsets.end());
    const std::size_t prefix = tok.adds_bos() ? 1 : 0;
    const std::size_t suffix = r.ids_special.size() - r.ids.size() - prefix;
    for (std::size_t i = 0; ok && i < r.ids.size(); ++i) {
      if (r.offsets) {
        ok = offsets_agree(r.text, {offsets[1 + prefix + i]}, std::vector{(*r.offsets)[i]});
      }
    }
    for (std::size_t i = 0; ok && i < suffix; ++i) ok = offsets[offsets.size() - 1 - i] == r.text.size();
    if (!ok && ++failures <= 5) {
      ADD_FAILURE() << "text " << printable(r.text) << "\n  ids " << ids_string(ids)
                    << "\n  offsets " << ids_string(offsets);
    }
  }
  EXPECT_EQ(failures, 0);
}

INSTANTIATE_TEST_SUITE_P(Families, TokenizerParity,
                         ::testing::Values("gpt2", "gpt2_prefix", "gpt2_unk", "gpt2_drop", "llama3",
                                           "llama4", "qwen2", "smollm2", "splits", "llama2", "mistral",
                                           "metaspace_split"),
                         [](const auto& info) { return info.param; });

// The pre_tokenizer HF `tokenizers` wrote for each byte-level family is the one anvil pairs
// with llama.cpp's name for it (GGUF export reads the name from it, import writes it back),
// so the patterns anvil carries are the families' own, character for character.
TEST(TokenizerParityPreTokenizer, EachFamilyMapsToItsLlamaCppName) {
  const std::pair<const char*, const char*> families[] = {
      {"gpt2", "gpt-2"}, {"llama3", "llama-bpe"}, {"llama4", "llama4"}, {"qwen2", "qwen2"}, {"smollm2", "smollm"}};
  for (const auto& [family, name] : families) {
    const std::string path = fixtures_dir() + "/" + family + "/tokenizer.json";
    if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " missing";
    std::ifstream in(path);
    const json pre = json::parse(in)["pre_tokenizer"];
    EXPECT_EQ(anvil::data::llama_cpp_pre_name(pre), name) << family;
    EXPECT_EQ(anvil::data::llama_cpp_pre_name(anvil::data::hf_pre_tokenizer(name)), name) << family;
  }
}

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

// SentencePiece-style families give the text back wherever HF does (not, for example,
// where Llama-2's Prepend puts a "▁" after an added token, which decodes as a space).
TEST(TokenizerParityRoundTrip, SentencePieceDecodeOfEncode) {
  for (const char* family : {"llama2", "mistral", "metaspace_split"}) {
    const std::string dir = fixtures_dir() + "/" + family;
    if (!std::filesystem::exists(dir + "/expected.jsonl")) GTEST_SKIP() << dir << " missing";
    const Tokenizer tok = Tokenizer::load(dir);
    int round_trips = 0;
    for (const Record& r : read_expected(dir)) {
      if (r.decoded != r.text) continue;
      ++round_trips;
      EXPECT_EQ(tok.decode(tok.encode(r.text, false)), r.text)
          << family << ": " << printable(r.text);
    }
    EXPECT_GT(round_trips, 500) << family;
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
