// anvil's GGUF quantization of an f32 GGUF, for test_gguf_quant_reference.py to set
// beside llama.cpp's llama_model_quantize on the same file.
//
//   gguf_quant_tool IN.gguf TYPE OUT_PREFIX [--time]
//
// TYPE is a CLI name (q4_k_m, q8_0, ...). Writes OUT_PREFIX.bin (every tensor's bytes in
// the planned type, concatenated in file order) and OUT_PREFIX.json ([{name, type, dims,
// offset, nbytes}]). With --time it prints {"seconds": s, "f32_bytes": n} of the
// quantization alone (for tests/bench/bench_gguf_quant.py).
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/gguf.h"
#include "io/gguf_quant.h"

using namespace anvil;
using namespace anvil::io;

namespace {

std::int64_t meta_int(const GgufFile& f, const std::string& key, std::int64_t fallback) {
  return f.find(key) ? static_cast<std::int64_t>(f.get_u64(key)) : fallback;
}

int run(int argc, char** argv) {
  ANVIL_CHECK_INPUT(argc == 4 || (argc == 5 && std::strcmp(argv[4], "--time") == 0),
                    "usage: gguf_quant_tool IN.gguf TYPE OUT_PREFIX [--time]");
  const GgufFile in = GgufFile::open(argv[1]);
  const GgufFileType ft = gguf_file_type_from_name(argv[2]);
  const std::string prefix = argv[3];

  GgufPlanModel model;
  model.arch = in.get_string("general.architecture");
  model.n_layer = meta_int(in, model.arch + ".block_count", 0);
  model.n_head = meta_int(in, model.arch + ".attention.head_count", 0);
  model.n_head_kv = meta_int(in, model.arch + ".attention.head_count_kv", model.n_head);
  model.n_expert = meta_int(in, model.arch + ".expert_count", 0);
  std::vector<GgufPlanTensor> plan_in;
  for (const auto& t : in.tensors()) {
    ANVIL_CHECK_INPUT(t.type == static_cast<std::uint32_t>(GgmlType::ggml_f32), argv[1], ": tensor '", t.name,
                      "' is not F32");
    plan_in.push_back({t.name, std::vector<std::int64_t>(t.dims.begin(), t.dims.end())});
  }
  const std::vector<std::uint32_t> types = gguf_quant_plan(ft, plan_in, model);

  // The timing covers gguf_quantize_rows alone: inputs copied out of the mapping and
  // outputs allocated (both pages touched) before it starts.
  std::vector<std::vector<float>> src(types.size());
  std::vector<std::vector<std::uint8_t>> out(types.size());
  std::uint64_t f32_bytes = 0;
  for (std::size_t i = 0; i < types.size(); ++i) {
    const GgufTensorInfo& t = in.tensors()[i];
    const auto* x = reinterpret_cast<const float*>(in.data(t));
    src[i].assign(x, x + t.numel);
    out[i].resize(t.numel / t.dims[0] * gguf_row_bytes(types[i], static_cast<std::int64_t>(t.dims[0])));
    f32_bytes += t.nbytes;
  }
  const auto t0 = std::chrono::steady_clock::now();
  for (std::size_t i = 0; i < types.size(); ++i) {
    const auto row_len = static_cast<std::int64_t>(in.tensors()[i].dims[0]);
    gguf_quantize_rows(types[i], src[i].data(), static_cast<std::int64_t>(src[i].size()) / row_len, row_len,
                       out[i].data());
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  std::ofstream bin(prefix + ".bin", std::ios::binary);
  nlohmann::json index = nlohmann::json::array();
  std::uint64_t offset = 0;
  for (std::size_t i = 0; i < types.size(); ++i) {
    const GgufTensorInfo& t = in.tensors()[i];
    bin.write(reinterpret_cast<const char*>(out[i].data()), static_cast<std::streamsize>(out[i].size()));
    index.push_back({{"name", t.name}, {"type", types[i]}, {"dims", t.dims}, {"offset", offset},
                     {"nbytes", out[i].size()}});
    offset += out[i].size();
  }
  ANVIL_CHECK(bin.good(), "writing ", prefix, ".bin");
  std::ofstream(prefix + ".json") << index.dump() << "\n";
  if (argc == 5) std::printf("{\"seconds\": %.6f, \"f32_bytes\": %llu}\n", seconds, static_cast<unsigned long long>(f32_bytes));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", error_message(e).c_str());
    return error_exit_code(e);
  }
}
