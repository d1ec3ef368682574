// gguf_quant_plan against llama.cpp's rules (llama-quant.cpp), spelled out per model:
// which layers get more bits, where the k-quants fall back, what stays F32.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/gguf.h"
#include "io/gguf_quant.h"

namespace anvil::io {
namespace {

constexpr auto F32 = GgmlType::ggml_f32, F16 = GgmlType::ggml_f16, BF16 = GgmlType::ggml_bf16,
               Q8_0 = GgmlType::ggml_q8_0, Q4_0 = GgmlType::ggml_q4_0, Q5_0 = GgmlType::ggml_q5_0,
               Q5_1 = GgmlType::ggml_q5_1, Q4_K = GgmlType::ggml_q4_k, Q5_K = GgmlType::ggml_q5_k,
               Q6_K = GgmlType::ggml_q6_k;

struct Shape {
  int layers, hidden, ffn, vocab, heads, kv_heads, experts;
  bool tied;
};

// The tensors of a llama-architecture GGUF in convert_hf_to_gguf's order.
std::vector<GgufPlanTensor> llama_tensors(const Shape& s) {
  const std::int64_t h = s.hidden, kv = static_cast<std::int64_t>(s.hidden) / s.heads * s.kv_heads;
  std::vector<GgufPlanTensor> t = {{"token_embd.weight", {h, s.vocab}}};
  for (int i = 0; i < s.layers; ++i) {
    const std::string p = "blk." + std::to_string(i) + ".";
    t.push_back({p + "attn_norm.weight", {h}});
    t.push_back({p + "attn_q.weight", {h, h}});
    t.push_back({p + "attn_k.weight", {h, kv}});
    t.push_back({p + "attn_v.weight", {h, kv}});
    t.push_back({p + "attn_output.weight", {h, h}});
    t.push_back({p + "ffn_norm.weight", {h}});
    if (s.experts > 0) {
      t.push_back({p + "ffn_gate_inp.weight", {h, s.experts}});
      t.push_back({p + "ffn_gate_exps.weight", {h, s.ffn, s.experts}});
      t.push_back({p + "ffn_up_exps.weight", {h, s.ffn, s.experts}});
      t.push_back({p + "ffn_down_exps.weight", {s.ffn, h, s.experts}});
    } else {
      t.push_back({p + "ffn_gate.weight", {h, s.ffn}});
      t.push_back({p + "ffn_up.weight", {h, s.ffn}});
      t.push_back({p + "ffn_down.weight", {s.ffn, h}});
    }
  }
  t.push_back({"output_norm.weight", {h}});
  if (!s.tied) t.push_back({"output.weight", {h, s.vocab}});
  return t;
}

GgufPlanModel model_of(const Shape& s, const char* arch = "llama") {
  return {arch, s.layers, s.heads, s.kv_heads, s.experts};
}

// Name -> planned type.
std::map<std::string, GgmlType> plan(GgufFileType ft, const std::vector<GgufPlanTensor>& t, const GgufPlanModel& m) {
  const auto types = gguf_quant_plan(ft, t, m);
  EXPECT_EQ(types.size(), t.size());
  std::map<std::string, GgmlType> out;
  for (std::size_t i = 0; i < t.size(); ++i) out[t[i].name] = static_cast<GgmlType>(types[i]);
  return out;
}

std::string blk(int i, const char* name) { return "blk." + std::to_string(i) + "." + name; }

// use_more_bits(i, n) of llama.cpp, written out: layers [0, n/8), [7n/8, n), and every
// third from n/8 + 2.
const std::set<int> kMoreBits30 = {0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29};       // n = 30
const std::set<int> kMoreBits32 = {0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31};  // n = 32

// SmolLM2-135M: hidden 576 is not a multiple of 256, so every k-quant on a 576-long row
// falls back (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0); ffn_down's rows are 1536 long
// and keep theirs. Tied embeddings: token_embd is quantized as the output (Q8_0, since
// 576 is not a multiple of the k-quant block).
const Shape kSmol = {30, 576, 1536, 49152, 9, 3, 0, true};

TEST(GgufQuantPlan, SmolLM2TiedEmbeddingsAndFallbacks) {
  const auto tensors = llama_tensors(kSmol);
  const auto model = model_of(kSmol);
  struct Expect {
    GgufFileType ft;
    GgmlType rest, v_more, v_less, down_more, down_less;
  };
  for (const Expect e : {
           // rest: q/k/o/gate/up; v_more / down_more: the layers of use_more_bits
           Expect{GgufFileType::gguf_file_q4_k_m, Q5_0, Q8_0, Q5_0, Q6_K, Q4_K},
           Expect{GgufFileType::gguf_file_q5_k_m, Q5_1, Q8_0, Q5_1, Q6_K, Q5_K},
           Expect{GgufFileType::gguf_file_q6_k, Q8_0, Q8_0, Q8_0, Q6_K, Q6_K},
           Expect{GgufFileType::gguf_file_q8_0, Q8_0, Q8_0, Q8_0, Q8_0, Q8_0},
           Expect{GgufFileType::gguf_file_q4_0, Q4_0, Q4_0, Q4_0, Q4_0, Q4_0},
       }) {
    const auto p = plan(e.ft, tensors, model);
    const char* ft = gguf_file_type_name(e.ft);
    EXPECT_EQ(p.at("token_embd.weight"), Q8_0) << ft;
    EXPECT_EQ(p.at("output_norm.weight"), F32) << ft;
    for (int i = 0; i < kSmol.layers; ++i) {
      const bool more = kMoreBits30.count(i) > 0;
      EXPECT_EQ(p.at(blk(i, "attn_norm.weight")), F32) << ft << i;
      EXPECT_EQ(p.at(blk(i, "ffn_norm.weight")), F32) << ft << i;
      for (const char* n : {"attn_q.weight", "attn_k.weight", "attn_output.weight", "ffn_gate.weight", "ffn_up.weight"})
        EXPECT_EQ(p.at(blk(i, n)), e.rest) << ft << " " << blk(i, n);
      EXPECT_EQ(p.at(blk(i, "attn_v.weight")), more ? e.v_more : e.v_less) << ft << i;
      EXPECT_EQ(p.at(blk(i, "ffn_down.weight")), more ? e.down_more : e.down_less) << ft << i;
    }
  }
  // q4_k (Q4_K_S): attn_v of the first 4 layers and ffn_down of the first n/8 = 3 get Q5_K.
  const auto p = plan(GgufFileType::gguf_file_q4_k_s, tensors, model);
  for (int i = 0; i < kSmol.layers; ++i) {
    EXPECT_EQ(p.at(blk(i, "attn_v.weight")), i < 4 ? Q5_1 : Q5_0) << i;  // Q5_K / Q4_K, fallen back
    EXPECT_EQ(p.at(blk(i, "ffn_down.weight")), i < 3 ? Q5_K : Q4_K) << i;
    EXPECT_EQ(p.at(blk(i, "attn_q.weight")), Q5_0) << i;
  }
  EXPECT_EQ(p.at("token_embd.weight"), Q8_0);
}

// Llama-3-8B: every row is a multiple of 256; untied, so output.weight gets Q6_K and
// token_embd the file type's own type.
const Shape kLlama8B = {32, 4096, 14336, 128256, 32, 8, 0, false};

TEST(GgufQuantPlan, Llama3_8BMixes) {
  const auto tensors = llama_tensors(kLlama8B);
  const auto model = model_of(kLlama8B);
  struct Expect {
    GgufFileType ft;
    GgmlType rest, v_more, v_less, down_more, down_less, output;
  };
  for (const Expect e : {
           Expect{GgufFileType::gguf_file_q4_k_m, Q4_K, Q6_K, Q4_K, Q6_K, Q4_K, Q6_K},
           Expect{GgufFileType::gguf_file_q5_k_m, Q5_K, Q6_K, Q5_K, Q6_K, Q5_K, Q6_K},
           Expect{GgufFileType::gguf_file_q5_k_s, Q5_K, Q5_K, Q5_K, Q5_K, Q5_K, Q6_K},
           Expect{GgufFileType::gguf_file_q6_k, Q6_K, Q6_K, Q6_K, Q6_K, Q6_K, Q6_K},
           Expect{GgufFileType::gguf_file_q8_0, Q8_0, Q8_0, Q8_0, Q8_0, Q8_0, Q8_0},
           Expect{GgufFileType::gguf_file_q5_1, Q5_1, Q5_1, Q5_1, Q5_1, Q5_1, Q6_K},
       }) {
    const auto p = plan(e.ft, tensors, model);
    const char* ft = gguf_file_type_name(e.ft);
    EXPECT_EQ(p.at("output.weight"), e.output) << ft;
    EXPECT_EQ(p.at("token_embd.weight"), e.rest) << ft;
    for (int i = 0; i < kLlama8B.layers; ++i) {
      const bool more = kMoreBits32.count(i) > 0;
      for (const char* n : {"attn_q.weight", "attn_k.weight", "attn_output.weight", "ffn_gate.weight", "ffn_up.weight"})
        EXPECT_EQ(p.at(blk(i, n)), e.rest) << ft << " " << blk(i, n);
      EXPECT_EQ(p.at(blk(i, "attn_v.weight")), more ? e.v_more : e.v_less) << ft << i;
      EXPECT_EQ(p.at(blk(i, "ffn_down.weight")), more ? e.down_more : e.down_less) << ft << i;
      EXPECT_EQ(p.at(blk(i, "attn_norm.weight")), F32);
    }
  }
  const auto p = plan(GgufFileType::gguf_file_q4_k_s, tensors, model);
  for (int i = 0; i < kLlama8B.layers; ++i) {
    EXPECT_EQ(p.at(blk(i, "attn_v.weight")), i < 4 ? Q5_K : Q4_K) << i;
    EXPECT_EQ(p.at(blk(i, "ffn_down.weight")), i < 4 ? Q5_K : Q4_K) << i;
  }
  // The float file types touch only what quantization would: norms stay F32.
  for (auto [ft, type] : {std::pair{GgufFileType::gguf_file_f16, F16}, std::pair{GgufFileType::gguf_file_bf16, BF16},
                          std::pair{GgufFileType::gguf_file_all_f32, F32}}) {
    const auto pf = plan(ft, tensors, model);
    EXPECT_EQ(pf.at("output.weight"), type);
    EXPECT_EQ(pf.at("token_embd.weight"), type);
    EXPECT_EQ(pf.at(blk(7, "ffn_down.weight")), type);
    EXPECT_EQ(pf.at(blk(7, "ffn_norm.weight")), F32);
  }
}

// llama.cpp numbers attn_v / ffn_down in its own order (layer, then name), not the file's.
TEST(GgufQuantPlan, InputOrderDoesNotMatter) {
  auto tensors = llama_tensors(kSmol);
  const auto model = model_of(kSmol);
  const auto in_order = plan(GgufFileType::gguf_file_q4_k_m, tensors, model);
  std::mt19937 gen(5);
  std::shuffle(tensors.begin(), tensors.end(), gen);
  EXPECT_EQ(plan(GgufFileType::gguf_file_q4_k_m, tensors, model), in_order);
}

// Llama 2 70B (80 layers, grouped-query attention) and qwen2 at 80 layers: attn_v gets
// Q5_K where the mix says Q4_K. Mixtral (8 experts): attn_v and attn_k Q8_0, attn_output
// Q5_K for q4_k_*, ffn_down_exps by the layer in its name, the router stays F32.
TEST(GgufQuantPlan, SeventyBAndEightExperts) {
  const Shape s70 = {80, 8192, 28672, 32000, 64, 8, 0, false};
  const auto t70 = llama_tensors(s70);
  for (const char* arch : {"llama", "qwen2"}) {
    const auto p = plan(GgufFileType::gguf_file_q4_k_m, t70, model_of(s70, arch));
    EXPECT_EQ(p.at(blk(40, "attn_v.weight")), Q5_K) << arch;  // (40 - 80/8) % 3 == 0: not more bits
    EXPECT_EQ(p.at(blk(42, "attn_v.weight")), Q6_K) << arch;  // (42 - 10) % 3 == 2
    EXPECT_EQ(p.at(blk(40, "attn_q.weight")), Q4_K) << arch;
  }
  // Multi-head attention at 80 layers is llama's 65B class: no bump.
  const Shape s65 = {80, 8192, 22016, 32000, 64, 64, 0, false};
  EXPECT_EQ(plan(GgufFileType::gguf_file_q4_k_m, llama_tensors(s65), model_of(s65)).at(blk(40, "attn_v.weight")), Q4_K);

  const Shape mixtral = {32, 4096, 14336, 32000, 32, 8, 8, false};
  const auto p = plan(GgufFileType::gguf_file_q4_k_m, llama_tensors(mixtral), model_of(mixtral));
  for (int i = 0; i < mixtral.layers; ++i) {
    EXPECT_EQ(p.at(blk(i, "attn_v.weight")), Q8_0) << i;
    EXPECT_EQ(p.at(blk(i, "attn_k.weight")), Q8_0) << i;
    EXPECT_EQ(p.at(blk(i, "attn_output.weight")), Q5_K) << i;
    EXPECT_EQ(p.at(blk(i, "ffn_gate_inp.weight")), F32) << i;
    EXPECT_EQ(p.at(blk(i, "ffn_gate_exps.weight")), Q4_K) << i;
    EXPECT_EQ(p.at(blk(i, "ffn_down_exps.weight")), kMoreBits32.count(i) ? Q6_K : Q4_K) << i;
  }
}

TEST(GgufQuantPlan, RowsNotAMultipleOf32BecomeF16) {
  const std::vector<GgufPlanTensor> t = {{"blk.0.attn_q.weight", {100, 64}}, {"blk.0.attn_v.weight", {100, 64}},
                                         {"blk.0.ffn_down.weight", {100, 64}}, {"output.weight", {100, 64}}};
  const GgufPlanModel m{"llama", 1, 1, 1, 0};
  for (auto ft : {GgufFileType::gguf_file_q4_k_m, GgufFileType::gguf_file_q8_0, GgufFileType::gguf_file_q4_0}) {
    const auto p = plan(ft, t, m);
    EXPECT_EQ(p.at("blk.0.attn_q.weight"), F16) << gguf_file_type_name(ft);
    EXPECT_EQ(p.at("blk.0.ffn_down.weight"), F16) << gguf_file_type_name(ft);
    // output: the row is not a multiple of the block, so Q8_0, which does not fit either
    EXPECT_EQ(p.at("output.weight"), F16) << gguf_file_type_name(ft);
  }
  EXPECT_THROW(gguf_quant_plan(GgufFileType::gguf_file_q4_k_m, t, GgufPlanModel{"falcon", 1, 1, 1, 0}), Error);
}

}  // namespace
}  // namespace anvil::io
