// ANVIL_VECTOR_CLONES before a function with a vectorizable loop: GCC and clang compile it
// once per x86 instruction set (AVX-512, AVX2, the baseline) and pick one when the program
// loads (target_clones, an ifunc). Build such a file without FMA contraction
// (-ffp-contract=off) when its results must be the same bits on every CPU. Elsewhere the
// macro is empty.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__)
#define ANVIL_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ANVIL_VECTOR_CLONES
#endif
