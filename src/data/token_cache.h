// The token cache: a data set tokenized and packed once, into one file that every rank
// memory-maps, so that no rank tokenizes while another waits for it in a collective.
//
// It is built in two phases (train/data_prepare.cpp runs them over the ranks):
//   1. each of W ranks tokenizes every W-th line of every file into a part file
//      (prepare_write_part);
//   2. one rank merges the parts in file and line order, holds out the eval split, repeats
//      records by weight, shuffles, packs and writes the cache (prepare_assemble).
// The cache is named by a key (cache_key) that hashes everything its contents depend on:
// the data files' bytes, the tokenizer files' bytes and every setting below, so a changed
// input is never served from an old cache.
//
// File layout: "ANVTOK01", u64 LE header length, the JSON header (key, seq_len, pad id,
// per set its row count, array offsets and packing stats, the per-file reports, XXH64 of
// the data), then per set the (count, seq_len) int32 ids and uint8 flags
// (data/packing.h), each 64-byte aligned. Written to a .partial file and renamed.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "data/dataset.h"

namespace anvil::data {

struct DataSource {
  std::string path;
  double weight = 1.0;  // uses of each record per epoch: 2 = twice, 0.5 = a seeded half
  bool operator==(const DataSource&) const = default;
};

struct PrepareSpec {
  std::vector<DataSource> train;
  std::optional<std::string> eval;  // eval file
  double eval_fraction = 0.0;       // or: this share of the training records, held out by a seeded hash
  RecordOptions records;
  std::optional<ChatTemplateSource> chat_template;  // the template records.chat renders (its text is part of the key)
  std::int64_t seq_len = 0;
  bool packing = true;
  Overflow overflow = Overflow::overflow_truncate;
  bool shuffle = true;  // the order of samples before packing (rows are shuffled again each epoch)
  std::uint64_t seed = 0;
};

// 32 hex digits: XXH3-128 of the cache format version, the data files' and the model
// directory's tokenizer files' contents, and every setting of `spec`.
std::string cache_key(const PrepareSpec& spec, const std::string& model_dir);

// Where phase 1 failed: the file (index into train, then eval), the line (0: not a
// record's fault) and the message. The lowest (source, line) over the ranks is the one
// reported, so the error does not depend on the number of ranks.
struct PartError {
  std::uint32_t source = 0;
  std::int64_t line = 0;
  std::string message;
};

// Phase 1 for rank `rank` of `world`: writes `part_path`. Bad records are counted in the
// part's reports, or, with data.on_error: fail, returned as the error.
std::optional<PartError> prepare_write_part(const PrepareSpec& spec, const Tokenizer& tok, int rank, int world,
                                            const std::string& part_path);

// Phase 2: the parts into the cache at `cache_path`. User errors: a file with no records,
// no sample with anything to train, an empty eval split.
void prepare_assemble(const PrepareSpec& spec, const Tokenizer& tok, const std::vector<std::string>& part_paths,
                      const std::string& key, const std::string& cache_path);

struct TokenCache {
  std::string path;
  SequenceSet train;
  std::optional<SequenceSet> eval;
  std::vector<FileReport> reports;  // train files in order, then the eval file
};

// Maps the cache. nullopt when there is no file at `path`; a user error when it is not a
// complete cache with this key (verify: also check the data checksum, which reads it all).
std::optional<TokenCache> token_cache_open(const std::string& path, const std::string& key, bool verify);

}  // namespace anvil::data
