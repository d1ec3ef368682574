// Rewrites a checkpoint in format 1 (one 2-D dataset per matrix) through the kept format-1
// writer: the fixture for "format-1 checkpoints keep loading" (resume and export), made
// from a checkpoint the current code wrote instead of a committed binary.
//
//   make_v1_checkpoint IN.h5 OUT.h5
#include <cstdio>
#include <string>
#include <vector>

#include "checkpoint/checkpoint_file.h"
#include "checkpoint/checkpoint_v1.h"
#include "comm/mpi_session.h"
#include "core/error.h"

int main(int argc, char** argv) try {
  using namespace anvil;
  comm::MpiSession mpi;
  ANVIL_CHECK_INPUT(argc == 3, "usage: make_v1_checkpoint IN.h5 OUT.h5");
  const comm::ProcessGrid grid = comm::ProcessGrid::single();
  const auto reader = checkpoint::CheckpointReader::open(argv[1], grid.world());
  const checkpoint::Meta meta = reader.meta();
  const model::ModelSpec spec = model::model_spec_from_json(meta.model_config_json, argv[1]);
  const model::LoraLayout full(spec, meta.lora);
  std::vector<std::vector<float>> groups(checkpoint::kGroupCount,
                                         std::vector<float>(static_cast<std::size_t>(full.size())));
  checkpoint::GroupBuffers buffers{};
  for (int g = 0; g < checkpoint::kGroupCount; ++g) {
    reader.read_group_full(static_cast<checkpoint::Group>(g), full, groups[static_cast<std::size_t>(g)].data());
    buffers[static_cast<std::size_t>(g)] = groups[static_cast<std::size_t>(g)].data();
  }
  const checkpoint::Shards shards{&spec, model::tp_shard(spec, 0, 1), &full, &full};
  checkpoint::checkpoint_write_v1(argv[2], grid, meta, reader.state(), shards, buffers);
  std::printf("wrote %s (format 1) from %s (format %lld)\n", argv[2], argv[1],
              static_cast<long long>(reader.format()));
  return 0;
} catch (const std::exception& e) {
  return anvil::comm::exit_after_error(e);
}
