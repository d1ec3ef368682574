// H5Store: one HDF5 file opened collectively by the ranks of an MPI communicator
// (parallel HDF5 over MPI-IO), with the few kinds of dataset an anvil checkpoint holds:
//   - 2-D f32 matrices of their full logical shape, which each rank writes or reads as a
//     block (a hyperslab) of its own, or not at all, in one collective call;
//   - 3-D f32 slab stacks (n, rows, cols), written the same way with one block of rows
//     and columns taken from every slab, and carrying one checksum per slab [i]
//     (`slab_sum64`, see slab_sum below: ranks add the checksums of their blocks);
//   - int64 scalars and text (the resolved config, JSON), the same on every rank.
// Every matrix carries an `xxh64` attribute, the XXH64 (seed 0) of its full row-major
// bytes (a stack: `slab_sum64`, n of them), and a `dtype` attribute ("f32"). Names
// are paths ("adapter/…"); groups are made as needed. Any rank's HDF5 failure becomes an
// anvil::Error naming the file and dataset.
//
// All calls are collective over the communicator, with the same names, shapes, values and
// order on every rank; only the block and the data pointer differ. File locking is off
// unless HDF5_USE_FILE_LOCKING says otherwise: checkpoints are written under a temporary
// name by one job and renamed, and shared file systems (Lustre, NFS) often refuse locks.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "io/checksum.h"

namespace anvil::io {

// A block of a (rows, cols) matrix: rows [row0, row0 + nrows), cols [col0, col0 + ncols).
struct MatrixBlock {
  std::int64_t row0 = 0, nrows = 0, col0 = 0, ncols = 0;
};
// A block of slabs [slab0, slab0 + nslabs) of a stack: the same block of each.
struct StackBlock {
  std::int64_t slab0 = 0, nslabs = 0;
  MatrixBlock block;
  // Slabs in runs of `run`, one run every `period` slabs from slab0 (an ep rank's experts
  // of every layer); run 0: the nslabs are consecutive.
  std::int64_t run = 0, period = 0;
};

// One block of one slab that a rank reads out of a stack into `dst` (block.nrows x
// block.ncols floats, row-major); `summed`: its io::slab_sum counts in the slab's share.
struct SlabRead {
  std::int64_t slab = 0;
  MatrixBlock block;
  float* dst = nullptr;
  bool summed = false;
};
// Per slab of a stack: the checksum the file stores, and the sum of the summed blocks read.
struct StackSums {
  std::vector<std::uint64_t> stored, read;
};

class H5Store {
 public:
  // Creates (truncating) or opens read-only `path` over `comm`.
  static H5Store create(const std::string& path, MPI_Comm comm);
  static H5Store open(const std::string& path, MPI_Comm comm);
  H5Store(H5Store&&) noexcept;
  H5Store& operator=(H5Store&&) noexcept;
  ~H5Store();  // closes (errors while unwinding are swallowed)

  const std::string& path() const;

  void write_text(const std::string& name, const std::string& text);
  std::string read_text(const std::string& name) const;
  void write_i64(const std::string& name, std::int64_t value);
  std::int64_t read_i64(const std::string& name) const;

  // Creates `name` as a (rows, cols) f32 matrix, then writes `block` of it from `data`
  // (block.nrows x block.ncols, row-major) on the ranks that pass a block; the others pass
  // nullopt and write nothing. The blocks of all ranks must cover the matrix.
  void write_matrix(const std::string& name, std::int64_t rows, std::int64_t cols,
                    const std::optional<MatrixBlock>& block, const float* data);
  // Makes what was written so far readable by every rank (MPI-IO sync).
  void flush();
  // Reads matrix `name` back whole (after flush) and stores its checksum: what the file
  // holds is what is checked later, whichever ranks wrote it.
  void seal_matrix(const std::string& name);
  // The same with a checksum every rank computed itself from the whole matrix it holds.
  void seal_matrix(const std::string& name, std::uint64_t xxh64);
  // (rows, cols) of `name`; a user error naming file and dataset when it is missing or not
  // a 2-D f32 matrix.
  std::pair<std::int64_t, std::int64_t> matrix_shape(const std::string& name) const;
  // Reads `block` into `data` on the ranks that pass one.
  void read_matrix(const std::string& name, const std::optional<MatrixBlock>& block, float* data) const;
  std::uint64_t matrix_checksum(const std::string& name) const;
  // Reads the whole (rows, cols) matrix `name` into `data` on every rank (independently:
  // no rank waits for another) and checks it against its checksum. User errors name the
  // file and dataset: missing, another shape or type, a failed checksum.
  void read_matrix_checked(const std::string& name, std::int64_t rows, std::int64_t cols, float* data) const;

