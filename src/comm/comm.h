// Comm: collectives over one group of ranks, on backend buffers. MpiComm (CPU ranks, or
// several ranks sharing a GPU, host-staged) is here; NcclComm comes with the CUDA backend
// and implements the same calls on device buffers; staged_comm puts MpiComm on device
// buffers through host memory.
//
// Every call is collective: all ranks of the group make it, in the same order, with the
// same count and dtype. A group of one rank makes every call a no-op (beyond the copy
// that out-of-place calls need), so the tp = 1 and dp = 1 paths cost nothing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "core/dtype.h"

namespace anvil::comm {

enum class ReduceOp { reduce_sum, reduce_avg, reduce_max };

// parallel.comm: which Comm carries the collectives on backend buffers. auto is resolved by
// the Runtime (runtime/runtime.h): nccl on cuda unless ranks share a GPU, mpi on cpu.
enum class CommKind { comm_nccl, comm_mpi, comm_auto };

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "tp", "dp", "world": named in errors.
  virtual const std::string& name() const = 0;

  // The public calls check their arguments here, once for every implementation, then hand
  // the rest to the *_impl below. Bad arguments (negative count, dtype, root, overlapping
  // buffers, a block past the implementation's count limit) throw before any message is
  // sent, on a group of one as on many. Reductions are defined on f32, f64, i32, i64;
  // avg is sum / size, f32 and f64 only. Copies (allgather, broadcast) take any dtype.
  // A call with count 0 returns after the checks; a group of one does only the
  // out-of-place copy (local_copy), so the tp = 1 and dp = 1 paths cost nothing.

  // buf (count) reduced in place over the group.
  void allreduce(void* buf, std::int64_t count, DType dtype, ReduceOp op);
  // recv (size * count) = the send (count) of rank 0, rank 1, ... in rank order. In place
  // when send is this rank's block of recv (recv + rank * count); otherwise they must not
  // overlap.
  void allgather(const void* send, void* recv, std::int64_t count, DType dtype);
  // send (size * count) reduced over the group; rank i receives block i into recv (count).
  // In place when send == recv: block i lands at the front of the buffer.
  void reduce_scatter(const void* send, void* recv, std::int64_t count, DType dtype, ReduceOp op);
  // buf (count) of `root` copied to every rank.
  void broadcast(void* buf, std::int64_t count, DType dtype, int root);
  // Personalised exchange (MoE token dispatch): send packs one block per destination rank,
  // send_counts[j] elements for rank j, in rank order; recv gets block i (recv_counts[i]
  // elements) from rank i, packed in rank order. Both count arrays are host memory of
  // size() entries and must agree pairwise (rank i's send_counts[j] == rank j's
  // recv_counts[i]): exchange the counts first (an alltoallv of one i64 per rank). Any
  // dtype (a copy); send and recv must not overlap. The totals of either side are at most
  // max_block_count() (MPI's int displacements).
  void alltoallv(const void* send, const std::int64_t* send_counts, void* recv, const std::int64_t* recv_counts,
                 DType dtype);
  // Returns when every rank has made every earlier call of this group (an implementation
  // that enqueues also waits for its queue, on a group of one too).
  void barrier() { barrier_impl(); }
  // A sub-group of the ranks that pass the same color (>= 0), ordered by key (then by rank).
  // Collective over this group; the child is independent of its parent's lifetime.
  std::unique_ptr<Comm> split(int color, int key, std::string name) const;

  // The largest per-rank count of allgather and reduce_scatter (MPI's int count for the
  // MPI-based Comms); checked on groups of one too, so the limit does not depend on size.
  virtual std::int64_t max_block_count() const;

  // Typed conveniences.
  void allreduce_sum(float* buf, std::int64_t n) { allreduce(buf, n, DType::dtype_f32, ReduceOp::reduce_sum); }
  void allreduce_sum(double* buf, std::int64_t n) { allreduce(buf, n, DType::dtype_f64, ReduceOp::reduce_sum); }
  void allreduce_max(float* buf, std::int64_t n) { allreduce(buf, n, DType::dtype_f32, ReduceOp::reduce_max); }

 protected:
  // The implementations see checked arguments only: count > 0, size() > 1, a reducible
  // dtype, a valid root, buffers that are disjoint unless `in_place` says how they share.
  virtual void allreduce_impl(void* buf, std::int64_t count, DType dtype, ReduceOp op) = 0;
  virtual void allgather_impl(const void* send, void* recv, std::int64_t count, DType dtype,
                              bool in_place) = 0;
  virtual void reduce_scatter_impl(const void* send, void* recv, std::int64_t count, DType dtype,
                                   ReduceOp op, bool in_place) = 0;
  virtual void broadcast_impl(void* buf, std::int64_t count, DType dtype, int root) = 0;
  // size() > 1 (every rank calls, with nothing to move too); totals within max_block_count().
  virtual void alltoallv_impl(const void* send, const std::int64_t* send_counts, void* recv,
                              const std::int64_t* recv_counts, DType dtype) = 0;
  // Called on every group, of one too.
  virtual void barrier_impl() = 0;
  // color >= 0.
  virtual std::unique_ptr<Comm> split_impl(int color, int key, std::string name) const = 0;
  // A group of one's out-of-place allgather / reduce_scatter: bytes from src to dst in the
  // memory this Comm works on.
  virtual void local_copy(void* dst, const void* src, std::size_t bytes) = 0;
};

// MPI_COMM_WORLD (MPI must be initialised: comm::MpiSession). MPI counts are int: its
// allreduce and broadcast take any count (sent in chunks of at most 1 GiB); allgather and
// reduce_scatter take at most INT_MAX elements per rank (an internal error beyond).
std::unique_ptr<Comm> mpi_comm_world();
// Wall seconds this process has spent inside MPI collectives, over all communicators since
// it started: the metrics' communication share (waiting for a slower rank counts too).
double comm_busy_seconds();
// A group of one rank that never talks to anybody: the communicator of single-rank code
// paths and unit tests without MPI.
std::unique_ptr<Comm> self_comm(std::string name);

// Copies between backend (device) memory and host memory, for a Comm that collects on the
// host. Both calls return when the copy is complete (the host side may be read or reused).
class DeviceStaging {
 public:
  virtual ~DeviceStaging() = default;
  virtual void to_host(void* host, const void* device, std::size_t bytes) = 0;
  virtual void to_device(void* device, const void* host, std::size_t bytes) = 0;
};

// A Comm over device buffers that stages them through host memory and runs `inner`'s
// collectives there (MpiComm for several ranks sharing one GPU, or MPI without NCCL).
// `inner` must outlive it, and `staging` must outlive it and every child; split() returns
// a staged child owning the inner child. rank, size and name are inner's; arguments are
// checked as inner checks them. A group of one moves nothing but the out-of-place copies
// (through the host); the host buffer grows to the largest call and is then reused.
std::unique_ptr<Comm> staged_comm(Comm& inner, DeviceStaging& staging);

}  // namespace anvil::comm
