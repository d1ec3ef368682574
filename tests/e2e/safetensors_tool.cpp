// Test helper for the Python interop test (not part of anvil):
//   safetensors_tool write DIR   writes DIR/all.safetensors (every dtype numpy knows) and
//                                DIR/bf16.safetensors, with values value(name, i) below
//   safetensors_tool dump PATH   prints every tensor of a file or model dir as JSON lines
//                                {"name", "dtype", "shape", "values"} (values as doubles;
//                                NaN and Infinity spelled as Python's json reads them)
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "io/safetensors.h"

using namespace anvil;

namespace {
// The value formula the Python side recomputes: small integers that every dtype holds
// exactly (bool takes i % 2), with negatives for the signed and floating types.
double value_at(DType t, std::int64_t i) {
  if (t == DType::dtype_bool) return double(i % 2);
  if (t == DType::dtype_u8) return double((i * 7) % 251);
  const double v = double((i * 37) % 201) - 100.0;
  return dtype_is_float(t) ? v * 0.25 : v;
}

void store(DType t, double v, std::uint8_t* p) {
  const auto put = [p](auto x) { std::memcpy(p, &x, sizeof x); };
  switch (t) {
    case DType::dtype_f64: return put(v);
    case DType::dtype_f32: return put(float(v));
    case DType::dtype_f16: return put(f32_to_f16(float(v)));
    case DType::dtype_bf16: return put(f32_to_bf16(float(v)));
    case DType::dtype_i64: return put(std::int64_t(v));
    case DType::dtype_i32: return put(std::int32_t(v));
    case DType::dtype_i16: return put(std::int16_t(v));
    case DType::dtype_i8: return put(std::int8_t(v));
    case DType::dtype_u8:
    case DType::dtype_bool: return put(std::uint8_t(v));
    case DType::dtype_fp8_e4m3: return put(f32_to_fp8_e4m3(float(v)));
    case DType::dtype_u32: return put(std::uint32_t(v));
    case DType::dtype_nf4: break;  // not a file dtype (kAllDTypes does not list it)
  }
}

void write_file(const std::string& path, const std::vector<DType>& types) {
  io::SafetensorsWriter w(path);
  for (std::size_t k = 0; k < types.size(); ++k)
    w.declare(std::string("t_") + std::string(dtype_short_name(types[k])), types[k],
              Shape{3, std::int64_t(k + 2)});
  for (std::size_t k = 0; k < types.size(); ++k) {
    const Shape s{3, std::int64_t(k + 2)};
    std::vector<std::uint8_t> buf(std::size_t(s.numel()) * dtype_size(types[k]));
    for (std::int64_t i = 0; i < s.numel(); ++i)
      store(types[k], value_at(types[k], i), buf.data() + i * dtype_size(types[k]));
    w.write_tensor(std::string("t_") + std::string(dtype_short_name(types[k])), buf.data(), buf.size());
  }
  w.finish();
}

void dump(const std::string& path) {
  const auto model = io::SafetensorsModel::open(path);
  for (const auto& e : model.tensors()) {
    const auto v = e.file->view(*e.info);
    std::printf("{\"name\": \"%s\", \"dtype\": \"%s\", \"shape\": [", e.info->name.c_str(),
                std::string(dtype_name(e.info->dtype)).c_str());
    for (int d = 0; d < v.shape.rank(); ++d) std::printf("%s%lld", d ? ", " : "", (long long)v.shape[d]);
    std::printf("], \"values\": [");
    for (std::int64_t i = 0; i < v.numel(); ++i) {
      const double x = dtype_load_as_f64(v.data, v.dtype, std::size_t(i));
      std::printf("%s", i ? ", " : "");
      // Python's json reads these spellings of the non-finite values.
      if (std::isnan(x))
        std::printf("NaN");
      else if (std::isinf(x))
        std::printf(x > 0 ? "Infinity" : "-Infinity");
      else
        std::printf("%.17g", x);
    }
    std::printf("]}\n");
  }
}
}  // namespace

int main(int argc, char** argv) {
  try {
    ANVIL_CHECK_INPUT(argc == 3, "usage: safetensors_tool write DIR | dump PATH");
    const std::string verb = argv[1];
    if (verb == "write") {
      std::vector<DType> numpy_types;
      for (DType t : kAllDTypes)
        if (t != DType::dtype_bf16) numpy_types.push_back(t);
      write_file(std::string(argv[2]) + "/all.safetensors", numpy_types);
      write_file(std::string(argv[2]) + "/bf16.safetensors", {DType::dtype_bf16});
    } else if (verb == "dump") {
      dump(argv[2]);
    } else {
      throw_user_error("unknown verb '", verb, "'");
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return e.exit_code();
  }
  return 0;
}
