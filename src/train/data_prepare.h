// A run's data, tokenized and packed once into the token cache (data/token_cache.h) by all
// ranks together, then memory-mapped by each: `anvil prepare` runs this alone, `anvil
// train` runs it first and reuses a cache whose key matches.
#pragma once

#include <memory>
#include <string>

#include "comm/comm.h"
#include "data/token_cache.h"
#include "data/tokenizer.h"
#include "train/config.h"

namespace anvil::train {

struct PreparedData {
  data::TokenCache cache;
  std::string key;
  bool built = false;  // false: a cache with this key was already there
};

// data.cache_dir, or OUTPUT_DIR/cache.
std::string data_cache_dir(const TrainConfig& cfg);

// Every rank of `world` calls it. The key is computed on rank 0; a missing cache is built
// with every rank tokenizing its share of the lines; rank 0 assembles it. A user error on
// any rank (a bad record with data.on_error: fail, an empty file) becomes one error, the
// same whatever the number of ranks, thrown on rank 0 (the job's abort ends the others).
// Rank 0 logs each file's report and the packing efficiency.
PreparedData data_prepare(const TrainConfig& cfg, const data::Tokenizer& tok, comm::Comm& world);

}  // namespace anvil::train
