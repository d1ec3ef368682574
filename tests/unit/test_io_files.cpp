// io/files.h: atomic text writes, the read-ahead hint (the whole file comes into the page
// cache, not only the first request's few MiB), and the writeback hint's thread (a hint never
// changes what the file holds, start() can be called any number of times, and the object
// always stops).
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "io/files.h"

namespace {

namespace fs = std::filesystem;

fs::path scratch(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("anvil_io_files_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return dir / name;
}

TEST(IoFiles, AtomicWriteReplacesTheWholeFileAndLeavesNoPartial) {
  const fs::path p = scratch("latest");
  anvil::io::write_text_file_atomic(p.string(), "step_1.h5\n");
  anvil::io::write_text_file_atomic(p.string(), "step_22.h5\n");
  EXPECT_EQ(anvil::io::read_text_file(p.string()), "step_22.h5\n");
  EXPECT_FALSE(fs::exists(p.string() + ".partial"));
  fs::remove_all(p.parent_path());
}

TEST(IoFiles, ReadingAMissingFileNamesIt) {
  const std::string missing = scratch("nothing_here").string();
  try {
    anvil::io::read_text_file(missing);
    FAIL() << "no error";
  } catch (const anvil::Error& e) {
    EXPECT_NE(std::string(e.what()).find(missing), std::string::npos) << e.what();
  }
  fs::remove_all(fs::path(missing).parent_path());
}

// The writer keeps writing while the hint's thread asks for writeback; the bytes on disk
// are the writer's, whatever the interleaving.
TEST(IoFiles, WritebackHintsLeaveTheBytesAsWritten) {
  const fs::path p = scratch("stack.bin");
  const int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  std::vector<std::uint32_t> chunk(1 << 18);  // 1 MiB
  {
    anvil::io::Writeback writeback(p.string());
    for (std::uint32_t k = 0; k < 16; ++k) {
      std::iota(chunk.begin(), chunk.end(), k << 18);
      ASSERT_EQ(::pwrite(fd, chunk.data(), chunk.size() * 4, static_cast<off_t>(k) * (1 << 20)),
                static_cast<ssize_t>(chunk.size() * 4));
      writeback.start();
      writeback.start();  // a second wake-up while one may be in flight merges with it
    }
  }  // stops the thread
  ASSERT_EQ(::fsync(fd), 0);
  ::close(fd);
  ASSERT_EQ(fs::file_size(p), 16u << 20);
  const std::string bytes = anvil::io::read_text_file(p.string());
  const auto* words = reinterpret_cast<const std::uint32_t*>(bytes.data());
  for (std::uint32_t i = 0; i < (4u << 20); ++i) ASSERT_EQ(words[i], i) << "word " << i;
  fs::remove_all(p.parent_path());
}

// The fraction of the file's pages in the page cache (mincore on a mapping of it).
double resident_fraction(const fs::path& p) {
  const int fd = ::open(p.c_str(), O_RDONLY);
  const auto size = static_cast<std::size_t>(fs::file_size(p));
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) return -1.0;
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> in((size + page - 1) / page);
  ::mincore(map, size, in.data());
  ::munmap(map, size);
  std::size_t n = 0;
  for (const unsigned char c : in) n += c & 1;
  return static_cast<double>(n) / static_cast<double>(in.size());
}

// Past the few MiB that one whole-file request reads on Linux 6.x: the whole file comes in.
TEST(IoFiles, ReadAheadBringsTheWholeFileIntoThePageCache) {
  const fs::path p = scratch("ahead.bin");
  {
    std::vector<char> bytes(48u << 20, 'x');
    const int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT_EQ(::write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
    ASSERT_EQ(::fsync(fd), 0);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
  const double before = resident_fraction(p);
  double after = 0;
  {
    const anvil::io::ReadAhead ahead(p.string());
    for (int i = 0; i < 100 && (after = resident_fraction(p)) < 1.0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(after, 1.0) << "resident before: " << before;
  fs::remove_all(p.parent_path());
}

TEST(IoFiles, WritebackStopsWhetherWokenOrNotAndIgnoresAMissingFile) {
  const fs::path p = scratch("small.txt");
  anvil::io::write_text_file_atomic(p.string(), "x");
  { anvil::io::Writeback idle(p.string()); }  // never woken: the thread still stops
  anvil::io::Writeback missing(scratch("missing.bin").string());
  missing.start();  // no file, no thread: nothing happens
  EXPECT_FALSE(fs::exists(scratch("missing.bin")));
  EXPECT_EQ(anvil::io::read_text_file(p.string()), "x");
  fs::remove_all(p.parent_path());
}

}  // namespace
