// H5Store's slab stacks (h5_store.h): creation, blocks of slabs written and read in place,
// their per-slab checksums.
#include <hdf5.h>

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

std::vector<std::uint64_t> H5Store::read_slabs_block(const std::string& name, std::int64_t n, std::int64_t rows,
                                                     std::int64_t cols, const StackBlock& b, float* data,
                                                     std::int64_t stride) const {
  auto [d, sums] = impl_->stack(name, n, rows, cols);
  check_stack_block(name, b, n, rows, cols);
  Id fs(H5Dget_space(d.get()), H5Sclose);
  Id ms = select_stack_block(fs.get(), b, stride);
  Id dxpl = independent_xfer();
  check(H5Dread(d.get(), H5T_NATIVE_FLOAT, ms.get(), fs.get(), dxpl.get(), data), impl_->path,
        "reading '" + name + "'");
  return std::move(sums);
}

}  // namespace anvil::io
