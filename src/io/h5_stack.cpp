// H5Store's slab stacks (h5_store.h): creation, blocks of slabs written in place and read
// straight from the file, their per-slab checksums.
#include <fcntl.h>
#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstring>
#include <future>
#include <memory>
#include <mutex>
#include <tuple>

#include "io/h5_detail.h"
#include "io/h5_store.h"

namespace anvil::io {

using h5detail::Id;
using h5detail::check;
using h5detail::independent_xfer;
using h5detail::select_block;
using h5detail::check_block;

namespace {

// Selects block sb of the stack's file space fs, and returns the memory space that matches
// it in a rank's own buffer: sb.nslabs runs of block.nrows * block.ncols floats, `stride`
// floats apart. HDF5 then moves each run between the buffer and the file with its own
// MPI-IO call (independent transfer), with no copy on either side.
Id select_stack_block(hid_t fs, const StackBlock& sb, std::int64_t stride) {
  const MatrixBlock& b = sb.block;
  const hsize_t start[3] = {static_cast<hsize_t>(sb.slab0), static_cast<hsize_t>(b.row0),
                            static_cast<hsize_t>(b.col0)};
  if (sb.run > 0 && sb.run < sb.nslabs) {  // runs of slabs: HDF5's block within a stride
    const hsize_t stride[3] = {static_cast<hsize_t>(sb.period), 1, 1};
    const hsize_t count[3] = {static_cast<hsize_t>(sb.nslabs / sb.run), static_cast<hsize_t>(b.nrows),
                              static_cast<hsize_t>(b.ncols)};
    const hsize_t block[3] = {static_cast<hsize_t>(sb.run), 1, 1};
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, stride, count, block);
  } else {
    const hsize_t count[3] = {static_cast<hsize_t>(sb.nslabs), static_cast<hsize_t>(b.nrows),
                              static_cast<hsize_t>(b.ncols)};
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, nullptr, count, nullptr);
  }
  const std::int64_t run = b.nrows * b.ncols;
  ANVIL_CHECK(stride >= run, "slab blocks ", stride, " floats apart overlap (", run, " each)");
  const hsize_t extent[1] = {static_cast<hsize_t>((sb.nslabs - 1) * stride + run)};
  Id ms(H5Screate_simple(1, extent, nullptr), H5Sclose);
  const hsize_t mem_start[1] = {0}, mem_stride[1] = {static_cast<hsize_t>(stride)};
  const hsize_t mem_count[1] = {static_cast<hsize_t>(sb.nslabs)}, mem_block[1] = {static_cast<hsize_t>(run)};
  H5Sselect_hyperslab(ms.get(), H5S_SELECT_SET, mem_start, mem_stride, mem_count, mem_block);
  return ms;
}

// A block of slabs that lies inside an (n, rows, cols) stack, else an internal error.
void check_stack_block(const std::string& name, const StackBlock& sb, std::int64_t n, std::int64_t rows,
                       std::int64_t cols) {
  check_block(name, sb.block, rows, cols);
  const bool runs = sb.run > 0 && sb.run < sb.nslabs;
  ANVIL_CHECK(!runs || (sb.nslabs % sb.run == 0 && sb.period >= sb.run), name, ": bad runs of slabs");
  const std::int64_t last = runs ? sb.slab0 + (sb.nslabs / sb.run - 1) * sb.period + sb.run : sb.slab0 + sb.nslabs;
  ANVIL_CHECK(sb.slab0 >= 0 && sb.nslabs > 0 && last <= n, name, ": slabs outside the stack");
}

}  // namespace

void H5Store::write_slabs(const std::string& name, std::int64_t n, std::int64_t rows, std::int64_t cols,
                          const std::optional<StackBlock>& block, const float* data, std::int64_t stride) {
  ANVIL_CHECK(n > 0 && rows > 0 && cols > 0, name, ": empty stack");
  const hsize_t dims[3] = {static_cast<hsize_t>(n), static_cast<hsize_t>(rows), static_cast<hsize_t>(cols)};
  Id space(H5Screate_simple(3, dims, nullptr), H5Sclose);
  Id dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  // Every byte is written once: no fill values first (they would double the bytes on disk).
  H5Pset_fill_time(dcpl.get(), H5D_FILL_TIME_NEVER);
  Id d = impl_->create(name, H5T_IEEE_F32LE, space.get(), dcpl.get());
  impl_->attribute_text(d.get(), name, "dtype", "f32");
  Id fs(H5Dget_space(d.get()), H5Sclose);
  static const float kNothing = 0.0f;
  Id ms;
  if (block) {
    check_stack_block(name, *block, n, rows, cols);
    ms = select_stack_block(fs.get(), *block, stride);
  } else {
    data = &kNothing;
    ms = select_block(fs.get(), std::nullopt);
  }
  // Each rank writes its block on its own: the dataset is created collectively, and
  // MPI-IO's two-phase collective buffering only added copies and an exchange here (the
  // blocks are large and disjoint; tests/bench/RESULTS.md).
  Id dxpl = independent_xfer();
  check(H5Dwrite(d.get(), H5T_NATIVE_FLOAT, ms.get(), fs.get(), dxpl.get(), data), impl_->path,
        "writing '" + name + "'");
}

