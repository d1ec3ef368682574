// NcclComm on one GPU: a group of one rank (the bootstrap is self_comm, so no MPI is
// needed), where every reduction is the identity and the copies follow comm.h's shape and
// in-place rules. Two ranks cannot share a GPU in one NCCL communicator, so the multi-rank
// paths (and the in-place reduce_scatter's move to the front) need a node with two GPUs:
// mpirun -np 2 of this binary does not test them. Skipped without a GPU.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "comm/comm.h"
#include "comm/nccl_comm.h"
#include "core/error.h"
#include "cuda_check.cuh"
#include "gpu_test_util.h"

namespace anvil::comm {
namespace {

// Device memory for a test, freed on scope exit.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(std::size_t bytes) : bytes_(bytes) { CUDA_CHECK(cudaMalloc(&ptr_, bytes)); }
  ~DeviceBuffer() { cudaFree(ptr_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <typename T>
  T* as() const { return static_cast<T*>(ptr_); }

 private:
  void* ptr_ = nullptr;
  std::size_t bytes_;
};

template <typename T>
void upload(T* device, const std::vector<T>& host) {
  CUDA_CHECK(cudaMemcpy(device, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
}

template <typename T>
std::vector<T> download(const T* device, std::size_t n, cudaStream_t stream) {
  CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<T> host(n);
  CUDA_CHECK(cudaMemcpy(host.data(), device, n * sizeof(T), cudaMemcpyDeviceToHost));
  return host;
}

// Fresh random values every run, never zeros.
std::vector<float> random_floats(std::size_t n) {
  std::mt19937 rng(std::random_device{}());
  std::uniform_real_distribution<float> dist(0.5f, 2.0f);
  std::vector<float> v(n);
  for (float& x : v) x = (rng() % 2 ? 1.0f : -1.0f) * dist(rng);
  return v;
}

constexpr std::int64_t kCount = 4099;

class NcclOneRank : public testing::Test {
 protected:
  void SetUp() override {
    ANVIL_REQUIRE_GPU();
    CUDA_CHECK(cudaStreamCreate(&stream));
    comm = nccl_comm_create(*bootstrap, stream, "world");
  }
  void TearDown() override {
    comm.reset();
    if (stream != nullptr) cudaStreamDestroy(stream);
  }

  std::unique_ptr<Comm> bootstrap = self_comm("world");
  cudaStream_t stream = nullptr;
  std::unique_ptr<Comm> comm;
};

TEST_F(NcclOneRank, IsAGroupOfOneNamedAsAsked) {
  EXPECT_EQ(comm->rank(), 0);
  EXPECT_EQ(comm->size(), 1);
  EXPECT_EQ(comm->name(), "world");
  comm->barrier();
}

TEST_F(NcclOneRank, AllreduceOfOneRankIsTheIdentity) {
  const std::vector<float> x = random_floats(kCount);
  DeviceBuffer buf(kCount * sizeof(float));
  upload(buf.as<float>(), x);
  for (const ReduceOp op : {ReduceOp::reduce_sum, ReduceOp::reduce_avg, ReduceOp::reduce_max}) {
    comm->allreduce(buf.as<float>(), kCount, DType::dtype_f32, op);
  }
  EXPECT_EQ(download(buf.as<float>(), kCount, stream), x);
}

TEST_F(NcclOneRank, AllgatherCopiesOutOfPlaceAndLeavesInPlaceAlone) {
  const std::vector<float> x = random_floats(kCount);
  DeviceBuffer send(kCount * sizeof(float)), recv(kCount * sizeof(float));
  upload(send.as<float>(), x);
  comm->allgather(send.as<float>(), recv.as<float>(), kCount, DType::dtype_f32);
  EXPECT_EQ(download(recv.as<float>(), kCount, stream), x);
  comm->allgather(recv.as<float>(), recv.as<float>(), kCount, DType::dtype_f32);
  EXPECT_EQ(download(recv.as<float>(), kCount, stream), x);
  // bf16 moves as bits.
  std::vector<std::uint16_t> bits(kCount);
  for (std::int64_t i = 0; i < kCount; ++i) bits[i] = static_cast<std::uint16_t>(0x3f80 + i);
  DeviceBuffer send16(kCount * 2), recv16(kCount * 2);
  upload(send16.as<std::uint16_t>(), bits);
  comm->allgather(send16.as<std::uint16_t>(), recv16.as<std::uint16_t>(), kCount, DType::dtype_bf16);
  EXPECT_EQ(download(recv16.as<std::uint16_t>(), kCount, stream), bits);
}

TEST_F(NcclOneRank, ReduceScatterOfOneRankIsACopy) {
  const std::vector<float> x = random_floats(kCount);
  DeviceBuffer send(kCount * sizeof(float)), recv(kCount * sizeof(float));
  upload(send.as<float>(), x);
  comm->reduce_scatter(send.as<float>(), recv.as<float>(), kCount, DType::dtype_f32,
                       ReduceOp::reduce_sum);
  EXPECT_EQ(download(recv.as<float>(), kCount, stream), x);
  comm->reduce_scatter(send.as<float>(), send.as<float>(), kCount, DType::dtype_f32,
                       ReduceOp::reduce_avg);
  EXPECT_EQ(download(send.as<float>(), kCount, stream), x);
}

TEST_F(NcclOneRank, BroadcastFromRankZeroKeepsTheData) {
  const std::vector<float> x = random_floats(kCount);
  DeviceBuffer buf(kCount * sizeof(float));
  upload(buf.as<float>(), x);
  comm->broadcast(buf.as<float>(), kCount, DType::dtype_f32, 0);
  EXPECT_EQ(download(buf.as<float>(), kCount, stream), x);
}

TEST_F(NcclOneRank, BadArgumentsThrowAsOnMpiComm) {
  DeviceBuffer buf(2 * kCount * sizeof(float));
  auto* p = buf.as<float>();
  const auto message = [](auto f) -> std::string {
    try {
      f();
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  };
  EXPECT_NE(message([&] { comm->allreduce(p, kCount, DType::dtype_i32, ReduceOp::reduce_avg); })
                .find("reduce_avg is not defined on dtype i32"),
            std::string::npos);
  EXPECT_NE(message([&] { comm->allreduce(p, kCount, DType::dtype_bf16, ReduceOp::reduce_sum); })
                .find("not defined on dtype bf16"),
            std::string::npos);
  EXPECT_NE(message([&] { comm->broadcast(p, kCount, DType::dtype_f32, 1); }).find("root 1"),
            std::string::npos);
  EXPECT_NE(message([&] { comm->allgather(p + 1, p, kCount, DType::dtype_f32); })
                .find("send overlaps recv"),
            std::string::npos);
  EXPECT_NE(message([&] {
              comm->reduce_scatter(p + 1, p, kCount, DType::dtype_f32, ReduceOp::reduce_sum);
            }).find("send and recv overlap"),
            std::string::npos);
  EXPECT_NE(message([&] { (void)comm->split(-1, 0, "x"); }).find("negative color"),
            std::string::npos);
}

TEST_F(NcclOneRank, SplitGivesAnIndependentChild) {
  auto child = comm->split(0, 0, "tp");
  EXPECT_EQ(child->size(), 1);
  EXPECT_EQ(child->name(), "tp");
  comm.reset();  // the child outlives its parent
  const std::vector<float> x = random_floats(kCount);
  DeviceBuffer buf(kCount * sizeof(float));
  upload(buf.as<float>(), x);
  child->allreduce(buf.as<float>(), kCount, DType::dtype_f32, ReduceOp::reduce_sum);
  child->barrier();
  EXPECT_EQ(download(buf.as<float>(), kCount, stream), x);
}

TEST_F(NcclOneRank, CudaStagingCopiesThroughTheHost) {
  // A staged group of one stages only its out-of-place copies: device -> host -> device.
  auto staging = cuda_device_staging(stream);
  auto staged = staged_comm(*bootstrap, *staging);
  const std::vector<float> x = random_floats(kCount);
  DeviceBuffer send(kCount * sizeof(float)), recv(kCount * sizeof(float));
  upload(send.as<float>(), x);
  staged->allgather(send.as<float>(), recv.as<float>(), kCount, DType::dtype_f32);
  EXPECT_EQ(download(recv.as<float>(), kCount, stream), x);
}

}  // namespace
}  // namespace anvil::comm
