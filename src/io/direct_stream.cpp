#include "io/direct_stream.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <system_error>

namespace anvil::io {

namespace {

// Whether most pages of `chunks` (offsets of kChunk-byte chunks) of the file open as fd,
// `size` bytes long, are in the page cache.
bool mostly_cached(int fd, std::uint64_t size, const std::vector<std::uint64_t>& chunks) {
  CachedPages all;
  for (const std::uint64_t c : chunks) {
    const CachedPages p = cached_pages(fd, {c, std::min(c + DirectStream::kChunk, size)});
    all.cached += p.cached;
    all.total += p.total;
  }
  return all.total > 0 && 2 * all.cached > all.total;
}

}  // namespace

CachedPages cached_pages(int fd, ByteRange r) {
  if (r.end <= r.begin) return {};
  const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  const std::uint64_t first = r.begin / page * page, bytes = r.end - first;
  void* map = ::mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, static_cast<off_t>(first));
  if (map == MAP_FAILED) return {};
  std::vector<unsigned char> in((bytes + page - 1) / page);
  CachedPages out;
  if (::mincore(map, bytes, in.data()) == 0) {
    out.total = in.size();
    for (const unsigned char b : in) out.cached += b & 1u;
  }
  ::munmap(map, bytes);
  return out;
}

std::unique_ptr<DirectStream> DirectStream::open(const std::string& path, const std::vector<ByteRange>& ranges) {
  std::vector<std::uint64_t> chunks;
  for (const ByteRange& r : ranges)
    for (std::uint64_t c = r.begin / kChunk; r.begin < r.end && c <= (r.end - 1) / kChunk; ++c)
      chunks.push_back(c * kChunk);
  std::sort(chunks.begin(), chunks.end());
  chunks.erase(std::unique(chunks.begin(), chunks.end()), chunks.end());
  if (chunks.empty()) return nullptr;
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
  if (fd < 0) return nullptr;
  const off_t size = ::lseek(fd, 0, SEEK_END);
  if (size <= 0 || mostly_cached(fd, static_cast<std::uint64_t>(size), chunks)) {
    ::close(fd);
    return nullptr;
  }
  return std::unique_ptr<DirectStream>(new DirectStream(fd, std::move(chunks)));
}

DirectStream::DirectStream(int fd, std::vector<std::uint64_t> chunks)
    : fd_(fd), chunks_(std::move(chunks)), slots_(kSlots) {
  // 2 MiB-aligned and backed by huge pages where the kernel has them: a request's buffer is
  // then two pieces of memory for the disk, not a thousand pages (O_DIRECT needs 4 KiB).
  constexpr std::size_t kAlign = std::size_t{2} << 20;
  ring_ = static_cast<unsigned char*>(std::aligned_alloc(kAlign, kSlots * kChunk));
  if (ring_ == nullptr) {
    next_ = static_cast<std::int64_t>(chunks_.size());  // nothing is read; wait() answers nullptr
    return;
  }
  ::madvise(ring_, kSlots * kChunk, MADV_HUGEPAGE);
  try {
    for (int t = 0; t < kRequests; ++t) threads_.emplace_back([this] { run(); });
  } catch (const std::system_error&) {  // fewer threads: fewer requests in flight
    if (threads_.empty()) {
      std::free(ring_);
      ring_ = nullptr;  // nothing is read; wait() answers nullptr
    }
  }
}

DirectStream::~DirectStream() {
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  changed_.notify_all();
  for (std::thread& t : threads_) t.join();
  std::free(ring_);
  ::close(fd_);
}

std::int64_t DirectStream::first_kept() const {
  const auto it = std::partition_point(chunks_.begin(), chunks_.end(),
                                       [this](std::uint64_t c) { return c + kChunk <= passed_; });
  return it - chunks_.begin();
}

void DirectStream::run() {
  const auto total = static_cast<std::int64_t>(chunks_.size());
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    // The next chunk's slot is free once its last chunk is passed and no longer being read into.
    changed_.wait(lock, [&] {
      if (stop_ || next_ >= total) return true;
      const Slot& s = slots_[static_cast<std::size_t>(next_ % kSlots)];
      return next_ < first_kept() + kSlots && (s.chunk < 0 || s.ready);
    });
    if (stop_ || next_ >= total) return;
    const std::int64_t i = next_++;
    if (i < first_kept()) continue;  // passed before it was read
    Slot& slot = slots_[static_cast<std::size_t>(i % kSlots)];
    slot = Slot{i, false, 0};
    lock.unlock();
    unsigned char* buffer = ring_ + static_cast<std::size_t>(i % kSlots) * kChunk;
    const std::uint64_t at = chunks_[static_cast<std::size_t>(i)];
    std::size_t got = 0;
    while (got < kChunk) {
      const ssize_t n = ::pread(fd_, buffer + got, kChunk - got, static_cast<off_t>(at + got));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;  // the end of the file, or a failure the caller meets when it reads the bytes itself
      got += static_cast<std::size_t>(n);
    }
    lock.lock();
    slot.ready = true;
    slot.valid = got;
    changed_.notify_all();
  }
}

const unsigned char* DirectStream::wait(std::uint64_t at, std::size_t n) {
  if (n == 0 || at / kChunk != (at + n - 1) / kChunk) return nullptr;
  const std::uint64_t chunk = at / kChunk * kChunk;
  const auto it = std::lower_bound(chunks_.begin(), chunks_.end(), chunk);
  if (it == chunks_.end() || *it != chunk) return nullptr;
  const std::int64_t i = it - chunks_.begin();
  const Slot& slot = slots_[static_cast<std::size_t>(i % kSlots)];
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    const std::int64_t kept = first_kept();
    if (stop_ || ring_ == nullptr || i < kept || i >= kept + kSlots) return nullptr;
    if (slot.chunk == i && slot.ready) break;
    changed_.wait(lock);
  }
  if (at - chunk + n > slot.valid) return nullptr;
  return ring_ + static_cast<std::size_t>(i % kSlots) * kChunk + (at - chunk);
}

void DirectStream::pass(std::uint64_t at) {
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    if (at <= passed_) return;
    passed_ = at;
  }
  changed_.notify_all();
}

}  // namespace anvil::io
