#include "io/h5_store.h"

#include <hdf5.h>
#include <xxhash.h>

#include <algorithm>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <utility>

#include "core/error.h"
#include "io/h5_detail.h"

namespace anvil::io {

namespace {

// The innermost message of HDF5's error stack (the library's own printing is off).
std::string h5_last_error() {
  std::string out;
  H5Ewalk2(
      H5E_DEFAULT, H5E_WALK_UPWARD,
      [](unsigned n, const H5E_error2_t* e, void* data) -> herr_t {
        if (n == 0 && e->desc) *static_cast<std::string*>(data) = e->desc;
        return 0;
      },
      &out);
  H5Eclear2(H5E_DEFAULT);
  return out.empty() ? "unknown HDF5 error" : out;
}

// Once per process: HDF5 reports through our errors, not on stderr.
void h5_quiet() {
  static const bool done = [] {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    return true;
  }();
  (void)done;
}

}  // namespace

namespace h5detail {

Id checked(hid_t id, herr_t (*close)(hid_t), const std::string& file, const std::string& what) {
  if (id < 0) throw_user_error(file, ": ", what, ": ", h5_last_error());
  return Id(id, close);
}

void check(herr_t rc, const std::string& file, const std::string& what) {
  if (rc < 0) throw_user_error(file, ": ", what, ": ", h5_last_error());
}

Id collective_xfer() {
  Id dxpl(H5Pcreate(H5P_DATASET_XFER), H5Pclose);
  H5Pset_dxpl_mpio(dxpl.get(), H5FD_MPIO_COLLECTIVE);
  return dxpl;
}

Id independent_xfer() {
  Id dxpl(H5Pcreate(H5P_DATASET_XFER), H5Pclose);
  H5Pset_dxpl_mpio(dxpl.get(), H5FD_MPIO_INDEPENDENT);
  return dxpl;
}

Id select_block(hid_t fs, const std::optional<MatrixBlock>& block) {
  if (!block) {
    const hsize_t one[1] = {1};
    Id ms(H5Screate_simple(1, one, nullptr), H5Sclose);
    H5Sselect_none(fs);
    H5Sselect_none(ms.get());
    return ms;
  }
  const hsize_t start[2] = {static_cast<hsize_t>(block->row0), static_cast<hsize_t>(block->col0)};
  const hsize_t count[2] = {static_cast<hsize_t>(block->nrows), static_cast<hsize_t>(block->ncols)};
  H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, nullptr, count, nullptr);
  return Id(H5Screate_simple(2, count, nullptr), H5Sclose);
}

void check_block(const std::string& name, const MatrixBlock& b, std::int64_t rows, std::int64_t cols) {
  ANVIL_CHECK(b.row0 >= 0 && b.col0 >= 0 && b.nrows > 0 && b.ncols > 0 && b.row0 + b.nrows <= rows &&
                  b.col0 + b.ncols <= cols,
              name, ": block outside the slab");
}

Id text_type(std::size_t size) {
  Id type(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(type.get(), std::max<std::size_t>(size, 1));
  H5Tset_strpad(type.get(), H5T_STR_NULLPAD);
  return type;
}

}  // namespace h5detail

using h5detail::Id;
using h5detail::check;
using h5detail::checked;
using h5detail::collective_xfer;
using h5detail::independent_xfer;
using h5detail::select_block;
using h5detail::check_block;
using h5detail::text_type;

namespace {

Id file_access(MPI_Comm comm) {
  Id fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  H5Pset_fapl_mpio(fapl.get(), comm, MPI_INFO_NULL);
  // HDF5_USE_FILE_LOCKING, when set, decides (HDF5 reads it itself); otherwise no locks.
  if (std::getenv("HDF5_USE_FILE_LOCKING") == nullptr) H5Pset_file_locking(fapl.get(), 0, 1);
  return fapl;
}

}  // namespace

H5Store::H5Store(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
H5Store::H5Store(H5Store&&) noexcept = default;
H5Store& H5Store::operator=(H5Store&&) noexcept = default;
H5Store::~H5Store() {
  if (!impl_ || impl_->file.get() < 0) return;
  if (std::uncaught_exceptions() > 0) {
    // Closing is collective: a rank unwinding from an error must not wait for the others.
    // The handle leaks; the job is about to be aborted anyway.
    impl_->file.release();
    return;
  }
  impl_->let_go();  // before the file, as in close()
  impl_->file = Id();
}

H5Store H5Store::create(const std::string& path, MPI_Comm comm) {
  h5_quiet();
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  impl->writable = true;
  MPI_Comm_rank(comm, &impl->rank);
  Id fapl = file_access(comm);
  // Large datasets (the stacks) start on a 4 KiB boundary: their reads and writes cover
  // whole pages, none shared with HDF5's metadata, and a stack read straight from the file
  // starts cache-line aligned (HDF5 put them 8 bytes past a line otherwise). At most 4 KiB
  // of padding per stack; readers need nothing to read such a file.
  H5Pset_alignment(fapl.get(), 64 * 1024, 4096);
  // HDF5's metadata (the headers, and the checksums sealed after the data) goes into one
  // 256 KiB block at the front instead of the gaps between and behind the stacks: a reader
  // opening them all (open_stacks) makes its small reads from the first pages, not from
  // all over the file (holes where the block is not used up).
  H5Pset_meta_block_size(fapl.get(), 256 * 1024);
  impl->file = checked(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()), H5Fclose, path,
                       "cannot create the file");
  return H5Store(std::move(impl));
}

H5Store H5Store::open(const std::string& path, MPI_Comm comm) {
  h5_quiet();
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  MPI_Comm_rank(comm, &impl->rank);
  if (!std::filesystem::is_regular_file(path)) throw_user_error(path, ": no such checkpoint file");
  MPI_Comm node = MPI_COMM_NULL;
  MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  MPI_Comm_size(node, &impl->node_ranks);
  MPI_Comm_free(&node);
  Id fapl = file_access(comm);
  impl->file = checked(H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get()), H5Fclose, path,
                       "not a readable HDF5 file (truncated or damaged?)");
  return H5Store(std::move(impl));
}

