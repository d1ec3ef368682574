// Comm's public calls: the argument checks of every implementation (MpiComm, SelfComm,
// StagedComm, NcclComm) in one place, so that a caller's bug fails the same way on one
// rank, in a unit test, as on many, before any message is sent. Count, dtype, op and root
// are the same on every rank of a collective, so those checks throw on all ranks
// together; a buffer-overlap check can throw on one rank only, and then main()'s job-wide
// abort ends the others.
#include "comm/comm.h"

#include <algorithm>
#include <cstdint>
#include <limits>

#include "core/error.h"

namespace anvil::comm {

namespace {

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::reduce_sum: return "sum";
    case ReduceOp::reduce_avg: return "avg";
    case ReduceOp::reduce_max: return "max";
  }
  return "?";
}

// Addresses as integers: the ranges compared may belong to different objects, where
// pointer comparison and arithmetic past an object's end are undefined.
std::uintptr_t address_of(const void* p) { return reinterpret_cast<std::uintptr_t>(p); }

// Byte ranges [a, a + a_bytes) and [b, b + b_bytes) share a byte.
bool bytes_overlap(const void* a, std::int64_t a_bytes, const void* b, std::int64_t b_bytes) {
  if (a_bytes == 0 || b_bytes == 0) return false;
  const std::uintptr_t pa = address_of(a), pb = address_of(b);
  return pa < pb + static_cast<std::uintptr_t>(b_bytes) &&
         pb < pa + static_cast<std::uintptr_t>(a_bytes);
}

std::int64_t block_bytes(std::int64_t count, DType dtype) {
  return count * static_cast<std::int64_t>(dtype_size(dtype));
}

void count_check(const Comm& comm, const char* call, std::int64_t count) {
  ANVIL_CHECK(count >= 0, call, " on comm '", comm.name(), "': negative count ", count);
}

// Reductions are defined on f32, f64, i32, i64; reduce_avg on f32 and f64 only.
void reduce_dtype_check(const Comm& comm, const char* call, DType dtype, ReduceOp op) {
  const bool is_float = dtype == DType::dtype_f32 || dtype == DType::dtype_f64;
  const bool is_int = dtype == DType::dtype_i32 || dtype == DType::dtype_i64;
  ANVIL_CHECK(is_float || is_int, call, " on comm '", comm.name(), "': reduce_",
              reduce_op_name(op), " is not defined on dtype ", dtype_short_name(dtype),
              " (f32, f64, i32, i64 only)");
  ANVIL_CHECK(op != ReduceOp::reduce_avg || is_float, call, " on comm '", comm.name(),
              "': reduce_avg is not defined on dtype ", dtype_short_name(dtype),
              " (f32, f64 only)");
}

void block_count_check(const Comm& comm, const char* call, std::int64_t count, std::int64_t limit) {
  ANVIL_CHECK(count <= limit, call, " on comm '", comm.name(), "': count ", count,
              " per rank exceeds MPI's int count (", limit, " per rank on this comm)");
}

// send (count) and recv (size * count) are disjoint, or send is recv's own block (the
// in-place allgather, which is what the function returns).
bool allgather_in_place(const Comm& comm, const void* send, const void* recv, std::int64_t count,
                        DType dtype) {
  const std::int64_t block = block_bytes(count, dtype);
  if (block == 0) return false;
  const auto own_block = address_of(recv) + static_cast<std::uintptr_t>(comm.rank() * block);
  if (address_of(send) == own_block) return true;
  ANVIL_CHECK(!bytes_overlap(send, block, recv, comm.size() * block), "allgather on comm '",
              comm.name(), "': send overlaps recv without being this rank's block of it");
  return false;
}

// send (size * count) and recv (count) are disjoint, or the same pointer (in place: this
// rank's block lands at the front of the buffer; the function returns true).
bool reduce_scatter_in_place(const Comm& comm, const void* send, const void* recv,
                             std::int64_t count, DType dtype) {
  const std::int64_t block = block_bytes(count, dtype);
  if (block == 0) return false;
  if (send == recv) return true;
  ANVIL_CHECK(!bytes_overlap(send, comm.size() * block, recv, block), "reduce_scatter on comm '",
              comm.name(), "': send and recv overlap without being the same pointer");
  return false;
}

}  // namespace

