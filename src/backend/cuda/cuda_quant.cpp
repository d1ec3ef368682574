// Quantized frozen base weights on the CUDA backend (QLoRA, model.quant nf4 | fp8).
//
// UNRUN: compiled for sm_90a, never run on a GPU (none was available). The dequantization
// kernels are checked bit for bit against the CPU dequantizers under the emulation tier
// (emu.emu_dequant); this host side (placement, row tiles, the cuBLASLt calls on them) only
// compiles here, and tests/gpu will exercise it through the linear ops on a GPU.
//
// weight_place copies a quantized view's codes and scales to the device as they are (a
// device QuantState points at the copies). Each linear op dequantizes a tile of the
// weight's rows into a bf16 panel (kernels/dequant.cu) and multiplies it with cuBLASLt,
// the same product the dense bf16 weight gets, so no full bf16 copy of the weight exists.
#include <algorithm>
#include <memory>

#include "backend/cuda/cuda_backend.h"
#include "core/error.h"
#include "dequant.cuh"
#include "quant/quant_state.h"

namespace anvil::backend {

namespace {

// The panel holds at most this many bf16 elements (32 MiB): a tile is as many whole rows
// as fit, at least one.
constexpr i64 kQuantPanelElems = i64{1} << 24;

i64 panel_rows(const TensorView& w) {
  return std::clamp<i64>(kQuantPanelElems / w.shape[1], 1, w.shape[0]);
}

}  // namespace

TensorView CudaBackend::quant_weight_place(const TensorView& w) {
  ANVIL_CHECK(w.shape.rank() == 2 && (w.dtype == DType::dtype_nf4 || w.dtype == DType::dtype_fp8_e4m3),
              "a quantized weight must be a 2-D nf4 or fp8_e4m3 view, got ", w.shape.str(), " ",
              dtype_name(w.dtype));
  const QuantState& s = *w.quant;
  auto put = [&](const void* host, i64 bytes) -> void* {
    if (host == nullptr || bytes == 0) return nullptr;
    void* d = memory_alloc(static_cast<std::size_t>(bytes));
    weights_.push_back(d);
    copy_from_host(d, host, static_cast<std::size_t>(bytes));
    return d;
  };
  const i64 rows = w.shape[0], n = w.numel();
  auto dev = std::make_unique<QuantState>(s);  // sizes as on the host, pointers replaced below
  void* codes = nullptr;
  if (w.dtype == DType::dtype_nf4) {
    const i64 blocks = (n + s.blocksize - 1) / s.blocksize;
    codes = put(w.data, (n + 1) / 2);
    dev->code = static_cast<const float*>(put(s.code, 16 * 4));
    dev->absmax_f32 = static_cast<const float*>(put(s.absmax_f32, blocks * 4));
    dev->absmax_q = static_cast<const std::uint8_t*>(put(s.absmax_q, blocks));
    dev->absmax_code = static_cast<const float*>(put(s.absmax_code, 256 * 4));
    const i64 blocks2 = s.absmax_blocksize > 0 ? (blocks + s.absmax_blocksize - 1) / s.absmax_blocksize : 0;
    dev->absmax2 = static_cast<const float*>(put(s.absmax2, blocks2 * 4));
  } else {
    codes = put(w.data, n);
    dev->row_scale = static_cast<const float*>(put(s.row_scale, rows * 4));
  }
  quant_states_.push_back(std::move(dev));
  return TensorView{codes, w.dtype, w.shape, quant_states_.back().get()};
}

// Rows [r0, r0 + rows) of a placed quantized weight as bf16 in the panel.
const std::uint16_t* CudaBackend::quant_dequant_rows(const TensorView& w, i64 r0, i64 rows) {
  const QuantState& s = *w.quant;
  const i64 cols = w.shape[1];
  auto* panel = static_cast<std::uint16_t*>(
      grow(quant_panel_, static_cast<std::size_t>(panel_rows(w) * cols) * sizeof(std::uint16_t)));
  const auto* codes = static_cast<const std::uint8_t*>(w.data);
  if (w.dtype == DType::dtype_nf4) {
    const kernels::Nf4Weight k{codes,       s.code,    s.blocksize,        s.absmax_f32, s.absmax_q,
                               s.absmax_code, s.absmax2, s.absmax_blocksize, s.offset};
    kernels::dequant_nf4_bf16(panel, k, r0 * cols, rows * cols, stream_);
  } else {
    kernels::dequant_fp8_bf16(panel, kernels::Fp8Weight{codes, s.row_scale, cols}, r0 * cols, rows * cols, stream_);
  }
  return panel;
}

// One tile of W's rows [r0, r0 + tr) at a time, dequantized into the panel:
//   forward   y(m, out) = x W^T + beta y: the tile gives y's columns [r0, + tr), i.e. the
//             rows of column-major y^T starting at y + r0 with ld out;
//   backward  dx(m, in) = dy W + beta dx = sum over tiles of dy[:, r0:r0+tr] W[r0:r0+tr, :]
//             (dy^T's rows from dyb + r0, ld out); the first tile applies beta, the rest add.
void CudaBackend::quant_linear(bool backward, float* dst, const float* src, const TensorView& w, i64 m,
                               float beta) {
  const i64 out = w.shape[0], in = w.shape[1], tile = panel_rows(w);
  const std::uint16_t* staged = stage_bf16(src, m * (backward ? out : in));  // x (m, in) or dy (m, out), bf16
  for (i64 r0 = 0; r0 < out; r0 += tile) {
    const i64 tr = std::min(tile, out - r0);
    const std::uint16_t* panel = quant_dequant_rows(w, r0, tr);  // (tr, in) bf16
    if (backward)
      lt_matmul(false, in, m, tr, panel, in, staged + r0, out, r0 == 0 ? beta : 1.0f, dst, in);
    else
      lt_matmul(true, tr, m, in, panel, in, staged, in, beta, dst + r0, out);
  }
}

}  // namespace anvil::backend
