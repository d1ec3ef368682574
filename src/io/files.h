// Whole-file text reads and atomic writes, with errors that name the file; early writeback
// and read-ahead hints.
#pragma once

#include <string>

namespace anvil::io {

// The file's bytes; a user error names the file when it cannot be read.
std::string read_text_file(const std::string& path);

// Writes `path.partial`, fsyncs it and renames it over `path`: a reader sees the old file or
// the whole new one, never a torn one. A user error names the file on failure.
void write_text_file_atomic(const std::string& path, const std::string& text);

// Asks the kernel to read the whole file into the page cache now, in the background (a
// checkpoint about to be read in pieces, with CPU work between them: the disk streams on
// meanwhile). A hint only: where it is not supported or fails, it does nothing.
void read_ahead(const std::string& path);

// Starts the writeback of a file being written by other means (MPI-IO): start() asks the
// kernel to begin writing the file's dirty pages to disk now, without waiting, so that the
// disk works while the writer is still copying and the final sync has less left to wait
// for. A hint only: where it is not supported (not Linux) or fails, it does nothing.
class Writeback {
 public:
  explicit Writeback(const std::string& path);
  Writeback(const Writeback&) = delete;
  Writeback& operator=(const Writeback&) = delete;
  ~Writeback();
  void start() const;

 private:
  int fd_ = -1;
};

}  // namespace anvil::io
