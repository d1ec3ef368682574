#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/safetensors.h"

namespace anvil::io {
namespace {

namespace fs = std::filesystem;

// A fresh directory per test and process (tests run in parallel and in several build
// trees at once), removed at the end.
class TempDir {
 public:
  explicit TempDir(const std::string& name)
      : path_(fs::temp_directory_path() / ("anvil_test_st_" + name + "_" + std::to_string(::getpid()))) {
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  fs::path operator/(const std::string& leaf) const { return path_ / leaf; }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

std::vector<std::uint8_t> read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<std::uint8_t>((std::istreambuf_iterator<char>(in)), {});
}

std::vector<std::uint8_t> random_bytes(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::uint8_t> v(n);
  for (auto& b : v) b = static_cast<std::uint8_t>(rng());
  return v;
}

// A file assembled by hand: the header text is exactly what the test says.
std::vector<std::uint8_t> raw_file(const std::string& header, std::size_t data_bytes,
                                   std::int64_t len_override = -1) {
  const std::uint64_t n = len_override >= 0 ? static_cast<std::uint64_t>(len_override) : header.size();
  std::vector<std::uint8_t> out(8);
  for (int i = 0; i < 8; ++i) out[i] = static_cast<std::uint8_t>(n >> (8 * i));
  out.insert(out.end(), header.begin(), header.end());
  out.resize(out.size() + data_bytes, 0x5a);
  return out;
}

// parse() on an exactly sized heap copy, so that ASan flags a read even one byte past the
// end (a std::vector's spare capacity would hide it).
SafetensorsFile parse_exact(const std::vector<std::uint8_t>& bytes, const std::string& label,
                            std::unique_ptr<std::uint8_t[]>& storage) {
  storage.reset(new std::uint8_t[bytes.size()]);
  if (!bytes.empty()) std::memcpy(storage.get(), bytes.data(), bytes.size());
  return SafetensorsFile::parse(storage.get(), bytes.size(), label);
}

// Expects parse() to throw a user error naming the file and containing `fragment`.
void expect_rejected(const std::vector<std::uint8_t>& bytes, const std::string& fragment) {
  std::unique_ptr<std::uint8_t[]> storage;
  try {
    parse_exact(bytes, "bad.safetensors", storage);
    ADD_FAILURE() << "accepted a file that should fail with '" << fragment << "'";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::user) << e.what();
    const std::string msg = e.what();
    EXPECT_EQ(msg.rfind("bad.safetensors: ", 0), 0u) << msg;
    EXPECT_NE(msg.find(fragment), std::string::npos) << "message: " << msg << "\nexpected: " << fragment;
  }
}

// One tensor entry: {"name": {"dtype": ..., "shape": ..., "data_offsets": [b, e]}}.
std::string entry(const std::string& name, const std::string& dtype, const std::string& shape,
                  std::uint64_t b, std::uint64_t e) {
  return "\"" + name + "\": {\"dtype\": \"" + dtype + "\", \"shape\": " + shape + ", \"data_offsets\": [" +
         std::to_string(b) + ", " + std::to_string(e) + "]}";
}

std::string tensor_name(DType t) { return "t_" + std::string(dtype_short_name(t)); }

// ---- writer -> reader ------------------------------------------------------------------

TEST(Safetensors, RoundTripEveryDtype) {
  const TempDir dir("roundtrip");
  const std::string path = (dir / "all.safetensors").string();
  std::vector<std::vector<std::uint8_t>> payloads;
  std::vector<Shape> shapes;
  {
    SafetensorsWriter w(path);
    int i = 0;
    for (DType t : kAllDTypes) {
      shapes.push_back(Shape{3, 1 + i % 4});
      w.declare(tensor_name(t), t, shapes.back());
      payloads.push_back(
          random_bytes(static_cast<std::size_t>(shapes.back().numel()) * dtype_size(t), 100 + i));
      if (t == DType::dtype_bool)
        for (auto& b : payloads.back()) b &= 1;
      ++i;
    }
    w.declare("empty", DType::dtype_f32, Shape{0, 7});
    w.declare("scalar", DType::dtype_f64, Shape{});
    i = 0;
    for (DType t : kAllDTypes) {
      w.write_tensor(tensor_name(t), payloads[i].data(), payloads[i].size());
      ++i;
    }
    w.write_tensor("empty", nullptr, 0);
    const double pi = 3.14159;
    w.write_tensor("scalar", &pi, sizeof pi);
    EXPECT_TRUE(fs::exists(path + ".partial"));
    EXPECT_FALSE(fs::exists(path)) << "the file appears only when finished";
    w.finish();
  }
  EXPECT_FALSE(fs::exists(path + ".partial"));
  const auto f = SafetensorsFile::open(path);
  EXPECT_EQ(f.path(), path);
  EXPECT_EQ(f.tensors().size(), std::size(kAllDTypes) + 2);
  EXPECT_EQ(f.metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
  EXPECT_EQ((8 + f.header_bytes()) % 8, 0u) << "data must start 8-byte aligned";
  int i = 0;
  for (DType t : kAllDTypes) {
    const auto* info = f.find(tensor_name(t));
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(info->dtype, t);
    EXPECT_EQ(info->shape, shapes[i]);
    const TensorView v = f.view(*info);
    EXPECT_EQ(v.dtype, t);
    ASSERT_EQ(v.nbytes(), payloads[i].size());
    EXPECT_EQ(std::memcmp(v.data, payloads[i].data(), v.nbytes()), 0) << dtype_name(t);
    ++i;
  }
  const auto* scalar = f.find("scalar");
  ASSERT_NE(scalar, nullptr);
  EXPECT_EQ(scalar->shape.rank(), 0);
  // After the 1-byte types the f64 is not 8-byte aligned: read it with memcpy.
  EXPECT_EQ(dtype_load_as_f64(f.view(*scalar).data, DType::dtype_f64, 0), 3.14159);
  EXPECT_EQ(f.find("empty")->shape, (Shape{0, 7}));
  EXPECT_EQ(f.find("missing"), nullptr);
  // Data order is declaration order: the first declared tensor starts the buffer.
  EXPECT_EQ(f.tensors().front().name, tensor_name(kAllDTypes[0]));
  EXPECT_EQ(f.tensors().front().begin, 0u);
}

TEST(Safetensors, ChunkedAppendEqualsWholeWrite) {
  const TempDir dir("chunks");
  const auto a = random_bytes(4 * 1000, 1), b = random_bytes(2 * 333, 2);
  std::vector<std::uint8_t> all(a);
  all.insert(all.end(), b.begin(), b.end());
  {
    SafetensorsWriter w((dir / "chunked.safetensors").string());
    w.declare("a", DType::dtype_f32, Shape{1000});
    w.declare("between", DType::dtype_i8, Shape{0});  // empty tensors take no bytes
    w.declare("b", DType::dtype_bf16, Shape{333});
    // Chunks of 997 bytes straddle the boundary between the two tensors.
    for (std::size_t off = 0; off < all.size(); off += 997)
      w.append(all.data() + off, std::min<std::size_t>(997, all.size() - off));
    w.finish();
  }
  {
    SafetensorsWriter w((dir / "whole.safetensors").string());
    w.declare("a", DType::dtype_f32, Shape{1000});
    w.declare("between", DType::dtype_i8, Shape{0});
    w.declare("b", DType::dtype_bf16, Shape{333});
    w.write_tensor("a", a.data(), a.size());
    w.write_tensor("between", nullptr, 0);
    w.write_tensor("b", b.data(), b.size());
    w.finish();
  }
  EXPECT_EQ(read_file(dir / "chunked.safetensors"), read_file(dir / "whole.safetensors"));
  const auto f = SafetensorsFile::open((dir / "chunked.safetensors").string());
  EXPECT_EQ(std::memcmp(f.view(*f.find("a")).data, a.data(), a.size()), 0);
  EXPECT_EQ(std::memcmp(f.view(*f.find("b")).data, b.data(), b.size()), 0);
}

TEST(Safetensors, HeaderKeysSortedPaddedAndDeterministic) {
  const TempDir dir("det");
  auto write = [&](const std::string& name) {
    SafetensorsWriter w((dir / name).string());
    w.declare("zeta", DType::dtype_u8, Shape{2});
    w.declare("alpha", DType::dtype_u8, Shape{3});
    const std::uint8_t z[2] = {1, 2}, al[3] = {3, 4, 5};
    w.write_tensor("zeta", z, 2);
    w.write_tensor("alpha", al, 3);
    w.finish();
  };
  write("x.safetensors");
  write("y.safetensors");
  const auto x = read_file(dir / "x.safetensors");
  EXPECT_EQ(x, read_file(dir / "y.safetensors"));
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | x[i];
  const std::string header(x.begin() + 8, x.begin() + 8 + static_cast<std::ptrdiff_t>(n));
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(header.rfind(
                R"({"__metadata__":{"format":"pt"},"alpha":{"data_offsets":[2,5],"dtype":"U8","shape":[3]},)"
                R"("zeta":{"data_offsets":[0,2],"dtype":"U8","shape":[2]}})",
                0),
            0u)
      << header;
  EXPECT_EQ(header.find_first_not_of(' ', header.rfind('}') + 1), std::string::npos) << "padding is spaces";
  // Data stays in declaration order: zeta's bytes come first.
  EXPECT_EQ(std::vector<std::uint8_t>(x.end() - 5, x.end()), (std::vector<std::uint8_t>{1, 2, 3, 4, 5}));
}

TEST(Safetensors, CustomMetadataAndNoTensors) {
  const TempDir dir("meta");
  {
    SafetensorsWriter w((dir / "m.safetensors").string(), {{"format", "pt"}, {"note", "\xc3\xa9t\xc3\xa9"}});
    w.finish();
  }
  const auto f = SafetensorsFile::open((dir / "m.safetensors").string());
  EXPECT_TRUE(f.tensors().empty());
  EXPECT_EQ(f.metadata().at("note"), "\xc3\xa9t\xc3\xa9");
  {
    SafetensorsWriter w((dir / "none.safetensors").string(), {});
    w.finish();
  }
  const auto bytes = read_file(dir / "none.safetensors");
  EXPECT_EQ(std::string(bytes.begin() + 8, bytes.end()), "{}      ") << "no __metadata__ when there is none";
}

TEST(Safetensors, AbandonedWriterLeavesNothing) {
  const TempDir dir("abandon");
  const std::string path = (dir / "w.safetensors").string();
  {
    SafetensorsWriter w(path);
    w.declare("a", DType::dtype_f32, Shape{4});
    const float half[2] = {1, 2};
    w.append(half, sizeof half);
    EXPECT_TRUE(fs::exists(path + ".partial"));
    EXPECT_THROW(w.finish(), Error);  // 'a' is incomplete
  }
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".partial"));
  {
    SafetensorsWriter w(path);  // never written to at all
    w.declare("a", DType::dtype_f32, Shape{4});
  }
  EXPECT_TRUE(fs::is_empty(dir.path()));
}

TEST(Safetensors, WriterRejectsMisuse) {
  const TempDir dir("misuse");
  SafetensorsWriter w((dir / "m.safetensors").string());
  w.declare("a", DType::dtype_f32, Shape{2});
  w.declare("b", DType::dtype_f32, Shape{1});
  EXPECT_THROW(w.declare("a", DType::dtype_f32, Shape{2}), Error);
  EXPECT_THROW(w.declare("__metadata__", DType::dtype_f32, Shape{2}), Error);
  EXPECT_THROW(w.declare("neg", DType::dtype_f32, Shape{-1}), Error);
  const float v[3] = {1, 2, 3};
  EXPECT_THROW(w.write_tensor("c", v, 4), Error);  // not declared
  EXPECT_THROW(w.write_tensor("b", v, 4), Error);  // out of order
  EXPECT_THROW(w.write_tensor("a", v, 4), Error);  // wrong size
  w.append(v, 8);
  EXPECT_THROW(w.declare("late", DType::dtype_f32, Shape{1}), Error);  // after data started
  EXPECT_THROW(w.append(v, 8), Error);                                 // 4 bytes more than declared
}

TEST(Safetensors, WriterReportsUnwritablePath) {
  const TempDir dir("unwritable");
  SafetensorsWriter w((dir / "no/such/dir/m.safetensors").string());
  w.declare("a", DType::dtype_u8, Shape{1});
  try {
    w.write_tensor("a", "x", 1);
    ADD_FAILURE() << "wrote into a missing directory";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::user);
    EXPECT_NE(std::string(e.what()).find("m.safetensors.partial: cannot create"), std::string::npos)
        << e.what();
  }
}

