// Which base model a directory holds, as a checkpoint records it: a checkpoint resumes or
// exports only against the model it was trained on.
#pragma once

#include <string>

namespace anvil::checkpoint {

// XXH64 of the base model's config.json, its index (model.safetensors.index.json, if
// sharded), each weight file's header and 64 KiB from each end of its data, as 16 hex
// digits: a fine-tuned variant with the same config and index is another model.
std::string model_identity_hash(const std::string& model_dir);

}  // namespace anvil::checkpoint