void H5Store::seal_slabs(const std::string& name, const std::vector<std::uint64_t>& sums) {
  Id d = impl_->dataset(name);
  Id space(H5Dget_space(d.get()), H5Sclose);
  hsize_t dims[3] = {0, 0, 0};
  const bool one_per_slab = H5Sget_simple_extent_ndims(space.get()) == 3 &&
                            H5Sget_simple_extent_dims(space.get(), dims, nullptr) == 3 && dims[0] == sums.size();
  ANVIL_CHECK(one_per_slab, name, ": not one checksum per slab");
  impl_->attribute_u64s(d.get(), name, "slab_sum64", sums);
}

void H5Store::read_slabs_checked(const std::string& name, std::int64_t n, std::int64_t rows, std::int64_t cols,
                                 float* data) const {
  const auto [d, sums] = impl_->stack(name, n, rows, cols);
  Id dxpl = independent_xfer();
  check(H5Dread(d.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, dxpl.get(), data), impl_->path,
        "reading '" + name + "'");
  for (std::int64_t i = 0; i < n; ++i)
    if (slab_sum(data + i * rows * cols, rows, cols, 0, 0, cols) != sums[static_cast<std::size_t>(i)])
      throw_user_error(impl_->path, ": dataset '", name, "' fails its checksum at slab ", i, " of ", n,
                       " (the file is damaged)");
}

namespace {

// Where dataset d's elements start in the file, when they lie there as one run of
// little-endian f32 (a contiguous layout, no external storage: how write_slabs stores a
// stack) and this machine reads that format natively; nullopt otherwise.
std::optional<std::uint64_t> contiguous_f32_offset(hid_t d) {
  if constexpr (std::endian::native != std::endian::little) return std::nullopt;
  Id dcpl(H5Dget_create_plist(d), H5Pclose);
  Id type(H5Dget_type(d), H5Tclose);
  if (dcpl.get() < 0 || type.get() < 0 || H5Pget_layout(dcpl.get()) != H5D_CONTIGUOUS ||
      H5Pget_external_count(dcpl.get()) != 0 || H5Tequal(type.get(), H5T_IEEE_F32LE) <= 0) {
    H5Eclear2(H5E_DEFAULT);
    return std::nullopt;
  }
  const haddr_t at = H5Dget_offset(d);
  H5Eclear2(H5E_DEFAULT);
  if (at == HADDR_UNDEF) return std::nullopt;
  return static_cast<std::uint64_t>(at);
}

// Reads `n` bytes at `at` of the file open as fd into dst, whole; a user error names the file
// and the dataset when the file ends early or the read fails.
void pread_all(int fd, void* dst, std::size_t n, std::uint64_t at, const std::string& path, const std::string& name) {
  auto* out = static_cast<unsigned char*>(dst);
  while (n > 0) {
    const ssize_t got = ::pread(fd, out, n, static_cast<off_t>(at));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) throw_user_error(path, ": dataset '", name, "' cannot be read: ", std::strerror(errno));
    if (got == 0) throw_user_error(path, ": dataset '", name, "' runs past the end of the file (truncated?)");
    out += got;
    n -= static_cast<std::size_t>(got);
    at += static_cast<std::uint64_t>(got);
  }
}

// A part of a block read straight from the file: `count` elements from byte `from` of the
// file, the first at row-major index `index` of slab `slab`, going to dst (summed or not).
struct RunPart {
  std::uint64_t from = 0, index = 0;
  std::int64_t slab = 0, count = 0;
  float* dst = nullptr;
  bool summed = false;
};
constexpr std::int64_t kPartFloats = 64 * 1024;  // 256 KiB: a part's buffer stays in cache

