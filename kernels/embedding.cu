// Token embedding (see embedding.cuh).
//
// The backward must be deterministic and must not depend on how often an id occurs. Token
// indices are sorted by (id, token) into one run per id, in token order (a bitonic sort of
// unique 64-bit keys, so any sort gives the same order). The sorted positions are cut into
// fixed chunks of kChunk: each piece of a run inside one chunk is summed in order, a run
// inside one chunk is added to its table row at once, and a run that crosses chunks adds
// its pieces in chunk order. A pad id repeated 10^5 times costs 10^5 / kChunk serial adds,
// not 10^5. The CPU backend sums in this same order (cpu_backend.cpp), bit for bit.
#include "embedding.cuh"

#include "cuda_check.cuh"
#include "launch.cuh"

namespace anvil::kernels {

namespace {

using i64 = std::int64_t;
using u64 = std::uint64_t;

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

constexpr int kChunk = 64;  // sorted positions per chunk; CpuBackend uses the same

// keys[i] = (id, token i) for i < n; all bits set (sorted last) up to the padded length.
__global__ void sort_keys_kernel(u64* keys, const std::int32_t* ids, i64 n, i64 padded) {
  for (i64 i = blockIdx.x * static_cast<i64>(blockDim.x) + threadIdx.x; i < padded;
       i += static_cast<i64>(gridDim.x) * blockDim.x)
    keys[i] = i < n
                  ? static_cast<u64>(static_cast<std::uint32_t>(ids[i])) << 32 | static_cast<u64>(i)
                  : ~u64{0};
}

// One compare-exchange step (k, j) of a bitonic sort of `padded` (a power of two) keys.
__global__ void bitonic_step_kernel(u64* keys, i64 padded, i64 k, i64 j) {
  for (i64 i = blockIdx.x * static_cast<i64>(blockDim.x) + threadIdx.x; i < padded;
       i += static_cast<i64>(gridDim.x) * blockDim.x) {
    const i64 partner = i ^ j;
    if (partner <= i) continue;
    const bool ascending = (i & k) == 0;
    const u64 a = keys[i], b = keys[partner];
    if ((a > b) == ascending) {
      keys[i] = b;
      keys[partner] = a;
    }
  }
}

__device__ inline std::int64_t key_id(u64 key) {
  return static_cast<std::int32_t>(static_cast<std::uint32_t>(key >> 32));
}
__device__ inline i64 key_token(u64 key) { return static_cast<i64>(key & 0xFFFFFFFFu); }

// CTA (chunk, column block), one column per thread: walks the chunk's sorted positions in
// order, one piece of a run at a time. A run wholly inside the chunk is added to dtable;
// the piece that continues a run from the previous chunk goes to first[chunk], the piece
// that starts a run continuing into the next chunk to last[chunk].
__global__ void chunk_sums_kernel(float* dtable, float* first, float* last, const float* dout,
                                  const u64* keys, i64 n, i64 vocab, i64 dim) {
  const i64 chunk = blockIdx.x;
  const i64 c = static_cast<i64>(blockIdx.y) * blockDim.x + threadIdx.x;
  if (c >= dim) return;
  const i64 p0 = chunk * kChunk, p1 = p0 + kChunk < n ? p0 + kChunk : n;
  const bool cont_in = p0 > 0 && key_id(keys[p0 - 1]) == key_id(keys[p0]);
  const bool cont_out = p1 < n && key_id(keys[p1]) == key_id(keys[p1 - 1]);
  for (i64 p = p0; p < p1;) {
    const i64 id = key_id(keys[p]);
    float piece = 0.0f;
    i64 q = p;
    for (; q < p1 && key_id(keys[q]) == id; ++q) piece += dout[key_token(keys[q]) * dim + c];
    const bool in_piece = p == p0 && cont_in, out_piece = q == p1 && cont_out;
    if (in_piece)
      first[chunk * dim + c] = piece;
    else if (out_piece)
      last[chunk * dim + c] = piece;
    else if (id >= 0 && id < vocab)  // the forward reports a bad id; never write for one
      dtable[id * dim + c] += piece;
    p = q;
  }
}

// CTA (chunk, column block): when a run starts in this chunk and continues past it, adds
// its pieces in chunk order (last[chunk], then first[] of the chunks it reaches) to dtable.
__global__ void run_sums_kernel(float* dtable, const float* first, const float* last,
                                const u64* keys, i64 n, i64 vocab, i64 dim) {
  const i64 chunk = blockIdx.x;
  const i64 c = static_cast<i64>(blockIdx.y) * blockDim.x + threadIdx.x;
  if (c >= dim) return;
  const i64 p0 = chunk * kChunk, p1 = p0 + kChunk < n ? p0 + kChunk : n;
  const i64 id = key_id(keys[p1 - 1]);
  const bool cont_out = p1 < n && key_id(keys[p1]) == id;
  const bool starts_here = key_id(keys[p0]) != id || p0 == 0 || key_id(keys[p0 - 1]) != id;
  if (!cont_out || !starts_here || id < 0 || id >= vocab) return;
  float total = last[chunk * dim + c];
  for (i64 k = chunk + 1;; ++k) {
    total += first[k * dim + c];
    const i64 k1 = (k + 1) * kChunk;
    const bool through = k1 < n && key_id(keys[k1 - 1]) == id && key_id(keys[k1]) == id;
    if (!through) break;  // the run ends inside chunk k
  }
  dtable[id * dim + c] += total;
}

// The workspace: the sort keys, then the first and last pieces of every chunk.
struct BackwardLayout {
  i64 padded, chunks;
  std::size_t keys, first, last, total;
};

std::size_t align_up(std::size_t bytes) { return (bytes + 255) / 256 * 256; }

BackwardLayout backward_layout(i64 n, i64 dim) {
  BackwardLayout l{};
  l.padded = 1;
  while (l.padded < n) l.padded *= 2;
  l.chunks = (n + kChunk - 1) / kChunk;
  const std::size_t parts = align_up(sizeof(float) * static_cast<std::size_t>(l.chunks * dim));
  l.keys = 0;
  l.first = align_up(sizeof(u64) * static_cast<std::size_t>(l.padded));
  l.last = l.first + parts;
  l.total = l.last + parts;
  return l;
}

int grid_for(i64 items) {
  const i64 blocks = (items + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < 65536 ? (blocks > 0 ? blocks : 1) : 65536);
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
  launch(embedding_forward_kernel, static_cast<int>(blocks < 65536 ? blocks : 65536), kThreads, 0,
         stream, out, ids, table, n, rows, dim, first, vocab, bad_id);
}

std::size_t embedding_backward_workspace_bytes(std::int64_t n, std::int64_t dim) {
  ANVIL_CHECK(n >= 0 && n <= INT32_MAX && dim >= 0, "embedding backward: ", n, " tokens, dim ",
              dim);
  return backward_layout(n, dim).total;
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
  const BackwardLayout l = backward_layout(n, dim);
  char* ws = static_cast<char*>(workspace);
  auto* keys = reinterpret_cast<u64*>(ws + l.keys);
  auto* first = reinterpret_cast<float*>(ws + l.first);
  auto* last = reinterpret_cast<float*>(ws + l.last);

  launch(sort_keys_kernel, grid_for(l.padded), kThreads, 0, stream, keys, ids, n, l.padded);
  for (i64 k = 2; k <= l.padded; k *= 2)
    for (i64 j = k / 2; j > 0; j /= 2)
      launch(bitonic_step_kernel, grid_for(l.padded), kThreads, 0, stream, keys, l.padded, k, j);
  const dim3 grid(static_cast<unsigned>(l.chunks), static_cast<unsigned>(col_blocks));
  launch(chunk_sums_kernel, grid, kColsPerBlock, 0, stream, dtable, first, last, dout, keys, n,
         vocab, dim);
  launch(run_sums_kernel, grid, kColsPerBlock, 0, stream, dtable, first, last, keys, n, vocab, dim);
}

}  // namespace anvil::kernels