void Comm::allreduce(void* buf, std::int64_t count, DType dtype, ReduceOp op) {
  count_check(*this, "allreduce", count);
  reduce_dtype_check(*this, "allreduce", dtype, op);
  // The sum, average and maximum of one value is that value.
  if (size() == 1 || count == 0) return;
  allreduce_impl(buf, count, dtype, op);
}

void Comm::allgather(const void* send, void* recv, std::int64_t count, DType dtype) {
  count_check(*this, "allgather", count);
  block_count_check(*this, "allgather", count, max_block_count());
  const bool in_place = allgather_in_place(*this, send, recv, count, dtype);
  if (count == 0) return;
  if (size() == 1) {
    if (!in_place) local_copy(recv, send, static_cast<std::size_t>(block_bytes(count, dtype)));
    return;
  }
  allgather_impl(send, recv, count, dtype, in_place);
}

void Comm::reduce_scatter(const void* send, void* recv, std::int64_t count, DType dtype, ReduceOp op) {
  count_check(*this, "reduce_scatter", count);
  reduce_dtype_check(*this, "reduce_scatter", dtype, op);
  block_count_check(*this, "reduce_scatter", count, max_block_count());
  const bool in_place = reduce_scatter_in_place(*this, send, recv, count, dtype);
  if (count == 0) return;
  if (size() == 1) {
    if (!in_place) local_copy(recv, send, static_cast<std::size_t>(block_bytes(count, dtype)));
    return;
  }
  reduce_scatter_impl(send, recv, count, dtype, op, in_place);
}

void Comm::broadcast(void* buf, std::int64_t count, DType dtype, int root) {
  count_check(*this, "broadcast", count);
  ANVIL_CHECK(root >= 0 && root < size(), "broadcast on comm '", name(), "': root ", root,
              " is not a rank of a group of ", size());
  if (size() == 1 || count == 0) return;
  broadcast_impl(buf, count, dtype, root);
}

void Comm::alltoallv(const void* send, const std::int64_t* send_counts, void* recv,
                     const std::int64_t* recv_counts, DType dtype) {
  ANVIL_CHECK(send_counts && recv_counts, "alltoallv on comm '", name(), "': null counts");
  std::int64_t send_total = 0, recv_total = 0;
  for (int i = 0; i < size(); ++i) {
    count_check(*this, "alltoallv", send_counts[i]);
    count_check(*this, "alltoallv", recv_counts[i]);
    send_total += send_counts[i];
    recv_total += recv_counts[i];
  }
  block_count_check(*this, "alltoallv", std::max(send_total, recv_total), max_block_count());
  ANVIL_CHECK(!bytes_overlap(send, block_bytes(send_total, dtype), recv, block_bytes(recv_total, dtype)),
              "alltoallv on comm '", name(), "': send and recv overlap");
  if (size() == 1) {
    ANVIL_CHECK(send_counts[0] == recv_counts[0], "alltoallv on comm '", name(), "': sends ", send_counts[0],
                " to itself but expects ", recv_counts[0]);
    if (send_total > 0) local_copy(recv, send, static_cast<std::size_t>(block_bytes(send_total, dtype)));
    return;
  }
  // Every rank calls in, those with nothing to move too: the exchange is collective.
  alltoallv_impl(send, send_counts, recv, recv_counts, dtype);
}

std::unique_ptr<Comm> Comm::split(int color, int key, std::string name) const {
  // Every rank joins some group (MPI reserves negative colors for "none").
  ANVIL_CHECK(color >= 0, "split of comm '", this->name(), "': negative color ", color);
  return split_impl(color, key, std::move(name));
}

std::int64_t Comm::max_block_count() const { return std::numeric_limits<std::int64_t>::max(); }

}  // namespace anvil::comm
