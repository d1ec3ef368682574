// Token embedding (see embedding.cuh).
//
// The backward must be deterministic: each table row adds its tokens in token order. The
// token indices are sorted by id with CUB's radix sort, which is stable, so equal ids keep
// token order; then the first position of each run of equal ids walks its run and adds the
// rows in that order into the table, which is the CPU backend's order (bit for bit the same
// sums). No float atomics; a frequent id only makes its own run longer.
#include "embedding.cuh"

#include <cub/device/device_radix_sort.cuh>

#include "cuda_check.cuh"

namespace anvil::kernels {

namespace {

using i64 = std::int64_t;

constexpr int kThreads = 256;
constexpr int kColsPerBlock = 128;  // backward: columns of dtable per CTA

__global__ void embedding_forward_kernel(float* out, const std::int32_t* ids,
                                         const std::uint16_t* table, i64 n, i64 rows, i64 dim,
                                         i64 first, i64 vocab, std::int32_t* bad_id) {
  const i64 total = n * dim;
  for (i64 e = blockIdx.x * static_cast<i64>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<i64>(gridDim.x) * blockDim.x) {
    const i64 i = e / dim, c = e % dim;
    const i64 id = ids[i];
    if ((id < 0 || id >= vocab) && c == 0 && bad_id) *bad_id = 1;
    const i64 row = id - first;
    out[e] = id >= 0 && id < vocab && row >= 0 && row < rows
                 ? __uint_as_float(static_cast<unsigned>(table[row * dim + c]) << 16)
                 : 0.0f;
  }
}

// order[i] = i: the values the radix sort carries along with the ids.
__global__ void iota_kernel(std::int32_t* order, i64 n) {
  for (i64 i = blockIdx.x * static_cast<i64>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<i64>(gridDim.x) * blockDim.x)
    order[i] = static_cast<std::int32_t>(i);
}

// CTA (p, column block): when sorted position p starts a run of equal ids, its threads add
// that run's rows of dout, in token order, to columns of the id's row of dtable.
__global__ void embedding_backward_kernel(float* dtable, const float* dout,
                                          const std::int32_t* sorted_ids,
                                          const std::int32_t* order, i64 n, i64 vocab, i64 dim) {
  const i64 p = blockIdx.x;
  const std::int32_t id = sorted_ids[p];
  if (p > 0 && sorted_ids[p - 1] == id) return;  // not the first of its run
  if (id < 0 || id >= vocab) return;             // the forward has reported it; never write
  const i64 c = static_cast<i64>(blockIdx.y) * kColsPerBlock + threadIdx.x;
  if (c >= dim) return;
  float* dst = dtable + id * dim + c;
  float acc = *dst;
  for (i64 q = p; q < n && sorted_ids[q] == id; ++q) acc += dout[order[q] * dim + c];
  *dst = acc;
}

// The workspace: CUB's temporary storage, then sorted ids, token order in and out.
struct BackwardLayout {
  std::size_t cub_bytes, sorted_ids, order_in, order_out, total;
};

std::size_t align_up(std::size_t bytes) { return (bytes + 255) / 256 * 256; }

BackwardLayout backward_layout(i64 n) {
  BackwardLayout l{};
  // A size query: CUB launches nothing when the storage pointer is null.
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
      nullptr, l.cub_bytes, static_cast<const std::int32_t*>(nullptr),
      static_cast<std::int32_t*>(nullptr), static_cast<const std::int32_t*>(nullptr),
      static_cast<std::int32_t*>(nullptr), static_cast<int>(n)));
  const std::size_t ints = align_up(static_cast<std::size_t>(n) * sizeof(std::int32_t));
  l.sorted_ids = align_up(l.cub_bytes);
  l.order_in = l.sorted_ids + ints;
  l.order_out = l.order_in + ints;
  l.total = l.order_out + ints;
  return l;
}

}  // namespace

void embedding_forward(float* out, const std::int32_t* ids, const std::uint16_t* table,
                       std::int64_t n, std::int64_t rows, std::int64_t dim, std::int64_t first,
                       std::int64_t vocab, std::int32_t* bad_id, cudaStream_t stream) {
  ANVIL_CHECK(n >= 0 && rows > 0 && dim > 0, "embedding shape n = ", n, ", rows = ", rows,
              ", dim = ", dim);
  ANVIL_CHECK(first >= 0 && first + rows <= vocab, "vocabulary shard [", first, ", ",
              first + rows, ") outside [0, ", vocab, ")");
  if (n == 0) return;
  ANVIL_CHECK(out && ids && table, "embedding_forward: null buffer");
  const i64 blocks = (n * dim + kThreads - 1) / kThreads;
  embedding_forward_kernel<<<static_cast<int>(blocks < 65536 ? blocks : 65536), kThreads, 0,
                             stream>>>(out, ids, table, n, rows, dim, first, vocab, bad_id);
  CUDA_CHECK(cudaGetLastError());
}

std::size_t embedding_backward_workspace_bytes(std::int64_t n) {
  ANVIL_CHECK(n >= 0 && n <= INT32_MAX, "embedding backward: ", n, " tokens");
  return backward_layout(n).total;
}

void embedding_backward(float* dtable, const float* dout, const std::int32_t* ids,
                        std::int64_t n, std::int64_t vocab, std::int64_t dim, void* workspace,
                        cudaStream_t stream) {
  ANVIL_CHECK(n >= 0 && n <= INT32_MAX && vocab > 0 && dim > 0, "embedding backward shape n = ",
              n, ", vocab = ", vocab, ", dim = ", dim);
  if (n == 0) return;
  ANVIL_CHECK(dtable && dout && ids && workspace, "embedding_backward: null buffer");
  const i64 col_blocks = (dim + kColsPerBlock - 1) / kColsPerBlock;
  ANVIL_CHECK(col_blocks <= 65535, "embedding backward: dim ", dim, " too wide");
  const BackwardLayout l = backward_layout(n);
  char* ws = static_cast<char*>(workspace);
  auto* sorted_ids = reinterpret_cast<std::int32_t*>(ws + l.sorted_ids);
  auto* order_in = reinterpret_cast<std::int32_t*>(ws + l.order_in);
  auto* order_out = reinterpret_cast<std::int32_t*>(ws + l.order_out);

  const i64 blocks = (n + kThreads - 1) / kThreads;
  iota_kernel<<<static_cast<int>(blocks < 65536 ? blocks : 65536), kThreads, 0, stream>>>(
      order_in, n);
  CUDA_CHECK(cudaGetLastError());
  std::size_t cub_bytes = l.cub_bytes;
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(workspace, cub_bytes, ids, sorted_ids, order_in,
                                             order_out, static_cast<int>(n), 0,
                                             static_cast<int>(sizeof(std::int32_t) * 8), stream));
  const dim3 grid(static_cast<unsigned>(n), static_cast<unsigned>(col_blocks));
  embedding_backward_kernel<<<grid, kColsPerBlock, 0, stream>>>(dtable, dout, sorted_ids,
                                                                order_out, n, vocab, dim);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace anvil::kernels
