#include "checkpoint/checkpoint_v1.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "comm/mpi_handle.h"
#include "core/error.h"

namespace anvil::checkpoint {

std::string matrix_name_v1(Group g, const model::LoraSlot& slot, char which) {
  return str_cat(group_name(g), "/", model::LoraLayout::peft_name(slot, which));
}

void read_group_v1(const io::H5Store& h5, Group g, const Shards& shards, float* local) {
  // Whole matrices, checked, then this rank's block of each.
  std::vector<float> whole;
  for (const model::LoraBlock& b : model::lora_tp_blocks(*shards.spec, shards.shard, *shards.full, *shards.local)) {
    whole.resize(static_cast<std::size_t>(b.rows * b.cols));
    h5.read_matrix_checked(matrix_name_v1(g, *b.slot, b.which), b.rows, b.cols, whole.data());
    float* dst = local + b.local_offset;
    for (std::int64_t i = 0; i < b.nrows; ++i)
      std::copy_n(whole.data() + (b.row0 + i) * b.cols + b.col0, b.ncols, dst + i * b.ncols);
  }
}

void read_group_full_v1(const io::H5Store& h5, Group g, const model::LoraLayout& full, float* params) {
  const std::int64_t r = full.spec().rank;
  for (const model::LoraSlot& s : full.slots()) {
    h5.read_matrix_checked(matrix_name_v1(g, s, 'A'), r, s.in, params + s.a_offset);
    h5.read_matrix_checked(matrix_name_v1(g, s, 'B'), s.out, r, params + s.b_offset);
  }
}

void checkpoint_write_v1(const std::string& path, const comm::ProcessGrid& grid, const Meta& meta,
                         const State& state, const Shards& shards, const GroupBuffers& buffers) {
  io::H5Store h5 = io::H5Store::create(path, comm::mpi_handle(grid.world()));
  write_meta_state(h5, kFormatV1, meta, state);
  // Each matrix whole in the file; each rank writes its block (one replica, one copy).
  const auto blocks = model::lora_tp_blocks(*shards.spec, shards.shard, *shards.full, *shards.local);
  const bool replica0 = grid.dp_rank() == 0;
  // A matrix every rank holds whole has its checksum from memory; a split one is read back
  // whole once the file is flushed.
  std::vector<std::pair<std::string, std::optional<std::uint64_t>>> sums;
  for (int g = 0; g < kGroupCount; ++g) {
    for (const model::LoraBlock& b : blocks) {
      const std::string name = matrix_name_v1(static_cast<Group>(g), *b.slot, b.which);
      const float* data = buffers[static_cast<std::size_t>(g)] + b.local_offset;
      std::optional<io::MatrixBlock> mine;
      if (replica0 && b.writer) mine = io::MatrixBlock{b.row0, b.nrows, b.col0, b.ncols};
      h5.write_matrix(name, b.rows, b.cols, mine, data);
      const bool whole = b.nrows == b.rows && b.ncols == b.cols;
      sums.emplace_back(name, whole ? std::optional(io::checksum_f32(data, b.rows * b.cols)) : std::nullopt);
    }
  }
  h5.flush();
  for (const auto& [name, sum] : sums) {
    if (sum) h5.seal_matrix(name, *sum);
    else h5.seal_matrix(name);
  }
  h5.close();
}

}  // namespace anvil::checkpoint
