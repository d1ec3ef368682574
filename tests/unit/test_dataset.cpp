// Training data on a byte-level tokenizer (every byte its own id, 256 BOS, 257 EOS,
// 258 pad), so every expected row below can be written out by hand: targets, positions and
// segments of text and prompt/completion records, packing, truncation, padding, and the
// errors for bad records. Then the sampler's order.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/bytelevel_tokenizer_json.h"
#include "data/dataset.h"
#include "data/sampler.h"
#include "data/tokenizer.h"

namespace {

using namespace anvil::data;
using Ids = std::vector<std::int32_t>;

constexpr std::int32_t B = 256, E = 257, P = 258, I = kIgnoreTarget;

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

  std::string write(const std::string& name, const std::string& content) const {
    const std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary) << content;
    return path;
  }

  SequenceSet load(const std::string& jsonl, std::int64_t seq_len, bool packing = true, bool add_eos = true) const {
    DatasetOptions opt;
    opt.seq_len = seq_len;
    opt.packing = packing;
    opt.add_eos = add_eos;
    return dataset_load_jsonl(write("data.jsonl", jsonl), tokenizer(), opt);
  }

  // Expects a user error naming "bad.jsonl:<line>:" and `what`.
  void expect_bad(const std::string& jsonl, int line, const std::string& what,
                  RecordFormat format = RecordFormat::record_auto) const {
    DatasetOptions opt;
    opt.seq_len = 16;
    opt.format = format;
    const std::string path = write("bad.jsonl", jsonl);
    SCOPED_TRACE(jsonl);
    expect_user_error([&] { dataset_load_jsonl(path, tokenizer(), opt); },
                      {path + ":" + std::to_string(line) + ":", what});
  }

  std::filesystem::path dir_;
};

// Every trained target is the next token of the same row and the same sample.
void expect_no_cross_boundary_targets(const SequenceSet& s) {
  for (std::int64_t r = 0; r < s.count; ++r) {
    for (std::int64_t t = 0; t < s.seq_len; ++t) {
      const std::int64_t i = r * s.seq_len + t;
      if (s.targets[i] == I) continue;
      ASSERT_LT(t + 1, s.seq_len) << "row " << r;
      EXPECT_EQ(s.targets[i], s.ids[i + 1]) << "row " << r << " position " << t;
      EXPECT_EQ(s.segments[i], s.segments[i + 1]) << "row " << r << " position " << t;
      EXPECT_EQ(s.positions[i] + 1, s.positions[i + 1]) << "row " << r << " position " << t;
    }
  }
}

TEST_F(Dataset, TextTrainsEveryPrediction) {
  const SequenceSet s = load(R"({"text": "ab"})" "\n", 8);
  EXPECT_EQ(s.count, 1);
  EXPECT_EQ(s.seq_len, 8);
  EXPECT_EQ(s.ids, (Ids{B, 'a', 'b', E, P, P, P, P}));
  EXPECT_EQ(s.targets, (Ids{'a', 'b', E, I, I, I, I, I}));
  EXPECT_EQ(s.positions, (Ids{0, 1, 2, 3, 0, 1, 2, 3}));
  EXPECT_EQ(s.segments, (Ids{0, 0, 0, 0, 1, 1, 1, 1}));
  EXPECT_EQ(s.pad_id, P);
  EXPECT_EQ(s.samples, 1);
  EXPECT_EQ(s.trained_tokens, 3);
  EXPECT_EQ(s.truncated, 0);
}

TEST_F(Dataset, TextWithoutEos) {
  const SequenceSet s = load(R"({"text": "ab"})", 4, true, false);
  EXPECT_EQ(s.ids, (Ids{B, 'a', 'b', P}));
  EXPECT_EQ(s.targets, (Ids{'a', 'b', I, I}));
  EXPECT_EQ(s.trained_tokens, 2);
}

