// MpiComm: Comm over an MPI communicator, on host buffers. Comm's public calls have checked
// the arguments and answered a group of one without any MPI call (comm.cpp); here every
// MPI call is checked and a failure names the call and the group.
#include <mpi.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "comm/comm.h"
#include "comm/mpi_check.h"
#include "comm/mpi_handle.h"
#include "comm/watchdog.h"
#include "core/error.h"
#include "core/log.h"

namespace anvil::comm {

namespace {

// Counts past INT_MAX (MPI's int count) are handled two ways. allreduce and broadcast,
// which carry whole gradient and weight buffers, send them in chunks of at most this many
// bytes; keeping each message under 2 GiB also stays clear of the large-message bugs some
// MPI transports have had. allgather and reduce_scatter interleave the ranks' blocks, so
// chunking them would need strided types; there a per-rank count past INT_MAX is an
// internal error (callers shard activations and gradients far below that).
constexpr std::int64_t kMaxMessageBytes = std::int64_t{1} << 30;

// After Comm's dtype check, so only the four reducible dtypes arrive here.
MPI_Datatype mpi_reduce_type(DType dtype) {
  switch (dtype) {
    case DType::dtype_f32: return MPI_FLOAT;
    case DType::dtype_f64: return MPI_DOUBLE;
    case DType::dtype_i32: return MPI_INT32_T;
    case DType::dtype_i64: return MPI_INT64_T;
    default: break;
  }
  ANVIL_CHECK(false, "no MPI reduction type for dtype ", dtype_short_name(dtype));
}

// Data that is only moved, never combined, goes as opaque words of the dtype's size:
// bf16 and f16 as MPI_UINT16_T, u8 and bool as MPI_BYTE.
MPI_Datatype mpi_copy_type(DType dtype) {
  switch (dtype_size(dtype)) {
    case 1: return MPI_BYTE;
    case 2: return MPI_UINT16_T;
    case 4: return MPI_UINT32_T;
    case 8: return MPI_UINT64_T;
    default: break;
  }
  ANVIL_CHECK(false, "no MPI copy type for dtype ", dtype_short_name(dtype));
}

// Calls send(pointer, n) for consecutive chunks of buf (count elements of elem_bytes each),
// every chunk at most kMaxMessageBytes.
template <typename Send>
void for_each_chunk(void* buf, std::int64_t count, std::size_t elem_bytes, Send send) {
  const auto elem = static_cast<std::int64_t>(elem_bytes);
  const std::int64_t chunk = kMaxMessageBytes / elem;
  auto* bytes = static_cast<char*>(buf);
  for (std::int64_t offset = 0; offset < count; offset += chunk)
    send(bytes + offset * elem, static_cast<int>(std::min(chunk, count - offset)));
}

// reduce_avg is a sum on the wire, divided by the group size afterwards.
MPI_Op mpi_op(ReduceOp op) { return op == ReduceOp::reduce_max ? MPI_MAX : MPI_SUM; }

// The second half of reduce_avg: buf (count) /= divisor. f32 and f64 only.
template <typename T>
void avg_divide(void* buf, std::int64_t count, int divisor) {
  auto* p = static_cast<T*>(buf);
  const auto d = static_cast<T>(divisor);
  for (std::int64_t i = 0; i < count; ++i) p[i] /= d;
}
void avg_divide(void* buf, std::int64_t count, DType dtype, int divisor) {
  if (dtype == DType::dtype_f32) return avg_divide<float>(buf, count, divisor);
  avg_divide<double>(buf, count, divisor);
}

class MpiComm final : public Comm {
 public:
  // Owns `comm`: frees it on destruction unless it is MPI_COMM_WORLD.
  MpiComm(MPI_Comm comm, std::string name) : comm_(comm), name_(std::move(name)) {
    try {
      // A child of MPI_Comm_split inherits the parent's handler; set it anyway so that no
      // communicator ever runs with MPI's default of killing the process.
      mpi_check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler",
                name_);
      mpi_check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank", name_);
      mpi_check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size", name_);
    } catch (...) {
      comm_free();
      throw;
    }
  }
  ~MpiComm() override { comm_free(); }
  MpiComm(const MpiComm&) = delete;
  MpiComm& operator=(const MpiComm&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }

  // Counts past INT_MAX are refused by Comm::allgather / reduce_scatter (see
  // kMaxMessageBytes), on groups of one too.
  std::int64_t max_block_count() const override { return std::numeric_limits<int>::max(); }

 protected:
  void allreduce_impl(void* buf, std::int64_t count, DType dtype, ReduceOp op) override {
    const CollectiveScope scope("allreduce", name_);
    for_each_chunk(buf, count, dtype_size(dtype), [&](char* p, int n) {
      mpi_check(MPI_Allreduce(MPI_IN_PLACE, p, n, mpi_reduce_type(dtype), mpi_op(op), comm_),
                "MPI_Allreduce", name_);
    });
    if (op == ReduceOp::reduce_avg) avg_divide(buf, count, dtype, size_);
  }

