// The GGUF reader and dequantizers against llama.cpp's Python package `gguf`: fixtures
// written by scripts/fixtures/make_gguf.py (run by the CTest fixture `gguf_fixtures`)
// with gguf's own writer and quantizers, and gguf's dequantized values as the reference.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <cstring>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "error_test_util.h"
#include "io/gguf.h"
#include "io/gguf_dequant.h"
#include "io/gguf_writer.h"
#include "io/safetensors.h"

namespace anvil::io {
namespace {

using test::contains;
using test::error_of;

std::string fixtures_dir() {
  const char* env = std::getenv("ANVIL_GGUF_FIXTURES");
  return env != nullptr ? env : ANVIL_BINARY_DIR "/gguf_fixtures";
}

std::vector<float> dequantized(const GgufFile& g, const GgufTensorInfo& t) {
  std::vector<float> out(t.numel);
  gguf_dequantize(t, g.data(t), out.data(), g.path());
  return out;
}

std::vector<float> reference(const SafetensorsFile& ref, const std::string& name) {
  const TensorInfo* info = ref.find(name);
  EXPECT_NE(info, nullptr) << name;
  if (info == nullptr) return {};
  std::vector<float> out(static_cast<std::size_t>(info->end - info->begin) / 4);
  std::memcpy(out.data(), ref.view(*info).data, out.size() * 4);
  return out;
}

TEST(Gguf, DequantizesEveryTypeLikeTheGgufPackage) {
  const GgufFile g = GgufFile::open(fixtures_dir() + "/types.gguf");
  const SafetensorsFile ref = SafetensorsFile::open(fixtures_dir() + "/types_ref.safetensors");
  ASSERT_EQ(g.tensors().size(), 13u);  // every type anvil supports
  for (const GgufTensorInfo& t : g.tensors()) {
    SCOPED_TRACE(t.name);
    EXPECT_TRUE(gguf_can_dequantize(t.type));
    EXPECT_EQ(t.shape(), Shape({3, 512}));
    EXPECT_EQ(t.name, "t." + ggml_type_name(t.type));
    const std::vector<float> got = dequantized(g, t);
    const std::vector<float> want = reference(ref, t.name);
    ASSERT_EQ(got.size(), want.size());
    // Bit for bit, k-quants included: both sides round every product to f32 in the same
    // order (scale·sub-scale first), and anvil's dequantizer is built without FMA.
    int bad = 0;
    for (std::size_t i = 0; i < got.size(); ++i) {
      const bool ok = std::memcmp(&got[i], &want[i], 4) == 0;
      if (!ok && bad++ < 5) ADD_FAILURE() << "element " << i << ": " << got[i] << " vs " << want[i];
    }
    EXPECT_EQ(bad, 0);
  }
}

TEST(Gguf, RefusesAnUnsupportedTypeByName) {
  const GgufFile g = GgufFile::open(fixtures_dir() + "/unsupported.gguf");
  ASSERT_EQ(g.tensors().size(), 1u);
  const GgufTensorInfo& t = g.tensors()[0];
  EXPECT_FALSE(gguf_can_dequantize(t.type));
  std::vector<float> out(t.numel);
  const Error e = error_of([&] { gguf_dequantize(t, g.data(t), out.data(), g.path()); });
  EXPECT_EQ(e.kind(), ErrorKind::user);
  EXPECT_TRUE(contains(e, "unsupported.gguf: tensor 't.IQ4_NL' has type IQ4_NL")) << e.what();
}

TEST(Gguf, ReadsEveryMetadataType) {
  const GgufFile g = GgufFile::open(fixtures_dir() + "/meta.gguf");
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(g.get_string("general.architecture"), "llama");
  EXPECT_EQ(g.get_u64("test.u8"), 200u);
  EXPECT_EQ(g.find("test.u8")->type, GgufValueType::gguf_u8);
  EXPECT_EQ(g.find("test.i8")->i, -100);
  EXPECT_EQ(g.get_u64("test.u16"), 60000u);
  EXPECT_EQ(g.find("test.i16")->i, -30000);
  EXPECT_EQ(g.get_u64("test.u32"), 4000000000u);
  EXPECT_EQ(g.find("test.i32")->i, -2000000000);
  EXPECT_EQ(g.get_u64("test.u64"), (1ull << 63) + 5);
  EXPECT_EQ(g.find("test.i64")->i, -(1ll << 62));
  EXPECT_EQ(g.get_f64("test.f32"), 0.25);
  EXPECT_EQ(g.get_f64("test.f32_decimal"), 1e-6);  // not 9.99999997e-7, the float's exact value
  EXPECT_EQ(g.get_f64("test.f64"), 1e-300);
  EXPECT_EQ(g.find("test.bool")->u, 1u);
  EXPECT_EQ(g.get_string("test.string"), "h\xc3\xa9llo");

  const auto& strings = g.get_array("test.strings");
  ASSERT_EQ(strings.size(), 3u);
  EXPECT_EQ(g.find("test.strings")->elem_type, GgufValueType::gguf_string);
  EXPECT_EQ(strings[0].s, "a");
  EXPECT_EQ(strings[1].s, "");
  EXPECT_EQ(strings[2].s, "ccc");
  const auto& ints = g.get_array("test.i32s");
  ASSERT_EQ(ints.size(), 3u);
  EXPECT_EQ(ints[1].i, -2);
  const auto& nested = g.get_array("test.nested");
  ASSERT_EQ(nested.size(), 2u);
  ASSERT_EQ(nested[0].items.size(), 2u);
  EXPECT_EQ(nested[0].items[1].i + static_cast<std::int64_t>(nested[0].items[1].u), 2);
  EXPECT_EQ(nested[1].items.size(), 1u);
}

TEST(Gguf, TypedLookupsNameTheKey) {
  const GgufFile g = GgufFile::open(fixtures_dir() + "/meta.gguf");
  EXPECT_TRUE(contains(error_of([&] { g.get_u64("test.absent"); }), "metadata 'test.absent' is missing"));
  EXPECT_TRUE(contains(error_of([&] { g.get_u64("test.i8"); }), "'test.i8' must be a non-negative integer"));
  EXPECT_TRUE(contains(error_of([&] { g.get_string("test.u8"); }), "'test.u8' must be a string, not u8"));
  EXPECT_TRUE(contains(error_of([&] { g.get_array("test.f32"); }), "must be an array, not f32"));
}

TEST(Gguf, PlacesTensorsAtTheCustomAlignment) {
  const GgufFile g = GgufFile::open(fixtures_dir() + "/meta.gguf");
  EXPECT_EQ(g.alignment(), 64u);
  EXPECT_EQ(g.data_offset() % 64, 0u);
  const GgufTensorInfo* a = g.find_tensor("a");
  const GgufTensorInfo* b = g.find_tensor("b");
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(g.find_tensor("c"), nullptr);
  EXPECT_EQ(a->shape(), Shape({2, 3}));
  EXPECT_EQ(a->dims, (std::vector<std::uint64_t>{3, 2}));
  EXPECT_EQ(b->type, static_cast<std::uint32_t>(GgmlType::ggml_f16));
  EXPECT_EQ(b->offset % 64, 0u);
  EXPECT_EQ(dequantized(g, *a), (std::vector<float>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(dequantized(g, *b), (std::vector<float>{0, 1, 2, 3}));
}

std::vector<std::uint8_t> file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

TEST(Gguf, ReadsVersion2) {
  std::vector<std::uint8_t> bytes = file_bytes(fixtures_dir() + "/meta.gguf");
  ASSERT_GT(bytes.size(), 8u);
  bytes[4] = 2;  // v2 and v3 differ only in v3 allowing big-endian files, which are refused
  const GgufFile g = GgufFile::parse(bytes.data(), bytes.size(), "v2");
  EXPECT_EQ(g.version(), 2u);
  EXPECT_EQ(g.tensors().size(), 2u);
}

// The writer's files read back through the reader: every value type, nested arrays, tensors
// of several types at aligned offsets, a custom alignment, and the same bytes whichever
// order (or process) the tensors are written in.
TEST(GgufWriter, WritesWhatTheReaderReads) {
  const std::string dir = std::filesystem::temp_directory_path() / ("anvil_gguf_writer_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  GgufValue nested;
  nested.type = GgufValueType::gguf_array;
  nested.elem_type = GgufValueType::gguf_array;
  nested.items = {gguf_value_i32s({1, -2}), gguf_value_i32s({})};
  const std::vector<GgufKv> meta = {
      {"general.architecture", gguf_value_string("llama")},
      {"general.alignment", gguf_value_u32(64)},
      {"a.f32", gguf_value_f32(0.5f)},
      {"a.bool", gguf_value_bool(true)},
      {"a.strings", gguf_value_strings({"x", "", "yz"})},
      {"a.floats", gguf_value_f32s({1.5f, -2.0f})},
      {"a.nested", nested},
  };
  const auto q8 = static_cast<std::uint32_t>(GgmlType::ggml_q8_0);
  const auto f32 = static_cast<std::uint32_t>(GgmlType::ggml_f32);
  const GgufLayout layout(meta, {{"t.f32", {3}, f32}, {"t.q8", {64, 2}, q8}, {"t.big", {5, 7}, f32}}, 64);
  EXPECT_EQ(layout.tensor_bytes(1), 2u * 2 * 34);  // two rows of two Q8_0 blocks
  EXPECT_EQ(layout.row_bytes(1), 68u);
  std::vector<std::uint8_t> q8_bytes(layout.tensor_bytes(1));
  for (std::size_t i = 0; i < q8_bytes.size(); ++i) q8_bytes[i] = static_cast<std::uint8_t>(i % 7);
  q8_bytes[1] = q8_bytes[35] = q8_bytes[69] = q8_bytes[103] = 0x3c;  // the f16 scales: finite
  const std::vector<float> small = {1, 2, 3};
  std::vector<float> big(35);
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<float>(i) * 0.25f;

  const std::string forward = dir + "/forward.gguf", backward = dir + "/backward.gguf";
  GgufFileWriter::create(forward, layout);
  {
    GgufFileWriter w(forward, layout);
    w.write(0, 0, small.data(), 12);
    w.write(1, 0, q8_bytes.data(), 68);  // a row at a time
    w.write(1, 68, q8_bytes.data() + 68, 68);
    w.write(2, 0, big.data(), 140);
    w.sync();
  }
  GgufFileWriter::create(backward, layout);
  for (int i = 2; i >= 0; --i) {  // as other processes would: each its own tensor
    GgufFileWriter w(backward, layout);
    if (i == 2) w.write(2, 0, big.data(), 140);
    if (i == 1) w.write(1, 0, q8_bytes.data(), q8_bytes.size());
    if (i == 0) w.write(0, 0, small.data(), 12);
  }
  std::ifstream a(forward, std::ios::binary), b(backward, std::ios::binary);
  const std::string bytes_a((std::istreambuf_iterator<char>(a)), {}), bytes_b((std::istreambuf_iterator<char>(b)), {});
  EXPECT_EQ(bytes_a, bytes_b);
  EXPECT_EQ(bytes_a.size(), layout.file_size());
  EXPECT_EQ(layout.file_size() % 64, 0u);

  const GgufFile g = GgufFile::open(forward);
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(g.alignment(), 64u);
  EXPECT_EQ(g.get_string("general.architecture"), "llama");
  EXPECT_EQ(g.get_f64("a.f32"), 0.5);
  EXPECT_EQ(g.find("a.bool")->u, 1u);
  const auto& strings = g.get_array("a.strings");
  ASSERT_EQ(strings.size(), 3u);
  EXPECT_EQ(strings[2].s, "yz");
  EXPECT_EQ(g.get_array("a.floats")[1].f, -2.0);
  const auto& nest = g.get_array("a.nested");
  ASSERT_EQ(nest.size(), 2u);
  EXPECT_EQ(nest[0].items[1].i, -2);
  EXPECT_TRUE(nest[1].items.empty());
  ASSERT_EQ(g.tensors().size(), 3u);
  EXPECT_EQ(g.tensors()[2].shape(), (Shape{7, 5}));
  EXPECT_EQ(std::memcmp(g.data(g.tensors()[1]), q8_bytes.data(), q8_bytes.size()), 0);
  EXPECT_EQ(dequantized(g, g.tensors()[2]), big);
  EXPECT_EQ(dequantized(g, g.tensors()[0]), small);
  std::filesystem::remove_all(dir);
}

// Layout mistakes are the caller's (internal errors), caught before a byte is written.
TEST(GgufWriter, RefusesLayoutsTheReaderWouldRefuse) {
  const auto q8 = static_cast<std::uint32_t>(GgmlType::ggml_q8_0);
  EXPECT_THROW(GgufLayout({}, {{"t", {48}, q8}}), Error);  // a row of 1.5 blocks
  EXPECT_THROW(GgufLayout({}, {{"t", {32}, q8}, {"t", {32}, q8}}), Error);
  EXPECT_THROW(GgufLayout({{"k", gguf_value_u32(1)}, {"k", gguf_value_u32(2)}}, {}), Error);
  EXPECT_THROW(GgufLayout({}, {}, 64), Error);  // no general.alignment
  EXPECT_THROW(GgufLayout({}, {{"t", {32}, 99}}), Error);
}


TEST(Gguf, MalformedFilesAreUserErrorsNamingTheRule) {
  const std::string dir = fixtures_dir() + "/malformed";
  std::ifstream in(dir + "/expected.json");
  ASSERT_TRUE(in.good()) << dir;
  const nlohmann::json expected = nlohmann::json::parse(in);
  ASSERT_GE(expected.size(), 25u);
  for (const auto& [file, fragment] : expected.items()) {
    SCOPED_TRACE(file);
    const std::string path = dir + "/" + file;
    const Error e = error_of([&] { GgufFile::open(path); });
    EXPECT_EQ(e.kind(), ErrorKind::user);
    EXPECT_TRUE(contains(e, path)) << e.what();
    EXPECT_TRUE(contains(e, fragment.get<std::string>())) << e.what();
  }
}

}  // namespace
}  // namespace anvil::io
