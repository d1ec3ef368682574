#include "safetensors_test_util.h"

#include <gtest/gtest.h>

namespace anvil::io {
namespace {

using namespace testing_util;
namespace fs = std::filesystem;

// ---- the malformed corpus: one case per validation rule -------------------------------
// tests/fuzz/make_corpus.py writes the same cases as files for `anvil inspect` and the
// fuzzer; here they run in memory, so the ASan build checks every rule's error path.

TEST(SafetensorsReject, TooShortForLength) {
  expect_rejected({}, "too short");
  expect_rejected({1, 2, 3}, "too short");
}

TEST(SafetensorsReject, HeaderLengthOverLimit) {
  expect_rejected(raw_file("{}", 0, 100'000'001), "exceeds the limit");
  expect_rejected(raw_file("{}", 0, -2 & 0x7fffffffffffffff), "exceeds the limit");
}

TEST(SafetensorsReject, HeaderLengthPastEndOfFile) {
  expect_rejected(raw_file("{}", 0, 64), "past the end of the file");
}

TEST(SafetensorsReject, InvalidJson) {
  expect_rejected(raw_file("{\"a\": ", 0), "header is not valid UTF-8 JSON");
  expect_rejected(raw_file("{} {}", 0), "header is not valid UTF-8 JSON");
  expect_rejected(raw_file("", 0), "header is not valid UTF-8 JSON");
}

TEST(SafetensorsReject, InvalidUtf8) {
  // The offending bytes are escaped in the message rather than sent to the terminal.
  expect_rejected(
      raw_file("{\"\xff\xfe\": {\"dtype\": \"F32\", \"shape\": [], \"data_offsets\": [0, 4]}}", 4),
      "not valid UTF-8 JSON");
  expect_rejected(raw_file("{\"\xff\xfe\": 1}", 0), "\\xff");
}

TEST(SafetensorsReject, TopLevelNotObject) {
  expect_rejected(raw_file("[1, 2]", 0), "not a JSON object");
  expect_rejected(raw_file("\"text\"", 0), "not a JSON object");
}

TEST(SafetensorsReject, DuplicateNames) {
  expect_rejected(
      raw_file("{" + entry("a", "U8", "[1]", 0, 1) + ", " + entry("a", "U8", "[1]", 1, 2) + "}", 2),
      "duplicate tensor name 'a'");
  // Within an entry too: nlohmann would silently keep the second dtype.
  expect_rejected(
      raw_file(R"({"a": {"dtype": "U8", "dtype": "I8", "shape": [1], "data_offsets": [0, 1]}})", 1),
      "duplicate key 'dtype' in 'a'");
  expect_rejected(raw_file(R"({"__metadata__": {"k": "1", "k": "2"}})", 0),
                  "duplicate key 'k' in '__metadata__'");
}

TEST(SafetensorsReject, NestedTooDeep) {
  expect_rejected(raw_file(R"({"a": {"dtype": "U8", "shape": [[1]], "data_offsets": [0, 1]}})", 1), "nested");
  expect_rejected(raw_file(std::string(200000, '[') + std::string(200000, ']'), 0),
                  "nested more than 3 levels");
}

TEST(SafetensorsReject, EntryNotAnObject) {
  expect_rejected(raw_file(R"({"a": [1]})", 0), "tensor 'a': entry is not");
}

TEST(SafetensorsReject, MissingField) {
  expect_rejected(raw_file(R"({"a": {"shape": [1], "data_offsets": [0, 1]}})", 1), "'dtype'");
  expect_rejected(raw_file(R"({"a": {"dtype": "U8", "data_offsets": [0, 1]}})", 1), "'shape'");
  expect_rejected(raw_file(R"({"a": {"dtype": "U8", "shape": [1]}})", 1), "'data_offsets'");
}

TEST(SafetensorsReject, UnknownDtype) {
  expect_rejected(raw_file("{" + entry("a", "F7", "[1]", 0, 1) + "}", 1), "tensor 'a': unknown dtype 'F7'");
  expect_rejected(raw_file("{" + entry("a", "f32", "[1]", 0, 4) + "}", 4), "unknown dtype 'f32'");
}

TEST(SafetensorsReject, ShapeNotNonNegativeIntegers) {
  expect_rejected(raw_file("{" + entry("a", "U8", "[-1]", 0, 1) + "}", 1), "non-negative integers");
  expect_rejected(raw_file("{" + entry("a", "U8", "[1.5]", 0, 1) + "}", 1), "non-negative integers");
  expect_rejected(raw_file("{" + entry("a", "U8", "[\"1\"]", 0, 1) + "}", 1), "non-negative integers");
  expect_rejected(raw_file("{" + entry("a", "U8", "[18446744073709551616]", 0, 1) + "}", 1),
                  "non-negative integers");
  expect_rejected(raw_file("{" + entry("a", "U8", "3", 0, 3) + "}", 3), "'shape' must be a list");
}

TEST(SafetensorsReject, TooManyDimensions) {
  expect_rejected(raw_file("{" + entry("a", "U8", "[1,1,1,1,1,1,1,1,1]", 0, 1) + "}", 1), "9 dimensions");
}

TEST(SafetensorsReject, ElementCountOverflow) {
  expect_rejected(raw_file("{" + entry("a", "F64", "[4294967296, 4294967296, 16]", 0, 8) + "}", 8),
                  "overflows");
  // numel fits in u64 but not int64.
  expect_rejected(raw_file("{" + entry("a", "U8", "[18446744073709551615]", 0, 8) + "}", 8), "overflows");
  // numel fits in int64 but its byte length does not.
  expect_rejected(raw_file("{" + entry("a", "F32", "[4611686018427387904]", 0, 8) + "}", 8), "overflows");
}

TEST(SafetensorsReject, ByteLengthMismatch) {
  expect_rejected(raw_file("{" + entry("a", "F32", "[2]", 0, 4) + "}", 4),
                  "does not match shape [2] of F32 (8 bytes)");
}

TEST(SafetensorsReject, OffsetsMalformed) {
  expect_rejected(raw_file("{" + entry("a", "U8", "[0]", 4, 0) + "}", 4), "reversed");
  expect_rejected(raw_file(R"({"a": {"dtype": "U8", "shape": [1], "data_offsets": [0]}})", 1),
                  "[begin, end]");
  expect_rejected(raw_file(R"({"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, -1]}})", 1),
                  "'data_offsets' must be non-negative integers");
  expect_rejected(raw_file(R"({"a": {"dtype": "U8", "shape": [1], "data_offsets": {"0": 1}}})", 1),
                  "[begin, end]");
}

