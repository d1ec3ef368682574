#include "quant/quant_load.h"

#include <cmath>
#include <cstring>
#include <numeric>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/files.h"
#include "quant/nf4.h"

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
  if (method == "bitsandbytes") {
    ANVIL_CHECK_INPUT(q->value("load_in_4bit", false), where, ".load_in_4bit: only 4-bit bitsandbytes loads");
    const std::string type = q->value("bnb_4bit_quant_type", "fp4");
    ANVIL_CHECK_INPUT(type == "nf4", where, ".bnb_4bit_quant_type: '", type, "' is not supported (only nf4)");
    return QuantKind::quant_nf4;
  }
  if (method == "compressed-tensors") {
    compressed_tensors_check(*q, where);
    return QuantKind::quant_fp8;
  }
  throw_user_error(where, ".quant_method: '", method,
                   "' cannot be loaded (anvil reads compressed-tensors float8 and fbgemm_fp8 checkpoints; "
                   "quantize a bf16/f32 model at load instead with model.quant)");
}

std::optional<QuantPolicy::Bnb4OnDisk> bnb4_on_disk_of_model(const std::string& model_dir) {
  if (quant_format_of_model(model_dir) != QuantKind::quant_nf4) return std::nullopt;
  const json q = json::parse(io::read_text_file(model_dir + "/config.json"))["quantization_config"];
  QuantPolicy::Bnb4OnDisk form;
  form.nested = q.value("bnb_4bit_use_double_quant", false);
  const auto skip = q.find("llm_int8_skip_modules");
  if (skip != q.end() && skip->is_array())
    for (const json& m : *skip)
      if (m.is_string()) form.unpacked.push_back(m.get<std::string>());
  return form;
}

namespace {

constexpr const char* kBnbState = ".quant_state.bitsandbytes__nf4";

bool ends_with(const std::string& s, const char* suffix) {
  const std::size_t n = std::strlen(suffix);
  return s.size() > n && s.compare(s.size() - n, n, suffix) == 0;
}

}  // namespace

std::string quant_side_tensor_owner(const std::string& name) {
  // fbgemm_fp8's fused Llama 4 experts: experts.gate_up_proj_scale, experts.down_proj_scale
  for (const char* fused : {".experts.gate_up_proj_scale", ".experts.down_proj_scale"})
    if (ends_with(name, fused)) return name.substr(0, name.size() - std::strlen("_scale"));
  for (const char* suffix : {".weight_scale", ".input_scale", ".input_scale_ub"})
    if (ends_with(name, suffix)) return name.substr(0, name.size() - std::strlen(suffix)) + ".weight";
  for (const char* suffix : {".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map", kBnbState,
                             ".quant_state.bitsandbytes__fp4"})
    if (ends_with(name, suffix)) return name.substr(0, name.size() - std::strlen(suffix));
  return {};
}

bool quant_side_tensor(const std::string& name) { return !quant_side_tensor_owner(name).empty(); }

bool bnb4_packed(const io::SafetensorsModel& file, const std::string& name) {
  return file.find(name + kBnbState) != nullptr || file.find(name + ".quant_state.bitsandbytes__fp4") != nullptr;
}

