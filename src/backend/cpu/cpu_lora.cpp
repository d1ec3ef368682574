// CpuBackend: LoRA adapters, y += scale * dropout(x) A^T B^T. With dropout the input is
// masked kLoraRows rows at a time into scratch; without, x goes to BLAS as it is.
#include <algorithm>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"

namespace anvil::backend {

namespace {

void check_dropout(const LoraDropout& d, i64 in) {
  ANVIL_CHECK(d.p >= 0.0f && d.p < 1.0f, "LoRA dropout p = ", d.p, " outside [0, 1)");
  if (d.p == 0.0f) return;
  ANVIL_CHECK(d.row_offset >= 0 && d.col_offset >= 0 && d.row_stride >= d.col_offset + in,
              "LoRA dropout row_stride ", d.row_stride, " < col_offset ", d.col_offset, " + width ",
              in);
}

// dst(rows, cols) = dropout(src) + beta * dst for the rows [row0, row0 + rows) of the
// layer input. Element (row, col) is kept when u >= p, u = philox_uniform(stream, index),
// index = (row_offset + row) * row_stride + col_offset + col. The uniforms are drawn here
// one Philox block (four indices) at a time, with philox_uniform's exact packing.
void dropout_rows(float* dst, const float* src, i64 rows, i64 cols, i64 row0, const LoraDropout& d,
                  float beta) {
  const float inv_keep = 1.0f / (1.0f - d.p);
#pragma omp parallel for schedule(static) if (rows * cols * 8 >= kParallelWork)
  for (i64 i = 0; i < rows; ++i) {
    const auto first =
        static_cast<std::uint64_t>((d.row_offset + row0 + i) * d.row_stride + d.col_offset);
    std::uint64_t cached = ~std::uint64_t{0};
    PhiloxCounter words{};
    for (i64 j = 0; j < cols; ++j) {
      const std::uint64_t index = first + static_cast<std::uint64_t>(j);
      const std::uint64_t block = index / 4;
      if (block != cached) {
        words = philox4x32_10({static_cast<std::uint32_t>(block),
                               static_cast<std::uint32_t>(block >> 32), d.stream.c2, d.stream.c3},
                              d.stream.key);
        cached = block;
      }
      const float u = static_cast<float>(words[index % 4] >> 8) * 0x1p-24f;
      const float kept = u >= d.p ? src[i * cols + j] * inv_keep : 0.0f;
      float& o = dst[i * cols + j];
      o = beta == 0.0f ? kept : kept + beta * o;
    }
  }
}

}  // namespace

// xa(n, r) = dropout(x) A^T.
void CpuBackend::lora_down(float* xa, const float* x, const float* a, i64 n, i64 in, i64 r,
                           const LoraDropout& drop) {
  check_dropout(drop, in);
  if (n == 0) return;
  if (drop.p == 0.0f) {
    gemm(false, true, n, r, in, 1.0f, x, in, a, in, 0.0f, xa, r);
  } else {
    const i64 block = std::min(n, kLoraRows);
    float* xd = scratch(lora_x_, block * in);  // (block, in)
    for (i64 r0 = 0; r0 < n; r0 += block) {
      const i64 rows = std::min(block, n - r0);
      dropout_rows(xd, x + r0 * in, rows, in, r0, drop, 0.0f);
      gemm(false, true, rows, r, in, 1.0f, xd, in, a, in, 0.0f, xa + r0 * r, r);
    }
  }
}

// y(n, out) += scale * xa B^T.
void CpuBackend::lora_up(float* y, const float* xa, const float* b, i64 n, i64 out, i64 r,
                         float scale) {
  if (n == 0) return;
  gemm(false, true, n, out, r, scale, xa, r, b, r, 1.0f, y, out);
}

// g = (dy B) * scale (n, r);  db += scale * dy^T xa;  da += g^T dropout(x);
// dx += dropout mask of (g A), a row block at a time.
void CpuBackend::lora_backward(float* dx, float* da, float* db, const float* dy, const float* x,
                               const float* xa, const float* a, const float* b, i64 n, i64 in,
                               i64 out, i64 r, float scale, const LoraDropout& drop) {
  check_dropout(drop, in);
  ANVIL_CHECK(da && db, "LoRA backward needs both adapter gradients");
  if (n == 0) return;
  gemm(true, false, out, r, n, scale, dy, out, xa, r, 1.0f, db, r);
  const i64 block = std::min(n, kLoraRows);
  float* g = scratch(lora_g_, block * r);                               // (block, r)
  float* xd = drop.p == 0.0f ? nullptr : scratch(lora_x_, block * in);  // (block, in)
  for (i64 r0 = 0; r0 < n; r0 += block) {
    const i64 rows = std::min(block, n - r0);
    gemm(false, false, rows, r, out, scale, dy + r0 * out, out, b, r, 0.0f, g, r);
    const float* xin = x + r0 * in;
    if (xd) {
      dropout_rows(xd, xin, rows, in, r0, drop, 0.0f);
      xin = xd;
    }
    gemm(true, false, r, in, rows, 1.0f, g, r, xin, in, 1.0f, da, in);
    if (!dx) continue;
    if (!xd) {
      gemm(false, false, rows, in, r, 1.0f, g, r, a, in, 1.0f, dx + r0 * in, in);
    } else {
      gemm(false, false, rows, in, r, 1.0f, g, r, a, in, 0.0f, xd, in);  // (rows, in) g A
      dropout_rows(dx + r0 * in, xd, rows, in, r0, drop, 1.0f);
    }
  }
}

}  // namespace anvil::backend
