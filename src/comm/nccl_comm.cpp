// NcclComm: Comm's public calls have checked the arguments (comm.cpp, the same checks and
// messages as MpiComm's) and answered a group of one with local_copy; here the NCCL call
// is enqueued on the stream and checked.
//
// The watchdog (watchdog.h) sees each call through a CollectiveScope as MpiComm's do, but
// an enqueue returns before the collective runs: it catches the blocking calls (init,
// split, the first use of a connection), and a collective that hangs on the device at the
// next host wait (barrier's, the backend's copy_to_host or synchronize: cuda_wait.cuh), which
// has the watchdog's deadline. The watchdog thread also polls ncclCommGetAsyncError of every
// NcclComm and calls ncclCommAbort on them all before MPI_Abort. Compiled, never run here.
#include "comm/nccl_comm.h"

#include <nccl.h>

#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <utility>

#include "comm/comm.h"
#include "comm/nccl_check.h"
#include "comm/watchdog.h"
#include "core/error.h"
#include "cuda_check.cuh"
#include "cuda_wait.cuh"

namespace anvil::comm {

namespace {

// After Comm's dtype check, so only the four reducible dtypes arrive here.
ncclDataType_t nccl_reduce_type(DType dtype) {
  switch (dtype) {
    case DType::dtype_f32: return ncclFloat32;
    case DType::dtype_f64: return ncclFloat64;
    case DType::dtype_i32: return ncclInt32;
    case DType::dtype_i64: return ncclInt64;
    default: break;
  }
  ANVIL_CHECK(false, "no NCCL reduction type for dtype ", dtype_short_name(dtype));
}

// Data that is only moved travels as words of the dtype's size; NCCL copies bits, so bf16
// (ncclBfloat16), f16 and i16 are all alike here.
ncclDataType_t nccl_copy_type(DType dtype) {
  switch (dtype_size(dtype)) {
    case 1: return ncclUint8;
    case 2: return ncclBfloat16;
    case 4: return ncclUint32;
    case 8: return ncclUint64;
    default: break;
  }
  ANVIL_CHECK(false, "no NCCL copy type for dtype ", dtype_short_name(dtype));
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::reduce_sum: return ncclSum;
    case ReduceOp::reduce_avg: return ncclAvg;
    case ReduceOp::reduce_max: return ncclMax;
  }
  ANVIL_CHECK(false, "unknown ReduceOp ", static_cast<int>(op));
}

std::size_t byte_count(std::int64_t count, DType dtype) {
  return static_cast<std::size_t>(count) * dtype_size(dtype);
}

class NcclComm final : public Comm {
 public:
  // Owns `comm`.
  NcclComm(ncclComm_t comm, cudaStream_t stream, std::string name)
      : comm_(comm), stream_(stream), name_(std::move(name)) {
    try {
      NCCL_CHECK(ncclCommUserRank(comm_, &rank_), name_);
      NCCL_CHECK(ncclCommCount(comm_, &size_), name_);
      // barrier()'s word, allocated once so that barrier never allocates.
      CUDA_CHECK(cudaMalloc(&barrier_word_, sizeof(std::int32_t)));
      CUDA_CHECK(cudaMemsetAsync(barrier_word_, 0, sizeof(std::int32_t), stream_));
      // The watchdog polls NCCL's asynchronous error (a peer gone, a network failure) and
      // aborts this communicator before it ends the job.
      ncclComm_t c = comm_;
      async_id_ = async_comm_register({[c, name = name_] {
                                         ncclResult_t state = ncclSuccess;
                                         if (ncclCommGetAsyncError(c, &state) != ncclSuccess) return std::string();
                                         if (state == ncclSuccess || state == ncclInProgress) return std::string();
                                         return str_cat("NCCL reports an asynchronous error on the ", name,
                                                        " group: ", ncclGetErrorString(state));
                                       },
                                       [c] { ncclCommAbort(c); }});
    } catch (...) {
      release();
      throw;
    }
  }
  ~NcclComm() override { release(); }
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }

