// Format 1 (one 2-D dataset per matrix, 1,344 for an all-projection LoRA of Llama-3-8B):
// what checkpoint_file.cpp needs to keep reading it, and the writer that made it, kept so
// that tests can make a format-1 file from any state (tests/tools/make_v1_checkpoint.cpp).
#pragma once

#include <string>
#include <vector>

#include "checkpoint/checkpoint_file.h"

namespace anvil::checkpoint {

// "adapter/base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
std::string matrix_name_v1(Group g, const model::LoraSlot& slot, char which);

void read_group_v1(const io::H5Store& h5, Group g, const Shards& shards, float* local);
void read_group_full_v1(const io::H5Store& h5, Group g, const model::LoraLayout& full, float* params);

// The format-1 writer as it was (checksums of TP-split matrices read back after a flush).
void checkpoint_write_v1(const std::string& path, const comm::ProcessGrid& grid, const Meta& meta,
                         const State& state, const Shards& shards, const GroupBuffers& buffers);

// Shared by both writers: anvil_format, meta and state, written by rank 0.
void write_meta_state(io::H5Store& h5, std::int64_t format, const Meta& meta, const State& state);

}  // namespace anvil::checkpoint
