#include "safetensors_test_util.h"

#include <gtest/gtest.h>

namespace anvil::io {
namespace {

using namespace testing_util;
namespace fs = std::filesystem;

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

// A multimodal checkpoint's text model: the tensors under a prefix, found without it (also
// after a move), the others set aside under their stored names.
TEST(SafetensorsModel, KeepUnderAPrefix) {
  const TempDir dir("prefixed");
  write_shard(dir / "model.safetensors", {{"language_model.model.norm.weight", 1}, {"language_model.lm_head.weight", 2},
                                          {"vision_model.w", 3}});
  auto m = SafetensorsModel::open(dir.path().string());
  EXPECT_EQ(m.prefix(), "");
  m.keep_under("language_model.");
  const SafetensorsModel moved = std::move(m);
  EXPECT_EQ(moved.prefix(), "language_model.");
  const auto* norm = moved.find("model.norm.weight");
  ASSERT_NE(norm, nullptr);
  EXPECT_EQ(norm->name, "model.norm.weight");
  EXPECT_EQ(norm->info->name, "language_model.model.norm.weight");
  EXPECT_EQ(norm->file->view(*norm->info).as<float>()[0], 1.0f);
  EXPECT_EQ(moved.find("language_model.model.norm.weight"), nullptr);
  EXPECT_EQ(moved.find("vision_model.w"), nullptr);
  const auto all = moved.tensors();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].name, "lm_head.weight");
  ASSERT_EQ(moved.outside().size(), 1u);
  EXPECT_EQ(moved.outside()[0].name, "vision_model.w");
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

}  // namespace
}  // namespace anvil::io
