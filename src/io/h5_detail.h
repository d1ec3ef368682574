// Internals shared by h5_store.cpp (the file, scalars, matrices, verification) and
// h5_stack.cpp (slab stacks): HDF5 ids that close themselves, the error checks that turn
// HDF5 failures into user errors naming file and dataset, and H5Store's state. Only for
// src/io's own sources.
#pragma once

#include <hdf5.h>
#include <unistd.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "io/direct_stream.h"
#include "io/files.h"
#include "io/h5_store.h"

namespace anvil::io {

namespace h5detail {

// An HDF5 id closed by its own close function.
class Id {
 public:
  Id() = default;
  Id(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  Id(Id&& o) noexcept : id_(std::exchange(o.id_, H5I_INVALID_HID)), close_(o.close_) {}
  Id& operator=(Id&& o) noexcept {
    std::swap(id_, o.id_);
    std::swap(close_, o.close_);
    return *this;
  }
  ~Id() {
    if (id_ >= 0 && close_) close_(id_);
  }
  hid_t get() const { return id_; }
  // Gives the id up without closing it.
  hid_t release() { return std::exchange(id_, H5I_INVALID_HID); }

 private:
  hid_t id_ = H5I_INVALID_HID;
  herr_t (*close_)(hid_t) = nullptr;
};

// Throws a user error naming the file and dataset when an id is invalid: what fails here
// is a file that is not what it should be (missing, truncated, corrupt).
Id checked(hid_t id, herr_t (*close)(hid_t), const std::string& file, const std::string& what);
void check(herr_t rc, const std::string& file, const std::string& what);

// Transfer property lists: collective (every rank of the file's communicator) or each rank
// on its own.
Id collective_xfer();
Id independent_xfer();
// Selects `block` of the file space fs (or nothing) and returns the matching memory space.
Id select_block(hid_t fs, const std::optional<MatrixBlock>& block);
// A block that lies inside a (rows, cols) slab, else an internal error naming the dataset.
void check_block(const std::string& name, const MatrixBlock& b, std::int64_t rows, std::int64_t cols);
// A fixed-size C string type of `size` bytes (at least 1).
Id text_type(std::size_t size);

}  // namespace h5detail

struct H5Store::Impl {
  std::string path;
  h5detail::Id file;
  int rank = 0;
  int node_ranks = 1;  // ranks of the communicator on this rank's node (a file opened for reading)
  bool writable = false;
  // The file opened read-only beside HDF5, by the first read_slab_pieces that reads a stack
  // straight from it.
  mutable int raw_fd = -1;
  // The stacks open_stacks opened ahead, by name, with their shapes and checksums (closed
  // before the file).
  struct HeldStack {
    h5detail::Id d;
    std::vector<std::uint64_t> sums;
    std::int64_t n = 0, rows = 0, cols = 0;
    std::optional<std::uint64_t> at;  // where its data starts when it can be read straight from the file
  };
  mutable std::map<std::string, HeldStack> held;
  // What read_ahead started: the held stacks' data streamed from the disk, or else the
  // page cache's read-ahead of the whole file (stopped before the file is closed).
  mutable std::unique_ptr<DirectStream> stream;
  mutable std::unique_ptr<ReadAhead> ahead;
  // Stops what read_ahead started and closes the held stacks: HDF5 refuses to close a file
  // (over MPI-IO) with datasets open.
  void let_go() const {
    stream.reset();
    ahead.reset();
    held.clear();
  }
  Impl() = default;
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  ~Impl() {
    if (raw_fd >= 0) ::close(raw_fd);
  }

  h5detail::Id dataset(const std::string& name) const {
    if (H5Lexists(file.get(), name.c_str(), H5P_DEFAULT) <= 0) {
      H5Eclear2(H5E_DEFAULT);
      throw_user_error(path, ": dataset '", name, "' is missing");
    }
    return h5detail::checked(H5Dopen2(file.get(), name.c_str(), H5P_DEFAULT), H5Dclose, path, "dataset '" + name + "'");
  }

  h5detail::Id create(const std::string& name, hid_t type, hid_t space, hid_t dcpl = H5P_DEFAULT) const {
    ANVIL_CHECK(writable, path, " is open read-only");
    h5detail::Id lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
    H5Pset_create_intermediate_group(lcpl.get(), 1);
    return h5detail::checked(H5Dcreate2(file.get(), name.c_str(), type, space, lcpl.get(), dcpl, H5P_DEFAULT),
                   H5Dclose, path, "creating dataset '" + name + "'");
  }

