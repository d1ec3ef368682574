#include "train/checkpoint.h"

#include <csignal>

#include <algorithm>
#include <filesystem>
#include <regex>

#include "core/error.h"
#include "core/log.h"
#include "io/files.h"
#include "io/h5_store.h"
#include "model/checkpoint_layout.h"

namespace anvil::train {

namespace fs = std::filesystem;

namespace {

const char* const kGroups[3] = {"adapter", "adam_m", "adam_v"};

float* group_buffer(const AdapterBuffers& b, int g) { return g == 0 ? b.params : g == 1 ? b.adam_m : b.adam_v; }

std::string step_file(std::int64_t step) { return str_cat("step_", step, ".h5"); }

// The step of a "step_N.h5" name; nullopt for anything else (.partial files included).
std::optional<std::int64_t> step_of(const std::string& name) {
  static const std::regex re(R"(step_(\d+)\.h5)");
  std::smatch m;
  if (!std::regex_match(name, m, re)) return std::nullopt;
  return std::stoll(m[1].str());
}

// The LoRA, seed, sequence length and global batch of the saved config: what must match
// for the resumed run to be the same run.
void check_compatible(const CheckpointContext& ctx, const io::H5Store& h5) {
  const std::string& file = h5.path();
  ANVIL_CHECK_INPUT(h5.read_text("meta/base_model_hash") == ctx.base_hash, file,
                    ": written for another base model (", h5.read_text("meta/base_model_path"), ", dataset "
                    "meta/base_model_hash) than model.path (", ctx.base_path, ")");
  const model::LoraSpec saved = model::lora_spec_from_json(h5.read_text("meta/lora"), file + ": meta/lora");
  const model::LoraSpec& now = ctx.local->spec();
  ANVIL_CHECK_INPUT(saved.rank == now.rank && saved.alpha == now.alpha && saved.rslora == now.rslora &&
                        saved.targets == now.targets && saved.dropout == now.dropout,
                    file, ": its LoRA (dataset meta/lora: ", model::lora_spec_to_json(saved),
                    ") differs from this config's lora section (", model::lora_spec_to_json(now), ")");
  const TrainConfig saved_cfg = config_load_from_string(h5.read_text("meta/config"), file + ": meta/config", {},
                                                        ConfigContext{0, false});
  const TrainConfig& cfg = *ctx.cfg;
  auto same = [&](const char* key, auto a, auto b) {
    ANVIL_CHECK_INPUT(a == b, file, ": written with ", key, " = ", a, " (dataset meta/config), this config has ", b,
                      "; resuming would not continue the same run");
  };
  same("train.seed", saved_cfg.train.seed, cfg.train.seed);
  same("train.global_batch", saved_cfg.train.global_batch, cfg.train.global_batch);
  same("data.seq_len", saved_cfg.data.seq_len, cfg.data.seq_len);
  same("data.shuffle", saved_cfg.data.shuffle, cfg.data.shuffle);
  // Changed data is the user's call (a fixed record, one more file): the run goes on from
  // the saved position, but it is no longer the stream the checkpoint's run would have seen.
  if (h5.exists("meta/data_key") && h5.read_text("meta/data_key") != ctx.data_key && ctx.grid->world_rank() == 0)
    log_warn(file, ": the training data changed since this checkpoint (token cache ", h5.read_text("meta/data_key"),
             ", now ", ctx.data_key, "): resuming at the saved data position, but the token stream differs "
             "from the one the checkpoint's run would have seen");
}

}  // namespace

std::string checkpoint_dir(const TrainConfig& cfg) { return cfg.output_dir + "/checkpoints"; }

namespace {

// Writes the whole checkpoint into `partial` (every rank its part).
void write_checkpoint(const CheckpointContext& ctx, const TrainState& state, const AdapterBuffers& buf,
                      const std::string& partial) {
  const comm::ProcessGrid& grid = *ctx.grid;
  io::H5Store h5 = io::H5Store::create(partial, MPI_COMM_WORLD);
  h5.write_i64("anvil_format", model::kCheckpointFormat);
  h5.write_text("meta/config", ctx.config_yaml);
  h5.write_text("meta/model_config", ctx.model_config_json);
  h5.write_text("meta/base_model_path", ctx.base_path);
  h5.write_text("meta/base_model_hash", ctx.base_hash);
  h5.write_text("meta/data_key", ctx.data_key);
  h5.write_text("meta/lora", model::lora_spec_to_json(ctx.local->spec()));
  h5.write_i64("state/step", state.step);
  h5.write_i64("state/tokens_seen", state.tokens_seen);
  h5.write_i64("state/skipped_steps", state.skipped_steps);
  h5.write_i64("state/seed", ctx.cfg->train.seed);
  h5.write_i64("state/sampler_epoch", state.sampler.epoch);
  h5.write_i64("state/sampler_cursor", state.sampler.cursor);

  // Each matrix whole in the file; each rank writes its block (one replica, one copy).
  const auto blocks = model::lora_tp_blocks(*ctx.spec, ctx.shard, *ctx.full, *ctx.local);
  const bool replica0 = grid.dp_rank() == 0;
  // A matrix every rank holds whole (replicated, or tp 1) has its checksum from memory;
  // a split one is read back whole once the file is flushed.
  std::vector<std::pair<std::string, std::optional<std::uint64_t>>> sums;
  for (int g = 0; g < 3; ++g) {
    for (const model::LoraBlock& b : blocks) {
      const std::string name = model::checkpoint_matrix_name(kGroups[g], *b.slot, b.which);
      const float* data = group_buffer(buf, g) + b.local_offset;
      std::optional<io::MatrixBlock> mine;
      if (replica0 && b.writer) mine = io::MatrixBlock{b.row0, b.nrows, b.col0, b.ncols};
      h5.write_matrix(name, b.rows, b.cols, mine, data);
      const bool whole = b.nrows == b.rows && b.ncols == b.cols;
      sums.emplace_back(name, whole ? std::optional(io::checksum_f32(data, b.rows * b.cols)) : std::nullopt);
    }
  }
  h5.flush();
  if (ctx.kill_during_save == state.step) ::raise(SIGKILL);
  for (const auto& [name, sum] : sums) {
    if (sum) h5.seal_matrix(name, *sum);
    else h5.seal_matrix(name);
  }
  h5.close();
}

}  // namespace

std::string checkpoint_save(const CheckpointContext& ctx, const TrainState& state, const AdapterBuffers& buf) {
  const comm::ProcessGrid& grid = *ctx.grid;
  const std::string dir = checkpoint_dir(*ctx.cfg);
  const std::string final_path = dir + "/" + step_file(state.step);
  const std::string partial = final_path + ".partial";
  if (grid.world_rank() == 0) fs::create_directories(dir);
  grid.world().barrier();

  try {
    write_checkpoint(ctx, state, buf, partial);
  } catch (const Error& e) {
    // Disk full, an I/O error: the checkpoints before this one are untouched (this one
    // only ever existed as .partial), and nothing half-written stays behind. With more
    // ranks the error ends the job (a collective write cannot be finished by the others);
    // the next save removes the stale .partial.
    std::error_code ec;
    if (grid.world_rank() == 0) fs::remove(partial, ec);
    throw Error(e.kind(), str_cat("checkpoint ", final_path, " not written: ", e.what(),
                                  "; the earlier checkpoints in ", dir, " are intact"));
  }
  if (grid.world_rank() == 0) {
    fs::rename(partial, final_path);
    io::write_text_file_atomic(dir + "/latest", step_file(state.step) + "\n");
  }
  grid.world().barrier();  // nobody goes on before the checkpoint is complete
  return final_path;
}

std::optional<std::string> checkpoint_find_resume(const TrainConfig& cfg) {
  const std::string& how = cfg.checkpoint.resume;
  if (how == "never") return std::nullopt;
  if (how != "auto") {
    ANVIL_CHECK_INPUT(fs::is_regular_file(how), "checkpoint.resume: '", how, "' is not a checkpoint file");
    return how;
  }
  const std::string dir = checkpoint_dir(cfg);
  const std::string pointer = dir + "/latest";
  if (!fs::exists(pointer)) return std::nullopt;
  std::string name = io::read_text_file(pointer);
  name.erase(name.find_last_not_of(" \n\r\t") + 1);
  ANVIL_CHECK_INPUT(step_of(name).has_value(), pointer, ": expected a step_N.h5 name, got '", name, "'");
  const std::string path = dir + "/" + name;
  ANVIL_CHECK_INPUT(fs::is_regular_file(path), pointer, " names ", name, ", which is missing");
  return path;
}

TrainState checkpoint_load(const CheckpointContext& ctx, const std::string& path, const AdapterBuffers& buf) {
  const io::H5Store h5 = io::H5Store::open(path, MPI_COMM_WORLD);
  const std::int64_t format = h5.read_i64("anvil_format");
  ANVIL_CHECK_INPUT(format == model::kCheckpointFormat, path, ": anvil checkpoint format ", format,
                    " (dataset anvil_format), this anvil reads ", model::kCheckpointFormat);
  check_compatible(ctx, h5);
  TrainState s;
  s.step = h5.read_i64("state/step");
  s.tokens_seen = h5.read_i64("state/tokens_seen");
  s.skipped_steps = h5.read_i64("state/skipped_steps");
  s.sampler.epoch = h5.read_i64("state/sampler_epoch");
  s.sampler.cursor = h5.read_i64("state/sampler_cursor");

  // Whole matrices, checked, then this rank's block of each: any grid reads any checkpoint.
  std::vector<float> whole;
  for (int g = 0; g < 3; ++g) {
    for (const model::LoraBlock& b : model::lora_tp_blocks(*ctx.spec, ctx.shard, *ctx.full, *ctx.local)) {
      const std::string name = model::checkpoint_matrix_name(kGroups[g], *b.slot, b.which);
      whole.resize(static_cast<std::size_t>(b.rows * b.cols));
      h5.read_matrix_checked(name, b.rows, b.cols, whole.data());
      float* dst = group_buffer(buf, g) + b.local_offset;
      for (std::int64_t i = 0; i < b.nrows; ++i)
        std::copy_n(whole.data() + (b.row0 + i) * b.cols + b.col0, b.ncols, dst + i * b.ncols);
    }
  }
  return s;
}

void checkpoint_prune(const TrainConfig& cfg, const std::string& protect) {
  const std::string dir = checkpoint_dir(cfg);
  // .partial files of saves that a crash or a full disk cut short: never loadable.
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    std::error_code ec;
    if (name.size() > 8 && name.ends_with(".partial") && step_of(name.substr(0, name.size() - 8))) fs::remove(e.path(), ec);
  }
  if (cfg.checkpoint.keep <= 0) return;
  std::vector<std::pair<std::int64_t, fs::path>> saved;
  for (const auto& e : fs::directory_iterator(dir))
    if (auto step = step_of(e.path().filename().string())) saved.emplace_back(*step, e.path());
  std::sort(saved.begin(), saved.end());
  const auto keep = static_cast<std::size_t>(cfg.checkpoint.keep);
  for (std::size_t i = 0; i + keep < saved.size(); ++i) {
    if (!protect.empty() && fs::equivalent(saved[i].second, protect)) continue;
    std::error_code ec;
    fs::remove(saved[i].second, ec);
    if (ec) log_warn("checkpoint.keep: cannot delete ", saved[i].second.string(), ": ", ec.message());
  }
}

}  // namespace anvil::train