// ---- model directories -----------------------------------------------------------------

void write_shard(const fs::path& path, const std::vector<std::pair<std::string, float>>& tensors) {
  SafetensorsWriter w(path.string());
  for (const auto& [name, value] : tensors) w.declare(name, DType::dtype_f32, Shape{2});
  for (const auto& [name, value] : tensors) {
    const float v[2] = {value, -value};
    w.write_tensor(name, v, sizeof v);
  }
  w.finish();
}

TEST(SafetensorsModel, ShardedDirectoryThroughIndex) {
  const TempDir dir("sharded");
  write_shard(dir / "model-00001-of-00002.safetensors", {{"b", 2}, {"a", 1}});
  write_shard(dir / "model-00002-of-00002.safetensors", {{"c", 3}});
  std::ofstream(dir / "model.safetensors.index.json")
      << R"({"metadata": {"total_size": 24}, "weight_map": {"a": "model-00001-of-00002.safetensors",)"
      << R"( "b": "model-00001-of-00002.safetensors", "c": "model-00002-of-00002.safetensors"}})";
  const auto m = SafetensorsModel::open(dir.path().string());
  EXPECT_EQ(m.files().size(), 2u);
  const auto all = m.tensors();
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].info->name, "a");  // sorted by name across shards
  EXPECT_EQ(all[2].info->name, "c");
  const auto* c = m.find("c");
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(fs::path(c->file->path()).filename(), "model-00002-of-00002.safetensors");
  EXPECT_EQ(c->file->view(*c->info).as<float>()[1], -3.0f);
  EXPECT_EQ(m.find("a")->file->view(*m.find("a")->info).as<float>()[0], 1.0f);
  EXPECT_EQ(m.find("zzz"), nullptr);
  // The index itself names the same model.
  const auto via_index = SafetensorsModel::open((dir / "model.safetensors.index.json").string());
  EXPECT_EQ(via_index.tensors().size(), 3u);
  EXPECT_EQ(via_index.files().size(), 2u);
}

