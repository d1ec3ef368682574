// The output directory of an export, written all or nothing: everything goes into a
// sibling DIR.partial-<pid> that one rename turns into DIR at the end, so a crash or an
// error never leaves a partial export that looks complete under DIR's name.
#pragma once

#include <string>
#include <vector>

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

}  // namespace anvil::exporting
