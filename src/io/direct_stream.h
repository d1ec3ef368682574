// DirectStream: reads given byte ranges of a file from the disk in file order, past the page
// cache (O_DIRECT), in 4 MiB requests with several in flight, into a ring of buffers that a
// reader copies them out of as they arrive (a checkpoint being resumed).
//
// Why not the page cache's read-ahead (io::ReadAhead): the kernel's posix_fadvise(WILLNEED)
// reads in requests of 1-2 MiB (single pages, up to the disk's segment limit), and a disk
// whose every request costs a round trip (a VM's virtio disk, a network block device) reads
// fastest in its largest requests; the page cache also costs a second copy of every byte. On
// the dev VM a file comes in at 2.8-3.2 GB/s this way, against 1.5-2.4 GB/s for dd from the
// host's cache (tests/bench/RESULTS.md).
//
// Not every file system takes O_DIRECT (tmpfs refuses it) and a file already in the page
// cache is read faster from there: open() then returns nothing and the caller reads as
// before. A failed request is no error here: wait() answers nullptr and the caller reads those
// bytes itself (and reports what is wrong with them).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace anvil::io {

// Bytes [begin, end) of a file.
struct ByteRange {
  std::uint64_t begin = 0, end = 0;
};

// Pages of bytes [r.begin, r.end) of the file open as fd that are in the page cache, and the
// pages in all; {0, 0} when the system cannot tell (mincore over a mapping of them).
struct CachedPages {
  std::uint64_t cached = 0, total = 0;
};
CachedPages cached_pages(int fd, ByteRange r);

class DirectStream {
 public:
  static constexpr std::uint64_t kChunk = std::uint64_t{4} << 20;  // one request: the file's 4 MiB-aligned chunks
  static constexpr int kRequests = 4;                               // requests in flight
  static constexpr int kSlots = 12;                                 // buffers in the ring

  // Starts reading the chunks of `path` that `ranges` touch, in file order (the ranges in
  // any order, overlapping or not). nullptr when the file cannot be opened past the page
  // cache, or when most of those bytes are in the page cache already.
  static std::unique_ptr<DirectStream> open(const std::string& path, const std::vector<ByteRange>& ranges);
  DirectStream(const DirectStream&) = delete;
  DirectStream& operator=(const DirectStream&) = delete;
  ~DirectStream();  // stops; waits for the requests in flight

  // Bytes [at, at + n) of the file, which lie in one chunk (at / kChunk == (at + n - 1) /
  // kChunk): waits until the chunk is read and returns where they are; they stay there until
  // pass() moves past them. nullptr when the stream does not hold them: outside its ranges,
  // already passed, too far ahead of the last pass() (more than kSlots chunks), or the read
  // failed or ended short (the caller reads them itself). Any thread.
  const unsigned char* wait(std::uint64_t at, std::size_t n);
  // The reader needs no byte before `at` any more (it only ever moves forward): the chunks
  // that end there or before are free for the chunks to come.
  void pass(std::uint64_t at);

 private:
  struct Slot {
    std::int64_t chunk = -1;  // the index in chunks_ of what it holds or is being read into
    bool ready = false;       // the read is over
    std::size_t valid = 0;    // bytes read (fewer at the end of the file or on a failure)
  };
  DirectStream(int fd, std::vector<std::uint64_t> chunks);
  void run();  // a request thread: the next chunk into its slot, until none is left
  // The index of the first chunk that pass() has not freed (chunks_[i] + kChunk > passed_).
  std::int64_t first_kept() const;

  int fd_ = -1;
  std::vector<std::uint64_t> chunks_;  // file offsets of the chunks to read, ascending
  unsigned char* ring_ = nullptr;      // kSlots * kChunk bytes
  std::vector<Slot> slots_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::int64_t next_ = 0;  // the next chunk a request thread takes
  std::uint64_t passed_ = 0;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace anvil::io
