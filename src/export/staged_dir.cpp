#include "export/staged_dir.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"

namespace anvil::exporting {

namespace fs = std::filesystem;

namespace {

// Absolute, normalised, symlinks of the existing part resolved: two spellings of one
// directory compare equal.
fs::path path_resolve(const std::string& p) {
  std::error_code ec;
  fs::path abs = fs::absolute(p, ec).lexically_normal();
  if (!abs.has_filename()) abs = abs.parent_path();  // "dir/" -> "dir"
  const fs::path canon = fs::weakly_canonical(abs, ec);
  return ec ? abs : canon;
}

// True when `outer` is `inner` or one of its ancestors.
bool path_contains(const fs::path& outer, const fs::path& inner) {
  const auto [o, i] = std::mismatch(outer.begin(), outer.end(), inner.begin(), inner.end());
  return o == outer.end();
}

// Whether `path` starts with GGUF's magic.
bool is_gguf_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  in.read(magic, 4);
  return in.gcount() == 4 && std::memcmp(magic, "GGUF", 4) == 0;
}

}  // namespace

StagedDir::StagedDir(const std::string& out, bool force, const std::vector<std::string>& inputs) {
  const fs::path dir = path_resolve(out);
  out_ = dir.string();
  ANVIL_CHECK_INPUT(dir.has_parent_path() && dir != dir.root_path(), "export: --out ", out,
                    ": cannot replace a file system root");
  for (const auto& input : inputs) {
    if (input.empty()) continue;
    ANVIL_CHECK_INPUT(!path_contains(dir, path_resolve(input)), "export: --out ", out_, " would replace ", input,
                      ", which the export reads; choose another output directory");
  }
  std::error_code ec;
  if (fs::exists(dir, ec)) {
    ANVIL_CHECK_INPUT(fs::is_directory(dir, ec), "export: --out ", out_, " exists and is not a directory");
    if (!fs::is_empty(dir, ec)) {
      ANVIL_CHECK_INPUT(force, "export: ", out_, " exists and is not empty (use --force to replace it)");
      ANVIL_CHECK_INPUT(fs::exists(dir / "config.json", ec) || fs::exists(dir / "adapter_config.json", ec),
                        "export: ", out_,
                        " holds neither a model nor an adapter (no config.json or adapter_config.json); "
                        "--force only replaces an earlier export");
    }
  }
  fs::create_directories(dir.parent_path(), ec);
  ANVIL_CHECK_INPUT(!ec, "export: cannot create ", dir.parent_path().string(), ": ", ec.message());
  staging_ = (dir.parent_path() / (dir.filename().string() + ".partial-" + std::to_string(::getpid()))).string();
  fs::remove_all(staging_, ec);  // left by an earlier process that had this pid
  fs::create_directory(staging_, ec);
  ANVIL_CHECK_INPUT(!ec, "export: cannot create ", staging_, ": ", ec.message());
}

StagedDir::~StagedDir() {
  if (committed_) return;
  std::error_code ec;
  fs::remove_all(staging_, ec);
}

void StagedDir::commit() {
  ANVIL_CHECK(!committed_, "commit() twice for ", out_);
  const fs::path old = out_ + ".old-" + std::to_string(::getpid());
  std::error_code ec;
  const bool replace = fs::exists(out_, ec);
  if (replace) {
    fs::remove_all(old, ec);
    fs::rename(out_, old, ec);
    ANVIL_CHECK_INPUT(!ec, "export: cannot move ", out_, " aside to replace it: ", ec.message());
  }
  fs::rename(staging_, out_, ec);
  if (ec) {
    std::error_code ignored;
    if (replace) fs::rename(old, out_, ignored);  // put it back
    throw_user_error("export: cannot rename ", staging_, " to ", out_, ": ", ec.message());
  }
  committed_ = true;
  if (replace) fs::remove_all(old, ec);
}

StagedFile::StagedFile(const std::string& out, bool force, const std::vector<std::string>& inputs) {
  const fs::path file = path_resolve(out);
  out_ = file.string();
  for (const auto& input : inputs) {
    if (input.empty()) continue;
    ANVIL_CHECK_INPUT(file != path_resolve(input), "export: --out ", out_, " is ", input,
                      ", which the export reads; choose another output file");
  }
  std::error_code ec;
  if (fs::exists(file, ec)) {
    ANVIL_CHECK_INPUT(!fs::is_directory(file, ec), "export: --out ", out_, " is a directory; name a file");
    ANVIL_CHECK_INPUT(force, "export: ", out_, " exists (use --force to replace it)");
    ANVIL_CHECK_INPUT(is_gguf_file(file), "export: ", out_, " is not a GGUF file; --force only replaces an earlier export");
  }
  fs::create_directories(file.parent_path(), ec);
  ANVIL_CHECK_INPUT(!ec, "export: cannot create ", file.parent_path().string(), ": ", ec.message());
  staging_ = out_ + ".partial-" + std::to_string(::getpid());
}

StagedFile::~StagedFile() {
  if (committed_) return;
  std::error_code ec;
  fs::remove(staging_, ec);
}

void StagedFile::commit() {
  ANVIL_CHECK(!committed_, "commit() twice for ", out_);
  std::error_code ec;
  fs::rename(staging_, out_, ec);
  ANVIL_CHECK_INPUT(!ec, "export: cannot rename ", staging_, " to ", out_, ": ", ec.message());
  committed_ = true;
}

}  // namespace anvil::exporting
