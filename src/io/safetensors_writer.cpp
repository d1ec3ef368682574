// The streaming safetensors writer. The header must precede the data, so every tensor is
// declared up front; after that the bytes flow straight to the file and a writer never
// holds more than the caller's current chunk.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "io/safetensors.h"

namespace anvil::io {

using json = nlohmann::json;

struct SafetensorsWriter::Impl {
  std::string path;
  std::string partial_path;
  std::map<std::string, std::string> metadata;
  std::vector<TensorInfo> declared;  // in declaration (= data) order
  std::set<std::string, std::less<>> names;
  std::FILE* out = nullptr;
  std::size_t current = 0;    // index of the first tensor not yet complete
  std::uint64_t written = 0;  // bytes of the data buffer written so far
  bool finished = false;

  std::string header_text() const {
    // nlohmann's object is a std::map, so dump() sorts the keys ("__metadata__" included).
    json header = json::object();
    if (!metadata.empty()) {
      json meta = json::object();
      for (const auto& [k, v] : metadata) meta[k] = v;
      header["__metadata__"] = std::move(meta);
    }
    for (const auto& t : declared) {
      json shape = json::array();
      for (const auto d : t.shape) shape.push_back(d);
      header[t.name] = {{"dtype", std::string(dtype_name(t.dtype))},
                        {"shape", std::move(shape)},
                        {"data_offsets", {t.begin, t.end}}};
    }
    std::string text;
    try {
      text = header.dump();
    } catch (const json::exception& e) {  // a name or metadata string that is not UTF-8
      throw_user_error(path, ": cannot write the header: ", e.what());
    }
    text.append((8 - text.size() % 8) % 8, ' ');  // so the data starts 8-byte aligned
    return text;
  }

  void write_bytes(const void* data, std::size_t n) {
    if (n && std::fwrite(data, 1, n, out) != n)
      throw_user_error(partial_path, ": write failed: ", std::strerror(errno));
  }

  void start_if_needed() {
    ANVIL_CHECK(!finished, "write to ", path, " after finish()");
    if (out) return;
    const std::string text = header_text();
    out = std::fopen(partial_path.c_str(), "wb");
    if (!out) throw_user_error(partial_path, ": cannot create: ", std::strerror(errno));
    std::uint8_t len[8];
    for (int i = 0; i < 8; ++i)
      len[i] = static_cast<std::uint8_t>(static_cast<std::uint64_t>(text.size()) >> (8 * i));
    write_bytes(len, 8);
    write_bytes(text.data(), text.size());
  }

  // Moves past complete tensors, including empty ones, which take no bytes.
  void skip_complete() {
    while (current < declared.size() && written == declared[current].end) ++current;
  }
};

SafetensorsWriter::SafetensorsWriter(std::string path, std::map<std::string, std::string> metadata)
    : impl_(std::make_unique<Impl>()) {
  impl_->path = std::move(path);
  impl_->partial_path = impl_->path + ".partial";
  impl_->metadata = std::move(metadata);
}

SafetensorsWriter::~SafetensorsWriter() {
  if (impl_->out) std::fclose(impl_->out);
  if (!impl_->finished) std::remove(impl_->partial_path.c_str());
}

void SafetensorsWriter::declare(std::string name, DType dtype, Shape shape) {
  Impl& w = *impl_;
  ANVIL_CHECK(!w.out && !w.finished, "declare('", name, "') after data was written to ", w.path);
  ANVIL_CHECK(name != "__metadata__", "'__metadata__' is not a valid tensor name (", w.path, ")");
  ANVIL_CHECK(w.names.insert(name).second, "tensor '", name, "' declared twice for ", w.path);
  std::uint64_t nbytes = dtype_size(dtype);
  for (const auto d : shape) {
    ANVIL_CHECK(d >= 0, "tensor '", name, "' has a negative dimension in ", shape.str());
    ANVIL_CHECK(!__builtin_mul_overflow(nbytes, static_cast<std::uint64_t>(d), &nbytes), "tensor '", name,
                "' of shape ", shape.str(), " is too large");
  }
  TensorInfo t;
  t.name = std::move(name);
  t.dtype = dtype;
  t.shape = shape;
  t.begin = w.declared.empty() ? 0 : w.declared.back().end;
  t.end = t.begin + nbytes;
  w.declared.push_back(std::move(t));
}

void SafetensorsWriter::append(const void* data, std::size_t nbytes) {
  Impl& w = *impl_;
  w.start_if_needed();
  const auto* p = static_cast<const std::uint8_t*>(data);
  while (nbytes > 0) {
    w.skip_complete();
    ANVIL_CHECK(w.current < w.declared.size(), "more data than declared for ", w.path);
    const std::uint64_t room = w.declared[w.current].end - w.written;
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(room, nbytes));
    w.write_bytes(p, n);
    p += n;
    nbytes -= n;
    w.written += n;
  }
}

void SafetensorsWriter::write_tensor(std::string_view name, const void* data, std::size_t nbytes) {
  Impl& w = *impl_;
  // The named tensor must start exactly where the data written so far ends (empty
  // tensors take no bytes, so several may start at the same offset).
  const auto it =
      std::find_if(w.declared.begin(), w.declared.end(), [&](const TensorInfo& t) { return t.name == name; });
  ANVIL_CHECK(it != w.declared.end(), "write_tensor('", name, "'): not declared for ", w.path);
  ANVIL_CHECK(w.written == it->begin, "write_tensor('", name, "') out of declaration order for ", w.path);
  ANVIL_CHECK(nbytes == it->end - it->begin, "tensor '", name, "' expects ", it->end - it->begin,
              " bytes, got ", nbytes);
  append(data, nbytes);
}

void SafetensorsWriter::finish() {
  Impl& w = *impl_;
  w.start_if_needed();
  w.skip_complete();
  ANVIL_CHECK(w.current == w.declared.size(), "tensor '",
              w.current < w.declared.size() ? w.declared[w.current].name : "", "' is incomplete in ", w.path,
              " (", w.written, " of ", w.declared.empty() ? 0 : w.declared.back().end,
              " data bytes written)");
  // The rename is the commit point, so the data must be on disk before it.
  if (std::fflush(w.out) != 0 || ::fsync(::fileno(w.out)) != 0)
    throw_user_error(w.partial_path, ": flush failed: ", std::strerror(errno));
  const int close_rc = std::fclose(w.out);
  w.out = nullptr;
  if (close_rc != 0) throw_user_error(w.partial_path, ": close failed: ", std::strerror(errno));
  if (std::rename(w.partial_path.c_str(), w.path.c_str()) != 0)
    throw_user_error(w.path, ": cannot rename the finished file into place: ", std::strerror(errno));
  w.finished = true;
  // Make the rename itself durable. Some file systems refuse fsync on a directory; the
  // file is complete either way, so that is not an error.
  std::string dir = std::filesystem::path(w.path).parent_path().string();
  if (dir.empty()) dir = ".";
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace anvil::io
