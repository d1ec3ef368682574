// StagedComm: a Comm on device buffers for ranks whose collectives run on the host (several
// ranks sharing one GPU, where NCCL refuses to put two of them in one communicator, or MPI
// without NCCL). Each call copies its device input into one host buffer, runs the inner
// Comm's collective there in place, and copies the result back.
//
// Comm's public calls check the arguments against the caller's device pointers before
// anything is copied (the inner Comm only ever sees the host buffer, where every call is in
// place and so cannot see the caller's overlap or in-place mistakes). The inner Comm then records the
// CollectiveScope for the watchdog and comm_busy_seconds(); the staging copies are not
// counted as communication.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "comm/comm.h"

namespace anvil::comm {

namespace {

std::size_t byte_count(std::int64_t count, DType dtype) {
  return static_cast<std::size_t>(count) * dtype_size(dtype);
}

class StagedComm final : public Comm {
 public:
  StagedComm(Comm& inner, DeviceStaging& staging) : inner_(inner), staging_(staging) {}
  // The child of a split: owns its inner Comm.
  StagedComm(std::unique_ptr<Comm> owned, DeviceStaging& staging)
      : owned_(std::move(owned)), inner_(*owned_), staging_(staging) {}
  StagedComm(const StagedComm&) = delete;
  StagedComm& operator=(const StagedComm&) = delete;

  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  const std::string& name() const override { return inner_.name(); }

  // The inner Comm's limit, checked against the caller's count before any staging.
  std::int64_t max_block_count() const override { return inner_.max_block_count(); }

 protected:
  void allreduce_impl(void* buf, std::int64_t count, DType dtype, ReduceOp op) override {
    const std::size_t bytes = byte_count(count, dtype);
    char* host = host_buffer(bytes);
    staging_.to_host(host, buf, bytes);
    inner_.allreduce(host, count, dtype, op);
    staging_.to_device(buf, host, bytes);
  }

  void allgather_impl(const void* send, void* recv, std::int64_t count, DType dtype, bool) override {
    // (size * count): this rank's block goes to its place, the inner allgather is in place.
    const std::size_t block = byte_count(count, dtype);
    char* host = host_buffer(static_cast<std::size_t>(size()) * block);
    char* own = host + static_cast<std::size_t>(rank()) * block;
    staging_.to_host(own, send, block);
    inner_.allgather(own, host, count, dtype);
    staging_.to_device(recv, host, static_cast<std::size_t>(size()) * block);
  }

  void reduce_scatter_impl(const void* send, void* recv, std::int64_t count, DType dtype, ReduceOp op,
                           bool) override {
    // In place on the host, this rank's block lands at the front of the buffer, which is
    // also where comm.h puts it when send == recv: one copy back serves both cases.
    const std::size_t block = byte_count(count, dtype);
    char* host = host_buffer(static_cast<std::size_t>(size()) * block);
    staging_.to_host(host, send, static_cast<std::size_t>(size()) * block);
    inner_.reduce_scatter(host, host, count, dtype, op);
    staging_.to_device(recv, host, block);
  }

  void broadcast_impl(void* buf, std::int64_t count, DType dtype, int root) override {
    // Only the root has data to send, and only the others have anything to receive.
    const std::size_t bytes = byte_count(count, dtype);
    char* host = host_buffer(bytes);
    if (rank() == root) staging_.to_host(host, buf, bytes);
    inner_.broadcast(host, count, dtype, root);
    if (rank() != root) staging_.to_device(buf, host, bytes);
  }

  void alltoallv_impl(const void* send, const std::int64_t* send_counts, void* recv,
                      const std::int64_t* recv_counts, DType dtype) override {
    // One host buffer holds both sides: send's blocks first, recv's after them.
    std::int64_t send_total = 0, recv_total = 0;
    for (int i = 0; i < size(); ++i) {
      send_total += send_counts[i];
      recv_total += recv_counts[i];
    }
    const std::size_t send_bytes = byte_count(send_total, dtype), recv_bytes = byte_count(recv_total, dtype);
    char* host = host_buffer(send_bytes + recv_bytes);
    if (send_bytes > 0) staging_.to_host(host, send, send_bytes);
    inner_.alltoallv(host, send_counts, host + send_bytes, recv_counts, dtype);
    if (recv_bytes > 0) staging_.to_device(recv, host + send_bytes, recv_bytes);
  }

  void barrier_impl() override { inner_.barrier(); }

  std::unique_ptr<Comm> split_impl(int color, int key, std::string name) const override {
    return std::make_unique<StagedComm>(inner_.split(color, key, std::move(name)), staging_);
  }

  // A group of one's out-of-place copy. DeviceStaging has no device-to-device copy, so it
  // goes through the host; staged groups of one are rare (tp = 1 skips its collectives).
  void local_copy(void* dst, const void* src, std::size_t bytes) override {
    char* host = host_buffer(bytes);
    staging_.to_host(host, src, bytes);
    staging_.to_device(dst, host, bytes);
  }

 private:
  // At least `bytes` of host memory, reallocated only when a call needs more than any
  // before it (the step loop's calls repeat their sizes, so it stops allocating after the
  // first step). operator new[] aligns for every dtype.
  char* host_buffer(std::size_t bytes) {
    if (bytes > host_bytes_) {
      host_.reset();  // free first: the old contents are never needed
      host_bytes_ = 0;
      host_ = std::make_unique_for_overwrite<char[]>(bytes);
      host_bytes_ = bytes;
    }
    return host_.get();
  }

  std::unique_ptr<Comm> owned_;  // null unless this is a split's child
  Comm& inner_;
  DeviceStaging& staging_;
  std::unique_ptr<char[]> host_;
  std::size_t host_bytes_ = 0;
};

}  // namespace

std::unique_ptr<Comm> staged_comm(Comm& inner, DeviceStaging& staging) {
  return std::make_unique<StagedComm>(inner, staging);
}

}  // namespace anvil::comm
