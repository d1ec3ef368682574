// H5Store's slab stacks (h5_store.h): creation, blocks of slabs written in place and read
// out of a mapping of the file, their per-slab checksums.
#include <hdf5.h>

#include <bit>
#include <cstring>
#include <future>

#include "io/h5_detail.h"
#include "io/h5_store.h"
#include "io/safetensors.h"

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

// Copies pieces [first, last) out of a mapped (rows, cols) stack at `base`, adding the sums of
// the summed ones into `sums` (one per slab).
void copy_pieces(const unsigned char* base, std::int64_t rows, std::int64_t cols, const std::vector<SlabRead>& pieces,
                 std::size_t first, std::size_t last, std::vector<std::uint64_t>& sums) {
  for (std::size_t k = first; k < last; ++k) {
    const SlabRead& p = pieces[k];
    const MatrixBlock& b = p.block;
    const unsigned char* src = base + 4 * ((p.slab * rows + b.row0) * cols + b.col0);
    if (p.summed) {
      sums[static_cast<std::size_t>(p.slab)] += slab_sum_copy(src, p.dst, b.nrows, b.ncols, b.row0, b.col0, cols);
    } else if (b.ncols == cols) {  // whole rows: one run
      std::memcpy(p.dst, src, static_cast<std::size_t>(4 * b.nrows * b.ncols));
    } else {
      for (std::int64_t i = 0; i < b.nrows; ++i)
        std::memcpy(p.dst + i * b.ncols, src + 4 * i * cols, static_cast<std::size_t>(4 * b.ncols));
    }
  }
}

}  // namespace

StackSums H5Store::read_slab_pieces(const std::string& name, std::int64_t n, std::int64_t rows, std::int64_t cols,
                                    const std::vector<SlabRead>& pieces) const {
  auto [d, stored] = impl_->stack(name, n, rows, cols);
  std::int64_t elements = 0;
  for (const SlabRead& p : pieces) {
    check_block(name, p.block, rows, cols);
    ANVIL_CHECK(p.slab >= 0 && p.slab < n, name, ": slab ", p.slab, " outside the stack of ", n);
    elements += p.block.nrows * p.block.ncols;
  }
  StackSums out{std::move(stored), std::vector<std::uint64_t>(static_cast<std::size_t>(n), 0)};
  if (const std::optional<std::uint64_t> at = contiguous_f32_offset(d.get())) {
    if (!impl_->mapped) impl_->mapped = MappedFile::open(impl_->path);
    const MappedFile& file = *impl_->mapped;
    const auto bytes = static_cast<std::uint64_t>(4 * n * rows * cols);
    if (*at > file.size() || bytes > file.size() - *at)
      throw_user_error(impl_->path, ": dataset '", name, "' runs past the end of the file (truncated?)");
    const unsigned char* base = file.data() + *at;
    // Two threads, each about half of the elements (in the order of the pieces).
    std::size_t half = 0;
    for (std::int64_t seen = 0; half < pieces.size() && 2 * seen < elements; ++half)
      seen += pieces[half].block.nrows * pieces[half].block.ncols;
    std::vector<std::uint64_t> other(out.read.size(), 0);
    std::future<void> second = std::async(std::launch::async, [&] {
      copy_pieces(base, rows, cols, pieces, half, pieces.size(), other);
    });
    copy_pieces(base, rows, cols, pieces, 0, half, out.read);
    second.get();
    for (std::size_t l = 0; l < other.size(); ++l) out.read[l] += other[l];
    mapping_pages_release(base, bytes);  // copied: the pages need not stay in this process
    return out;
  }
  Id fs(H5Dget_space(d.get()), H5Sclose);
  Id dxpl = independent_xfer();
  for (const SlabRead& p : pieces) {
    const MatrixBlock& b = p.block;
    const hsize_t start[3] = {static_cast<hsize_t>(p.slab), static_cast<hsize_t>(b.row0), static_cast<hsize_t>(b.col0)};
    const hsize_t count[3] = {1, static_cast<hsize_t>(b.nrows), static_cast<hsize_t>(b.ncols)};
    H5Sselect_hyperslab(fs.get(), H5S_SELECT_SET, start, nullptr, count, nullptr);
    Id ms(H5Screate_simple(3, count, nullptr), H5Sclose);
    check(H5Dread(d.get(), H5T_NATIVE_FLOAT, ms.get(), fs.get(), dxpl.get(), p.dst), impl_->path,
          "reading '" + name + "'");
    if (p.summed) out.read[static_cast<std::size_t>(p.slab)] += slab_sum(p.dst, b.nrows, b.ncols, b.row0, b.col0, cols);
  }
  return out;
}

}  // namespace anvil::io
