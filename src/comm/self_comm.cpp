// SelfComm: the group of one rank, with no MPI underneath, so that single-rank code paths
// and unit tests run without MPI_Init. Comm's public calls check its arguments exactly as
// they check MpiComm's, and answer a group of one themselves (comm.cpp): of the
// implementation only the local copy, the barrier and split are ever called.
#include <cstring>
#include <memory>
#include <string>
#include <utility>

#include "comm/comm.h"
#include "core/error.h"

namespace anvil::comm {

namespace {

class SelfComm final : public Comm {
 public:
  explicit SelfComm(std::string name) : name_(std::move(name)) {}

  int rank() const override { return 0; }
  int size() const override { return 1; }
  const std::string& name() const override { return name_; }

 protected:
  // Comm never hands a group of one's collectives to its implementation.
  void allreduce_impl(void*, std::int64_t, DType, ReduceOp) override { unreachable("allreduce"); }
  void allgather_impl(const void*, void*, std::int64_t, DType, bool) override { unreachable("allgather"); }
  void reduce_scatter_impl(const void*, void*, std::int64_t, DType, ReduceOp, bool) override {
    unreachable("reduce_scatter");
  }
  void broadcast_impl(void*, std::int64_t, DType, int) override { unreachable("broadcast"); }
  void alltoallv_impl(const void*, const std::int64_t*, void*, const std::int64_t*, DType) override {
    unreachable("alltoallv");
  }
  void barrier_impl() override {}
  // Every color makes a group of this one rank.
  std::unique_ptr<Comm> split_impl(int, int, std::string name) const override {
    return std::make_unique<SelfComm>(std::move(name));
  }
  void local_copy(void* dst, const void* src, std::size_t bytes) override { std::memcpy(dst, src, bytes); }

 private:
  [[noreturn]] void unreachable(const char* call) const {
    ANVIL_CHECK(false, call, " on comm '", name_, "' reached SelfComm's implementation");
  }
  std::string name_;
};

}  // namespace

std::unique_ptr<Comm> self_comm(std::string name) {
  return std::make_unique<SelfComm>(std::move(name));
}

}  // namespace anvil::comm