 protected:
  void allreduce_impl(void* buf, std::int64_t count, DType dtype, ReduceOp op) override {
    const CollectiveScope scope("allreduce", name_);
    NCCL_CHECK(ncclAllReduce(buf, buf, static_cast<std::size_t>(count), nccl_reduce_type(dtype),
                             nccl_op(op), comm_, stream_),
               name_);
  }

  // NCCL's in-place allgather is comm.h's: send == recv + rank * count.
  void allgather_impl(const void* send, void* recv, std::int64_t count, DType dtype, bool) override {
    const CollectiveScope scope("allgather", name_);
    NCCL_CHECK(ncclAllGather(send, recv, static_cast<std::size_t>(count), nccl_copy_type(dtype),
                             comm_, stream_),
               name_);
  }

  void reduce_scatter_impl(const void* send, void* recv, std::int64_t count, DType dtype,
                           ReduceOp op, bool in_place) override {
    const CollectiveScope scope("reduce_scatter", name_);
    if (!in_place) {
      NCCL_CHECK(ncclReduceScatter(send, recv, static_cast<std::size_t>(count),
                                   nccl_reduce_type(dtype), nccl_op(op), comm_, stream_),
                 name_);
      return;
    }
    // comm.h puts an in-place result at the front of the buffer; NCCL's in place leaves it
    // in this rank's own block (recv == send + rank * count). Reduce there, then move it to
    // the front on the same stream: the two blocks do not overlap for rank > 0.
    const std::size_t block = byte_count(count, dtype);
    auto* base = static_cast<char*>(recv);
    char* own = base + static_cast<std::size_t>(rank_) * block;
    NCCL_CHECK(ncclReduceScatter(base, own, static_cast<std::size_t>(count),
                                 nccl_reduce_type(dtype), nccl_op(op), comm_, stream_),
               name_);
    if (rank_ != 0) local_copy(base, own, block);
  }

  void broadcast_impl(void* buf, std::int64_t count, DType dtype, int root) override {
    const CollectiveScope scope("broadcast", name_);
    NCCL_CHECK(ncclBroadcast(buf, buf, static_cast<std::size_t>(count), nccl_copy_type(dtype),
                             root, comm_, stream_),
               name_);
  }

  // One grouped ncclSend / ncclRecv per peer, blocks packed in rank order (NCCL has no
  // alltoallv of its own). The expert-parallel exchange calls it on the CUDA backend
  // (model/moe_dispatch.h). Compiled against the NCCL headers, never run: gpu.train's ep 2
  // run (two ranks on one GPU, host-staged) does not reach it either; ep over NCCL needs
  // two GPUs.
  void alltoallv_impl(const void* send, const std::int64_t* send_counts, void* recv,
                      const std::int64_t* recv_counts, DType dtype) override {
    const CollectiveScope scope("alltoallv", name_);
    const ncclDataType_t type = nccl_copy_type(dtype);
    const auto* s = static_cast<const char*>(send);
    auto* r = static_cast<char*>(recv);
    NCCL_CHECK(ncclGroupStart(), name_);
    for (int peer = 0; peer < size_; ++peer) {
      const auto sn = static_cast<std::size_t>(send_counts[peer]);
      const auto rn = static_cast<std::size_t>(recv_counts[peer]);
      if (sn > 0) NCCL_CHECK(ncclSend(s, sn, type, peer, comm_, stream_), name_);
      if (rn > 0) NCCL_CHECK(ncclRecv(r, rn, type, peer, comm_, stream_), name_);
      s += byte_count(send_counts[peer], dtype);
      r += byte_count(recv_counts[peer], dtype);
    }
    NCCL_CHECK(ncclGroupEnd(), name_);
  }

