#include "train/checkpoint.h"

#include <csignal>

#include <algorithm>
#include <filesystem>
#include <regex>

#include "checkpoint/checkpoint_file.h"
#include "core/error.h"
#include "core/log.h"
#include "io/files.h"

namespace anvil::train {

namespace fs = std::filesystem;

namespace {

using checkpoint::Group;

checkpoint::GroupBuffers group_buffers(const AdapterBuffers& b) { return {b.params, b.adam_m, b.adam_v}; }

checkpoint::Shards shards_of(const CheckpointContext& ctx) { return {ctx.spec, ctx.shard, ctx.full, ctx.local}; }

std::string step_file(std::int64_t step) { return str_cat("step_", step, ".h5"); }

// The step of a "step_N.h5" name; nullopt for anything else (.partial files included).
std::optional<std::int64_t> step_of(const std::string& name) {
  static const std::regex re(R"(step_(\d+)\.h5)");
  std::smatch m;
  if (!std::regex_match(name, m, re)) return std::nullopt;
  return std::stoll(m[1].str());
}

// "[a, b]"
std::string list_text(const std::vector<std::string>& items) {
  std::string s = "[";
  for (std::size_t i = 0; i < items.size(); ++i) s += (i ? ", " : "") + items[i];
  return s + "]";
}

// The LoRA, seed, sequence length and global batch of the saved config: what must match
// for the resumed run to be the same run.
void check_compatible(const CheckpointContext& ctx, const std::string& file, const checkpoint::Meta& saved) {
  ANVIL_CHECK_INPUT(saved.base_model_hash == ctx.base_hash, file, ": written for another base model (",
                    saved.base_model_path, ", dataset ", checkpoint::kMetaBaseHash, ") than model.path (",
                    ctx.base_path, ")");
  const model::LoraSpec& now = ctx.local->spec();
  const model::LoraSpec& was = saved.lora;
  ANVIL_CHECK_INPUT(was.rank == now.rank && was.alpha == now.alpha && was.rslora == now.rslora &&
                        was.targets == now.targets && was.dropout == now.dropout,
                    file, ": its LoRA (dataset ", checkpoint::kMetaLora, ": ", checkpoint::lora_spec_to_json(was),
                    ") differs from this config's lora section (", checkpoint::lora_spec_to_json(now), ")");
  const TrainConfig saved_cfg = config_load_from_string(saved.config_yaml, file + ": " + checkpoint::kMetaConfig, {},
                                                        ConfigContext{0, false});
  const TrainConfig& cfg = *ctx.cfg;
  auto same = [&](const char* key, auto a, auto b) {
    ANVIL_CHECK_INPUT(a == b, file, ": written with ", key, " = ", a, " (dataset ", checkpoint::kMetaConfig,
                      "), this config has ", b, "; resuming would not continue the same run");
  };
  same("train.seed", saved_cfg.train.seed, cfg.train.seed);
  same("train.global_batch", saved_cfg.train.global_batch, cfg.train.global_batch);
  same("data.seq_len", saved_cfg.data.seq_len, cfg.data.seq_len);
  same("data.shuffle", saved_cfg.data.shuffle, cfg.data.shuffle);
  // The adapter was trained against the quantized base: another base is another run.
  same("model.quant", enum_name(saved_cfg.model.quant), enum_name(cfg.model.quant));
  if (cfg.model.quant != QuantMode::quant_none)
    same("model.quant_skip", list_text(saved_cfg.model.quant_skip), list_text(cfg.model.quant_skip));
  // Changed data is the user's call (a fixed record, one more file): the run goes on from
  // the saved position, but it is no longer the stream the checkpoint's run would have seen.
  if (!saved.data_key.empty() && saved.data_key != ctx.data_key && ctx.grid->world_rank() == 0)
    log_warn(file, ": the training data changed since this checkpoint (token cache ", saved.data_key, ", now ",
             ctx.data_key, "): resuming at the saved data position, but the token stream differs "
             "from the one the checkpoint's run would have seen");
}

// auto's candidates, newest first: the file `latest` names, then the older step files.
std::vector<std::string> resume_candidates(const TrainConfig& cfg) {
  const std::string dir = checkpoint_dir(cfg);
  const std::string pointer = dir + "/latest";
  if (!fs::exists(pointer)) return {};
  std::string name = io::read_text_file(pointer);
  name.erase(name.find_last_not_of(" \n\r\t") + 1);
  const auto newest = step_of(name);
  ANVIL_CHECK_INPUT(newest.has_value(), pointer, ": expected a step_N.h5 name, got '", name, "'");
  ANVIL_CHECK_INPUT(fs::is_regular_file(dir + "/" + name), pointer, " names ", name, ", which is missing");
  std::vector<std::pair<std::int64_t, std::string>> older;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (auto step = step_of(n); step && *step < *newest) older.emplace_back(*step, dir + "/" + n);
  }
  std::sort(older.rbegin(), older.rend());
  std::vector<std::string> out = {dir + "/" + name};
  for (auto& [step, path] : older) out.push_back(std::move(path));
  return out;
}

std::string lines(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += "\n  " + s;
  return out;
}

}  // namespace

std::string checkpoint_dir(const TrainConfig& cfg) { return cfg.output_dir + "/checkpoints"; }

