// io::H5Store's slab stacks read back as blocks (read_slab_pieces): straight from the file
// when the stack is stored as write_slabs stores it (contiguous), through HDF5 when it is not
// (a chunked stack, as HDF5 tools may rewrite one), opened on the way or ahead (open_stacks),
// streamed from the disk past the page cache on a rank alone on its node (read_ahead);
// on 1 and 2 ranks, each rank its own tiling of every slab, the data exact and the sums of
// the summed blocks those stored. A written file holds HDF5's metadata (the stacks'
// headers and checksums) ahead of the stacks' data.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <hdf5.h>
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "core/error.h"

#include "io/checksum.h"
#include "io/direct_stream.h"
#include "io/h5_store.h"

namespace {

namespace fs = std::filesystem;
using anvil::io::MatrixBlock;

constexpr std::int64_t kSlabs = 4, kRows = 6, kCols = 10;

int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}
int world_size() {
  int n = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  return n;
}

// A path every rank agrees on (rank 0's pid), removed by rank 0.
std::string shared_path(const std::string& name) {
  long pid = ::getpid();
  MPI_Bcast(&pid, 1, MPI_LONG, 0, MPI_COMM_WORLD);
  return (fs::temp_directory_path() / ("anvil_h5_stack_" + std::to_string(pid) + "_" + name)).string();
}

std::vector<float> stack_values() {
  std::vector<float> v(static_cast<std::size_t>(kSlabs * kRows * kCols));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = 0.25f * static_cast<float>(i) - 3.0f;
  return v;
}
std::vector<std::uint64_t> stack_sums(const std::vector<float>& v) {
  std::vector<std::uint64_t> s;
  for (std::int64_t l = 0; l < kSlabs; ++l) s.push_back(anvil::io::slab_sum(v.data() + l * kRows * kCols, kRows, kCols, 0, 0, kCols));
  return s;
}

// Each rank reads every slab as three blocks (whole rows, then a left and a right part of
// the other rows; where they cut depends on the rank), summing all but the last block of
// slab 1: the sums read are the stored ones except there, and every byte is the file's.
void read_back_and_check(const anvil::io::H5Store& h5, const std::string& name) {
  const std::vector<float> want = stack_values();
  const std::vector<std::uint64_t> sums = stack_sums(want);
  const std::int64_t cut = 3 + world_rank();
  std::vector<std::vector<float>> got;
  std::vector<anvil::io::SlabRead> pieces;
  for (std::int64_t l = 0; l < kSlabs; ++l)
    for (const MatrixBlock b : {MatrixBlock{0, 2, 0, kCols}, MatrixBlock{2, 4, 0, cut}, MatrixBlock{2, 4, cut, kCols - cut}}) {
      got.emplace_back(static_cast<std::size_t>(b.nrows * b.ncols), -1.0f);
      pieces.push_back({l, b, nullptr, !(l == 1 && b.col0 == cut)});
    }
  for (std::size_t k = 0; k < pieces.size(); ++k) pieces[k].dst = got[k].data();
  const anvil::io::StackSums s = h5.read_slab_pieces(name, kSlabs, kRows, kCols, pieces);
  EXPECT_EQ(s.stored, sums);
  for (std::int64_t l = 0; l < kSlabs; ++l) {
    const float* slab = want.data() + l * kRows * kCols;
    if (l == 1) {
      EXPECT_NE(s.read[1], sums[1]);
      std::vector<float> right;  // slab 1's unsummed block, from the expected values
      for (std::int64_t i = 2; i < kRows; ++i)
        for (std::int64_t j = cut; j < kCols; ++j) right.push_back(slab[i * kCols + j]);
      EXPECT_EQ(s.read[1] + anvil::io::slab_sum(right.data(), kRows - 2, kCols - cut, 2, cut, kCols), sums[1])
          << "the unsummed block is all that is missing";
    } else {
      EXPECT_EQ(s.read[static_cast<std::size_t>(l)], sums[static_cast<std::size_t>(l)]) << "slab " << l;
    }
  }
  for (std::size_t k = 0; k < pieces.size(); ++k) {
    const anvil::io::SlabRead& p = pieces[k];
    for (std::int64_t i = 0; i < p.block.nrows; ++i)
      for (std::int64_t j = 0; j < p.block.ncols; ++j)
        ASSERT_EQ(got[k][static_cast<std::size_t>(i * p.block.ncols + j)],
                  want[static_cast<std::size_t>((p.slab * kRows + p.block.row0 + i) * kCols + p.block.col0 + j)])
            << "piece " << k;
  }
}