  // Every rank has enqueued everything before its barrier and the stream has run it: a
  // one-word allreduce that nobody can pass alone, then a wait for the stream. The wait is
  // inside the scope, so a collective hung on the device trips the watchdog here.
  void barrier_impl() override {
    const CollectiveScope scope("barrier", name_);
    if (size_ > 1) {
      NCCL_CHECK(ncclAllReduce(barrier_word_, barrier_word_, 1, ncclInt32, ncclSum, comm_, stream_),
                 name_);
    }
    cuda_stream_wait(stream_, "barrier");
  }

  // ncclCommSplit orders a color's ranks by key, then by rank, as comm.h does; with a null
  // config the child shares no resources with this comm, so it may outlive it.
  std::unique_ptr<Comm> split_impl(int color, int key, std::string name) const override {
    const CollectiveScope scope("split", name_);
    ncclComm_t child = nullptr;
    NCCL_CHECK(ncclCommSplit(comm_, color, key, &child, nullptr), name_);
    ANVIL_CHECK(child != nullptr, "ncclCommSplit of comm '", name_, "' gave no communicator");
    return std::make_unique<NcclComm>(child, stream_, std::move(name));
  }

  void local_copy(void* dst, const void* src, std::size_t bytes) override {
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
  }

 private:
  void release() noexcept {
    if (async_id_ >= 0) async_comm_unregister(async_id_);
    async_id_ = -1;
    // While an error unwinds, main() is about to abort the job: ncclCommDestroy would wait
    // for this comm's collectives (maybe for a peer that never comes) and cudaFree for the
    // device, so abort the communicator and leave the word to the process's end.
    if (std::uncaught_exceptions() > 0) {
      if (comm_ != nullptr) ncclCommAbort(comm_);
      comm_ = nullptr;
      return;
    }
    if (comm_ != nullptr) ncclCommDestroy(comm_);
    if (barrier_word_ != nullptr) cudaFree(barrier_word_);
    comm_ = nullptr;
    barrier_word_ = nullptr;
  }

  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  std::string name_;
  int rank_ = 0;
  int size_ = 1;
  void* barrier_word_ = nullptr;
  int async_id_ = -1;  // in the watchdog's registry (async_comm_register)
};

class CudaDeviceStaging final : public DeviceStaging {
 public:
  explicit CudaDeviceStaging(cudaStream_t stream) : stream_(stream) {}

  void to_host(void* host, const void* device, std::size_t bytes) override {
    CUDA_CHECK(cudaMemcpyAsync(host, device, bytes, cudaMemcpyDeviceToHost, stream_));
    cuda_stream_wait(stream_, "staging to host");
  }
  void to_device(void* device, const void* host, std::size_t bytes) override {
    CUDA_CHECK(cudaMemcpyAsync(device, host, bytes, cudaMemcpyHostToDevice, stream_));
    // The host buffer is reused by the next call: the copy must be done before returning.
    cuda_stream_wait(stream_, "staging to device");
  }

 private:
  cudaStream_t stream_;
};

}  // namespace

std::unique_ptr<Comm> nccl_comm_create(Comm& bootstrap, cudaStream_t stream, std::string name) {
  ncclUniqueId id{};
  if (bootstrap.rank() == 0) NCCL_CHECK(ncclGetUniqueId(&id), name);
  // The id is opaque bytes, sent over the host communicator.
  bootstrap.broadcast(&id, static_cast<std::int64_t>(sizeof id), DType::dtype_u8, 0);
  ncclComm_t comm = nullptr;
  {
    // Blocks until every rank has joined: a rank that never does trips the watchdog.
    const CollectiveScope scope("ncclCommInitRank", name);
    NCCL_CHECK(ncclCommInitRank(&comm, bootstrap.size(), id, bootstrap.rank()), name);
  }
  return std::make_unique<NcclComm>(comm, stream, std::move(name));
}

std::unique_ptr<DeviceStaging> cuda_device_staging(cudaStream_t stream) {
  return std::make_unique<CudaDeviceStaging>(stream);
}

}  // namespace anvil::comm
