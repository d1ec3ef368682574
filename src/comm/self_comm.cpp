// SelfComm: the group of one rank, with no MPI underneath, so that single-rank code paths
// and unit tests run without MPI_Init. It validates arguments exactly as MpiComm does.
#include <cstring>
#include <memory>
#include <string>
#include <utility>

#include "comm/collective_check.h"
#include "comm/comm.h"

namespace anvil::comm {

namespace {

class SelfComm final : public Comm {
 public:
  explicit SelfComm(std::string name) : name_(std::move(name)) {}

  int rank() const override { return 0; }
  int size() const override { return 1; }
  const std::string& name() const override { return name_; }

  // The sum, average and maximum of one value is that value.
  void allreduce(void*, std::int64_t count, DType dtype, ReduceOp op) override {
    count_check(*this, "allreduce", count);
    reduce_dtype_check(*this, "allreduce", dtype, op);
  }

  void allgather(const void* send, void* recv, std::int64_t count, DType dtype) override {
    count_check(*this, "allgather", count);
    if (!allgather_args_check(*this, send, recv, count, dtype) && count > 0) {
      std::memcpy(recv, send, static_cast<std::size_t>(count) * dtype_size(dtype));
    }
  }

  void reduce_scatter(const void* send, void* recv, std::int64_t count, DType dtype,
                      ReduceOp op) override {
    count_check(*this, "reduce_scatter", count);
    reduce_dtype_check(*this, "reduce_scatter", dtype, op);
    if (!reduce_scatter_args_check(*this, send, recv, count, dtype) && count > 0) {
      std::memcpy(recv, send, static_cast<std::size_t>(count) * dtype_size(dtype));
    }
  }

  void broadcast(void*, std::int64_t count, DType, int root) override {
    count_check(*this, "broadcast", count);
    root_check(*this, root);
  }

  void barrier() override {}

  // Every color makes a group of this one rank.
  std::unique_ptr<Comm> split(int color, int, std::string name) const override {
    split_color_check(*this, color);
    return std::make_unique<SelfComm>(std::move(name));
  }

 private:
  std::string name_;
};

}  // namespace

std::unique_ptr<Comm> self_comm(std::string name) {
  return std::make_unique<SelfComm>(std::move(name));
}

}  // namespace anvil::comm
