#include "quant/quant_state.h"

#include <algorithm>

#include "core/error.h"
#include "quant/fp8.h"
#include "quant/nf4.h"

namespace anvil::quant {

using i64 = std::int64_t;

const char* quant_kind_name(QuantKind k) {
  switch (k) {
    case QuantKind::quant_none: return "none";
    case QuantKind::quant_nf4: return "nf4";
    case QuantKind::quant_fp8: return "fp8";
  }
  return "?";
}

bool quant_kind_from_name(const std::string& name, QuantKind* out) {
  for (const QuantKind k : {QuantKind::quant_none, QuantKind::quant_nf4, QuantKind::quant_fp8})
    if (name == quant_kind_name(k)) {
      *out = k;
      return true;
    }
  return false;
}

namespace {

// Whether one of the dot-separated parts of `name` is in `parts`.
bool has_part(const std::string& name, const std::vector<std::string>& parts) {
  std::size_t start = 0;
  while (start <= name.size()) {
    const std::size_t dot = std::min(name.find('.', start), name.size());
    const std::string part = name.substr(start, dot - start);
    for (const std::string& s : parts)
      if (part == s) return true;
    start = dot + 1;
  }
  return false;
}

}  // namespace

const std::vector<std::string>& default_quant_skip() {
  static const std::vector<std::string> skip{"lm_head", "embed_tokens", "router"};
  return skip;
}

bool QuantPolicy::applies(const std::string& tensor_name) const {
  return kind != QuantKind::quant_none && !has_part(tensor_name, skip);
}

// transformers leaves the output head dense besides llm_int8_skip_modules.
bool QuantPolicy::Bnb4OnDisk::packed(const std::string& tensor_name) const {
  return !has_part(tensor_name, unpacked) && !has_part(tensor_name, {"lm_head"});
}

namespace {

template <typename T>
const T* or_null(const std::vector<T>& v) {
  return v.empty() ? nullptr : v.data();
}

template <typename T>
i64 vec_bytes(const std::vector<T>& v) {
  return static_cast<i64>(v.size() * sizeof(T));
}

i64 tensor_bytes(const QuantTensor& t) {
  return vec_bytes(t.codes) + vec_bytes(t.code) + vec_bytes(t.absmax_f32) + vec_bytes(t.absmax_q) +
         vec_bytes(t.absmax_code) + vec_bytes(t.absmax2) + vec_bytes(t.row_scale);
}

}  // namespace

void QuantTensor::bind() {
  state.code = or_null(code);
  state.absmax_f32 = or_null(absmax_f32);
  state.absmax_q = or_null(absmax_q);
  state.absmax_code = or_null(absmax_code);
  state.absmax2 = or_null(absmax2);
  state.row_scale = or_null(row_scale);
}

TensorView QuantStore::add(const TensorView& dense, QuantKind kind) {
  ANVIL_CHECK(dense.dtype == DType::dtype_f32 && dense.shape.rank() == 2,
              "quantize: expects a 2-D f32 weight, got ", dtype_name(dense.dtype), " ",
              dense.shape.str());
  const i64 rows = dense.shape[0], cols = dense.shape[1];
  const float* w = dense.as<const float>();
  switch (kind) {
    case QuantKind::quant_nf4: return adopt(nf4_quantize(w, rows * cols), DType::dtype_nf4, dense.shape);
    case QuantKind::quant_fp8: return adopt(fp8_quantize(w, rows, cols), DType::dtype_fp8_e4m3, dense.shape);
    case QuantKind::quant_none: break;
  }
  ANVIL_CHECK(false, "quantize: no quantization asked for");
}

TensorView QuantStore::adopt(QuantTensor t, DType dtype, const Shape& shape) {
  auto owned = std::make_unique<QuantTensor>(std::move(t));
  owned->bind();
  bytes_ += tensor_bytes(*owned);
  TensorView v{owned->codes.data(), dtype, shape, &owned->state};
  tensors_.push_back(std::move(owned));
  return v;
}

i64 quant_bytes(QuantKind kind, i64 rows, i64 cols) {
  const i64 n = rows * cols;
  switch (kind) {
    case QuantKind::quant_none: return 0;
    case QuantKind::quant_fp8: return n + rows * 4;
    case QuantKind::quant_nf4: {
      const i64 blocks = (n + kNf4Blocksize - 1) / kNf4Blocksize;
      const i64 blocks2 = (blocks + kAbsmaxBlocksize - 1) / kAbsmaxBlocksize;
      return (n + 1) / 2 + blocks + blocks2 * 4 + 16 * 4 + 256 * 4;
    }
  }
  return 0;
}

void quant_roundtrip_sliced(float* w, i64 rows, i64 cols, QuantKind kind, int parts, bool split_cols) {
  ANVIL_CHECK(parts >= 1 && (split_cols ? cols : rows) % parts == 0, "quantize: ", rows, " x ", cols,
              " does not split into ", parts, " parts");
  const i64 prows = split_cols ? rows : rows / parts, pcols = split_cols ? cols / parts : cols;
  std::vector<float> slice(static_cast<std::size_t>(prows * pcols));  // (prows, pcols)
  for (int p = 0; p < parts; ++p) {
    float* first = w + (split_cols ? p * pcols : p * prows * cols);
    for (i64 r = 0; r < prows; ++r) std::copy_n(first + r * cols, pcols, slice.data() + r * pcols);
    QuantStore store;
    const TensorView q = store.add({slice.data(), DType::dtype_f32, Shape{prows, pcols}}, kind);
    quant_dequantize(q, 0, prows * pcols, slice.data());
    for (i64 r = 0; r < prows; ++r) std::copy_n(slice.data() + r * pcols, pcols, first + r * cols);
  }
}

void quant_dequantize(const TensorView& w, i64 first, i64 count, float* dst) {
  ANVIL_CHECK(w.quant != nullptr, "quantized weight ", w.shape.str(), " has no quantization state");
  const auto* codes = static_cast<const std::uint8_t*>(w.data);
  if (w.dtype == DType::dtype_nf4) return nf4_dequantize(*w.quant, codes, first, count, dst);
  ANVIL_CHECK(w.dtype == DType::dtype_fp8_e4m3, "not a quantized dtype: ", dtype_name(w.dtype));
  fp8_dequantize(*w.quant, codes, w.shape[w.shape.rank() - 1], first, count, dst);
}

}  // namespace anvil::quant
