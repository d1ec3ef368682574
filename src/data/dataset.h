// Training data: a JSONL file of records, tokenized with the model's tokenizer and packed
// into fixed-length sequences (data/packing.h) that the trainer reads as they are.
//
// Records (one JSON object a line; blank lines are skipped; other keys are ignored):
//   {"text": "..."}                           every next-token prediction is trained
//   {"prompt": "...", "completion": "..."}    only the completion (and EOS) are trained
#pragma once

#include <cstdint>
#include <string>

#include "data/packing.h"
#include "data/tokenizer.h"

namespace anvil::data {

enum class RecordFormat { record_auto, record_text, record_prompt_completion };

struct DatasetOptions {
  RecordFormat format = RecordFormat::record_auto;  // auto: decided by the keys of the first record
  std::int64_t seq_len = 0;
  bool packing = true;  // greedy-pack several samples into one row; false: one sample per row, padded
  bool add_eos = true;  // end every sample with the tokenizer's EOS (error if it has none)
};

// The id that fills the end of rows: the tokenizer's pad token, else EOS, else 0. Its
// targets are always ignored, so the choice only matters to what attention sees.
std::int32_t dataset_pad_id(const Tokenizer& tok);

// Reads, tokenizes and packs the whole file. Bad input is a user error naming
// "path:line". A file with no records, or none with anything to train within seq_len,
// is an error too.
SequenceSet dataset_load_jsonl(const std::string& path, const Tokenizer& tok, const DatasetOptions& opt);

}  // namespace anvil::data