const std::string& H5Store::path() const { return impl_->path; }

void H5Store::write_text(const std::string& name, const std::string& text) {
  Id type = text_type(text.size());
  const std::string padded = text.empty() ? std::string(1, '\0') : text;
  impl_->write_scalar(name, type.get(), type.get(), padded.data(), XXH64(text.data(), text.size(), 0));
}

std::string H5Store::read_text(const std::string& name) const {
  Id d = impl_->dataset(name);
  Id type = checked(H5Dget_type(d.get()), H5Tclose, impl_->path, "type of '" + name + "'");
  if (H5Tget_class(type.get()) != H5T_STRING)
    throw_user_error(impl_->path, ": dataset '", name, "' is not text");
  std::string text(H5Tget_size(type.get()), '\0');
  Id mem = text_type(text.size());
  check(H5Dread(d.get(), mem.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, text.data()), impl_->path,
        "reading '" + name + "'");
  text.resize(text.find_last_not_of('\0') + 1);
  if (XXH64(text.data(), text.size(), 0) != impl_->attribute_u64(d.get(), name, "xxh64"))
    throw_user_error(impl_->path, ": dataset '", name, "' fails its checksum (the file is damaged)");
  return text;
}

void H5Store::write_i64(const std::string& name, std::int64_t value) {
  impl_->write_scalar(name, H5T_STD_I64LE, H5T_NATIVE_INT64, &value, XXH64(&value, sizeof(value), 0));
}

std::int64_t H5Store::read_i64(const std::string& name) const {
  Id d = impl_->dataset(name);
  Id space(H5Dget_space(d.get()), H5Sclose);
  Id type = checked(H5Dget_type(d.get()), H5Tclose, impl_->path, "type of '" + name + "'");
  if (H5Sget_simple_extent_type(space.get()) != H5S_SCALAR || H5Tget_class(type.get()) != H5T_INTEGER)
    throw_user_error(impl_->path, ": dataset '", name, "' is not an integer scalar");
  std::int64_t v = 0;
  check(H5Dread(d.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, &v), impl_->path,
        "reading '" + name + "'");
  if (XXH64(&v, sizeof(v), 0) != impl_->attribute_u64(d.get(), name, "xxh64"))
    throw_user_error(impl_->path, ": dataset '", name, "' fails its checksum (the file is damaged)");
  return v;
}

