// parallel.backend / parallel.comm resolution (train/devices.h): what auto becomes and
// which combinations are refused, with the key named.
#include <gtest/gtest.h>

#include "backend/backend.h"
#include "core/error.h"
#include "train/devices.h"

namespace anvil::train {
namespace {

using B = BackendKind;
using C = CommKind;

TEST(Devices, CommOnCpuIsMpiAndNcclIsRefused) {
  EXPECT_EQ(comm_resolve(C::comm_auto, B::backend_cpu, 4, 0), C::comm_mpi);
  EXPECT_EQ(comm_resolve(C::comm_mpi, B::backend_cpu, 1, 0), C::comm_mpi);
  try {
    comm_resolve(C::comm_nccl, B::backend_cpu, 1, 0);
    FAIL() << "nccl on cpu accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("parallel.comm: nccl needs GPUs"), std::string::npos) << e.what();
  }
}

TEST(Devices, CommOnCudaIsNcclUnlessRanksShareAGpu) {
  EXPECT_EQ(comm_resolve(C::comm_auto, B::backend_cuda, 8, 8), C::comm_nccl);
  EXPECT_EQ(comm_resolve(C::comm_auto, B::backend_cuda, 2, 1), C::comm_mpi);  // two ranks, one GPU
  EXPECT_EQ(comm_resolve(C::comm_mpi, B::backend_cuda, 8, 8), C::comm_mpi);
  try {
    comm_resolve(C::comm_nccl, B::backend_cuda, 4, 2);
    FAIL() << "nccl with 2 ranks per GPU accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("4 ranks on this node share 2 GPU(s)"), std::string::npos) << e.what();
  }
}

TEST(Devices, BackendAutoFollowsTheVisibleDevices) {
  const bool gpu = backend::cuda_device_count() > 0;
  EXPECT_EQ(backend_resolve(B::backend_auto), gpu ? B::backend_cuda : B::backend_cpu);
  EXPECT_EQ(backend_resolve(B::backend_cpu), B::backend_cpu);
  if (gpu) {
    EXPECT_EQ(backend_resolve(B::backend_cuda), B::backend_cuda);
    return;
  }
  try {
    backend_resolve(B::backend_cuda);
    FAIL() << "cuda accepted without a device";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::user);
    EXPECT_NE(std::string(e.what()).find("parallel.backend: cuda"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace anvil::train
