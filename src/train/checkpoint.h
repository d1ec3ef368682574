// The checkpoints of a training run: one file per saved step under OUTPUT_DIR/checkpoints/,
// written collectively by all ranks through the checkpoint module (checkpoint/, which owns
// the format). Here is the run's policy: a save goes to step_N.h5.partial, is flushed,
// renamed to step_N.h5, and only then does the `latest` pointer (a one-line file, replaced
// by rename) move to it; resuming picks a file that verifies and checks that it continues
// this run. A checkpoint resumes on any grid.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "comm/process_grid.h"
#include "data/sampler.h"
#include "model/lora.h"
#include "model/model_spec.h"
#include "model/tp_shard.h"
#include "train/config.h"

namespace anvil::train {

// The run's position: where training continues from.
struct TrainState {
  std::int64_t step = 0;  // optimizer steps done
  std::int64_t tokens_seen = 0;
  std::int64_t skipped_steps = 0;
  data::Sampler::State sampler;
};

// This rank's adapter and AdamW moments, in its local layout.
struct AdapterBuffers {
  float* params = nullptr;
  float* adam_m = nullptr;
  float* adam_v = nullptr;
};

// What does not change during the run.
struct CheckpointContext {
  const TrainConfig* cfg = nullptr;
  std::string config_yaml;        // the resolved config
  std::string model_config_json;  // the base model's config.json
  std::string base_path;          // absolute
  std::string base_hash;          // model_identity_hash
  std::string data_key;           // the token cache's key (data/token_cache.h)
  const model::ModelSpec* spec = nullptr;
  const model::LoraLayout* full = nullptr;
  const model::LoraLayout* local = nullptr;
  model::TpShard shard;
  const comm::ProcessGrid* grid = nullptr;
  // Testing only (ANVIL_FAULT_INJECT=RANK:STEP:save): this rank kills itself with SIGKILL
  // in the middle of saving this step, after the data is written and before the rename.
  std::int64_t kill_during_save = 0;
};

std::string checkpoint_dir(const TrainConfig& cfg);

// Saves the state after `state.step` (every rank calls it); returns the file's path. It is
// written as .partial and renamed when complete: on an error (disk full, I/O) the earlier
// checkpoints stay as they were, the .partial is removed, and the error names the file.
std::string checkpoint_save(const CheckpointContext& ctx, const TrainState& state, const AdapterBuffers& buf);

// Resumes as checkpoint.resume says, loading the checkpoint into this rank's buffers (every
// rank calls it); the path and the saved state, or nothing:
//   auto: the newest of this run's checkpoints that loads, starting from the one `latest`
//         names (never a .partial); each damaged one skipped is named in a warning; none
//         when there is no `latest`;
//   never: none;
//   PATH: that file, which must load (a user error naming every damaged dataset).
// Each candidate is read once, by all ranks, each its own blocks: the load checks every
// checksum it reads (meta, state, and the adapter, AdamW moments and their per-layer sums
// with the TP group), and the ranks agree on whether it was sound. Only a damaged one is
// then read whole by rank 0 (checkpoint_verify) to name every damaged dataset. User errors
// (exit 2) also name a checkpoint of another base model, or a config whose LoRA, seed,
// sequence length or batch differ: not damage, so auto does not skip it.
struct ResumedFrom {
  std::string path;
  TrainState state;
};
std::optional<ResumedFrom> checkpoint_resume(const CheckpointContext& ctx, const AdapterBuffers& buf);

// Every problem of the checkpoint at `path` (one line each, naming the file and dataset:
// damaged, missing, unreadable); empty when it is sound. On this process alone.
std::vector<std::string> checkpoint_verify(const std::string& path);

// Deletes all but the newest `keep` checkpoints (0: keep all), never `protect`, and the
// .partial files of saves that were cut short. Rank 0 only.
void checkpoint_prune(const TrainConfig& cfg, const std::string& protect);

}  // namespace anvil::train
