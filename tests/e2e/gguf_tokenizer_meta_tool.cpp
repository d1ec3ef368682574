// gguf_tokenizer_meta_tool DIR: the tokenizer.* GGUF metadata anvil would export for the
// model directory DIR, as JSON lines {"key", "type", "value"} (arrays: "elem_type" too), for
// test_gguf_tokenizer_meta.py to compare with a GGUF llama.cpp wrote (ASCII, so no line
// separator hides inside a token). Exit 2 on a user error.
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "export/gguf_tokenizer_meta.h"

namespace {

using anvil::io::GgufValue;
using anvil::io::GgufValueType;

nlohmann::json to_json(const GgufValue& v) {
  switch (v.type) {
    case GgufValueType::gguf_string:
      return v.s;
    case GgufValueType::gguf_bool:
      return v.u != 0;
    case GgufValueType::gguf_f32:
    case GgufValueType::gguf_f64:
      return v.f;
    case GgufValueType::gguf_i8:
    case GgufValueType::gguf_i16:
    case GgufValueType::gguf_i32:
    case GgufValueType::gguf_i64:
      return v.i;
    case GgufValueType::gguf_array: {
      nlohmann::json a = nlohmann::json::array();
      for (const GgufValue& item : v.items) a.push_back(to_json(item));
      return a;
    }
    default:
      return v.u;
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: gguf_tokenizer_meta_tool MODEL_DIR\n");
    return 2;
  }
  try {
    for (const auto& [key, value] : anvil::exporting::gguf_tokenizer_metadata(argv[1])) {
      nlohmann::json line = {{"key", key}, {"type", static_cast<int>(value.type)}, {"value", to_json(value)}};
      if (value.type == GgufValueType::gguf_array) line["elem_type"] = static_cast<int>(value.elem_type);
      std::cout << line.dump(-1, ' ', true) << "\n";
    }
  } catch (const std::exception& e) {
    std::cerr << anvil::error_message(e) << "\n";
    return anvil::error_exit_code(e);
  }
  return 0;
}
