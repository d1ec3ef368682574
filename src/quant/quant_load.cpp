#include "quant/quant_load.h"

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/files.h"

namespace anvil::quant {

using i64 = std::int64_t;
using json = nlohmann::json;

namespace {

// quantization_config of compressed-tensors: every config group's weights must be 8-bit
// float with one scale per output channel.
void compressed_tensors_check(const json& q, const std::string& where) {
  const auto groups = q.find("config_groups");
  ANVIL_CHECK_INPUT(groups != q.end() && groups->is_object() && !groups->empty(), where,
                    ".config_groups: missing or empty");
  for (const auto& [name, g] : groups->items()) {
    const std::string at = where + ".config_groups." + name + ".weights";
    const json w = g.is_object() ? g.value("weights", json()) : json();
    ANVIL_CHECK_INPUT(w.is_object(), at, ": missing");
    const bool fp8 = w.value("type", "") == "float" && w.value("num_bits", 0) == 8;
    ANVIL_CHECK_INPUT(fp8, at, ": only 8-bit float weights load (got type ", w.value("type", "?"), ", num_bits ",
                      w.value("num_bits", 0), ")");
    ANVIL_CHECK_INPUT(w.value("strategy", "") == "channel", at, ": strategy '", w.value("strategy", "?"),
                      "' is not supported (only channel: one scale per output row)");
  }
}

}  // namespace

QuantKind quant_format_of_model(const std::string& model_dir) {
  const std::string path = model_dir + "/config.json";
  const json cfg = json::parse(io::read_text_file(path), nullptr, false);
  ANVIL_CHECK_INPUT(cfg.is_object(), path, ": not a JSON object");
  const auto q = cfg.find("quantization_config");
  if (q == cfg.end() || q->is_null()) return QuantKind::quant_none;
  const std::string where = path + ": quantization_config";
  ANVIL_CHECK_INPUT(q->is_object(), where, ": expected an object");
  const std::string method = q->value("quant_method", "");
  if (method == "fbgemm_fp8") return QuantKind::quant_fp8;
  if (method == "compressed-tensors") {
    compressed_tensors_check(*q, where);
    return QuantKind::quant_fp8;
  }
  throw_user_error(where, ".quant_method: '", method,
                   "' cannot be loaded (anvil reads compressed-tensors float8 and fbgemm_fp8 checkpoints; "
                   "quantize a bf16/f32 model at load instead with model.quant)");
}

bool quant_side_tensor(const std::string& name) {
  for (const char* suffix : {".weight_scale", ".input_scale", ".input_scale_ub"}) {
    const std::size_t n = std::strlen(suffix);
    if (name.size() > n && name.compare(name.size() - n, n, suffix) == 0) return true;
  }
  return false;
}

namespace {

// scale[r] of the (out, 1) or (out) f32 / bf16 scale tensor, as f32.
std::vector<float> row_scales(const io::SafetensorsModel& file, const std::string& name, i64 out, i64 row0,
                              i64 rows) {
  const auto* e = file.find(name);
  ANVIL_CHECK_INPUT(e != nullptr, "FP8 weight ", name.substr(0, name.size() - 6), " has no scale tensor ", name);
  const TensorView v = e->file->view(*e->info);
  const bool shape_ok = v.shape.numel() == out && (v.shape.rank() == 1 || (v.shape.rank() == 2 && v.shape[1] == 1));
  ANVIL_CHECK_INPUT(shape_ok, e->file->path(), ": tensor '", name, "' has shape ", v.shape.str(), ", expected [",
                    out, ", 1] (one scale per output row)");
  ANVIL_CHECK_INPUT(v.dtype == DType::dtype_f32 || v.dtype == DType::dtype_bf16, e->file->path(), ": tensor '", name,
                    "' has dtype ", dtype_name(v.dtype), ", expected F32 or BF16");
  std::vector<float> s(static_cast<std::size_t>(rows));
  for (i64 r = 0; r < rows; ++r) {
    s[r] = static_cast<float>(dtype_load_as_f64(v.data, v.dtype, static_cast<std::size_t>(row0 + r)));
    ANVIL_CHECK_INPUT(std::isfinite(s[r]) && s[r] > 0, e->file->path(), ": tensor '", name, "' row ", row0 + r,
                      ": scale ", s[r], " is not a positive number");
  }
  return s;
}

}  // namespace

TensorView fp8_load_slice(const io::SafetensorsModel& file, const std::string& name, i64 row0, i64 rows, i64 col0,
                          i64 cols, QuantStore& store) {
  const auto* e = file.find(name);
  ANVIL_CHECK(e != nullptr, "weight ", name, " vanished after the check");
  const TensorView w = e->file->view(*e->info);
  ANVIL_CHECK_INPUT(w.dtype == DType::dtype_fp8_e4m3 && w.shape.rank() == 2, e->file->path(), ": tensor '", name,
                    "' is ", dtype_name(w.dtype), " ", w.shape.str(), ", expected a 2-D F8_E4M3 weight");
  const i64 in = w.shape[1];
  QuantTensor t;
  t.row_scale = row_scales(file, name + "_scale", w.shape[0], row0, rows);
  t.codes.resize(static_cast<std::size_t>(rows * cols));
  const auto* src = static_cast<const std::uint8_t*>(w.data);
  for (i64 r = 0; r < rows; ++r)  // a column slice keeps its rows' scales
    std::memcpy(t.codes.data() + r * cols, src + (row0 + r) * in + col0, static_cast<std::size_t>(cols));
  io::mapping_pages_release(src + row0 * in, static_cast<std::size_t>(rows * in));
  return store.adopt(std::move(t), DType::dtype_fp8_e4m3, Shape{rows, cols});
}

}  // namespace anvil::quant
