// One wrapper per PTX instruction the kernels use. Kernels reach inline PTX only through
// these, so that the CPU emulation tier (tests/emu) can put the instruction's definition
// from the PTX ISA in its place.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

namespace anvil::kernels::ptx {

#ifndef ANVIL_CUDA_EMU
// c += a (16x16) * b (16x8) for one warp: mma.sync m16n8k16, bf16 operands (two per
// register, the lower index in the low half), f32 accumulators. Fragment layouts: PTX ISA
// "Matrix Fragments for mma.m16n8k16" (and attention_math in attention.cuh).
__device__ inline void mma_m16n8k16_bf16(float (&c)[4], const std::uint32_t (&a)[4],
                                         const std::uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#endif

}  // namespace anvil::kernels::ptx
