// Tensor-parallel loading of the base weights: every rank's views hold exactly its part
// of the single-rank weights, for f32 and bf16 files and storage. The expected parts are
// restated here in closed form from the Megatron layout (../shared/DESIGN.md), not taken
// from tp_shard.cpp, so that a wrong slice there shows up too.
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>

#include "llama_test_util.h"
#include "model/llama_weights.h"
#include "quant/quant_state.h"

namespace anvil {
namespace {

using model::BaseWeights;
using model::ModelSpec;
using model::Proj;

// Rows [row_first, + rows) and columns [col_first, + cols) of a (rows, cols) tensor; a
// 1-D tensor of n elements is (n, 1).
struct Block {
  std::int64_t row_first, rows, col_first, cols;
};

Block block_whole(const TensorView& v) { return {0, v.shape[0], 0, v.shape.rank() == 2 ? v.shape[1] : 1}; }
Block block_rows(const TensorView& v, std::int64_t first, std::int64_t n) {
  Block b = block_whole(v);
  b.row_first = first;
  b.rows = n;
  return b;
}
Block block_cols(const TensorView& v, std::int64_t first, std::int64_t n) {
  Block b = block_whole(v);
  b.col_first = first;
  b.cols = n;
  return b;
}

// `local` must be exactly block b of `full`: dtype, shape and every byte.
void expect_block(const TensorView& full, const TensorView& local, const Block& b, const std::string& what) {
  ASSERT_EQ(local.dtype, full.dtype) << what;
  Shape want = full.shape;
  want[0] = b.rows;
  if (want.rank() == 2) want[1] = b.cols;
  ASSERT_EQ(local.shape, want) << what << ": got " << local.shape.str() << ", want " << want.str();
  ASSERT_NE(local.data, nullptr) << what;
  const std::int64_t full_cols = block_whole(full).cols;
  const std::size_t es = dtype_size(full.dtype);
  const auto* f = static_cast<const std::uint8_t*>(full.data);
  const auto* l = static_cast<const std::uint8_t*>(local.data);
  for (std::int64_t r = 0; r < b.rows; ++r) {
    const auto from = static_cast<std::size_t>((b.row_first + r) * full_cols + b.col_first) * es;
    const auto to = static_cast<std::size_t>(r * b.cols) * es;
    ASSERT_EQ(std::memcmp(f + from, l + to, static_cast<std::size_t>(b.cols) * es), 0) << what << " row " << r;
  }
}

// Rank r of tp: q/o by query heads, k/v by KV heads (each replicated on tp / Hkv ranks
// when tp > Hkv), gate/up/down by intermediate rows, embedding and head by vocabulary.
void expect_rank(const ModelSpec& s, const BaseWeights& full, const BaseWeights& local, std::int64_t tp,
                 std::int64_t r) {
  const std::string at = str_cat("tp ", tp, " rank ", r, ": ");
  const std::int64_t D = s.head_dim, H = s.num_attention_heads, K = s.num_key_value_heads;
  const std::int64_t q_rows = H / tp * D, f_rows = s.intermediate_size / tp, v_rows = s.vocab_size / tp;
  const std::int64_t kv_rows = tp <= K ? K / tp * D : D;
  const std::int64_t kv_first = tp <= K ? r * kv_rows : r / (tp / K) * D;
  expect_block(full.embed, local.embed, block_rows(full.embed, r * v_rows, v_rows), at + "embed");
  for (std::size_t l = 0; l < full.layers.size(); ++l) {
    const auto& fl = full.layers[l];
    const auto& ll = local.layers[l];
    const std::string p = str_cat(at, "layer ", l, " ");
    const auto& fp = fl.proj;
    const std::array<Block, model::kDenseProjCount> want = {
        block_rows(fp[0], r * q_rows, q_rows),  block_rows(fp[1], kv_first, kv_rows),
        block_rows(fp[2], kv_first, kv_rows),   block_cols(fp[3], r * q_rows, q_rows),
        block_rows(fp[4], r * f_rows, f_rows),  block_rows(fp[5], r * f_rows, f_rows),
        block_cols(fp[6], r * f_rows, f_rows)};
    for (int i = 0; i < model::kDenseProjCount; ++i) {
      const std::string name = p + model::proj_name(static_cast<Proj>(i));
      expect_block(fp[i], ll.proj[i], want[i], name);
      ASSERT_EQ(ll.bias[i].data == nullptr, fl.bias[i].data == nullptr) << name;
      if (!fl.bias[i].data) continue;
      // A row-parallel layer (columns split) computes all its outputs, so keeps its whole bias.
      const bool cols_split = want[i].cols < block_whole(fp[i]).cols;
      expect_block(fl.bias[i], ll.bias[i],
                   cols_split ? block_whole(fl.bias[i]) : block_rows(fl.bias[i], want[i].row_first, want[i].rows),
                   name + " bias");
    }
    expect_block(fl.attn_norm, ll.attn_norm, block_whole(fl.attn_norm), p + "attn_norm");
    expect_block(fl.mlp_norm, ll.mlp_norm, block_whole(fl.mlp_norm), p + "mlp_norm");
  }
  expect_block(full.final_norm, local.final_norm, block_whole(full.final_norm), at + "final_norm");
  expect_block(full.lm_head, local.lm_head, block_rows(full.lm_head, r * v_rows, v_rows), at + "lm_head");
  if (s.tie_word_embeddings) {
    EXPECT_EQ(local.lm_head.data, local.embed.data) << at << "tied head is the embedding";
  }
}

void expect_all_ranks(const ModelSpec& spec, const std::string& dir, DType storage) {
  const BaseWeights full = model::base_weights_load(spec, dir, storage, model::tp_shard(spec, 0, 1));
  ASSERT_EQ(full.layers.size(), static_cast<std::size_t>(spec.num_hidden_layers));
  for (const int tp : {2, 4}) {
    for (int r = 0; r < tp; ++r) {
      const BaseWeights local = model::base_weights_load(spec, dir, storage, model::tp_shard(spec, r, tp));
      EXPECT_EQ(local.shard.rank, r);
      EXPECT_EQ(local.shard.size, tp);
      expect_rank(spec, full, local, tp, r);
    }
  }
}

ModelSpec preset(const char* name) {
  auto s = model::model_preset(name);
  EXPECT_TRUE(s.has_value()) << name;
  return *s;
}

struct Case {
  const char* preset;
  DType file;
  DType storage;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.preset << ", " << dtype_short_name(c.file) << " file, " << dtype_short_name(c.storage) << " storage";
}

class WeightsTp : public ::testing::TestWithParam<Case> {};

TEST_P(WeightsTp, EveryRankHoldsExactlyItsSlice) {
  const Case c = GetParam();
  const ModelSpec spec = preset(c.preset);
  ASSERT_EQ(spec.num_attention_heads, 4);
  ASSERT_EQ(spec.num_key_value_heads, 2);  // so tp 4 replicates the KV heads
  test::TempDir dir(str_cat("weights_tp_", c.preset, "_", dtype_short_name(c.file), "_",
                            dtype_short_name(c.storage)));
  test::make_model_dir(dir, spec, 11, c.file);
  expect_all_ranks(spec, dir.str(), c.storage);
}

INSTANTIATE_TEST_SUITE_P(
    FilesAndStorage, WeightsTp,
    ::testing::Values(Case{"tiny", DType::dtype_f32, DType::dtype_f32},
                      Case{"tiny", DType::dtype_f32, DType::dtype_bf16},
                      Case{"tiny", DType::dtype_bf16, DType::dtype_f32},
                      Case{"tiny", DType::dtype_bf16, DType::dtype_bf16},
                      Case{"tiny-tied", DType::dtype_f32, DType::dtype_f32},
                      Case{"tiny-tied", DType::dtype_bf16, DType::dtype_bf16},
                      Case{"tiny-tied", DType::dtype_f16, DType::dtype_bf16}),
    [](const auto& info) {
      std::string n = str_cat(info.param.preset, "_", dtype_short_name(info.param.file), "_file_",
                              dtype_short_name(info.param.storage), "_storage");
      for (auto& ch : n)
        if (ch == '-') ch = '_';
      return n;
    });

// init-model writes zero biases, which would compare equal under any slicing: write
// random values for every tensor instead.
void write_random_model(const ModelSpec& spec, const std::string& dir) {
  const auto list = model::model_weight_list(spec);
  io::SafetensorsWriter w(dir + "/model.safetensors");
  for (const auto& t : list) w.declare(t.name, DType::dtype_f32, t.shape);
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (const auto& t : list) {
    std::vector<float> v(static_cast<std::size_t>(t.shape.numel()));
    for (auto& x : v) x = nd(rng);
    w.write_tensor(t.name, v.data(), v.size() * 4);
  }
  w.finish();
}

TEST(WeightsTpBias, ColumnParallelBiasesSplitWithTheirRows) {
  for (const char* type : {"llama", "qwen2"}) {
    ModelSpec spec = preset("tiny");
    spec.model_type = type;
    spec.attention_bias = true;  // llama: q/k/v/o; qwen2: q/k/v only
    spec.mlp_bias = spec.model_type == "llama";
    test::TempDir dir(str_cat("weights_tp_bias_", type));
    write_random_model(spec, dir.str());
    expect_all_ranks(spec, dir.str(), DType::dtype_f32);
  }
}

// [begin, end) of every mapping of files named `file_name`, from /proc/self/maps.
std::vector<std::pair<std::uintptr_t, std::uintptr_t>> mappings_of(const std::string& file_name) {
  std::vector<std::pair<std::uintptr_t, std::uintptr_t>> out;
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    const auto slash = line.rfind('/');
    if (slash == std::string::npos || line.compare(slash + 1, std::string::npos, file_name) != 0) continue;
    std::uintptr_t lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%zx-%zx", &lo, &hi) == 2) out.emplace_back(lo, hi);
  }
  return out;
}

bool in_mapping(const TensorView& v, const std::vector<std::pair<std::uintptr_t, std::uintptr_t>>& maps) {
  const auto p = reinterpret_cast<std::uintptr_t>(v.data);
  for (const auto& [lo, hi] : maps)
    if (p >= lo && p + v.nbytes() <= hi) return true;
  return false;
}

// Row slices in the file's dtype are views into the mapping: only the column slices of
// o and down (and tensors in another dtype) are copied.
TEST(WeightsTpMapping, RowSlicesInTheFileDtypeAreNotCopied) {
  const ModelSpec spec = preset("tiny");
  const std::int64_t L = spec.num_hidden_layers, C = spec.hidden_size, tp = 2;
  const std::int64_t col_slices =
      L * (C * spec.num_attention_heads / tp * spec.head_dim + C * spec.intermediate_size / tp);
  const std::int64_t norms = (2 * L + 1) * C;
  struct Expect {
    DType file, storage;
    std::int64_t converted;
  };
  for (const Expect& e : {Expect{DType::dtype_f32, DType::dtype_f32, col_slices * 4},
                          Expect{DType::dtype_bf16, DType::dtype_bf16, col_slices * 2 + norms * 4}}) {
    test::TempDir dir(str_cat("weights_tp_map_", dtype_short_name(e.file)));
    test::make_model_dir(dir, spec, 3, e.file);
    const BaseWeights w = model::base_weights_load(spec, dir.str(), e.storage, model::tp_shard(spec, 1, tp));
    EXPECT_EQ(w.converted_bytes, e.converted) << dtype_short_name(e.file);
    const auto maps = mappings_of("model.safetensors");
    ASSERT_FALSE(maps.empty());
    EXPECT_TRUE(in_mapping(w.embed, maps));
    EXPECT_TRUE(in_mapping(w.lm_head, maps));
    EXPECT_EQ(in_mapping(w.final_norm, maps), e.file == DType::dtype_f32);
    for (const auto& l : w.layers) {
      for (int i = 0; i < model::kDenseProjCount; ++i)
        EXPECT_EQ(in_mapping(l.proj[i], maps), !model::proj_row_parallel(static_cast<Proj>(i)))
            << model::proj_name(static_cast<Proj>(i));
    }
  }
  // Another storage dtype: everything is a copy.
  test::TempDir dir("weights_tp_map_convert");
  test::make_model_dir(dir, spec, 3, DType::dtype_f32);
  const BaseWeights w = model::base_weights_load(spec, dir.str(), DType::dtype_bf16, model::tp_shard(spec, 0, tp));
  EXPECT_FALSE(in_mapping(w.layers[0].proj[0], mappings_of("model.safetensors")));
  const std::int64_t local_params =
      model::model_parameter_count(model::tp_local_spec(spec, model::tp_shard(spec, 0, tp)));
  EXPECT_EQ(w.converted_bytes, (local_params - norms) * 2);  // norms stay f32 views
}

}  // namespace
}  // namespace anvil

