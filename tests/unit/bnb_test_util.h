// bitsandbytes NF4 weights as transformers saves a Linear4bit, written from our quantizer
// (bit-identical to bitsandbytes', test_quant.cpp): the tensors of one weight, and a whole
// model directory turned into a bitsandbytes 4-bit checkpoint.
#pragma once

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/files.h"
#include "io/safetensors.h"
#include "quant/nf4.h"

namespace anvil::test {

// One weight's tensors: packed codes, absmax (8-bit with its nested state when `nested`,
// else f32), quant_map, and the quant_state JSON.
struct Bnb4Weight {
  std::string name;
  quant::QuantTensor t;
  bool nested = true;
  std::vector<float> absmax;  // not nested: each block's absmax in f32
  std::string state;

  Bnb4Weight(std::string weight_name, const float* x, std::int64_t rows, std::int64_t cols, bool nested_absmax)
      : name(std::move(weight_name)), t(quant::nf4_quantize(x, rows * cols)), nested(nested_absmax) {
    state = R"({"quant_type": "nf4", "blocksize": 64, "shape": [)" + std::to_string(rows) + ", " +
            std::to_string(cols) + "]";
    if (nested) {
      char offset[32];  // %.9g: the f32 offset back exactly
      std::snprintf(offset, sizeof offset, "%.9g", static_cast<double>(t.state.offset));
      state += R"(, "nested_blocksize": 256, "nested_offset": )" + std::string(offset);
    } else {
      for (std::int64_t b = 0; b < static_cast<std::int64_t>(t.absmax_q.size()); ++b)
        absmax.push_back(quant::nf4_block_absmax(t.state, b));
    }
    state += "}";
  }

  void declare(io::SafetensorsWriter& w) const {
    auto u8 = [](std::size_t k) { return Shape{static_cast<std::int64_t>(k)}; };
    w.declare(name, DType::dtype_u8, u8(t.codes.size()));
    if (nested) {
      w.declare(name + ".absmax", DType::dtype_u8, u8(t.absmax_q.size()));
    } else {
      w.declare(name + ".absmax", DType::dtype_f32, u8(absmax.size()));
    }
    w.declare(name + ".quant_map", DType::dtype_f32, Shape{16});
    if (nested) {
      w.declare(name + ".nested_absmax", DType::dtype_f32, u8(t.absmax2.size()));
      w.declare(name + ".nested_quant_map", DType::dtype_f32, Shape{256});
    }
    w.declare(name + ".quant_state.bitsandbytes__nf4", DType::dtype_u8, u8(state.size()));
  }

  void write(io::SafetensorsWriter& w) const {
    w.write_tensor(name, t.codes.data(), t.codes.size());
    if (nested) {
      w.write_tensor(name + ".absmax", t.absmax_q.data(), t.absmax_q.size());
    } else {
      w.write_tensor(name + ".absmax", absmax.data(), absmax.size() * 4);
    }
    w.write_tensor(name + ".quant_map", t.code.data(), 16 * 4);
    if (nested) {
      w.write_tensor(name + ".nested_absmax", t.absmax2.data(), t.absmax2.size() * 4);
      w.write_tensor(name + ".nested_quant_map", t.absmax_code.data(), 256 * 4);
    }
    w.write_tensor(name + ".quant_state.bitsandbytes__nf4", state.data(), state.size());
  }
};

// The f32 model in `from` (model.safetensors, config.json) as a bitsandbytes 4-bit
// checkpoint in `to`: every 2-D `*_proj.weight` packed (nested or not), the rest as it is,
// and config.json with a quantization_config saying so.
inline void make_bnb4_model_dir(const std::string& from, const std::string& to, bool nested) {
  std::filesystem::create_directories(to);
  const io::SafetensorsFile src = io::SafetensorsFile::open(from + "/model.safetensors");
  std::vector<Bnb4Weight> packed;
  std::vector<const io::TensorInfo*> plain;
  for (const io::TensorInfo& info : src.tensors()) {
    if (info.shape.rank() == 2 && info.name.ends_with("_proj.weight")) {
      ANVIL_CHECK(info.dtype == DType::dtype_f32, info.name, ": not f32");
      packed.emplace_back(info.name, static_cast<const float*>(src.view(info).data), info.shape[0], info.shape[1],
                          nested);
    } else {
      plain.push_back(&info);
    }
  }
  io::SafetensorsWriter w(to + "/model.safetensors");
  for (const Bnb4Weight& b : packed) b.declare(w);
  for (const io::TensorInfo* info : plain) w.declare(info->name, info->dtype, info->shape);
  for (const Bnb4Weight& b : packed) b.write(w);
  for (const io::TensorInfo* info : plain) {
    const TensorView v = src.view(*info);
    w.write_tensor(info->name, v.data, v.nbytes());
  }
  w.finish();
  std::string config = io::read_text_file(from + "/config.json");
  const std::size_t close = config.rfind('}');
  ANVIL_CHECK(close != std::string::npos, from, "/config.json: not an object");
  config.insert(close, std::string(R"(, "quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": true, )") +
                           R"("bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": )" +
                           (nested ? "true" : "false") + "}\n");
  io::write_text_file_atomic(to + "/config.json", config);
}

}  // namespace anvil::test
