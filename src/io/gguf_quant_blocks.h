// The k-quant block encoders of gguf_quant_k.cpp, for gguf_quant.cpp's row driver (not a
// public interface: use gguf_quantize_rows). Each reads 256 floats and writes one block.
#pragma once

#include <cstdint>

namespace anvil::io {

void gguf_quant_block_q4_k(const float* x, std::uint8_t* b);
void gguf_quant_block_q5_k(const float* x, std::uint8_t* b);
void gguf_quant_block_q6_k(const float* x, std::uint8_t* b);

}  // namespace anvil::io