  void allgather_impl(const void* send, void* recv, std::int64_t count, DType dtype,
                      bool in_place) override {
    const CollectiveScope scope("allgather", name_);
    const int n = static_cast<int>(count);
    const MPI_Datatype type = mpi_copy_type(dtype);
    mpi_check(MPI_Allgather(in_place ? MPI_IN_PLACE : send, n, type, recv, n, type, comm_),
              "MPI_Allgather", name_);
  }

  void reduce_scatter_impl(const void* send, void* recv, std::int64_t count, DType dtype,
                           ReduceOp op, bool in_place) override {
    const CollectiveScope scope("reduce_scatter", name_);
    // In place, MPI reads all size blocks from recv and leaves this rank's block at its front.
    mpi_check(MPI_Reduce_scatter_block(in_place ? MPI_IN_PLACE : send, recv, static_cast<int>(count),
                                       mpi_reduce_type(dtype), mpi_op(op), comm_),
              "MPI_Reduce_scatter_block", name_);
    if (op == ReduceOp::reduce_avg) avg_divide(recv, count, dtype, size_);
  }

  void broadcast_impl(void* buf, std::int64_t count, DType dtype, int root) override {
    const CollectiveScope scope("broadcast", name_);
    for_each_chunk(buf, count, dtype_size(dtype), [&](char* p, int n) {
      mpi_check(MPI_Bcast(p, n, mpi_copy_type(dtype), root, comm_), "MPI_Bcast", name_);
    });
  }

  void alltoallv_impl(const void* send, const std::int64_t* send_counts, void* recv,
                      const std::int64_t* recv_counts, DType dtype) override {
    const CollectiveScope scope("alltoallv", name_);
    // Comm::alltoallv has checked both totals against INT_MAX, so every count and
    // displacement fits MPI's int. Held in members: the step loop does not allocate.
    const auto n = static_cast<std::size_t>(size_);
    a2a_.resize(4 * n);
    int* sc = a2a_.data();
    int* sd = sc + n;
    int* rc = sd + n;
    int* rd = rc + n;
    int s_off = 0, r_off = 0;
    for (std::size_t i = 0; i < n; ++i) {
      sc[i] = static_cast<int>(send_counts[i]);
      rc[i] = static_cast<int>(recv_counts[i]);
      sd[i] = s_off;
      rd[i] = r_off;
      s_off += sc[i];
      r_off += rc[i];
    }
    const MPI_Datatype type = mpi_copy_type(dtype);
    mpi_check(MPI_Alltoallv(send, sc, sd, type, recv, rc, rd, type, comm_), "MPI_Alltoallv", name_);
  }

  void barrier_impl() override {
    const CollectiveScope scope("barrier", name_);
    if (size_ == 1) return;
    mpi_check(MPI_Barrier(comm_), "MPI_Barrier", name_);
  }

  std::unique_ptr<Comm> split_impl(int color, int key, std::string name) const override {
    MPI_Comm child = MPI_COMM_NULL;
    {
      const CollectiveScope scope("MPI_Comm_split", name_);
      mpi_check(MPI_Comm_split(comm_, color, key, &child), "MPI_Comm_split", name_);
    }
    return std::make_unique<MpiComm>(child, std::move(name));
  }

  void local_copy(void* dst, const void* src, std::size_t bytes) override { std::memcpy(dst, src, bytes); }

 private:
  void comm_free() noexcept {
    // Not MPI_COMM_WORLD (MPI's own), nothing after MPI_Finalize, and nothing while an
    // error unwinds: main() is about to abort the job, and MPI_Comm_free is collective in
    // the standard, so it could wait for ranks that never come.
    if (comm_ == MPI_COMM_WORLD || comm_ == MPI_COMM_NULL || !mpi_is_up() ||
        std::uncaught_exceptions() > 0) {
      return;
    }
    if (MPI_Comm_free(&comm_) != MPI_SUCCESS) {
      // A destructor cannot throw; a leaked communicator is worth a warning, not a crash.
      try {
        log_warn("MPI_Comm_free on comm '", name_, "' failed");
      } catch (...) {
      }
    }
  }

  friend MPI_Comm anvil::comm::mpi_handle(const Comm& comm);
  MPI_Comm comm_ = MPI_COMM_NULL;
  std::string name_;
  int rank_ = 0;
  int size_ = 1;
  std::vector<int> a2a_;  // alltoallv's counts and displacements (4 × size)
};

}  // namespace

std::unique_ptr<Comm> mpi_comm_world() {
  ANVIL_CHECK(mpi_is_up(), "mpi_comm_world() before MPI_Init or after MPI_Finalize "
                           "(MPI lives as long as a comm::MpiSession)");
  return std::make_unique<MpiComm>(MPI_COMM_WORLD, "world");
}

MPI_Comm mpi_handle(const Comm& comm) {
  if (const auto* m = dynamic_cast<const MpiComm*>(&comm)) return m->comm_;
  ANVIL_CHECK(comm.size() == 1, "comm '", comm.name(), "' is not an MPI communicator");
  return MPI_COMM_SELF;
}

}  // namespace anvil::comm