// The parts of `pieces` of an (n, rows, cols) stack whose data starts at byte `at` of the
// file, in the file's order: a block of whole rows is one run of the file, any other block a
// run per row, and each run is cut into parts of at most kPartFloats that do not cross a
// DirectStream chunk.
std::vector<RunPart> run_parts(const std::vector<SlabRead>& pieces, std::uint64_t at, std::int64_t rows,
                               std::int64_t cols) {
  std::vector<RunPart> parts;
  for (const SlabRead& p : pieces) {
    const MatrixBlock& b = p.block;
    const bool whole_rows = b.ncols == cols;
    const std::int64_t runs = whole_rows ? 1 : b.nrows, run = whole_rows ? b.nrows * b.ncols : b.ncols;
    for (std::int64_t r = 0; r < runs; ++r) {
      const auto index = static_cast<std::uint64_t>((b.row0 + (whole_rows ? 0 : r)) * cols + b.col0);
      std::uint64_t from = at + 4 * (static_cast<std::uint64_t>(p.slab * rows * cols) + index);
      for (std::int64_t e = 0; e < run;) {
        const auto to_chunk = static_cast<std::int64_t>((DirectStream::kChunk - from % DirectStream::kChunk) / 4);
        const std::int64_t count = std::max<std::int64_t>(1, std::min({kPartFloats, run - e, to_chunk}));
        parts.push_back(
            {from, index + static_cast<std::uint64_t>(e), p.slab, count, p.dst + r * b.ncols + e, p.summed});
        e += count;
        from += static_cast<std::uint64_t>(4 * count);
      }
    }
  }
  std::stable_sort(parts.begin(), parts.end(), [](const RunPart& a, const RunPart& b) { return a.from < b.from; });
  return parts;
}

// The parts of a stack done so far, for the stream: it may drop every byte before the first
// part not done yet.
class PartsDone {
 public:
  PartsDone(DirectStream* stream, const std::vector<RunPart>& parts)
      : stream_(stream), parts_(parts), done_(parts.size(), 0) {
    if (stream_ != nullptr && !parts_.empty()) stream_->pass(parts_.front().from);
  }
  void done(std::size_t i) {
    if (stream_ == nullptr) return;
    const std::lock_guard<std::mutex> lock(mutex_);
    done_[i] = 1;
    while (first_ < parts_.size() && done_[first_] != 0) ++first_;
    const RunPart& last = parts_.back();  // in file order: the stack's last bytes
    const std::uint64_t end = last.from + static_cast<std::uint64_t>(4 * last.count);
    stream_->pass(first_ < parts_.size() ? parts_[first_].from : end);
  }

 private:
  DirectStream* stream_;
  const std::vector<RunPart>& parts_;
  std::vector<unsigned char> done_;
  std::size_t first_ = 0;
  std::mutex mutex_;
};

// Reads `parts` of a stack from the file open as fd (or the stream, where it holds them),
// taking the next part from `next` until none is left, and adds the sums of the summed
// ones into `sums` (one per slab). Threads that share `next` read the stack front to back
// together, each part at a time, so that none waits at the end for another with more of the
// stack still to come from the disk. A summed part is copied to its place and summed in one
// pass, from the stream's buffer or a buffer of its own that stays in cache; an unsummed one
// is copied from the stream or read in place. On an error the others stop after their part.
void read_parts(int fd, DirectStream* stream, const std::vector<RunPart>& parts, PartsDone& progress,
                std::atomic<std::size_t>& next, std::vector<std::uint64_t>& sums, const std::string& path,
                const std::string& name) {
  std::unique_ptr<unsigned char[]> buffer;  // made when a summed part is not in the stream
  try {
    for (std::size_t i = next.fetch_add(1, std::memory_order_relaxed); i < parts.size();
         i = next.fetch_add(1, std::memory_order_relaxed)) {
      const RunPart& part = parts[i];
      const auto bytes = static_cast<std::size_t>(4 * part.count);
      const unsigned char* src = stream != nullptr ? stream->wait(part.from, bytes) : nullptr;
      if (src == nullptr && !part.summed) {
        pread_all(fd, part.dst, bytes, part.from, path, name);
      } else if (src == nullptr) {
        if (!buffer) buffer = std::make_unique_for_overwrite<unsigned char[]>(static_cast<std::size_t>(4 * kPartFloats));
        pread_all(fd, buffer.get(), bytes, part.from, path, name);
        src = buffer.get();
      } else if (!part.summed) {
        std::memcpy(part.dst, src, bytes);
      }
      if (part.summed) sums[static_cast<std::size_t>(part.slab)] += run_sum_copy(src, part.dst, part.count, part.index);
      progress.done(i);
    }
  } catch (...) {
    next.store(parts.size(), std::memory_order_relaxed);
    throw;
  }
}

}  // namespace

