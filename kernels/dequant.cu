// UNRUN on a GPU (see dequant.cuh): checked only under the emulation tier.
#include "dequant.cuh"

#include <cuda_bf16.h>

#include "cuda_check.cuh"
#include "launch.cuh"

namespace anvil::kernels {

namespace {

constexpr int kThreads = 256;

// The f32 value of an e4m3 byte (bias 7, no infinities, S.1111.111 is NaN), exact: built
// from its bits, so no device conversion instruction's behaviour is assumed.
__device__ inline float e4m3_value(std::uint8_t b) {
  const unsigned sign = (b & 0x80u) << 24, exp = (b >> 3) & 0xfu, man = b & 0x7u;
  if (exp == 0xf && man == 0x7) return __uint_as_float(sign | 0x7fc00000u);
  if (exp == 0) return __uint_as_float(sign | __float_as_uint(static_cast<float>(man) * 0.001953125f));  // m/512
  return __uint_as_float(sign | ((exp + 120u) << 23) | (man << 20));
}

// One element per thread, grid-stride. The block's absmax is recomputed per element (a
// product and a sum, rounded apart: __fmul_rn/__fadd_rn keep nvcc from fusing them into
// one FMA, which would differ from the CPU's two roundings).
__global__ void dequant_nf4_kernel(__nv_bfloat16* dst, Nf4Weight w, std::int64_t first, std::int64_t count) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < count;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t e = first + i, b = e / w.blocksize;
    const float amax = w.absmax_f32 ? w.absmax_f32[b]
                                    : __fadd_rn(__fmul_rn(w.absmax_code[w.absmax_q[b]],
                                                          w.absmax2[b / w.absmax_blocksize]),
                                                w.offset);
    const std::uint8_t byte = w.codes[e >> 1];
    const unsigned q = (e & 1) ? byte & 0xfu : byte >> 4;
    dst[i] = __float2bfloat16_rn(__fmul_rn(w.code[q], amax));
  }
}

__global__ void dequant_fp8_kernel(__nv_bfloat16* dst, Fp8Weight w, std::int64_t first, std::int64_t count) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < count;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t e = first + i;
    dst[i] = __float2bfloat16_rn(__fmul_rn(e4m3_value(w.codes[e]), w.row_scale[e / w.cols]));
  }
}

unsigned grid_for(std::int64_t n) {
  const std::int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 65536 ? blocks : 65536);
}

}  // namespace

void dequant_nf4_bf16(std::uint16_t* dst, const Nf4Weight& w, std::int64_t first, std::int64_t count,
                      cudaStream_t stream) {
  ANVIL_CHECK(first >= 0 && count >= 0 && w.blocksize > 0, "dequant_nf4: first ", first, " count ", count,
              " blocksize ", w.blocksize);
  ANVIL_CHECK(w.absmax_f32 || (w.absmax_q && w.absmax_code && w.absmax2 && w.absmax_blocksize > 0),
              "dequant_nf4: neither plain nor double-quantized absmax");
  if (count == 0) return;
  launch(dequant_nf4_kernel, grid_for(count), kThreads, 0, stream, reinterpret_cast<__nv_bfloat16*>(dst), w,
         first, count);
}

void dequant_fp8_bf16(std::uint16_t* dst, const Fp8Weight& w, std::int64_t first, std::int64_t count,
                      cudaStream_t stream) {
  ANVIL_CHECK(first >= 0 && count >= 0 && w.cols > 0, "dequant_fp8: first ", first, " count ", count, " cols ",
              w.cols);
  if (count == 0) return;
  launch(dequant_fp8_kernel, grid_for(count), kThreads, 0, stream, reinterpret_cast<__nv_bfloat16*>(dst), w,
         first, count);
}

}  // namespace anvil::kernels
