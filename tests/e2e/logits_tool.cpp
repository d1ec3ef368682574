// Test helper for the reference tests (not part of anvil): anvil's own logits for a prompt,
// so they can be compared with transformers' on the same model.
//   logits_tool MODEL_DIR OUT_PREFIX ID...
// writes OUT_PREFIX.forward.f32, the (T, V) logits of the training forward
// (LlamaModel::logits), and OUT_PREFIX.generate.f32, those of generation's KV-cache path
// (Generator::step), both raw little-endian f32, row-major.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/error.h"
#include "model/llama.h"
#include "model/llama_generate.h"
#include "model/llama_weights.h"

using namespace anvil;

namespace {

void write_floats(const std::string& path, const std::vector<float>& v) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(float)));
  ANVIL_CHECK_INPUT(out.good(), path, ": cannot write");
}

int run(int argc, char** argv) {
  ANVIL_CHECK_INPUT(argc >= 4, "usage: logits_tool MODEL_DIR OUT_PREFIX ID...");
  const std::string dir = argv[1], prefix = argv[2];
  std::vector<std::int32_t> ids, positions;
  for (int i = 3; i < argc; ++i) {
    ids.push_back(static_cast<std::int32_t>(std::stol(argv[i])));
    positions.push_back(static_cast<std::int32_t>(i - 3));
  }
  const auto T = static_cast<std::int64_t>(ids.size());
  const model::ModelSpec spec = model::model_spec_from_dir(dir);
  const auto V = static_cast<std::size_t>(spec.vocab_size);
  auto be = backend::make_cpu_backend();
  model::BaseWeights base = model::base_weights_load(spec, dir, DType::dtype_f32, model::tp_shard(spec, 0, 1));

  std::vector<float> generated(static_cast<std::size_t>(T) * V);  // (T, V)
  {
    model::Generator gen(spec, base, nullptr, nullptr, *be, T);
    for (std::int64_t t = 0; t < T; ++t) {
      const float* row = gen.step(ids[static_cast<std::size_t>(t)]);
      std::copy(row, row + V, generated.begin() + static_cast<std::ptrdiff_t>(t * V));
    }
  }
  write_floats(prefix + ".generate.f32", generated);

  // The training model always carries an adapter: one of rank 1 on q_proj, all zeros, adds
  // exactly nothing.
  model::LoraSpec lora;
  lora.rank = 1;
  lora.alpha = 1;
  lora.targets[static_cast<int>(model::Proj::proj_q)] = true;
  model::LlamaModel m(spec, std::move(base), model::LoraLayout(spec, lora), model::ModelLimits{1, T, false}, *be, 0);
  std::fill(m.lora_params(), m.lora_params() + m.lora_size(), 0.0f);
  model::TokenBatch batch;
  batch.batch = 1;
  batch.seq = T;
  batch.ids = ids.data();
  batch.positions = positions.data();
  std::vector<float> forward(static_cast<std::size_t>(T) * V);  // (T, V)
  m.logits(batch, forward.data());
  write_floats(prefix + ".forward.f32", forward);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "logits_tool: %s\n", e.what());
    return 2;
  }
}