void H5Store::open_stacks(const std::vector<StackShape>& stacks) const {
  for (const StackShape& s : stacks) {
    auto [d, sums] = impl_->stack(s.name, s.n, s.rows, s.cols);
    const std::optional<std::uint64_t> at = contiguous_f32_offset(d.get());
    impl_->held[s.name] = Impl::HeldStack{std::move(d), std::move(sums), s.n, s.rows, s.cols, at};
  }
}

bool H5Store::read_ahead() const {
  std::vector<ByteRange> data;
  for (const auto& [name, h] : impl_->held)
    if (h.at) data.push_back({*h.at, *h.at + static_cast<std::uint64_t>(4 * h.n * h.rows * h.cols)});
  // Ranks that share a node share the page cache too: the disk reads the file once for all.
  if (impl_->node_ranks == 1 && !data.empty() && data.size() == impl_->held.size())
    impl_->stream = DirectStream::open(impl_->path, data);
  if (!impl_->stream) impl_->ahead = std::make_unique<ReadAhead>(impl_->path);
  return impl_->stream != nullptr;
}

StackSums H5Store::read_slab_pieces(const std::string& name, std::int64_t n, std::int64_t rows, std::int64_t cols,
                                    const std::vector<SlabRead>& pieces) const {
  Id opened;
  std::vector<std::uint64_t> stored;
  std::optional<std::uint64_t> at;
  hid_t d = H5I_INVALID_HID;
  if (const auto h = impl_->held.find(name); h != impl_->held.end()) {
    const Impl::HeldStack& held = h->second;
    ANVIL_CHECK(held.n == n && held.rows == rows && held.cols == cols, name, ": opened as another shape");
    d = held.d.get();
    stored = held.sums;
    at = held.at;
  } else {
    std::tie(opened, stored) = impl_->stack(name, n, rows, cols);
    d = opened.get();
    at = contiguous_f32_offset(d);
  }
  for (const SlabRead& p : pieces) {
    check_block(name, p.block, rows, cols);
    ANVIL_CHECK(p.slab >= 0 && p.slab < n, name, ": slab ", p.slab, " outside the stack of ", n);
  }
  StackSums out{std::move(stored), std::vector<std::uint64_t>(static_cast<std::size_t>(n), 0)};
  if (at) {
    if (impl_->raw_fd < 0) {
      impl_->raw_fd = ::open(impl_->path.c_str(), O_RDONLY | O_CLOEXEC);
      if (impl_->raw_fd < 0) throw_user_error(impl_->path, ": cannot open: ", std::strerror(errno));
    }
    // Two threads, taking the parts in turn.
    const std::vector<RunPart> parts = run_parts(pieces, *at, rows, cols);
    DirectStream* stream = impl_->stream.get();
    PartsDone progress(stream, parts);
    std::atomic<std::size_t> next{0};
    std::vector<std::uint64_t> other(out.read.size(), 0);
    std::future<void> second = std::async(std::launch::async, [&] {
      read_parts(impl_->raw_fd, stream, parts, progress, next, other, impl_->path, name);
    });
    read_parts(impl_->raw_fd, stream, parts, progress, next, out.read, impl_->path, name);
    second.get();
    for (std::size_t l = 0; l < other.size(); ++l) out.read[l] += other[l];
    return out;
  }
  Id fs(H5Dget_space(d), H5Sclose);
  Id dxpl = independent_xfer();
  for (const SlabRead& p : pieces) {
    const MatrixBlock& b = p.block;
    const hsize_t start[3] = {static_cast<hsize_t>(p.slab), static_cast<hsize_t>(b.row0), static_cast<hsize_t>(b.col0)};
    const hsize_t count[3] = {1, static_cast<hsize_t>(b.nrows), static_cast<hsize_t>(b.ncols)};
    H5Sselect_hyperslab(fs.get(), H5S_SELECT_SET, start, nullptr, count, nullptr);
    Id ms(H5Screate_simple(3, count, nullptr), H5Sclose);
    check(H5Dread(d, H5T_NATIVE_FLOAT, ms.get(), fs.get(), dxpl.get(), p.dst), impl_->path,
          "reading '" + name + "'");
    if (p.summed) out.read[static_cast<std::size_t>(p.slab)] += slab_sum(p.dst, b.nrows, b.ncols, b.row0, b.col0, cols);
  }
  return out;
}

}  // namespace anvil::io