  void attribute_u64(hid_t dset, const std::string& name, const char* attr, std::uint64_t v) const {
    h5detail::Id space(H5Screate(H5S_SCALAR), H5Sclose);
    h5detail::Id a = h5detail::checked(H5Acreate2(dset, attr, H5T_STD_U64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose,
                   path, "attribute " + std::string(attr) + " of '" + name + "'");
    h5detail::check(H5Awrite(a.get(), H5T_NATIVE_UINT64, &v), path, "writing attribute of '" + name + "'");
  }

  std::uint64_t attribute_u64(hid_t dset, const std::string& name, const char* attr) const {
    if (H5Aexists(dset, attr) <= 0) throw_user_error(path, ": dataset '", name, "' has no ", attr, " attribute");
    h5detail::Id a = h5detail::checked(H5Aopen(dset, attr, H5P_DEFAULT), H5Aclose, path, "attribute of '" + name + "'");
    std::uint64_t v = 0;
    h5detail::check(H5Aread(a.get(), H5T_NATIVE_UINT64, &v), path, "reading attribute of '" + name + "'");
    return v;
  }

  void attribute_u64s(hid_t dset, const std::string& name, const char* attr,
                      const std::vector<std::uint64_t>& v) const {
    const hsize_t n[1] = {static_cast<hsize_t>(v.size())};
    h5detail::Id space(H5Screate_simple(1, n, nullptr), H5Sclose);
    h5detail::Id a = h5detail::checked(H5Acreate2(dset, attr, H5T_STD_U64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose,
                   path, "attribute " + std::string(attr) + " of '" + name + "'");
    h5detail::check(H5Awrite(a.get(), H5T_NATIVE_UINT64, v.data()), path, "writing attribute of '" + name + "'");
  }

  std::vector<std::uint64_t> attribute_u64s(hid_t dset, const std::string& name, const char* attr,
                                            std::size_t n) const {
    if (H5Aexists(dset, attr) <= 0) throw_user_error(path, ": dataset '", name, "' has no ", attr, " attribute");
    h5detail::Id a = h5detail::checked(H5Aopen(dset, attr, H5P_DEFAULT), H5Aclose, path, "attribute of '" + name + "'");
    h5detail::Id space(H5Aget_space(a.get()), H5Sclose);
    if (H5Sget_simple_extent_npoints(space.get()) != static_cast<hssize_t>(n))
      throw_user_error(path, ": dataset '", name, "' has not one ", attr, " per slab (", n, ")");
    std::vector<std::uint64_t> v(n);
    h5detail::check(H5Aread(a.get(), H5T_NATIVE_UINT64, v.data()), path, "reading attribute of '" + name + "'");
    return v;
  }

  // The stack `name` opened, after checking that it is (n, rows, cols) f32, and its checksums.
  std::pair<h5detail::Id, std::vector<std::uint64_t>> stack(const std::string& name, std::int64_t n, std::int64_t rows,
                                                  std::int64_t cols) const {
    h5detail::Id d = dataset(name);
    h5detail::Id space(H5Dget_space(d.get()), H5Sclose);
    h5detail::Id type = h5detail::checked(H5Dget_type(d.get()), H5Tclose, path, "type of '" + name + "'");
    hsize_t dims[3] = {0, 0, 0};
    const bool is_stack = H5Sget_simple_extent_ndims(space.get()) == 3 && H5Tget_class(type.get()) == H5T_FLOAT &&
                          H5Tget_size(type.get()) == 4;
    if (is_stack) H5Sget_simple_extent_dims(space.get(), dims, nullptr);
    if (!is_stack || dims[0] != static_cast<hsize_t>(n) || dims[1] != static_cast<hsize_t>(rows) ||
        dims[2] != static_cast<hsize_t>(cols))
      throw_user_error(path, ": dataset '", name, "' is not the expected (", n, ", ", rows, ", ", cols,
                       ") f32 stack");
    std::vector<std::uint64_t> sums = attribute_u64s(d.get(), name, "slab_sum64", static_cast<std::size_t>(n));
    return {std::move(d), std::move(sums)};
  }

  void attribute_text(hid_t dset, const std::string& name, const char* attr, const std::string& v) const {
    h5detail::Id space(H5Screate(H5S_SCALAR), H5Sclose);
    h5detail::Id type = h5detail::text_type(v.size());
    h5detail::Id a = h5detail::checked(H5Acreate2(dset, attr, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose, path,
                   "attribute " + std::string(attr) + " of '" + name + "'");
    h5detail::check(H5Awrite(a.get(), type.get(), v.data()), path, "writing attribute of '" + name + "'");
  }

  // Rank 0 writes a scalar dataset's value; the checksum attribute goes on with it.
  void write_scalar(const std::string& name, hid_t file_type, hid_t mem_type, const void* value,
                    std::uint64_t xxh) const {
    h5detail::Id space(H5Screate(H5S_SCALAR), H5Sclose);
    h5detail::Id d = create(name, file_type, space.get());
    h5detail::Id fs(H5Dget_space(d.get()), H5Sclose);
    h5detail::Id ms(H5Screate(H5S_SCALAR), H5Sclose);
    if (rank != 0) {
      H5Sselect_none(fs.get());
      H5Sselect_none(ms.get());
    }
    h5detail::Id dxpl = h5detail::collective_xfer();
    h5detail::check(H5Dwrite(d.get(), mem_type, ms.get(), fs.get(), dxpl.get(), value), path, "writing '" + name + "'");
    attribute_u64(d.get(), name, "xxh64", xxh);
  }
};

}  // namespace anvil::io
