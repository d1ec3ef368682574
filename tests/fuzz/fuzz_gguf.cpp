// libFuzzer target: the GGUF reader and the dequantizers on arbitrary bytes. Any input must
// either parse or throw a user error; a crash, a sanitizer report, another exception or a
// broken promise of parse() (checked below, trapping) is a bug.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/error.h"
#include "io/gguf.h"
#include "io/gguf_dequant.h"

namespace {
void require(bool ok) {
  if (!ok) __builtin_trap();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto file = anvil::io::GgufFile::parse(data, size, "fuzz");
    // What parse() promises: every tensor aligned and inside the input, names unique. The
    // dequantizer reads exactly nbytes, so ASan catches a tensor that is not inside.
    require(file.data_offset() <= size);
    std::vector<float> out;
    for (const auto& t : file.tensors()) {
      require(file.find_tensor(t.name) == &t);
      require(t.offset % file.alignment() == 0);
      require(file.data_offset() + t.offset + t.nbytes <= size);
      if (!anvil::io::gguf_can_dequantize(t.type) || t.numel > (1u << 22)) continue;
      out.resize(t.numel);
      anvil::io::gguf_dequantize(t, file.data(t), out.data(), file.path());
    }
  } catch (const anvil::Error& e) {
    require(e.kind() == anvil::ErrorKind::user);  // bad input is the user's, never a bug
  }
  return 0;
}
