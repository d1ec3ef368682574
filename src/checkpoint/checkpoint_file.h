// Writing and reading one checkpoint file (the format is checkpoint_format.h). The file is
// opened over a communicator the caller takes from its ProcessGrid (comm/mpi_handle.h);
// nothing here reaches for MPI_COMM_WORLD. Run-level policy (where the files live,
// .partial → rename → latest, which one to resume) is the trainer's: train/checkpoint.h.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "checkpoint/checkpoint_format.h"
#include "comm/process_grid.h"
#include "io/h5_store.h"
#include "model/lora.h"
#include "model/model_spec.h"
#include "model/tp_shard.h"

namespace anvil::checkpoint {

// How this rank's buffers map onto the whole matrices: the model, this rank's TP slice,
// and the full and local LoRA layouts (equal at tp 1).
struct Shards {
  const model::ModelSpec* spec = nullptr;
  model::TpShard shard;
  const model::LoraLayout* full = nullptr;
  const model::LoraLayout* local = nullptr;
};

// The three buffers, by Group, in this rank's local layout.
using GroupBuffers = std::array<float*, kGroupCount>;

// Writes a format-2 checkpoint to `path` (created or truncated), collectively over
// grid.world() (every dataset created by all ranks together): rank 0 writes meta and
// state; each TP rank of replica 0 (under ep: each ep rank its own experts' slabs) writes, as one hyperslab per stack (its own MPI-IO
// write, not two-phase collective buffering), its block of every layer of a split stack
// and its range of whole layers of a replicated one, straight from `buffers` (no staging
// copy); the other replicas write nothing. The per-layer checksums come from memory: each
// TP rank sums what it writes (io::slab_sum, on a second thread, one stack ahead of the
// writes) and the group adds them up, so no byte is gathered or read back. Returns once the
// file is flushed (MPI_File_sync) and closed.
void checkpoint_write(const std::string& path, const comm::ProcessGrid& grid, const Meta& meta,
                      const State& state, const Shards& shards, const GroupBuffers& buffers);

// An open checkpoint of format 1 or 2; user errors name the file and the dataset.
class CheckpointReader {
 public:
  // Collective over `comm`: every rank of it opens the file (read-only).
  static CheckpointReader open(const std::string& path, const comm::Comm& comm);

  const std::string& path() const { return h5_.path(); }
  std::int64_t format() const { return format_; }
  Meta meta() const;
  State state() const;
  // This rank's blocks of group g's matrices into `local` (shards.local's layout): any
  // grid reads a checkpoint of any grid. Collective over `tp` and `ep`, the TP and EP groups
  // of `shards`: each rank copies its blocks to their places (under ep its experts' only),
  // summing them on the way (io::H5Store::read_slab_pieces), and the groups add up their
  // checksums (a damaged layer is a user error on every rank, `local`
  // then holds what was read). Format 1: whole matrices, each rank checks them alone (ep 1).
  void read_group(Group g, const Shards& shards, comm::Comm& tp, comm::Comm& ep, float* local) const;
  // Opens every stack of the LoRA `full` (format 2; format 1 has nothing to open) for the
  // read_group calls that follow: HDF5's headers and checksums are read before read_ahead
  // (io::H5Store::open_stacks). A user error names a missing or misshapen stack.
  void open_stacks(const model::LoraLayout& full) const;
  // Starts reading the opened stacks (format 1: the whole file) from the disk ahead of the
  // read_group calls, which then copy them as they come in (io::H5Store::read_ahead).
  void read_ahead() const;
  // Group g whole, in the layout `full` (export; inspect).
  void read_group_full(Group g, const model::LoraLayout& full, float* params) const;
  // Reads every dataset and checks it, and that none the format needs is missing: one
  // message per damaged dataset ("FILE: dataset 'X' fails its checksum ..."), empty when
  // the file is sound. Independent: one rank may call it alone.
  std::vector<std::string> verify() const;

 private:
  CheckpointReader(io::H5Store h5, std::int64_t format) : h5_(std::move(h5)), format_(format) {}
  io::H5Store h5_;
  std::int64_t format_ = 0;
};

// What export and inspect read from a checkpoint, on this process alone (MPI must be up:
// the file is opened over MPI_COMM_SELF): meta, the step and the adapter in the layout
// LoraLayout(spec, meta.lora), every matrix checked against its checksum.
struct CheckpointAdapter {
  std::int64_t format = 0;
  std::int64_t step = 0;
  Meta meta;
  model::ModelSpec spec;  // parsed from meta.model_config_json
  std::vector<float> params;
};
CheckpointAdapter checkpoint_read_adapter(const std::string& path);

}  // namespace anvil::checkpoint