TEST_F(Dataset, PromptCompletionTrainsOnlyTheCompletionAndEos) {
  const SequenceSet s = load(R"({"prompt": "a=", "completion": "bc", "id": 7})", 8);
  EXPECT_EQ(s.ids, (Ids{B, 'a', '=', 'b', 'c', E, P, P}));
  EXPECT_EQ(s.targets, (Ids{I, I, 'b', 'c', E, I, I, I}));
  EXPECT_EQ(s.positions, (Ids{0, 1, 2, 3, 4, 5, 0, 1}));
  EXPECT_EQ(s.segments, (Ids{0, 0, 0, 0, 0, 0, 1, 1}));
  EXPECT_EQ(s.trained_tokens, 3);
}

TEST_F(Dataset, PromptCompletionWithEmptyPrompt) {
  const SequenceSet s = load(R"({"prompt": "", "completion": "x"})", 4);
  EXPECT_EQ(s.ids, (Ids{B, 'x', E, P}));
  EXPECT_EQ(s.targets, (Ids{'x', E, I, I}));
}

TEST_F(Dataset, TokenizerThatAddsEosGetsNoSecondOneAndNoneAfterThePrompt) {
  const Tokenizer tok = tokenizer_with_config(
      R"({"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>", "add_eos_token": true})");
  ASSERT_TRUE(tok.adds_eos());
  DatasetOptions opt;
  opt.seq_len = 6;
  const SequenceSet text = dataset_load_jsonl(write("t.jsonl", R"({"text": "ab"})"), tok, opt);
  EXPECT_EQ(text.ids, (Ids{B, 'a', 'b', E, E, E}));  // no pad token: EOS pads
  EXPECT_EQ(text.targets, (Ids{'a', 'b', E, I, I, I}));
  const SequenceSet pc = dataset_load_jsonl(write("pc.jsonl", R"({"prompt": "a", "completion": "b"})"), tok, opt);
  EXPECT_EQ(pc.ids, (Ids{B, 'a', 'b', E, E, E}));
  EXPECT_EQ(pc.targets, (Ids{I, 'b', E, I, I, I}));
}

TEST_F(Dataset, PackingRestartsPositionsAndSegments) {
  // Samples of 3, 4 and 3 tokens in rows of 8: the first two share a row, the third
  // does not fit after them.
  const SequenceSet s = load("{\"text\": \"a\"}\n{\"text\": \"bc\"}\n\n{\"text\": \"d\"}\n", 8);
  ASSERT_EQ(s.count, 2);
  EXPECT_EQ(s.ids, (Ids{B, 'a', E, B, 'b', 'c', E, P,  //
                        B, 'd', E, P, P, P, P, P}));
  EXPECT_EQ(s.targets, (Ids{'a', E, I, 'b', 'c', E, I, I,  //
                            'd', E, I, I, I, I, I, I}));
  EXPECT_EQ(s.positions, (Ids{0, 1, 2, 0, 1, 2, 3, 0,  //
                              0, 1, 2, 0, 1, 2, 3, 4}));
  EXPECT_EQ(s.segments, (Ids{0, 0, 0, 1, 1, 1, 1, 2,  //
                             0, 0, 0, 1, 1, 1, 1, 1}));
  EXPECT_EQ(s.samples, 3);
  EXPECT_EQ(s.trained_tokens, 7);
  expect_no_cross_boundary_targets(s);
}

TEST_F(Dataset, PackingFillsRowsExactly) {
  // Two samples of 4 tokens fill a row of 8 with no padding.
  const SequenceSet s = load(R"({"prompt": "a", "completion": "b"})" "\n"
                             R"({"prompt": "c", "completion": "d"})" "\n", 8);
  ASSERT_EQ(s.count, 1);
  EXPECT_EQ(s.ids, (Ids{B, 'a', 'b', E, B, 'c', 'd', E}));
  EXPECT_EQ(s.targets, (Ids{I, 'b', E, I, I, 'd', E, I}));
  EXPECT_EQ(s.segments, (Ids{0, 0, 0, 0, 1, 1, 1, 1}));
  expect_no_cross_boundary_targets(s);
}