TEST(SafetensorsModel, SingleFileAndPlainDirectory) {
  const TempDir dir("single");
  write_shard(dir / "model.safetensors", {{"w", 5}});
  const auto from_dir = SafetensorsModel::open(dir.path().string());
  const auto from_file = SafetensorsModel::open((dir / "model.safetensors").string());
  ASSERT_EQ(from_dir.files().size(), 1u);
  ASSERT_EQ(from_file.files().size(), 1u);
  EXPECT_EQ(from_dir.find("w")->file->view(*from_dir.find("w")->info).as<float>()[0], 5.0f);
  EXPECT_NE(from_file.find("w"), nullptr);
}

TEST(SafetensorsModel, IndexMismatchesAreNamed) {
  const TempDir dir("badindex");
  write_shard(dir / "s1.safetensors", {{"a", 1}});
  write_shard(dir / "s2.safetensors", {{"b", 2}});
  write_shard(dir / "s4.safetensors", {{"c", 3}, {"d", 4}});
  write_shard(dir / "s5.safetensors", {{"a", 1}, {"e", 5}});
  auto expect_error = [&](const std::string& index, const std::string& fragment) {
    std::ofstream(dir / "model.safetensors.index.json", std::ios::trunc) << index;
    try {
      SafetensorsModel::open(dir.path().string());
      ADD_FAILURE() << "accepted index " << index;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::user);
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos)
          << e.what() << "\nexpected: " << fragment;
    }
  };
  expect_error(R"({"weight_map": {"a": "s2.safetensors", "b": "s2.safetensors"}})",
               "'a' is listed in s2.safetensors but that shard does not hold it");
  expect_error(R"({"weight_map": {"a": "s1.safetensors", "c": "s4.safetensors"}})", "'d' is not listed");
  // 'a' is in s1 and in s5: whichever shard the index names, the other one is caught.
  expect_error(R"({"weight_map": {"a": "s1.safetensors", "e": "s5.safetensors"}})",
               "'a' is listed in s1.safetensors but found in s5.safetensors");
  expect_error(R"({"weight_map": {"a": "s1.safetensors", "a": "s1.safetensors"}})",
               "duplicate key 'a' in 'weight_map'");
  expect_error(R"({"weight_map": {"a": "s1.safetensors", "b": "s3.safetensors"}})",
               "s3.safetensors: cannot open");
  expect_error(R"({"weight_map": {"a": "../s1.safetensors"}})", "must be a file name");
  expect_error(R"({"weight_map": {"a": 7}})", "is not a string");
  expect_error(R"({"weight_map": {}})", "lists no tensors");
  expect_error(R"({"nothing": 1})", "missing object 'weight_map'");
  expect_error(R"({"weight_map": )", "model.safetensors.index.json: index is not valid UTF-8 JSON");
}

TEST(SafetensorsModel, MissingWeightsAreUserErrors) {
  const TempDir dir("empty");
  try {
    SafetensorsModel::open(dir.path().string());
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::user);
    EXPECT_NE(std::string(e.what()).find("no model.safetensors"), std::string::npos) << e.what();
  }
  try {
    SafetensorsModel::open((dir / "nope.safetensors").string());
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::user);
    EXPECT_NE(std::string(e.what()).find("nope.safetensors: cannot open"), std::string::npos) << e.what();
  }
}

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