void H5Store::write_matrix(const std::string& name, std::int64_t rows, std::int64_t cols,
                           const std::optional<MatrixBlock>& block, const float* data) {
  ANVIL_CHECK(rows > 0 && cols > 0, name, ": empty matrix");
  const hsize_t dims[2] = {static_cast<hsize_t>(rows), static_cast<hsize_t>(cols)};
  Id space(H5Screate_simple(2, dims, nullptr), H5Sclose);
  Id d = impl_->create(name, H5T_IEEE_F32LE, space.get());
  impl_->attribute_text(d.get(), name, "dtype", "f32");
  Id fs(H5Dget_space(d.get()), H5Sclose);
  static const float kNothing = 0.0f;
  if (block) {
    const MatrixBlock& b = *block;
    ANVIL_CHECK(b.row0 >= 0 && b.col0 >= 0 && b.nrows > 0 && b.ncols > 0 && b.row0 + b.nrows <= rows &&
                    b.col0 + b.ncols <= cols,
                name, ": block outside the matrix");
  } else {
    data = &kNothing;
  }
  Id ms = select_block(fs.get(), block);
  Id dxpl = collective_xfer();
  check(H5Dwrite(d.get(), H5T_NATIVE_FLOAT, ms.get(), fs.get(), dxpl.get(), data), impl_->path,
        "writing '" + name + "'");
}

void H5Store::flush() {
  check(H5Fflush(impl_->file.get(), H5F_SCOPE_GLOBAL), impl_->path, "flushing");
}

void H5Store::seal_matrix(const std::string& name) {
  const auto [rows, cols] = matrix_shape(name);
  std::vector<float> all(static_cast<std::size_t>(rows * cols));
  read_matrix(name, MatrixBlock{0, rows, 0, cols}, all.data());
  seal_matrix(name, checksum_f32(all.data(), rows * cols));
}

void H5Store::seal_matrix(const std::string& name, std::uint64_t xxh64) {
  Id d = impl_->dataset(name);
  impl_->attribute_u64(d.get(), name, "xxh64", xxh64);
}

std::pair<std::int64_t, std::int64_t> H5Store::matrix_shape(const std::string& name) const {
  Id d = impl_->dataset(name);
  Id space(H5Dget_space(d.get()), H5Sclose);
  Id type = checked(H5Dget_type(d.get()), H5Tclose, impl_->path, "type of '" + name + "'");
  hsize_t dims[2] = {0, 0};
  if (H5Sget_simple_extent_ndims(space.get()) != 2 || H5Tget_class(type.get()) != H5T_FLOAT ||
      H5Tget_size(type.get()) != 4)
    throw_user_error(impl_->path, ": dataset '", name, "' is not a 2-D f32 matrix");
  H5Sget_simple_extent_dims(space.get(), dims, nullptr);
  return {static_cast<std::int64_t>(dims[0]), static_cast<std::int64_t>(dims[1])};
}

void H5Store::read_matrix(const std::string& name, const std::optional<MatrixBlock>& block, float* data) const {
  const auto [rows, cols] = matrix_shape(name);
  Id d = impl_->dataset(name);
  Id fs(H5Dget_space(d.get()), H5Sclose);
  float nothing = 0.0f;
  if (block) {
    const MatrixBlock& b = *block;
    if (b.row0 < 0 || b.col0 < 0 || b.row0 + b.nrows > rows || b.col0 + b.ncols > cols)
      throw_user_error(impl_->path, ": dataset '", name, "' is (", rows, ", ", cols, "), smaller than expected");
  } else {
    data = &nothing;
  }
  Id ms = select_block(fs.get(), block);
  Id dxpl = collective_xfer();
  check(H5Dread(d.get(), H5T_NATIVE_FLOAT, ms.get(), fs.get(), dxpl.get(), data), impl_->path,
        "reading '" + name + "'");
}

