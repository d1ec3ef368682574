// anvil import: a llama.cpp GGUF file as a Hugging Face model directory that the rest of
// anvil (and transformers) reads.
#include <cstdio>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "core/error.h"
#include "export/shard_writer.h"
#include "import/gguf_import.h"

namespace anvil::cli {

namespace {

struct ImportArgs {
  std::string gguf;
  std::string out;
  std::string dtype = "f32";
  std::string max_shard_size = "5GB";
  bool force = false;
};

void run_import(const ImportArgs& a) {
  importing::ImportOptions opt;
  const auto dtype = dtype_from_short_name(a.dtype);
  ANVIL_CHECK_INPUT(dtype && (*dtype == DType::dtype_f32 || *dtype == DType::dtype_bf16 || *dtype == DType::dtype_f16),
                    "import: --dtype must be f32, bf16 or f16, got '", a.dtype, "'");
  opt.dtype = *dtype;
  opt.force = a.force;
  opt.max_shard_bytes = exporting::shard_size_parse(a.max_shard_size, "--max-shard-size");
  const model::ModelSpec spec = importing::gguf_import(a.gguf, a.out, opt);
  std::printf("imported %s (%s, %lld layers, hidden %lld, vocab %lld%s) into %s as %s\n", a.gguf.c_str(),
              spec.model_type.c_str(), (long long)spec.num_hidden_layers, (long long)spec.hidden_size,
              (long long)spec.vocab_size, spec.tie_word_embeddings ? ", tied embeddings" : "", a.out.c_str(),
              a.dtype.c_str());
}

}  // namespace

void register_import(CLI::App& app) {
  auto* cmd = app.add_subcommand("import", "Convert a GGUF file (llama.cpp) into an HF model directory");
  auto args = std::make_shared<ImportArgs>();
  cmd->add_option("gguf", args->gguf, "the .gguf file (llama or qwen2 architecture)")->required();
  cmd->add_option("--out", args->out, "output model directory")->required();
  cmd->add_option("--dtype", args->dtype, "weight dtype: f32, bf16 or f16")->default_val("f32");
  cmd->add_option("--max-shard-size", args->max_shard_size, "largest safetensors shard (e.g. 5GB)")->default_val("5GB");
  cmd->add_flag("--force", args->force, "replace an existing model directory");
  cmd->callback([args] { run_import(*args); });
}

}  // namespace anvil::cli