  // Creates `name` as n slabs of (rows, cols) f32 (collective) and writes, on the ranks
  // that pass a block, that block of its slabs as one hyperslab, each rank independently.
  // The block of slab block.slab0 + i (block.nrows x block.ncols, row-major) is read in
  // place at data + i * stride (stride >= its size): no staging copy.
  void write_slabs(const std::string& name, std::int64_t n, std::int64_t rows, std::int64_t cols,
                   const std::optional<StackBlock>& block, const float* data, std::int64_t stride);
  // Stores the checksums of the stack `name`: `sums` holds slab_sum of each whole slab
  // (every rank the same; collective). A stack without them fails to read and to verify.
  void seal_slabs(const std::string& name, const std::vector<std::uint64_t>& sums);
  // Reads the whole stack (n, rows, cols) into `data` on every rank (independently) and
  // checks each slab. User errors name file, dataset and slab: missing, another shape, a
  // failed checksum.
  void read_slabs_checked(const std::string& name, std::int64_t n, std::int64_t rows, std::int64_t cols,
                          float* data) const;

  // Reads the blocks `pieces` of the stack `name` (n, rows, cols), independently, and
  // returns the stored checksums of its n slabs with the sums of the summed pieces, for the
  // caller to check (with its TP group) against the sums of all blocks. A user error names
  // file and dataset when the stack is missing, of another shape, or runs past the file's end.
  // A stack stored as write_slabs stores it (contiguous little-endian f32) is read straight
  // from the file beside HDF5 (its offset from HDF5), through a small buffer that stays in
  // cache or out of read_ahead's stream, each block copied to its place and summed in one
  // pass, on two threads: no second pass over the data for the sum (tests/bench/RESULTS.md).
  // Any other layout (a file rewritten by HDF5 tools) is read block by block through HDF5.
  StackSums read_slab_pieces(const std::string& name, std::int64_t n, std::int64_t rows, std::int64_t cols,
                             const std::vector<SlabRead>& pieces) const;
  // Opens the stacks now, with their checksums and places in the file, and keeps them open
  // for read_slab_pieces (until close). A reader calls it before read_ahead: HDF5 keeps a
  // stack's header and checksums where it had room when it wrote them (in older files
  // between and behind the data), and a small read queued behind the read-ahead waits until
  // the disk has read everything before it (0.2 s of a 0.3 s cold 503 MB resume;
  // tests/bench/RESULTS.md). User errors as read_slab_pieces.
  struct StackShape {
    std::string name;
    std::int64_t n = 0, rows = 0, cols = 0;
  };
  void open_stacks(const std::vector<StackShape>& stacks) const;
  // Starts reading the data of the stacks open_stacks holds from the disk, in file order,
  // for read_slab_pieces to copy as it comes in: past the page cache in large requests
  // (io::DirectStream) on a rank alone on its node, where the file system allows it and the
  // file is not in the page cache already; else the page cache's read-ahead of the whole
  // file (io::ReadAhead), which ranks sharing a node share. The stacks read fastest in the
  // order they were written (any order reads the same bytes). Stops at close. True when it
  // streams past the page cache. Independent (no rank waits for another).
  bool read_ahead() const;

  // Reads dataset `name` whole, whatever it holds, and checks it against its checksum(s):
  // empty when it is sound, else what is wrong ("FILE: dataset 'X' fails its checksum ...").
  // Independent (any one rank may call it).
  std::string verify(const std::string& name) const;

  bool exists(const std::string& name) const;
  // Every dataset's path, sorted.
  std::vector<std::string> list() const;

  // Flushes and closes the file (collective); later calls are errors.
  void close();

 private:
  struct Impl;
  explicit H5Store(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace anvil::io