// Writes the stacks `names` (each stack_values()) as a checkpoint does: all of them, then
// their checksums. Rank t writes columns [t * kCols / size, (t + 1) * kCols / size) of every slab.
void write_stacks(const std::string& path, const std::vector<std::string>& names) {
  const std::vector<float> v = stack_values();
  anvil::io::H5Store h5 = anvil::io::H5Store::create(path, MPI_COMM_WORLD);
  const std::int64_t c0 = kCols * world_rank() / world_size(), c1 = kCols * (world_rank() + 1) / world_size();
  std::vector<float> mine;
  for (std::int64_t l = 0; l < kSlabs; ++l)
    for (std::int64_t i = 0; i < kRows; ++i)
      for (std::int64_t j = c0; j < c1; ++j) mine.push_back(v[static_cast<std::size_t>((l * kRows + i) * kCols + j)]);
  for (const std::string& name : names)
    h5.write_slabs(name, kSlabs, kRows, kCols, anvil::io::StackBlock{0, kSlabs, MatrixBlock{0, kRows, c0, c1 - c0}},
                   mine.data(), kRows * (c1 - c0));
  for (const std::string& name : names) h5.seal_slabs(name, stack_sums(v));
  h5.close();
}

TEST(H5Stack, BlocksOfAWrittenStackComeBackStraightFromTheFileWithTheirSums) {
  const std::string path = shared_path("written.h5");
  write_stacks(path, {"adapter/x"});
  const anvil::io::H5Store h5 = anvil::io::H5Store::open(path, MPI_COMM_WORLD);
  read_back_and_check(h5, "adapter/x");
  MPI_Barrier(MPI_COMM_WORLD);
  if (world_rank() == 0) fs::remove(path);
}

TEST(H5Stack, StacksOpenedAheadReadTheSameAndTheFileStillCloses) {
  const std::string path = shared_path("ahead.h5");
  write_stacks(path, {"adapter/x", "adam_m/x", "adam_v/x"});
  anvil::io::H5Store h5 = anvil::io::H5Store::open(path, MPI_COMM_WORLD);
  h5.open_stacks({{"adapter/x", kSlabs, kRows, kCols}, {"adam_m/x", kSlabs, kRows, kCols}});
  for (const char* name : {"adapter/x", "adam_m/x", "adam_v/x"}) read_back_and_check(h5, name);  // the last not held
  // A held stack asked for as another shape is refused, not read as one.
  std::vector<float> one(kCols);
  const std::vector<anvil::io::SlabRead> row{{0, MatrixBlock{0, 1, 0, kCols}, one.data(), true}};
  EXPECT_THROW(h5.read_slab_pieces("adapter/x", kSlabs, kRows + 1, kCols, row), anvil::Error);
  try {
    h5.open_stacks({{"adam_v/y", kSlabs, kRows, kCols}});
    ADD_FAILURE() << "a missing stack opened";
  } catch (const anvil::Error& e) {
    EXPECT_EQ(e.kind(), anvil::ErrorKind::user);
    EXPECT_NE(std::string(e.what()).find("'adam_v/y' is missing"), std::string::npos) << e.what();
  }
  h5.close();  // the held stacks close first: HDF5 refuses to close a file with open datasets
  MPI_Barrier(MPI_COMM_WORLD);
  if (world_rank() == 0) fs::remove(path);
}