namespace anvil {
namespace {

// The (rows, cols) values of a 2-D view: f32 as they are, quantized ones dequantized.
std::vector<float> values_of(const TensorView& v) {
  std::vector<float> out(static_cast<std::size_t>(v.numel()));
  if (v.quant) quant::quant_dequantize(v, 0, v.numel(), out.data());
  else std::memcpy(out.data(), v.data, out.size() * sizeof(float));
  return out;
}

// Quantized at load (model.quant): each rank's projection is its slice of the f32 weight,
// quantized on its own, i.e. the slice of quant_roundtrip_sliced over the whole weight;
// skipped (lm_head), norm and embedding views stay f32; the QuantStore's bytes are counted.
TEST(WeightsTpQuant, EveryRankQuantizesExactlyItsSlice) {
  const ModelSpec spec = preset("tiny");
  test::TempDir dir("weights_tp_quant");
  test::make_model_dir(dir, spec, 13, DType::dtype_bf16);
  const BaseWeights full = model::base_weights_load(spec, dir.str(), DType::dtype_f32, model::tp_shard(spec, 0, 1));
  for (const auto kind : {quant::QuantKind::quant_nf4, quant::QuantKind::quant_fp8}) {
    const quant::QuantPolicy policy{kind, quant::default_quant_skip()};
    const int tp = 2;
    for (int r = 0; r < tp; ++r) {
      const auto shard = model::tp_shard(spec, r, tp);
      const BaseWeights local = model::base_weights_load(spec, dir.str(), DType::dtype_f32, shard, policy);
      EXPECT_EQ(local.quant, kind);
      EXPECT_GT(local.quantized_bytes, 0);
      EXPECT_EQ(local.lm_head.dtype, DType::dtype_f32);
      EXPECT_EQ(local.embed.dtype, DType::dtype_f32);
      EXPECT_EQ(local.layers[0].attn_norm.dtype, DType::dtype_f32);
      for (int i = 0; i < model::kDenseProjCount; ++i) {
        const auto proj = static_cast<Proj>(i);
        const TensorView& fw = full.layers[1].proj[i];
        const TensorView& lw = local.layers[1].proj[i];
        ASSERT_NE(lw.quant, nullptr) << i;
        EXPECT_EQ(lw.dtype, kind == quant::QuantKind::quant_nf4 ? DType::dtype_nf4 : DType::dtype_fp8_e4m3);
        const bool by_cols = model::proj_row_parallel(proj);
        std::vector<float> want = values_of(fw);
        quant::quant_roundtrip_sliced(want.data(), fw.shape[0], fw.shape[1], kind, tp, by_cols);
        const std::vector<float> got = values_of(lw);
        const std::int64_t rows = lw.shape[0], cols = lw.shape[1];
        const std::int64_t r0 = by_cols ? 0 : r * rows, c0 = by_cols ? r * cols : 0;
        std::int64_t bad = 0;
        for (std::int64_t y = 0; y < rows; ++y)
          for (std::int64_t x = 0; x < cols; ++x)
            bad += got[y * cols + x] != want[(r0 + y) * fw.shape[1] + c0 + x];
        EXPECT_EQ(bad, 0) << quant::quant_kind_name(kind) << " rank " << r << " proj " << i;
      }
    }
  }
}

}  // namespace
}  // namespace anvil
