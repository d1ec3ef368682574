// The GGUF reader and dequantizers against llama.cpp's Python package `gguf`: fixtures
// written by scripts/fixtures/make_gguf.py (run by the CTest fixture `gguf_fixtures`)
// with gguf's own writer and quantizers, and gguf's dequantized values as the reference.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "error_test_util.h"
#include "io/gguf.h"
#include "io/gguf_dequant.h"
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
