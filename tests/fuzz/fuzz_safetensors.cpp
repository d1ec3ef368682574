// libFuzzer target: the safetensors reader on arbitrary bytes. Any input must either
// parse or throw anvil::Error; a crash, a sanitizer report, another exception or a broken
// promise of parse() (checked below, trapping) is a bug.
#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "io/safetensors.h"

namespace {
void require(bool ok) {
  if (!ok) __builtin_trap();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto file = anvil::io::SafetensorsFile::parse(data, size, "fuzz");
    // What parse() promises: the tensors tile the data buffer in order and every view
    // lies inside the input. Touching each byte lets ASan catch a view that does not.
    const std::uint64_t data_start = 8 + file.header_bytes();
    std::uint64_t cursor = 0;
    volatile std::uint8_t sink = 0;
    for (const auto& t : file.tensors()) {
      require(t.begin == cursor && t.end >= t.begin);
      cursor = t.end;
      require(file.find(t.name) != nullptr && file.find(t.name)->begin == t.begin);
      const auto view = file.view(t);
      require(view.nbytes() == t.end - t.begin);
      require(static_cast<const std::uint8_t*>(view.data) == data + data_start + t.begin);
      const auto* p = static_cast<const std::uint8_t*>(view.data);
      for (std::size_t i = 0; i < view.nbytes(); ++i) sink = sink ^ p[i];
    }
    require(data_start + cursor == size);
  } catch (const anvil::Error& e) {
    require(e.kind() == anvil::ErrorKind::user);  // bad input is the user's, never a bug
  }
  return 0;
}
