// The shape of an lm_head_cross_entropy call, checked the same way by every backend.
#pragma once

#include "backend/backend.h"
#include "core/error.h"

namespace anvil::backend {

struct LmHeadShape {
  i64 V = 0;        // rows of w_head held here
  i64 C = 0;        // hidden size
  i64 vocab = 0;    // the whole vocabulary
  i64 v0 = 0;       // first row held here
  bool sharded = false;
};

inline LmHeadShape lm_head_shape(const TensorView& w_head, const VocabShard& shard, const VocabReducer* reduce) {
  ANVIL_CHECK(w_head.shape.rank() == 2, "LM head must be 2-D, got ", w_head.shape.str());
  LmHeadShape s;
  s.V = w_head.shape[0];
  s.C = w_head.shape[1];
  s.vocab = shard.total > 0 ? shard.total : s.V;
  s.v0 = shard.first;
  s.sharded = s.V < s.vocab;
  ANVIL_CHECK(s.v0 >= 0 && s.v0 + s.V <= s.vocab, "vocabulary shard [", s.v0, ", ", s.v0 + s.V, ") outside [0, ",
              s.vocab, ")");
  ANVIL_CHECK(!s.sharded || reduce, "a vocabulary shard needs a reducer");
  return s;
}

}  // namespace anvil::backend