void H5Store::read_matrix_checked(const std::string& name, std::int64_t rows, std::int64_t cols,
                                  float* data) const {
  Id d = impl_->dataset(name);
  Id space(H5Dget_space(d.get()), H5Sclose);
  Id type = checked(H5Dget_type(d.get()), H5Tclose, impl_->path, "type of '" + name + "'");
  hsize_t dims[2] = {0, 0};
  const bool matrix = H5Sget_simple_extent_ndims(space.get()) == 2 && H5Tget_class(type.get()) == H5T_FLOAT &&
                      H5Tget_size(type.get()) == 4;
  if (matrix) H5Sget_simple_extent_dims(space.get(), dims, nullptr);
  if (!matrix || dims[0] != static_cast<hsize_t>(rows) || dims[1] != static_cast<hsize_t>(cols))
    throw_user_error(impl_->path, ": dataset '", name, "' is not the expected (", rows, ", ", cols, ") f32 matrix");
  Id dxpl(H5Pcreate(H5P_DATASET_XFER), H5Pclose);
  H5Pset_dxpl_mpio(dxpl.get(), H5FD_MPIO_INDEPENDENT);
  check(H5Dread(d.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, dxpl.get(), data), impl_->path,
        "reading '" + name + "'");
  if (checksum_f32(data, rows * cols) != impl_->attribute_u64(d.get(), name, "xxh64"))
    throw_user_error(impl_->path, ": dataset '", name, "' fails its checksum (the file is damaged)");
}

std::string H5Store::verify(const std::string& name) const {
  try {
    Id d = impl_->dataset(name);
    Id space(H5Dget_space(d.get()), H5Sclose);
    Id type = checked(H5Dget_type(d.get()), H5Tclose, impl_->path, "type of '" + name + "'");
    const int nd = H5Sget_simple_extent_ndims(space.get());
    const H5T_class_t cls = H5Tget_class(type.get());
    hsize_t dims[3] = {0, 0, 0};
    if (nd >= 1 && nd <= 3) H5Sget_simple_extent_dims(space.get(), dims, nullptr);
    const auto dim = [&](int i) { return static_cast<std::int64_t>(dims[i]); };
    if (cls == H5T_STRING) {
      read_text(name);
    } else if (cls == H5T_INTEGER && nd == 0) {
      read_i64(name);
    } else if (cls == H5T_FLOAT && nd == 2) {
      std::vector<float> all(static_cast<std::size_t>(dim(0) * dim(1)));
      read_matrix_checked(name, dim(0), dim(1), all.data());
    } else if (cls == H5T_FLOAT && nd == 3) {
      std::vector<float> all(static_cast<std::size_t>(dim(0) * dim(1) * dim(2)));
      read_slabs_checked(name, dim(0), dim(1), dim(2), all.data());
    } else {
      return str_cat(impl_->path, ": dataset '", name, "' is of no kind a checkpoint holds");
    }
    return {};
  } catch (const Error& e) {
    return e.what();
  }
}

std::uint64_t H5Store::matrix_checksum(const std::string& name) const {
  Id d = impl_->dataset(name);
  return impl_->attribute_u64(d.get(), name, "xxh64");
}

bool H5Store::exists(const std::string& name) const {
  const htri_t r = H5Lexists(impl_->file.get(), name.c_str(), H5P_DEFAULT);
  H5Eclear2(H5E_DEFAULT);
  return r > 0;
}

std::vector<std::string> H5Store::list() const {
  std::vector<std::string> out;
  H5Ovisit2(
      impl_->file.get(), H5_INDEX_NAME, H5_ITER_INC,
      [](hid_t, const char* name, const H5O_info_t* info, void* data) -> herr_t {
        if (info->type == H5O_TYPE_DATASET) static_cast<std::vector<std::string>*>(data)->push_back(name);
        return 0;
      },
      &out, H5O_INFO_BASIC);
  std::sort(out.begin(), out.end());
  return out;
}

void H5Store::close() {
  ANVIL_CHECK(impl_ && impl_->file.get() >= 0, "closing a closed store");
  impl_->let_go();
  const hid_t f = impl_->file.release();
  const herr_t flushed = impl_->writable ? H5Fflush(f, H5F_SCOPE_GLOBAL) : 0;
  const herr_t closed = H5Fclose(f);
  check(flushed, impl_->path, "flushing");
  check(closed, impl_->path, "closing");
}

}  // namespace anvil::io