namespace {

// Tensor `name` as n values of `dtype`, else an error naming it.
template <typename T>
std::vector<T> bnb_tensor(const io::SafetensorsModel& file, const std::string& name, DType dtype, i64 n) {
  const auto* e = file.find(name);
  ANVIL_CHECK_INPUT(e != nullptr, "bitsandbytes 4-bit weight: tensor '", name, "' is missing");
  const TensorView v = e->file->view(*e->info);
  ANVIL_CHECK_INPUT(v.dtype == dtype && v.numel() == n, e->file->path(), ": tensor '", name, "' is ",
                    dtype_name(v.dtype), " ", v.shape.str(), ", expected ", n, " ", dtype_name(dtype), " values");
  std::vector<T> out(static_cast<std::size_t>(n));
  std::memcpy(out.data(), v.data, out.size() * sizeof(T));
  return out;
}

// The JSON of `<name>.quant_state.bitsandbytes__nf4`.
json bnb_state(const io::SafetensorsModel& file, const std::string& name) {
  const std::string key = name + kBnbState;
  const auto* e = file.find(key);
  ANVIL_CHECK_INPUT(e != nullptr, "weight ", name, ": bitsandbytes 4-bit state '", key,
                    "' is missing (only nf4 is supported)");
  const TensorView v = e->file->view(*e->info);
  ANVIL_CHECK_INPUT(v.dtype == DType::dtype_u8, e->file->path(), ": tensor '", key, "' is not U8 (packed JSON)");
  const auto* p = static_cast<const char*>(v.data);
  json s = json::parse(std::string(p, p + v.numel()), nullptr, false);
  ANVIL_CHECK_INPUT(s.is_object(), e->file->path(), ": tensor '", key, "' does not hold a JSON object");
  return s;
}

i64 json_int(const json& s, const char* key, const std::string& tensor) {
  const auto it = s.find(key);
  ANVIL_CHECK_INPUT(it != s.end() && it->is_number_integer() && it->get<i64>() > 0, "tensor '", tensor, "': ", key,
                    " is missing or not a positive integer");
  return it->get<i64>();
}

}  // namespace

Shape bnb4_shape(const io::SafetensorsModel& file, const std::string& name) {
  const json sh = bnb_state(file, name).value("shape", json());
  const bool ok = sh.is_array() && sh.size() == 2 && sh[0].is_number_integer() && sh[1].is_number_integer() &&
                  sh[0].get<i64>() > 0 && sh[1].get<i64>() > 0;
  ANVIL_CHECK_INPUT(ok, "tensor '", name, kBnbState, "': shape ", sh.dump(), " is not two positive integers");
  return Shape{sh[0].get<i64>(), sh[1].get<i64>()};
}

TensorView nf4_load(const io::SafetensorsModel& file, const std::string& name, QuantStore& store) {
  const std::string state_name = name + kBnbState;
  const json s = bnb_state(file, name);
  ANVIL_CHECK_INPUT(s.value("quant_type", "") == "nf4", "tensor '", state_name, "': quant_type is not nf4");
  const Shape shape = bnb4_shape(file, name);
  const i64 n = shape.numel(), blocksize = json_int(s, "blocksize", state_name);
  const i64 blocks = (n + blocksize - 1) / blocksize;
  QuantTensor t;
  t.state.blocksize = blocksize;
  t.codes = bnb_tensor<std::uint8_t>(file, name, DType::dtype_u8, (n + 1) / 2);
  t.code = bnb_tensor<float>(file, name + ".quant_map", DType::dtype_f32, 16);
  if (s.contains("nested_blocksize")) {
    const i64 nb = json_int(s, "nested_blocksize", state_name);
    const auto offset = s.find("nested_offset");
    ANVIL_CHECK_INPUT(offset != s.end() && offset->is_number(), "tensor '", state_name, "': nested_offset is missing");
    t.state.offset = offset->get<float>();
    t.state.absmax_blocksize = nb;
    t.absmax_q = bnb_tensor<std::uint8_t>(file, name + ".absmax", DType::dtype_u8, blocks);
    t.absmax2 = bnb_tensor<float>(file, name + ".nested_absmax", DType::dtype_f32, (blocks + nb - 1) / nb);
    t.absmax_code = bnb_tensor<float>(file, name + ".nested_quant_map", DType::dtype_f32, 256);
  } else {
    t.absmax_f32 = bnb_tensor<float>(file, name + ".absmax", DType::dtype_f32, blocks);
  }
  return store.adopt(std::move(t), DType::dtype_nf4, shape);
}

