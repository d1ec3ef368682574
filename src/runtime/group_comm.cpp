#include "runtime/group_comm.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "core/error.h"

namespace anvil::runtime {

namespace {

class GroupComm final : public comm::Comm {
 public:
  GroupComm(comm::Comm& host, comm::Comm& device, IsDeviceMemory is_device)
      : host_(host), device_(device), is_device_(std::move(is_device)) {
    ANVIL_CHECK(host_.size() == device_.size() && host_.rank() == device_.rank(), "comm '", host_.name(),
                "': the host and device communicators differ (rank ", host_.rank(), " of ", host_.size(),
                " vs ", device_.rank(), " of ", device_.size(), ")");
  }
  // A split's child: owns both halves.
  GroupComm(std::unique_ptr<Comm> host, std::unique_ptr<Comm> device, IsDeviceMemory is_device)
      : GroupComm(*host, *device, std::move(is_device)) {
    host_owned_ = std::move(host);
    device_owned_ = std::move(device);
  }

  int rank() const override { return host_.rank(); }
  int size() const override { return host_.size(); }
  const std::string& name() const override { return host_.name(); }
  std::int64_t max_block_count() const override {
    return std::min(host_.max_block_count(), device_.max_block_count());
  }

 protected:
  void allreduce_impl(void* buf, std::int64_t count, DType dtype, comm::ReduceOp op) override {
    on(buf).allreduce(buf, count, dtype, op);
  }
  void allgather_impl(const void* send, void* recv, std::int64_t count, DType dtype, bool) override {
    on(send, recv, "allgather").allgather(send, recv, count, dtype);
  }
  void reduce_scatter_impl(const void* send, void* recv, std::int64_t count, DType dtype, comm::ReduceOp op,
                           bool) override {
    on(send, recv, "reduce_scatter").reduce_scatter(send, recv, count, dtype, op);
  }
  void broadcast_impl(void* buf, std::int64_t count, DType dtype, int root) override {
    on(buf).broadcast(buf, count, dtype, root);
  }
  void alltoallv_impl(const void* send, const std::int64_t* send_counts, void* recv,
                      const std::int64_t* recv_counts, DType dtype) override {
    on(send, recv, "alltoallv").alltoallv(send, send_counts, recv, recv_counts, dtype);
  }
  // The device Comm's barrier also waits for its stream (NcclComm); every rank of the group
  // passes it, which is all a host barrier adds.
  void barrier_impl() override { device_.barrier(); }
  std::unique_ptr<Comm> split_impl(int color, int key, std::string name) const override {
    auto host = host_.split(color, key, name);
    auto device = device_.split(color, key, std::move(name));
    return std::make_unique<GroupComm>(std::move(host), std::move(device), is_device_);
  }
  // A group of one's out-of-place allgather or reduce_scatter: a copy in the memory of its
  // buffers, device ones by the device Comm's own group-of-one copy.
  void local_copy(void* dst, const void* src, std::size_t bytes) override {
    Comm& c = on(src, dst, "allgather or reduce_scatter");
    if (&c == &host_) {
      std::memcpy(dst, src, bytes);
      return;
    }
    device_.allgather(src, dst, static_cast<std::int64_t>(bytes), DType::dtype_u8);
  }

 private:
  Comm& on(const void* buf) { return is_device_(buf) ? device_ : host_; }
  Comm& on(const void* send, const void* recv, const char* call) {
    const bool device = is_device_(send);
    ANVIL_CHECK(device == is_device_(recv), call, " on comm '", name(),
                "': send and recv are in different memories (host and device)");
    return device ? device_ : host_;
  }

  comm::Comm& host_;
  comm::Comm& device_;
  IsDeviceMemory is_device_;
  std::unique_ptr<Comm> host_owned_, device_owned_;  // set in a split's child
};

}  // namespace

std::unique_ptr<comm::Comm> group_comm(comm::Comm& host, comm::Comm& device, IsDeviceMemory is_device) {
  return std::make_unique<GroupComm>(host, device, std::move(is_device));
}

}  // namespace anvil::runtime
