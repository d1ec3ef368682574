// io::DirectStream: the chunks of the given ranges come from the disk past the page cache
// with the file's bytes, in order through a ring smaller than the file; bytes it does not
// hold (outside the ranges, passed, too far ahead, past the end) are answered nullptr, a file
// in the page cache is left to it, and it stops with requests waiting for free buffers.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "io/direct_stream.h"

namespace {

namespace fs = std::filesystem;
using anvil::io::ByteRange;
using anvil::io::DirectStream;
constexpr std::uint64_t kChunk = DirectStream::kChunk;

// A byte of the test file at `at`: a pattern that differs from chunk to chunk and from
// byte to byte.
unsigned char byte_at(std::uint64_t at) { return static_cast<unsigned char>((at * 2654435761u) >> 13); }

// Writes `size` pattern bytes to a new file in the temp directory, syncs it and drops it
// from the page cache; removed when the object goes.
class PatternFile {
 public:
  explicit PatternFile(std::uint64_t size)
      : path_((fs::temp_directory_path() / ("anvil_direct_stream_" + std::to_string(::getpid()) + ".bin")).string()) {
    const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    EXPECT_GE(fd, 0);
    std::vector<unsigned char> block(1 << 20);
    for (std::uint64_t at = 0; at < size; at += block.size()) {
      const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(block.size(), size - at));
      for (std::size_t i = 0; i < n; ++i) block[i] = byte_at(at + i);
      EXPECT_EQ(::write(fd, block.data(), n), static_cast<ssize_t>(n));
    }
    ::fdatasync(fd);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
  ~PatternFile() { fs::remove(path_); }
  const std::string& path() const { return path_; }
  // Whether the file system takes O_DIRECT at all (tmpfs does not).
  bool direct() const {
    const int fd = ::open(path_.c_str(), O_RDONLY | O_DIRECT);
    if (fd >= 0) ::close(fd);
    return fd >= 0;
  }
  // Pages of the file in the page cache.
  std::uint64_t cached_pages() const {
    const int fd = ::open(path_.c_str(), O_RDONLY);
    const anvil::io::CachedPages p = anvil::io::cached_pages(fd, {0, fs::file_size(path_)});
    ::close(fd);
    return p.cached;
  }

 private:
  std::string path_;
};

// Whether bytes [at, at + n) at p are the file's.
bool same_as_file(const unsigned char* p, std::uint64_t at, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i)
    if (p[i] != byte_at(at + i)) return false;
  return true;
}

TEST(DirectStream, TheRangesComeInOrderThroughARingSmallerThanTheFile) {
  // 20 chunks and a tail; two ranges with three chunks between them that nobody reads.
  const std::uint64_t size = 20 * kChunk + 12345;
  const PatternFile file(size);
  if (!file.direct()) GTEST_SKIP() << fs::temp_directory_path() << " does not take O_DIRECT";
  const ByteRange a{100, 5 * kChunk + 7}, b{8 * kChunk + 4096, size};
  const auto stream = DirectStream::open(file.path(), {b, a});  // any order
  ASSERT_NE(stream, nullptr);
  EXPECT_EQ(stream->wait(6 * kChunk + 8, 64), nullptr) << "a chunk outside the ranges";
  EXPECT_EQ(stream->wait(15 * kChunk, 64), nullptr) << "more than kSlots chunks ahead of the reader";
  std::uint64_t bytes = 0;
  for (const ByteRange r : {a, b})
    for (std::uint64_t at = r.begin; at < r.end;) {
      // Pieces of an odd size, none across a chunk's end.
      const auto n = static_cast<std::size_t>(std::min({std::uint64_t{300007}, r.end - at, kChunk - at % kChunk}));
      const unsigned char* p = stream->wait(at, n);
      ASSERT_NE(p, nullptr) << "at " << at;
      ASSERT_TRUE(same_as_file(p, at, n)) << "at " << at;
      bytes += n;
      at += n;
      stream->pass(at);
    }
  EXPECT_EQ(bytes, (a.end - a.begin) + (b.end - b.begin));
  EXPECT_EQ(stream->wait(a.begin, 64), nullptr) << "passed";
  EXPECT_EQ(stream->wait(size - 10, 20), nullptr) << "past the end of the file";
  EXPECT_EQ(stream->wait(kChunk - 8, 16), nullptr) << "across a chunk's end";
  EXPECT_LT(file.cached_pages(), 16u) << "read past the page cache";
}

TEST(DirectStream, AFileInThePageCacheIsLeftToIt) {
  const PatternFile file(3 * kChunk);
  if (!file.direct()) GTEST_SKIP() << fs::temp_directory_path() << " does not take O_DIRECT";
  ASSERT_NE(DirectStream::open(file.path(), {{0, 3 * kChunk}}), nullptr) << "not cached yet";
  const int fd = ::open(file.path().c_str(), O_RDONLY);
  std::vector<unsigned char> all(3 * kChunk);
  ASSERT_EQ(::pread(fd, all.data(), all.size(), 0), static_cast<ssize_t>(all.size()));
  ::close(fd);
  EXPECT_EQ(DirectStream::open(file.path(), {{0, 3 * kChunk}}), nullptr);
  EXPECT_EQ(DirectStream::open(file.path(), {}), nullptr) << "nothing to read";
}

// Every request thread waits for a free buffer when nobody reads: the stream still stops.
TEST(DirectStream, StopsWithTheRingFullAndNothingRead) {
  const PatternFile file((DirectStream::kSlots + 6) * kChunk);
  if (!file.direct()) GTEST_SKIP() << fs::temp_directory_path() << " does not take O_DIRECT";
  auto stream = DirectStream::open(file.path(), {{0, (DirectStream::kSlots + 6) * kChunk}});
  ASSERT_NE(stream, nullptr);
  const unsigned char* first = stream->wait(0, 16);  // the ring fills behind it
  ASSERT_NE(first, nullptr);
  EXPECT_TRUE(same_as_file(first, 0, 16));
  stream.reset();
}

}  // namespace