// Runs longer than one part (64 Ki floats) are read in several, by both threads: a slab of
// 300 x 500 read as whole rows (one run of 150,000 floats) and as a left and a right block
// (a run per row), the data exact and the sums those of the slabs.
TEST(H5Stack, RunsLongerThanAPartComeBackWhole) {
  const std::string path = shared_path("long.h5");
  constexpr std::int64_t n = 2, rows = 300, cols = 500, cut = 123;
  std::vector<float> v(static_cast<std::size_t>(n * rows * cols));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i % 9973) * 0.5f - 7.0f;
  std::vector<std::uint64_t> sums;
  for (std::int64_t l = 0; l < n; ++l) sums.push_back(anvil::io::slab_sum(v.data() + l * rows * cols, rows, cols, 0, 0, cols));
  {
    anvil::io::H5Store h5 = anvil::io::H5Store::create(path, MPI_COMM_WORLD);
    const std::int64_t r0 = rows * world_rank() / world_size(), r1 = rows * (world_rank() + 1) / world_size();
    std::vector<float> mine;
    for (std::int64_t l = 0; l < n; ++l)
      mine.insert(mine.end(), v.begin() + (l * rows + r0) * cols, v.begin() + (l * rows + r1) * cols);
    h5.write_slabs("adapter/long", n, rows, cols, anvil::io::StackBlock{0, n, MatrixBlock{r0, r1 - r0, 0, cols}},
                   mine.data(), (r1 - r0) * cols);
    h5.seal_slabs("adapter/long", sums);
    h5.close();
  }
  const anvil::io::H5Store h5 = anvil::io::H5Store::open(path, MPI_COMM_WORLD);
  std::vector<float> whole(static_cast<std::size_t>(rows * cols)), left(static_cast<std::size_t>(rows * cut)),
      right(static_cast<std::size_t>(rows * (cols - cut)));
  const anvil::io::StackSums s = h5.read_slab_pieces(
      "adapter/long", n, rows, cols,
      {{0, MatrixBlock{0, rows, 0, cols}, whole.data(), true}, {1, MatrixBlock{0, rows, 0, cut}, left.data(), true},
       {1, MatrixBlock{0, rows, cut, cols - cut}, right.data(), true}});
  EXPECT_EQ(s.stored, sums);
  EXPECT_EQ(s.read, sums);
  EXPECT_TRUE(std::equal(whole.begin(), whole.end(), v.begin()));
  for (std::int64_t i = 0; i < rows; ++i)
    for (std::int64_t j = 0; j < cols; ++j) {
      const float got = j < cut ? left[static_cast<std::size_t>(i * cut + j)]
                                : right[static_cast<std::size_t>(i * (cols - cut) + j - cut)];
      ASSERT_EQ(got, v[static_cast<std::size_t>((rows + i) * cols + j)]) << i << ", " << j;
    }
  MPI_Barrier(MPI_COMM_WORLD);
  if (world_rank() == 0) fs::remove(path);
}

