// The output directory of an export, written all or nothing: everything goes into a
// sibling DIR.partial-<pid> that one rename turns into DIR at the end, so a crash or an
// error never leaves a partial export that looks complete under DIR's name.
#pragma once

#include <string>
#include <vector>

// StagedDir and StagedFile: a directory or a file.

namespace anvil::exporting {

class StagedDir {
 public:
  // Refuses `out` (a user error naming it) when it exists and is not an empty directory,
  // unless `force` and it holds a model or an adapter (config.json or
  // adapter_config.json): --force must never wipe an arbitrary directory. Also refuses an
  // `out` that is, or lies above, one of `inputs` (the base model, the checkpoint), which
  // the export reads while it writes. Then creates the staging directory.
  StagedDir(const std::string& out, bool force, const std::vector<std::string>& inputs);
  // Removes the staging directory unless commit() succeeded.
  ~StagedDir();
  StagedDir(const StagedDir&) = delete;
  StagedDir& operator=(const StagedDir&) = delete;

  // Where to write: the staging directory.
  const std::string& path() const { return staging_; }
  // The final directory (absolute).
  const std::string& out() const { return out_; }
  // Moves an existing `out` aside, renames the staging directory to `out`, then removes
  // the old one; on failure the old one is put back.
  void commit();

 private:
  std::string out_;
  std::string staging_;
  bool committed_ = false;
};

// The same for a single-file export (GGUF): written as FILE.partial-<pid> beside FILE and
// renamed over it at the end.
class StagedFile {
 public:
  // Refuses `out` when it exists, unless `force` and it is a GGUF file (--force never
  // replaces an arbitrary file), or is a directory; also when it is one of `inputs`.
  StagedFile(const std::string& out, bool force, const std::vector<std::string>& inputs);
  // Removes the staged file unless commit() succeeded.
  ~StagedFile();
  StagedFile(const StagedFile&) = delete;
  StagedFile& operator=(const StagedFile&) = delete;

  const std::string& path() const { return staging_; }
  const std::string& out() const { return out_; }
  // Renames the staged file over `out` (one atomic step).
  void commit();

 private:
  std::string out_;
  std::string staging_;
  bool committed_ = false;
};

}  // namespace anvil::exporting