namespace {

// The sub-block of a slice of an NF4 weight `in` wide: it divides the on-disk blocksize,
// where the slice starts, and, for a column slice, the row length and slice width (so no
// sub-block spans two rows).
i64 slice_subblock(i64 blocksize, i64 in, i64 row0, i64 col0, i64 cols) {
  i64 g = std::gcd(blocksize, row0 * in + col0);
  if (cols < in) g = std::gcd(g, std::gcd(in, cols));
  return g;
}

constexpr i64 kBnbBlocksize = 64, kBnbNestedBlocksize = 256;

}  // namespace

i64 nf4_slice_bytes(const QuantPolicy::Bnb4OnDisk& form, i64 out, i64 in, i64 row0, i64 rows, i64 col0, i64 cols) {
  const i64 n = rows * cols, codes = (n + 1) / 2 + 16 * 4;  // packed codes and the quant_map
  const i64 blocks = (n + kBnbBlocksize - 1) / kBnbBlocksize;
  if (rows == out && cols == in)  // as stored
    return codes + (form.nested ? blocks + (blocks + kBnbNestedBlocksize - 1) / kBnbNestedBlocksize * 4 + 256 * 4
                                : blocks * 4);
  const i64 g = slice_subblock(kBnbBlocksize, in, row0, col0, cols);
  return codes + (n + g - 1) / g * 4;
}

TensorView nf4_load_slice(const io::SafetensorsModel& file, const std::string& name, i64 row0, i64 rows, i64 col0,
                          i64 cols, QuantStore& store) {
  const Shape shape = bnb4_shape(file, name);
  const i64 in = shape[1];
  ANVIL_CHECK(row0 >= 0 && col0 >= 0 && rows > 0 && cols > 0 && row0 + rows <= shape[0] && col0 + cols <= in, name,
              ": slice outside ", shape.str());
  if (rows == shape[0] && cols == in) return nf4_load(file, name, store);  // tp 1: as stored
  QuantStore whole_store;  // the packed tensor (a quarter of its f16 bytes), until the slice is cut
  const TensorView whole = nf4_load(file, name, whole_store);
  const QuantState& s = *whole.quant;
  const i64 g = slice_subblock(s.blocksize, in, row0, col0, cols);
  const i64 n = rows * cols, subs = (n + g - 1) / g;
  QuantTensor t;
  t.code.assign(s.code, s.code + 16);
  t.absmax_f32.resize(static_cast<std::size_t>(subs));
  t.codes.assign(static_cast<std::size_t>((n + 1) / 2), 0);
  const auto* src = static_cast<const std::uint8_t*>(whole.data);
  for (i64 j = 0; j < n; ++j) {
    const i64 flat = (row0 + j / cols) * in + col0 + j % cols;  // element j of the slice in the whole
    const std::uint8_t nib = flat % 2 ? src[flat / 2] & 0xf : src[flat / 2] >> 4;
    t.codes[j / 2] = static_cast<std::uint8_t>(j % 2 ? t.codes[j / 2] | nib : nib << 4);
    if (j % g == 0) t.absmax_f32[j / g] = nf4_block_absmax(s, flat / s.blocksize);
  }
  if (n % 2) t.codes[n / 2] |= 7;  // the pad nibble: code 7 is NF4's zero, as the quantizer pads
  t.state.blocksize = g;
  return store.adopt(std::move(t), DType::dtype_nf4, Shape{rows, cols});
}