// A reader that has the file read ahead opens every stack first (HDF5's small reads then
// never wait behind the read-ahead, tests/bench/RESULTS.md); a file written here keeps
// those small reads together ahead of the data: overwriting every byte from the first
// stack's data on leaves every header and checksum readable, only the data damaged.
TEST(H5Stack, AWrittenFileKeepsTheStacksHeadersAndChecksumsAheadOfTheirData) {
  const std::string path = shared_path("front.h5");
  const std::vector<std::string> names = {"adapter/a", "adapter/b", "adam_m/a", "adam_m/b", "adam_v/a", "adam_v/b"};
  write_stacks(path, names);
  if (world_rank() == 0) {
    const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    haddr_t first = HADDR_UNDEF;
    for (const std::string& name : names) {
      const hid_t d = H5Dopen2(f, name.c_str(), H5P_DEFAULT);
      ASSERT_GE(d, 0);
      first = std::min(first, H5Dget_offset(d));
      H5Dclose(d);
    }
    H5Fclose(f);
    ASSERT_NE(first, HADDR_UNDEF);
    const auto size = fs::file_size(path);
    ASSERT_LT(first, size);
    std::FILE* out = std::fopen(path.c_str(), "r+b");
    ASSERT_NE(out, nullptr);
    std::fseek(out, static_cast<long>(first), SEEK_SET);
    const std::vector<unsigned char> junk(static_cast<std::size_t>(size - first), 0xA5);
    ASSERT_EQ(std::fwrite(junk.data(), 1, junk.size(), out), junk.size());
    std::fclose(out);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  const anvil::io::H5Store h5 = anvil::io::H5Store::open(path, MPI_COMM_WORLD);
  std::vector<anvil::io::H5Store::StackShape> shapes;
  for (const std::string& name : names) shapes.push_back({name, kSlabs, kRows, kCols});
  ASSERT_NO_THROW(h5.open_stacks(shapes));
  const std::vector<std::uint64_t> sums = stack_sums(stack_values());
  for (const std::string& name : names) {
    std::vector<float> slab(static_cast<std::size_t>(kRows * kCols));
    const anvil::io::StackSums s =
        h5.read_slab_pieces(name, kSlabs, kRows, kCols, {{2, MatrixBlock{0, kRows, 0, kCols}, slab.data(), true}});
    EXPECT_EQ(s.stored, sums) << name << ": its checksums are intact";
    EXPECT_NE(s.read[2], sums[2]) << name << ": its data is the junk";
    EXPECT_EQ(slab[0], std::bit_cast<float>(0xA5A5A5A5u)) << name;
  }
  MPI_Barrier(MPI_COMM_WORLD);
  if (world_rank() == 0) fs::remove(path);
}

// Pages of the file at `path` in the page cache.
std::uint64_t cached_pages(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  const anvil::io::CachedPages p = anvil::io::cached_pages(fd, {0, fs::file_size(path)});
  ::close(fd);
  return p.cached;
}

// Stacks larger together than the stream's ring (3 x 21.6 MB), read ahead, each rank
// reading every slab its own way (whole, two blocks of rows, a left and a right block cut at
// a column of its own), come back exact with their sums. A rank alone on its node streams
// them past the page cache (where the temp directory takes O_DIRECT) and leaves the file's
// data out of it; ranks that share a node share the page cache instead. Read again in the
// other order (the stream has gone past them) they come from the file.
TEST(H5Stack, StacksStreamedPastThePageCacheComeBackExact) {
  const std::string path = shared_path("streamed.h5");
  constexpr std::int64_t n = 3, rows = 1500, cols = 1200;
  const std::vector<std::string> names = {"adapter/s", "adam_m/s", "adam_v/s"};
  const auto value = [](std::size_t s, std::int64_t i) {
    return static_cast<float>((i + 7919 * static_cast<std::int64_t>(s)) % 65521) * 0.125f - 100.0f;
  };
  std::vector<std::vector<float>> v(names.size(), std::vector<float>(static_cast<std::size_t>(n * rows * cols)));
  std::vector<std::vector<std::uint64_t>> sums(names.size());
  for (std::size_t s = 0; s < names.size(); ++s) {
    for (std::size_t i = 0; i < v[s].size(); ++i) v[s][i] = value(s, static_cast<std::int64_t>(i));
    for (std::int64_t l = 0; l < n; ++l)
      sums[s].push_back(anvil::io::slab_sum(v[s].data() + l * rows * cols, rows, cols, 0, 0, cols));
  }
  {
    anvil::io::H5Store h5 = anvil::io::H5Store::create(path, MPI_COMM_WORLD);
    const std::int64_t r0 = rows * world_rank() / world_size(), r1 = rows * (world_rank() + 1) / world_size();
    for (std::size_t s = 0; s < names.size(); ++s)
      h5.write_slabs(names[s], n, rows, cols, anvil::io::StackBlock{0, n, MatrixBlock{r0, r1 - r0, 0, cols}},
                     v[s].data() + r0 * cols, rows * cols);
    for (std::size_t s = 0; s < names.size(); ++s) h5.seal_slabs(names[s], sums[s]);
    h5.close();
  }
  MPI_Barrier(MPI_COMM_WORLD);
  const int direct = ::open(path.c_str(), O_RDONLY | O_DIRECT);
  if (direct < 0) {
    MPI_Barrier(MPI_COMM_WORLD);
    if (world_rank() == 0) fs::remove(path);
    GTEST_SKIP() << fs::temp_directory_path() << " does not take O_DIRECT";
  }
  ::close(direct);
  if (world_rank() == 0) {  // on the disk, out of the page cache
    const int fd = ::open(path.c_str(), O_RDONLY);
    ::fdatasync(fd);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  anvil::io::H5Store h5 = anvil::io::H5Store::open(path, MPI_COMM_WORLD);
  std::vector<anvil::io::H5Store::StackShape> shapes;
  for (const std::string& name : names) shapes.push_back({name, n, rows, cols});
  h5.open_stacks(shapes);
  const bool streamed = h5.read_ahead();
  EXPECT_EQ(streamed, world_size() == 1) << "ranks on one node share the page cache instead";
  const std::int64_t split = 500 + 100 * world_rank(), cut = 300 + 200 * world_rank();
  const auto read_check = [&](std::size_t s) {
    std::vector<float> whole(static_cast<std::size_t>(rows * cols)), top(static_cast<std::size_t>(split * cols)),
        bottom(static_cast<std::size_t>((rows - split) * cols)), left(static_cast<std::size_t>(rows * cut)),
        right(static_cast<std::size_t>(rows * (cols - cut)));
    const anvil::io::StackSums got = h5.read_slab_pieces(
        names[s], n, rows, cols,
        {{0, MatrixBlock{0, rows, 0, cols}, whole.data(), true}, {1, MatrixBlock{0, split, 0, cols}, top.data(), true},
         {1, MatrixBlock{split, rows - split, 0, cols}, bottom.data(), true},
         {2, MatrixBlock{0, rows, 0, cut}, left.data(), true},
         {2, MatrixBlock{0, rows, cut, cols - cut}, right.data(), true}});
    EXPECT_EQ(got.stored, sums[s]) << names[s];
    EXPECT_EQ(got.read, sums[s]) << names[s];
    const auto want = [&](std::int64_t l, std::int64_t i, std::int64_t j) { return v[s][static_cast<std::size_t>((l * rows + i) * cols + j)]; };
    for (std::int64_t i = 0; i < rows; ++i)
      for (std::int64_t j = 0; j < cols; ++j) {
        ASSERT_EQ(whole[static_cast<std::size_t>(i * cols + j)], want(0, i, j)) << names[s] << " " << i << ", " << j;
        ASSERT_EQ(i < split ? top[static_cast<std::size_t>(i * cols + j)] : bottom[static_cast<std::size_t>((i - split) * cols + j)],
                  want(1, i, j)) << names[s] << " " << i << ", " << j;
        ASSERT_EQ(j < cut ? left[static_cast<std::size_t>(i * cut + j)] : right[static_cast<std::size_t>(i * (cols - cut) + j - cut)],
                  want(2, i, j)) << names[s] << " " << i << ", " << j;
      }
  };
  for (std::size_t s = 0; s < names.size(); ++s) read_check(s);
  MPI_Barrier(MPI_COMM_WORLD);  // every rank has read them, none again yet
  if (streamed) {
    EXPECT_LT(cached_pages(path), 1024u) << "the stacks' data came through the page cache";
  }
  MPI_Barrier(MPI_COMM_WORLD);
  for (std::size_t s = names.size(); s-- > 0;) read_check(s);
  h5.close();
  MPI_Barrier(MPI_COMM_WORLD);
  if (world_rank() == 0) fs::remove(path);
}

TEST(H5Stack, AChunkedStackIsReadThroughHdf5) {
  const std::string path = shared_path("chunked.h5");
  if (world_rank() == 0) {  // written by HDF5 alone, chunked: not mappable as one run
    const std::vector<float> v = stack_values();
    const std::vector<std::uint64_t> sums = stack_sums(v);
    const hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    const hsize_t dims[3] = {kSlabs, kRows, kCols}, chunk[3] = {1, 3, 4}, n[1] = {kSlabs};
    const hid_t space = H5Screate_simple(3, dims, nullptr);
    const hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 3, chunk);
    const hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    const hid_t d = H5Dcreate2(f, "adapter/x", H5T_IEEE_F32LE, space, lcpl, dcpl, H5P_DEFAULT);
    ASSERT_GE(d, 0);
    H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data());
    const hid_t aspace = H5Screate_simple(1, n, nullptr);
    const hid_t a = H5Acreate2(d, "slab_sum64", H5T_STD_U64LE, aspace, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_UINT64, sums.data());
    H5Aclose(a);
    H5Sclose(aspace);
    H5Dclose(d);
    H5Pclose(lcpl);
    H5Pclose(dcpl);
    H5Sclose(space);
    ASSERT_GE(H5Fclose(f), 0);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  const anvil::io::H5Store h5 = anvil::io::H5Store::open(path, MPI_COMM_WORLD);
  h5.open_stacks({{"adapter/x", kSlabs, kRows, kCols}});
  EXPECT_FALSE(h5.read_ahead()) << "a chunked stack is not streamed";
  read_back_and_check(h5, "adapter/x");
  MPI_Barrier(MPI_COMM_WORLD);
  if (world_rank() == 0) fs::remove(path);
}

}  // namespace