TEST_F(Dataset, LongSampleIsTruncatedToSeqLen) {
  const SequenceSet s = load("{\"text\": \"x\"}\n{\"text\": \"abcdefgh\"}\n", 4);
  ASSERT_EQ(s.count, 2);
  EXPECT_EQ(s.ids, (Ids{B, 'x', E, P, B, 'a', 'b', 'c'}));
  EXPECT_EQ(s.targets, (Ids{'x', E, I, I, 'a', 'b', 'c', I}));
  EXPECT_EQ(s.positions, (Ids{0, 1, 2, 0, 0, 1, 2, 3}));
  EXPECT_EQ(s.truncated, 1);
  EXPECT_EQ(s.samples, 2);
  expect_no_cross_boundary_targets(s);
}

TEST_F(Dataset, SampleWithNothingTrainedWithinSeqLenIsDropped) {
  const SequenceSet s = load(R"({"prompt": "abcdef", "completion": "x"})" "\n"
                             R"({"prompt": "a", "completion": "b"})" "\n", 4);
  EXPECT_EQ(s.count, 1);
  EXPECT_EQ(s.ids, (Ids{B, 'a', 'b', E}));
  EXPECT_EQ(s.dropped, 1);
  EXPECT_EQ(s.truncated, 1);
  EXPECT_EQ(s.samples, 1);
}

TEST_F(Dataset, WithoutPackingEverySampleHasItsRow) {
  const SequenceSet s = load("{\"text\": \"a\"}\n{\"text\": \"b\"}\n", 5, false);
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

TEST_F(Dataset, ExplicitFormatNeedsItsFields) {
  expect_bad(R"({"prompt": "a", "completion": "b"})", 1, "missing field \"text\"", RecordFormat::record_text);
  expect_bad(R"({"text": "a"})", 1, "missing field \"prompt\"", RecordFormat::record_prompt_completion);
}

TEST_F(Dataset, BadRecordsNameFileAndLine) {
  const std::string good = R"({"text": "a"})" "\n";
  expect_bad(good + R"({"text": "a")" "\n", 2, "invalid JSON");
  expect_bad(good + R"(["a"])" "\n", 2, "must be a JSON object");
  expect_bad(good + R"({"text": 5})" "\n", 2, "field \"text\" must be a string");
  expect_bad(good + R"({"text": ""})" "\n", 2, "empty \"text\"");
  expect_bad(good + "\n  \n" R"({"text": null})" "\n", 4, "must be a string");
  expect_bad(R"({"foo": "a"})", 1, "unknown record format");
  expect_bad(R"({"messages": []})", 1, "chat records");
  expect_bad(R"({"text": "a", "prompt": "b", "completion": "c"})", 1, "both");
  expect_bad(R"({"prompt": "a", "completion": "b"})" "\n" R"({"prompt": "a"})", 2, "missing field \"completion\"");
  expect_bad(R"({"prompt": "a", "completion": ""})", 1, "empty \"completion\"");
  expect_bad(good + R"({"prompt": "a", "completion": "b"})", 2, "the first record (line 1) is text");
  expect_bad(good + "{\"text\": \"a\xff\"}\n", 2, "ill-formed UTF-8");
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
  expect_user_error([&] { dataset_load_jsonl(path, tokenizer_with_config(""), opt); }, {path, "no EOS"});
  opt.add_eos = false;
  // No pad and no EOS: 0 pads.
  EXPECT_EQ(dataset_load_jsonl(path, tokenizer_with_config(""), opt).ids, (Ids{B, 'a', 0, 0, 0, 0, 0, 0}));
}

TEST_F(Dataset, SeqLenBelowTwoIsAnError) {
  expect_user_error([&] { load(R"({"text": "a"})", 1); }, {"seq_len"});
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
