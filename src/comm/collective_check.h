// Argument checks shared by every Comm implementation (SelfComm, MpiComm, later NcclComm),
// so that a caller's bug fails the same way on one rank, in a unit test, as on many. They
// run before any message is sent. Count, dtype, op and root are the same on every rank of
// a collective, so those checks throw on all ranks together; a buffer-overlap check can
// throw on one rank only, and then main()'s job-wide abort ends the others.
// Private to src/comm/.
#pragma once

#include <cstdint>

#include "comm/comm.h"
#include "core/dtype.h"

namespace anvil::comm {

// count >= 0.
void count_check(const Comm& comm, const char* call, std::int64_t count);
// Reductions are defined on f32, f64, i32, i64; reduce_avg on f32 and f64 only.
void reduce_dtype_check(const Comm& comm, const char* call, DType dtype, ReduceOp op);
// send (count) and recv (size * count) are disjoint, or send is recv's own block (the
// in-place allgather, which is what the function returns).
bool allgather_args_check(const Comm& comm, const void* send, const void* recv,
                          std::int64_t count, DType dtype);
// send (size * count) and recv (count) are disjoint, or the same pointer (in place: this
// rank's block lands at the front of the buffer; the function returns true).
bool reduce_scatter_args_check(const Comm& comm, const void* send, const void* recv,
                               std::int64_t count, DType dtype);
// 0 <= root < size.
void root_check(const Comm& comm, int root);
// color >= 0: every rank joins some group (MPI reserves negative colors for "none").
void split_color_check(const Comm& comm, int color);

// The second half of reduce_avg: buf (count) /= divisor. f32 and f64 only.
void avg_divide(void* buf, std::int64_t count, DType dtype, int divisor);

}  // namespace anvil::comm