std::string checkpoint_save(const CheckpointContext& ctx, const TrainState& state, const AdapterBuffers& buf) {
  const comm::ProcessGrid& grid = *ctx.grid;
  const std::string dir = checkpoint_dir(*ctx.cfg);
  const std::string final_path = dir + "/" + step_file(state.step);
  const std::string partial = final_path + ".partial";
  if (grid.world_rank() == 0) fs::create_directories(dir);
  grid.world().barrier();

  const checkpoint::Meta meta{ctx.config_yaml, ctx.model_config_json, ctx.base_path, ctx.base_hash, ctx.data_key,
                              ctx.local->spec()};
  const checkpoint::State saved{state.step,          state.tokens_seen,    state.skipped_steps,
                                ctx.cfg->train.seed, state.sampler.epoch, state.sampler.cursor};
  try {
    checkpoint::checkpoint_write(partial, grid, meta, saved, shards_of(ctx), group_buffers(buf));
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
  if (ctx.kill_during_save == state.step) ::raise(SIGKILL);
  if (grid.world_rank() == 0) {
    fs::rename(partial, final_path);
    io::write_text_file_atomic(dir + "/latest", step_file(state.step) + "\n");
  }
  grid.world().barrier();  // nobody goes on before the checkpoint is complete
  return final_path;
}

std::vector<std::string> checkpoint_verify(const std::string& path) {
  try {
    const auto self = comm::self_comm("self");
    return checkpoint::CheckpointReader::open(path, *self).verify();
  } catch (const Error& e) {
    return {e.what()};  // not even openable: truncated, not HDF5, another format
  }
}

namespace {

// Damage met by this rank (a user error while reading: unreadable, a missing dataset, a
// failed checksum), agreed over the world: every rank answers the same, so that all go on to
// the same next candidate, and a rank that met none says another rank did.
template <class Read>
std::optional<std::string> damage_of(const comm::ProcessGrid& grid, Read&& read) {
  std::string damage;
  try {
    read();
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::user) throw;
    damage = e.what();
  }
  std::int64_t failed = damage.empty() ? 0 : 1;
  grid.world().allreduce(&failed, 1, DType::dtype_i64, comm::ReduceOp::reduce_max);
  if (failed == 0) return std::nullopt;
  return damage.empty() ? std::string("another rank could not read it") : damage;
}

// Reads the checkpoint at `path` into this rank's buffers and `out` (every rank calls it);
// returns the damage, if any (damage_of). A sound checkpoint of another run (base model,
// LoRA, seed, ...) is not damage: that user error is thrown.
std::optional<std::string> load_or_damage(const CheckpointContext& ctx, const std::string& path,
                                          const AdapterBuffers& buf, TrainState& out) {
  std::optional<checkpoint::CheckpointReader> reader;
  checkpoint::Meta meta;
  if (auto damage = damage_of(*ctx.grid, [&] {
        reader.emplace(checkpoint::CheckpointReader::open(path, ctx.grid->world()));
        meta = reader->meta();
      }))
    return damage;
  check_compatible(ctx, path, meta);
  return damage_of(*ctx.grid, [&] {
    // HDF5's small reads first, then the disk streams the file while the ranks copy and check it.
    reader->open_stacks(*ctx.full);
    const checkpoint::State saved = reader->state();
    reader->read_ahead();
    // This rank's blocks of every matrix, checked with the TP group: any grid reads any checkpoint.
    const checkpoint::GroupBuffers groups = group_buffers(buf);
    for (int g = 0; g < checkpoint::kGroupCount; ++g)
      reader->read_group(static_cast<Group>(g), shards_of(ctx), ctx.grid->tp(), ctx.grid->ep(), groups[static_cast<std::size_t>(g)]);
    out = TrainState{};
    out.step = saved.step;
    out.tokens_seen = saved.tokens_seen;
    out.skipped_steps = saved.skipped_steps;
    out.sampler.epoch = saved.sampler_epoch;
    out.sampler.cursor = saved.sampler_cursor;
  });
}

}  // namespace

std::optional<ResumedFrom> checkpoint_resume(const CheckpointContext& ctx, const AdapterBuffers& buf) {
  const TrainConfig& cfg = *ctx.cfg;
  const std::string& how = cfg.checkpoint.resume;
  if (how == "never") return std::nullopt;
  const bool given = how != "auto";
  if (given) ANVIL_CHECK_INPUT(fs::is_regular_file(how), "checkpoint.resume: '", how, "' is not a checkpoint file");
  const std::vector<std::string> candidates = given ? std::vector<std::string>{how} : resume_candidates(cfg);
  if (candidates.empty()) return std::nullopt;
  const bool rank0 = ctx.grid->world_rank() == 0;
  // Newest first, each read once, by all ranks together (the load checks every checksum).
  // Only a damaged candidate is read whole, by rank 0, to name every damaged dataset.
  for (const std::string& path : candidates) {
    ResumedFrom r{path, {}};
    const std::optional<std::string> damage = load_or_damage(ctx, path, buf, r.state);
    if (!damage) return r;
    std::string named;
    if (rank0) {
      const std::vector<std::string> problems = checkpoint_verify(path);
      named = problems.empty() ? "\n  " + *damage : lines(problems);
    }
    if (given) throw_user_error("checkpoint.resume: ", how, " is damaged", rank0 ? ":" + named : " (rank 0 names it)");
    if (rank0) log_warn("checkpoint.resume: auto: skipping ", path, ", which is damaged:", named);
  }
  throw_user_error("checkpoint.resume: auto: no checkpoint in ", checkpoint_dir(cfg),
                   " verifies (each is named above); set checkpoint.resume: never to start over");
}

void checkpoint_prune(const TrainConfig& cfg, const std::string& protect) {
  const std::string dir = checkpoint_dir(cfg);
  // .partial files of saves that a crash or a full disk cut short: never loadable.
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    std::error_code ec;
    if (name.size() > 8 && name.ends_with(".partial") && step_of(name.substr(0, name.size() - 8)))
      fs::remove(e.path(), ec);
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