namespace {

// The FP8 scale tensor `name` (f32 / bf16), checked by `shape_ok` (`want` says what it
// expects), and its flat elements [first, first + n) as f32, each a positive number.
template <typename ShapeOk>
std::vector<float> scale_values(const io::SafetensorsModel& file, const std::string& name, ShapeOk shape_ok,
                                const std::string& want, i64 first, i64 n) {
  const auto* e = file.find(name);
  ANVIL_CHECK_INPUT(e != nullptr, "FP8 weight ", name.substr(0, name.size() - 6), " has no scale tensor ", name);
  const TensorView v = e->file->view(*e->info);
  ANVIL_CHECK_INPUT(shape_ok(v.shape), e->file->path(), ": tensor '", name, "' has shape ", v.shape.str(),
                    ", expected ", want);
  ANVIL_CHECK_INPUT(v.dtype == DType::dtype_f32 || v.dtype == DType::dtype_bf16, e->file->path(), ": tensor '", name,
                    "' has dtype ", dtype_name(v.dtype), ", expected F32 or BF16");
  std::vector<float> s(static_cast<std::size_t>(n));
  for (i64 k = 0; k < n; ++k) {
    s[k] = static_cast<float>(dtype_load_as_f64(v.data, v.dtype, static_cast<std::size_t>(first + k)));
    ANVIL_CHECK_INPUT(std::isfinite(s[k]) && s[k] > 0, e->file->path(), ": tensor '", name, "' element ", first + k,
                      ": scale ", s[k], " is not a positive number");
  }
  return s;
}

// scale[r] of the (out, 1) or (out) f32 / bf16 scale tensor, as f32.
std::vector<float> row_scales(const io::SafetensorsModel& file, const std::string& name, i64 out, i64 row0,
                              i64 rows) {
  const auto ok = [&](const Shape& s) {
    return s.numel() == out && (s.rank() == 1 || (s.rank() == 2 && s[1] == 1));
  };
  return scale_values(file, name, ok, str_cat("[", out, ", 1] (one scale per output row)"), row0, rows);
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

std::vector<float> fp8_fused_scales(const io::SafetensorsModel& file, const std::string& name, i64 expert, i64 col0,
                                    i64 n) {
  const auto* w = file.find(name);
  ANVIL_CHECK(w != nullptr, "weight ", name, " vanished after the check");
  const i64 E = w->info->shape[0], total = w->info->shape[2];
  const auto ok = [&](const Shape& s) {
    return s.rank() == 3 && s[0] == E && s.numel() == E * total && (s[1] == 1 || s[2] == 1);
  };
  return scale_values(file, name + "_scale", ok,
                      str_cat("[", E, ", 1, ", total, "] or [", E, ", ", total, ", 1] (one scale per output)"),
                      expert * total + col0, n);
}

TensorView fp8_load_fused_expert(const io::SafetensorsModel& file, const std::string& name, i64 expert, i64 col0,
                                 i64 out, i64 in0, i64 in_n, QuantStore& store) {
  const auto* e = file.find(name);
  ANVIL_CHECK(e != nullptr, "weight ", name, " vanished after the check");
  const TensorView w = e->file->view(*e->info);
  ANVIL_CHECK_INPUT(w.dtype == DType::dtype_fp8_e4m3 && w.shape.rank() == 3, e->file->path(), ": tensor '", name,
                    "' is ", dtype_name(w.dtype), " ", w.shape.str(), ", expected 3-D F8_E4M3 fused experts");
  ANVIL_CHECK(expert < w.shape[0] && col0 + out <= w.shape[2] && in0 + in_n <= w.shape[1], "expert ", expert,
              " outputs [", col0, ", ", col0 + out, ") inputs [", in0, ", ", in0 + in_n, ") of ", name, " ",
              w.shape.str());
  const i64 in = w.shape[1], total = w.shape[2];
  QuantTensor t;
  t.row_scale = fp8_fused_scales(file, name, expert, col0, out);
  t.codes.resize(static_cast<std::size_t>(out * in_n));
  const auto* src = static_cast<const std::uint8_t*>(w.data) + (expert * in + in0) * total;
  for (i64 i = 0; i < in_n; ++i)  // input i's stored row holds column o of every output row
    for (i64 o = 0; o < out; ++o) t.codes[static_cast<std::size_t>(o * in_n + i)] = src[i * total + col0 + o];
  return store.adopt(std::move(t), DType::dtype_fp8_e4m3, Shape{out, in_n});
}

}  // namespace anvil::quant
