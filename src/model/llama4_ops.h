// Llama 4's steps as model code names them (model/model_spec.h, Llama4Spec). The steps on
// activations are Backend ops whose host loops live with the backend
// (backend/llama4_ops.h): the training model calls the ops (Backend::llama4_*), the
// host-memory decoder (llama_generate.cpp) these loops. The chunk segments are made here,
// on the host, from the host batch before it is staged.
//
// Chunked attention (RoPE layers) is the causal kernel with one segment per (document,
// chunk of positions).
#pragma once

#include <cstdint>

#include "backend/llama4_ops.h"

namespace anvil::model {

using backend::llama4_pairs_join;
using backend::llama4_pairs_split;
using backend::llama4_route_scores;
using backend::llama4_temperature;

// One id per run of tokens with the same segment and position / chunk, (batch, seq): the
// segments of chunked causal attention. Host memory.
void llama4_chunk_segments(std::int32_t* out, const std::int32_t* segments, const std::int32_t* positions,
                           std::int64_t batch, std::int64_t seq, std::int64_t chunk);

}  // namespace anvil::model
