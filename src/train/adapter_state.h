// The trained state of one rank: the adapter parameters (the model's buffer), its AdamW
// moments in backend memory, and host copies of all three for checkpoints. On the CPU
// backend the host copies are the buffers themselves; on a device they are mirrors, synced
// by upload()/download() around a load or a save (never inside a step).
#pragma once

#include <cstdint>
#include <vector>

#include "backend/backend.h"
#include "comm/comm.h"
#include "model/llama.h"
#include "model/lora.h"
#include "train/checkpoint.h"

namespace anvil::train {

// The optimizer's hyper-parameters for one step (train.* and the schedule's lr).
struct AdamwParams {
  double lr = 0, beta1 = 0, beta2 = 0, eps = 0, weight_decay = 0;
  double grad_clip = 0;  // 0: no clipping
  std::int64_t step = 0;  // AdamW's bias-correction step: updates made, skipped steps not counted
};

class AdapterState {
 public:
  // The model's adapter, initialised as on a single rank: drawn in the full layout with
  // `seed`, then sliced to this TP rank's part.
  AdapterState(model::LlamaModel& model, const model::LoraLayout& full, std::uint64_t seed);
  ~AdapterState();
  AdapterState(const AdapterState&) = delete;
  AdapterState& operator=(const AdapterState&) = delete;

  // Clip the model's (reduced) gradients to `p.grad_clip` given their norm, as
  // torch.nn.utils.clip_grad_norm_ does, then one AdamW update of the adapter.
  void adamw_step(double grad_norm, const AdamwParams& p);

  // Where checkpoints read and write the three buffers.
  AdapterBuffers host();
  void upload();    // host copies -> backend (after a load)
  void download();  // backend -> host copies (before a save)

  // The whole adapter in the full layout on the rank that is rank 0 of both `tp` and `ep`
  // (every rank of both groups calls it; the others get an empty vector): the TP ranks'
  // slices and the EP ranks' experts gathered and put in place.
  std::vector<float> gather_full(comm::Comm& tp, comm::Comm& ep) const;

 private:
  float* adam_m() { return adam_m_; }
  float* adam_v() { return adam_m_ + n_; }

  model::LlamaModel& model_;
  backend::Backend& be_;
  const model::LoraLayout& full_;
  std::int64_t n_;
  std::size_t bytes_;
  float* adam_m_ = nullptr;  // (2n): m, then v
  std::vector<float> host_;  // (3n) mirrors on a device: params, m, v
};

}  // namespace anvil::train
