// The QLoRA dequantization kernels (kernels/dequant.cu) against the CPU dequantizers
// (src/quant), bit for bit: the kernel's bf16 must be the CPU's f32 value rounded to bf16.
// On a GPU (label gpu) and under the CPU emulation tier (label emu, every schedule);
// the kernels are UNRUN on GPU hardware so far: only the emulated runs have passed.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "core/dtype.h"
#include "cuda_check.cuh"
#include "dequant.cuh"
#include "gpu_test_util.h"
#include "quant/fp8.h"
#include "quant/nf4.h"

namespace anvil {

namespace {

using i64 = std::int64_t;

template <typename T>
T* to_device(const std::vector<T>& v) {
  if (v.empty()) return nullptr;
  void* p = nullptr;
  CUDA_CHECK(cudaMalloc(&p, v.size() * sizeof(T)));
  CUDA_CHECK(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return static_cast<T*>(p);
}

// Device copies of a quantized tensor's arrays, freed with it.
struct DeviceQuant {
  std::vector<void*> owned;
  template <typename T>
  T* put(const std::vector<T>& v) {
    T* p = to_device(v);
    owned.push_back(p);
    return p;
  }
  ~DeviceQuant() {
    for (void* p : owned) cudaFree(p);
  }
};

// Runs `launch(dst, first, count)` for each (first, count) and compares with the CPU values.
template <typename Launch>
void expect_equal_to_cpu(const std::vector<float>& cpu, const std::vector<std::pair<i64, i64>>& ranges,
                         Launch launch) {
  for (const auto& [first, count] : ranges) {
    std::uint16_t* d = nullptr;
    CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&d), static_cast<std::size_t>(count) * 2));
    launch(d, first, count);
    std::vector<std::uint16_t> got(static_cast<std::size_t>(count));
    CUDA_CHECK(cudaMemcpy(got.data(), d, got.size() * 2, cudaMemcpyDeviceToHost));
    cudaFree(d);
    for (i64 i = 0; i < count; ++i)
      ASSERT_EQ(got[i], f32_to_bf16(cpu[first + i])) << "element " << first + i << " of range [" << first << ", +"
                                                     << count << ")";
  }
}

}  // namespace

// Double-quantized NF4 (as the quantizer and bitsandbytes checkpoints store it), whole and
// from odd offsets (a tile starting on a low nibble, mid-block).
TEST(GpuDequant, Nf4DoubleQuantizedMatchesCpu) {
  ANVIL_REQUIRE_GPU();
  const i64 rows = 37, cols = 203, n = rows * cols;  // odd: 8 absmax2 blocks of 256, a partial one
  const std::vector<float> x = test::gpu_normal(n, 0.05f);
  const quant::QuantTensor t = quant::nf4_quantize(x.data(), n);
  std::vector<float> cpu(static_cast<std::size_t>(n));
  quant::nf4_dequantize(t.state, t.codes.data(), 0, n, cpu.data());
  DeviceQuant dev;
  kernels::Nf4Weight w;
  w.codes = dev.put(t.codes);
  w.code = dev.put(t.code);
  w.blocksize = t.state.blocksize;
  w.absmax_q = dev.put(t.absmax_q);
  w.absmax_code = dev.put(t.absmax_code);
  w.absmax2 = dev.put(t.absmax2);
  w.absmax_blocksize = t.state.absmax_blocksize;
  w.offset = t.state.offset;
  expect_equal_to_cpu(cpu, {{0, n}, {5 * cols, 3 * cols}, {cols, 1}, {n - 1, 1}},
                      [&](std::uint16_t* d, i64 first, i64 count) { kernels::dequant_nf4_bf16(d, w, first, count, nullptr); });
}

// Plain f32 absmax over sub-blocks of 8 (a TP slice cut out of a bitsandbytes checkpoint,
// quant::nf4_load_slice): random codes and absmax.
TEST(GpuDequant, Nf4PlainAbsmaxMatchesCpu) {
  ANVIL_REQUIRE_GPU();
  const i64 n = 8 * 1000 + 3, blocksize = 8, blocks = (n + blocksize - 1) / blocksize;
  std::vector<std::uint8_t> codes(static_cast<std::size_t>((n + 1) / 2));
  for (auto& c : codes) c = static_cast<std::uint8_t>(test::gpu_rng()() & 0xff);
  std::vector<float> absmax = test::gpu_normal(blocks, 0.1f);
  for (auto& a : absmax) a = std::fabs(a);
  std::vector<float> code(quant::nf4_code().begin(), quant::nf4_code().end());
  QuantState s;
  s.blocksize = blocksize;
  s.code = code.data();
  s.absmax_f32 = absmax.data();
  std::vector<float> cpu(static_cast<std::size_t>(n));
  quant::nf4_dequantize(s, codes.data(), 0, n, cpu.data());
  DeviceQuant dev;
  kernels::Nf4Weight w;
  w.codes = dev.put(codes);
  w.code = dev.put(code);
  w.blocksize = blocksize;
  w.absmax_f32 = dev.put(absmax);
  expect_equal_to_cpu(cpu, {{0, n}, {13, 777}},
                      [&](std::uint16_t* d, i64 first, i64 count) { kernels::dequant_nf4_bf16(d, w, first, count, nullptr); });
}

// FP8 e4m3 with per-row scales, from the quantizer; and every one of the 254 finite codes
// (subnormals, both zeros) under one scale.
TEST(GpuDequant, Fp8MatchesCpu) {
  ANVIL_REQUIRE_GPU();
  const i64 rows = 29, cols = 131, n = rows * cols;
  const std::vector<float> x = test::gpu_normal(n, 0.3f);
  const quant::QuantTensor t = quant::fp8_quantize(x.data(), rows, cols);
  std::vector<float> cpu(static_cast<std::size_t>(n));
  quant::fp8_dequantize(t.state, t.codes.data(), cols, 0, n, cpu.data());
  DeviceQuant dev;
  kernels::Fp8Weight w{dev.put(t.codes), dev.put(t.row_scale), cols};
  expect_equal_to_cpu(cpu, {{0, n}, {4 * cols, 7 * cols}, {cols + 5, 300}},
                      [&](std::uint16_t* d, i64 first, i64 count) { kernels::dequant_fp8_bf16(d, w, first, count, nullptr); });

  std::vector<std::uint8_t> all;
  for (int b = 0; b < 256; ++b)
    if ((b & 0x7f) != 0x7f) all.push_back(static_cast<std::uint8_t>(b));  // NaN codes left out
  const std::vector<float> scale = {0.0371f};
  QuantState s;
  s.row_scale = scale.data();
  const i64 m = static_cast<i64>(all.size());
  std::vector<float> cpu_all(all.size());
  quant::fp8_dequantize(s, all.data(), m, 0, m, cpu_all.data());
  kernels::Fp8Weight wa{dev.put(all), dev.put(scale), m};
  expect_equal_to_cpu(cpu_all, {{0, m}},
                      [&](std::uint16_t* d, i64 first, i64 count) { kernels::dequant_fp8_bf16(d, wa, first, count, nullptr); });
}

}  // namespace anvil
