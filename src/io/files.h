// Whole-file text reads and atomic writes, with errors that name the file; early writeback
// and read-ahead hints.
#pragma once

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

namespace anvil::io {

// The file's bytes; a user error names the file when it cannot be read.
std::string read_text_file(const std::string& path);

// Writes `path.partial`, fsyncs it and renames it over `path`: a reader sees the old file or
// the whole new one, never a torn one. A user error names the file on failure.
void write_text_file_atomic(const std::string& path, const std::string& text);

// Asks the kernel to read the whole file into the page cache, in order, while the owner
// reads it in pieces with CPU work between them (a checkpoint being resumed): the disk
// streams on meanwhile. One request covers at most a few MiB (Linux 6.x reads the first
// 8 MiB of a whole-file posix_fadvise(WILLNEED) and drops the rest), and the requests block
// while the disk's queue is full, so a thread of its own makes them, 2 MiB at a time from
// the start. A hint only: where it is not supported or fails, it does nothing. The
// destructor stops the requests (those in flight complete in the background).
class ReadAhead {
 public:
  explicit ReadAhead(const std::string& path);
  ReadAhead(const ReadAhead&) = delete;
  ReadAhead& operator=(const ReadAhead&) = delete;
  ~ReadAhead();

 private:
  int fd_ = -1;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// Starts the writeback of a file being written by other means (MPI-IO): start() asks the
// kernel to begin writing the file's dirty pages to disk now, so that the disk works while
// the writer is still copying and the final sync has less left to wait for. The request
// (Linux sync_file_range) blocks while the disk's queue is full, so a thread of its own
// makes it and start() only wakes that thread: the writer never waits for the disk here
// (two ranks each waiting for it in turn made a 2-rank save 30% slower; RESULTS.md). A
// hint only: where it is not supported (not Linux) or fails, it does nothing. The
// destructor waits for the request in flight, not for the disk.
class Writeback {
 public:
  explicit Writeback(const std::string& path);
  Writeback(const Writeback&) = delete;
  Writeback& operator=(const Writeback&) = delete;
  ~Writeback();
  void start();

 private:
  void run();  // the thread: one request per wake-up (wake-ups while one is in flight merge)
  int fd_ = -1;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool pending_ = false, stop_ = false;
  std::thread thread_;
};

}  // namespace anvil::io
