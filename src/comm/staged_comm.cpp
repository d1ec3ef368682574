// StagedComm: a Comm on device buffers for ranks whose collectives run on the host (several
// ranks sharing one GPU, where NCCL refuses to put two of them in one communicator, or MPI
// without NCCL). Each call copies its device input into one host buffer, runs the inner
// Comm's collective there in place, and copies the result back.
//
// Arguments are checked against the caller's device pointers before anything is copied
// (the inner Comm only ever sees the host buffer, where every call is in place and so
// cannot see the caller's overlap or in-place mistakes). The inner Comm then records the
// CollectiveScope for the watchdog and comm_busy_seconds(); the staging copies are not
// counted as communication.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "comm/collective_check.h"
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

  void allreduce(void* buf, std::int64_t count, DType dtype, ReduceOp op) override {
    count_check(*this, "allreduce", count);
    reduce_dtype_check(*this, "allreduce", dtype, op);
    if (size() == 1 || count == 0) return;
    const std::size_t bytes = byte_count(count, dtype);
    char* host = host_buffer(bytes);
    staging_.to_host(host, buf, bytes);
    inner_.allreduce(host, count, dtype, op);
    staging_.to_device(buf, host, bytes);
  }

  void allgather(const void* send, void* recv, std::int64_t count, DType dtype) override {
    count_check(*this, "allgather", count);
    const bool in_place = allgather_args_check(*this, send, recv, count, dtype);
    if (count == 0) return;
    const std::size_t block = byte_count(count, dtype);
    if (size() == 1) {
      if (!in_place) device_copy(recv, send, block);
      return;
    }
    // (size * count): this rank's block goes to its place, the inner allgather is in place.
    char* host = host_buffer(static_cast<std::size_t>(size()) * block);
    char* own = host + static_cast<std::size_t>(rank()) * block;
    staging_.to_host(own, send, block);
    inner_.allgather(own, host, count, dtype);
    staging_.to_device(recv, host, static_cast<std::size_t>(size()) * block);
  }

  void reduce_scatter(const void* send, void* recv, std::int64_t count, DType dtype,
                      ReduceOp op) override {
    count_check(*this, "reduce_scatter", count);
    reduce_dtype_check(*this, "reduce_scatter", dtype, op);
    const bool in_place = reduce_scatter_args_check(*this, send, recv, count, dtype);
    if (count == 0) return;
    const std::size_t block = byte_count(count, dtype);
    if (size() == 1) {
      if (!in_place) device_copy(recv, send, block);
      return;
    }
    // In place on the host, this rank's block lands at the front of the buffer, which is
    // also where comm.h puts it when send == recv: one copy back serves both cases.
    char* host = host_buffer(static_cast<std::size_t>(size()) * block);
    staging_.to_host(host, send, static_cast<std::size_t>(size()) * block);
    inner_.reduce_scatter(host, host, count, dtype, op);
    staging_.to_device(recv, host, block);
  }

  void broadcast(void* buf, std::int64_t count, DType dtype, int root) override {
    count_check(*this, "broadcast", count);
    root_check(*this, root);
    if (size() == 1 || count == 0) return;
    // Only the root has data to send, and only the others have anything to receive.
    const std::size_t bytes = byte_count(count, dtype);
    char* host = host_buffer(bytes);
    if (rank() == root) staging_.to_host(host, buf, bytes);
    inner_.broadcast(host, count, dtype, root);
    if (rank() != root) staging_.to_device(buf, host, bytes);
  }

  void barrier() override { inner_.barrier(); }

  std::unique_ptr<Comm> split(int color, int key, std::string name) const override {
    split_color_check(*this, color);
    return std::make_unique<StagedComm>(inner_.split(color, key, std::move(name)), staging_);
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

  // A group of one's out-of-place copy. DeviceStaging has no device-to-device copy, so it
  // goes through the host; staged groups of one are rare (tp = 1 skips its collectives).
  void device_copy(void* dst, const void* src, std::size_t bytes) {
    char* host = host_buffer(bytes);
    staging_.to_host(host, src, bytes);
    staging_.to_device(dst, host, bytes);
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