TEST(SafetensorsReject, OverlappingTensors) {
  expect_rejected(
      raw_file("{" + entry("a", "U8", "[4]", 0, 4) + ", " + entry("b", "U8", "[2]", 2, 4) + "}", 4),
      "tensor 'b' (data_offsets [2, 4]) overlaps");
  expect_rejected(
      raw_file("{" + entry("a", "U8", "[4]", 0, 4) + ", " + entry("b", "U8", "[4]", 0, 4) + "}", 8),
      "overlaps");
  // An empty tensor strictly inside another one.
  expect_rejected(
      raw_file("{" + entry("a", "U8", "[4]", 0, 4) + ", " + entry("e", "U8", "[0]", 2, 2) + "}", 4),
      "tensor 'e'");
}

TEST(SafetensorsReject, GapBetweenTensors) {
  expect_rejected(
      raw_file("{" + entry("a", "U8", "[2]", 0, 2) + ", " + entry("b", "U8", "[2]", 4, 6) + "}", 6),
      "gap in the data buffer before tensor 'b'");
  expect_rejected(raw_file("{" + entry("a", "U8", "[2]", 2, 4) + "}", 4),
                  "gap in the data buffer before tensor 'a'");
}

TEST(SafetensorsReject, DataPastEndOfFile) {
  expect_rejected(raw_file("{" + entry("a", "U8", "[8]", 0, 8) + "}", 5),
                  "tensor 'a' (data_offsets [0, 8]) runs past");
  expect_rejected(
      raw_file("{" + entry("a", "U8", "[0]", 18446744073709551615ull, 18446744073709551615ull) + "}", 0),
      "runs past the end of the file");
}

TEST(SafetensorsReject, TrailingBytes) {
  expect_rejected(raw_file("{" + entry("a", "U8", "[2]", 0, 2) + "}", 5), "3 trailing bytes");
  expect_rejected(raw_file("{}", 1), "1 trailing bytes");
}

TEST(SafetensorsReject, MetadataNotStringToString) {
  expect_rejected(raw_file(R"({"__metadata__": {"format": 1}})", 0),
                  "__metadata__ value of 'format' is not a string");
  expect_rejected(raw_file(R"({"__metadata__": [1]})", 0), "__metadata__ must be an object");
  expect_rejected(raw_file(R"({"__metadata__": {"a": {"b": "c"}}})", 0), "__metadata__ value of 'a'");
}

TEST(SafetensorsReject, UnknownEntryField) {
  expect_rejected(raw_file(R"({"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1], "x": 1}})", 1),
                  "unknown field 'x'");
}

TEST(SafetensorsReject, EveryTruncationOfAValidFile) {
  // Every strict prefix of a valid file is rejected, without reading out of bounds.
  const TempDir dir("trunc");
  write_shard(dir / "t.safetensors", {{"a", 1}, {"b", 2}});
  const auto full = read_file(dir / "t.safetensors");
  std::unique_ptr<std::uint8_t[]> storage;
  ASSERT_NO_THROW(parse_exact(full, "ok", storage));
  for (std::size_t n = 0; n < full.size(); ++n) {
    const std::vector<std::uint8_t> prefix(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n));
    EXPECT_THROW(parse_exact(prefix, "prefix", storage), Error) << "prefix of " << n << " bytes";
  }
}

TEST(SafetensorsAccept, EdgeCasesOfTheFormat) {
  std::unique_ptr<std::uint8_t[]> storage;
  // No tensors at all; trailing spaces; unicode names; tensors listed out of offset order.
  EXPECT_TRUE(parse_exact(raw_file("{}", 0), "x", storage).tensors().empty());
  EXPECT_TRUE(parse_exact(raw_file("{}      ", 0), "x", storage).tensors().empty());
  const auto f =
      parse_exact(raw_file("{" + entry("z\xc3\xa9", "U8", "[2]", 0, 2) + ", " +
                               entry("a", "U8", "[3]", 2, 5) + ", " + entry("e", "F32", "[0, 3]", 5, 5) + "}",
                           5),
                  "x", storage);
  ASSERT_EQ(f.tensors().size(), 3u);
  EXPECT_EQ(f.tensors()[0].name, "z\xc3\xa9");  // offset order
  EXPECT_EQ(f.find("a")->begin, 2u);
  EXPECT_EQ(f.find("e")->shape, (Shape{0, 3}));
  EXPECT_EQ(f.view(*f.find("a")).as<std::uint8_t>(), storage.get() + 8 + f.header_bytes() + 2);
}

}  // namespace
}  // namespace anvil::io
