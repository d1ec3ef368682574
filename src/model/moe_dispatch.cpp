#include "model/moe_dispatch.h"

#include <algorithm>

#include "core/error.h"

namespace anvil::model {

MoeDispatch::MoeDispatch(comm::Comm& ep, backend::Backend& be, std::int64_t experts, std::int64_t rows,
                         std::int64_t width, std::int64_t layers)
    : ep_(ep), be_(be), size_(ep.size()), el_(experts / ep.size()), width_(width) {
  ANVIL_CHECK(size_ >= 1 && experts % size_ == 0, "ep ", size_, " does not divide ", experts, " experts");
  const auto L = static_cast<std::size_t>(layers), P = static_cast<std::size_t>(size_);
  const auto El = static_cast<std::size_t>(el_);
  send_rows_.assign(L * P, 0);
  recv_rows_.assign(L * P, 0);
  recv_by_expert_.assign(L * P * El, 0);
  local_offsets_.assign(L * (El + 1), 0);
  send_count_.assign(P, 0);
  recv_count_.assign(P, 0);
  stage_counts_.assign(P * El, 0);
  stage_rows_ = local_rows_max(rows, size_);
  stage_ = std::unique_ptr<float, Free>(
      static_cast<float*>(be_.memory_alloc(sizeof(float) * static_cast<std::size_t>(stage_rows_ * width))), Free{&be_});
}

const std::int64_t* MoeDispatch::plan(std::int64_t layer, const std::int64_t* offsets) {
  const auto P = static_cast<std::size_t>(size_);
  const auto El = static_cast<std::size_t>(el_);
  std::int64_t* sent = send_rows_.data() + layer * size_;
  std::int64_t* got = recv_rows_.data() + layer * size_;
  std::int64_t* by_expert = recv_by_expert_.data() + layer * size_ * el_;  // (ep, El)
  std::int64_t* local = local_offsets_.data() + layer * (el_ + 1);         // (El + 1)
  // Rank j's experts are j·El ..: this rank's counts for them, in that order, go to j.
  std::vector<std::int64_t>& mine = stage_counts_;
  for (std::size_t e = 0; e < P * El; ++e) mine[e] = offsets[e + 1] - offsets[e];
  std::fill(send_count_.begin(), send_count_.end(), el_);
  ep_.alltoallv(mine.data(), send_count_.data(), by_expert, send_count_.data(), DType::dtype_i64);
  for (std::size_t j = 0; j < P; ++j) {
    sent[j] = offsets[(j + 1) * El] - offsets[j * El];
    got[j] = 0;
    for (std::size_t e = 0; e < El; ++e) got[j] += by_expert[j * El + e];
  }
  local[0] = 0;
  for (std::size_t e = 0; e < El; ++e) {
    std::int64_t n = 0;
    for (std::size_t j = 0; j < P; ++j) n += by_expert[j * El + e];
    local[e + 1] = local[e] + n;
  }
  ANVIL_CHECK(local[El] <= stage_rows_, "expert dispatch: ", local[El], " rows exceed the ", stage_rows_, " planned");
  return local;
}

const std::int64_t* MoeDispatch::local_offsets(std::int64_t layer) const {
  return local_offsets_.data() + layer * (el_ + 1);
}

void MoeDispatch::reorder(std::int64_t layer, const float* from, float* to, bool to_expert_major) const {
  const std::int64_t* by_expert = recv_by_expert_.data() + layer * size_ * el_;  // (ep, El)
  const std::int64_t* local = local_offsets(layer);
  const std::int64_t C = width_;
  std::int64_t src_row = 0;  // source-major: rank j's block, its experts in order
  for (std::int64_t j = 0; j < size_; ++j) {
    for (std::int64_t e = 0; e < el_; ++e) {
      const std::int64_t n = by_expert[j * el_ + e];
      // expert-major: expert e's block, the ranks before j first
      std::int64_t dst_row = local[e];
      for (std::int64_t i = 0; i < j; ++i) dst_row += by_expert[i * el_ + e];
      const float* a = from + (to_expert_major ? src_row : dst_row) * C;
      float* b = to + (to_expert_major ? dst_row : src_row) * C;
      if (n > 0) be_.copy(b, a, sizeof(float) * static_cast<std::size_t>(n * C));
      src_row += n;
    }
  }
}

void MoeDispatch::send(std::int64_t layer, const float* home, float* local) {
  const std::int64_t* sent = send_rows_.data() + layer * size_;
  const std::int64_t* got = recv_rows_.data() + layer * size_;
  for (int j = 0; j < size_; ++j) {
    send_count_[static_cast<std::size_t>(j)] = sent[j] * width_;
    recv_count_[static_cast<std::size_t>(j)] = got[j] * width_;
  }
  ep_.alltoallv(home, send_count_.data(), stage_.get(), recv_count_.data(), DType::dtype_f32);  // source-major
  reorder(layer, stage_.get(), local, true);
}

void MoeDispatch::send_back(std::int64_t layer, const float* local, float* home) {
  const std::int64_t* sent = send_rows_.data() + layer * size_;
  const std::int64_t* got = recv_rows_.data() + layer * size_;
  reorder(layer, local, stage_.get(), false);
  for (int j = 0; j < size_; ++j) {
    send_count_[static_cast<std::size_t>(j)] = got[j] * width_;
    recv_count_[static_cast<std::size_t>(j)] = sent[j] * width_;
  }
  ep_.alltoallv(stage_.get(), send_count_.data(), home, recv_count_.data(), DType::dtype_f32);
}

void ep_grads_allreduce(const LoraLayout& local, float* grads, comm::Comm& dp, comm::Comm& edp, backend::Backend& be,
                        float* stage) {
  const std::int64_t r = local.spec().rank;
  for (const bool expert : {false, true}) {
    // Slot by slot, A then B are one run (a_offset .. b_offset + out·r).
    std::size_t n = 0;
    for (const LoraSlot& s : local.slots()) {
      if (proj_is_expert(s.proj) != expert) continue;
      const auto count = static_cast<std::size_t>(s.b_offset + s.out * r - s.a_offset);
      be.copy(stage + n, grads + s.a_offset, sizeof(float) * count);
      n += count;
    }
    (expert ? edp : dp).allreduce_sum(stage, static_cast<std::int64_t>(n));
    n = 0;
    for (const LoraSlot& s : local.slots()) {
      if (proj_is_expert(s.proj) != expert) continue;
      const auto count = static_cast<std::size_t>(s.b_offset + s.out * r - s.a_offset);
      be.copy(grads + s.a_offset, stage + n, sizeof(float) * count);
      n += count;
    }
  }
}

}  // namespace anvil::model
