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

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "tp", "dp", "world": named in errors.
  virtual const std::string& name() const = 0;

  // Reductions are defined on f32, f64, i32, i64 (another dtype is an internal error);
  // avg is sum / size, f32 and f64 only. Copies (allgather, broadcast) take any dtype.
  // Bad arguments (negative count, dtype, root, overlapping buffers) throw before any
  // message is sent, on a group of one as on many.

  // buf (count) reduced in place over the group.
  virtual void allreduce(void* buf, std::int64_t count, DType dtype, ReduceOp op) = 0;
  // recv (size * count) = the send (count) of rank 0, rank 1, ... in rank order. In place
  // when send is this rank's block of recv (recv + rank * count); otherwise they must not
  // overlap.
  virtual void allgather(const void* send, void* recv, std::int64_t count, DType dtype) = 0;
  // send (size * count) reduced over the group; rank i receives block i into recv (count).
  // In place when send == recv: block i lands at the front of the buffer.
  virtual void reduce_scatter(const void* send, void* recv, std::int64_t count, DType dtype,
                              ReduceOp op) = 0;
  // buf (count) of `root` copied to every rank.
  virtual void broadcast(void* buf, std::int64_t count, DType dtype, int root) = 0;
  virtual void barrier() = 0;
  // A sub-group of the ranks that pass the same color (>= 0), ordered by key (then by rank).
  // Collective over this group; the child is independent of its parent's lifetime.
  virtual std::unique_ptr<Comm> split(int color, int key, std::string name) const = 0;

  // Typed conveniences.
  void allreduce_sum(float* buf, std::int64_t n) { allreduce(buf, n, DType::dtype_f32, ReduceOp::reduce_sum); }
  void allreduce_sum(double* buf, std::int64_t n) { allreduce(buf, n, DType::dtype_f64, ReduceOp::reduce_sum); }
  void allreduce_max(float* buf, std::int64_t n) { allreduce(buf, n, DType::dtype_f32, ReduceOp::reduce_max); }
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
