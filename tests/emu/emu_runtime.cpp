// The emulation tier's scheduler and CUDA runtime (see cuda_emu.h).
//
// A launch runs its blocks one after another. In a block every thread is a fiber with its
// own stack; a fiber runs until it reaches a barrier or a warp collective and then hands
// control back to the scheduler, which resumes the next ready fiber in the order of the
// schedule. Because fibers never interleave between synchronisation points, the orders the
// schedules produce are the extremes a real GPU can produce: a thread (or warp) that runs
// far ahead of the others, or far behind, across any missing barrier.
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <string>
#include <vector>

namespace anvil::emu {
namespace {

constexpr std::size_t kStackBytes = 256 * 1024;
constexpr std::size_t kStaticSmemLimit = 48 * 1024;    // static shared memory per block
constexpr std::size_t kDefaultDynamicLimit = 48 * 1024;  // without the function attribute
constexpr std::size_t kSmemLimit = 227 * 1024;         // per block on sm_90
constexpr unsigned kMaxThreads = 1024;

enum class Schedule { forward, reverse, random, warp0_first, last_warp_first };

struct Fiber {
  enum class State { ready, at_barrier, at_warp, done };
  ucontext_t ctx{};
  char* stack = nullptr;
  uint3 tid{};
  State state = State::ready;
  const char* barrier_file = nullptr;
  int barrier_line = 0;
};

struct Warp {
  unsigned arrived = 0, expected = 0, exists = 0, exited = 0;
  WarpOp op = WarpOp::sync;
  const void* slots[32] = {};
};

struct Settings {
  Schedule schedule = Schedule::forward;
  std::uint64_t seed = 1;
  std::string drop_file;  // ANVIL_EMU_DROP_BARRIER
  int drop_line = -1;
};

// The emulator is single-threaded: one launch at a time, on the calling thread.
struct State {
  Settings settings;
  bool configured = false;
  std::mt19937_64 rng;
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  std::vector<int> order;  // fibers by priority for the deterministic schedules
  ucontext_t scheduler{};
  int current = -1;
  int live = 0, at_barrier = 0;
  const std::function<void()>* body = nullptr;
  bool failed = false;
  std::string failure;
  // shared memory of the running block
  std::vector<unsigned char> dynamic_smem;
  std::size_t dynamic_bytes = 0;
  std::vector<unsigned char> static_smem = std::vector<unsigned char>(kSmemLimit);
  std::vector<std::pair<const void*, std::size_t>> static_sites;  // site, offset
  std::size_t static_used = 0;
  std::map<const void*, int> max_dynamic_smem;  // cudaFuncSetAttribute
  cudaError_t last_error = cudaSuccess;
  std::string last_message;
};

State& st() {
  static State s;
  return s;
}

Settings read_settings() {
  Settings s;
  const char* sched = std::getenv("ANVIL_EMU_SCHEDULE");
  const std::string name = sched ? sched : "forward";
  if (name == "forward") s.schedule = Schedule::forward;
  else if (name == "reverse") s.schedule = Schedule::reverse;
  else if (name == "random") s.schedule = Schedule::random;
  else if (name == "warp0-first") s.schedule = Schedule::warp0_first;
  else if (name == "last-warp-first") s.schedule = Schedule::last_warp_first;
  else {
    std::fprintf(stderr,
                 "emu: ANVIL_EMU_SCHEDULE=%s is not a schedule (forward, reverse, random, "
                 "warp0-first, last-warp-first)\n",
                 name.c_str());
    std::exit(2);
  }
  if (const char* seed = std::getenv("ANVIL_EMU_SEED")) s.seed = std::strtoull(seed, nullptr, 10);
  if (const char* drop = std::getenv("ANVIL_EMU_DROP_BARRIER")) {
    const std::string d = drop;
    const auto colon = d.rfind(':');
    if (colon == std::string::npos) {
      std::fprintf(stderr, "emu: ANVIL_EMU_DROP_BARRIER=%s is not NAME:LINE\n", drop);
      std::exit(2);
    }
    s.drop_file = d.substr(0, colon);
    s.drop_line = std::atoi(d.c_str() + colon + 1);
  }
  std::fprintf(stderr, "emu: schedule %s", name.c_str());
  if (s.schedule == Schedule::random)
    std::fprintf(stderr, " (seed %llu)", (unsigned long long)s.seed);
  if (s.drop_line >= 0)
    std::fprintf(stderr, ", barrier %s:%d dropped", s.drop_file.c_str(), s.drop_line);
  std::fprintf(stderr, "\n");
  return s;
}

void configure() {
  State& s = st();
  if (s.configured) return;
  s.settings = read_settings();
  s.rng.seed(s.settings.seed);
  s.configured = true;
}

}  // namespace

void fail(const std::string& message) {
  State& s = st();
  if (!s.failed) {
    s.failed = true;
    s.failure = message;
  }
  if (s.current >= 0) {
    const int me = s.current;
    s.current = -1;
    swapcontext(&s.fibers[me].ctx, &s.scheduler);
    std::abort();  // an abandoned fiber is never resumed
  }
}

namespace {

std::string block_name() {
  return "block (" + std::to_string(blockIdx.x) + "," + std::to_string(blockIdx.y) + "," +
         std::to_string(blockIdx.z) + ")";
}

std::string thread_name(const Fiber& f) {
  return "thread (" + std::to_string(f.tid.x) + "," + std::to_string(f.tid.y) + "," +
         std::to_string(f.tid.z) + ")";
}

void yield() {
  State& s = st();
  const int me = s.current;
  s.current = -1;
  swapcontext(&s.fibers[me].ctx, &s.scheduler);
}

void release_barrier() {
  State& s = st();
  for (Fiber& f : s.fibers)
    if (f.state == Fiber::State::at_barrier) f.state = Fiber::State::ready;
  s.at_barrier = 0;
}

void fiber_main() {
  State& s = st();
  (*s.body)();
  const int me = s.current;
  Fiber& f = s.fibers[me];
  f.state = Fiber::State::done;
  --s.live;
  Warp& w = s.warps[me / 32];
  w.exited |= 1u << (me % 32);
  if (w.arrived != 0 && (w.expected & (1u << (me % 32))))
    fail(thread_name(f) + " exited while its warp waited for it in a warp collective");
  if (s.at_barrier > 0 && s.at_barrier == s.live) release_barrier();
  s.current = -1;
  setcontext(&s.scheduler);
}

// The priority order of the deterministic schedules over n threads.
std::vector<int> priority_order(Schedule schedule, int n) {
  std::vector<int> order;
  const int warps = (n + 31) / 32;
  auto add_warp = [&](int w) {
    for (int t = 32 * w; t < std::min(n, 32 * w + 32); ++t) order.push_back(t);
  };
  switch (schedule) {
    case Schedule::forward:
    case Schedule::random:
      for (int t = 0; t < n; ++t) order.push_back(t);
      break;
    case Schedule::reverse:
      for (int t = n - 1; t >= 0; --t) order.push_back(t);
      break;
    case Schedule::warp0_first:  // warp 0 races ahead, the others follow last to first
      add_warp(0);
      for (int w = warps - 1; w >= 1; --w) add_warp(w);
      break;
    case Schedule::last_warp_first:  // the last warp races ahead, then warp 0, 1, ...
      add_warp(warps - 1);
      for (int w = 0; w < warps - 1; ++w) add_warp(w);
      break;
  }
  return order;
}

int pick_next() {
  State& s = st();
  if (s.settings.schedule == Schedule::random) {
    // The first ready fiber from a random place, round the block: O(1) while most are ready.
    const int n = static_cast<int>(s.order.size());
    const int start = std::uniform_int_distribution<int>(0, n - 1)(s.rng);
    for (int k = 0; k < n; ++k) {
      const int i = (start + k) % n;
      if (s.fibers[i].state == Fiber::State::ready) return i;
    }
    return -1;
  }
  for (int i : s.order)
    if (s.fibers[i].state == Fiber::State::ready) return i;
  return -1;
}

std::string deadlock_report() {
  State& s = st();
  std::string r = "deadlock in " + block_name() + ":";
  int shown = 0;
  for (const Fiber& f : s.fibers) {
    if (f.state == Fiber::State::done) continue;
    if (++shown > 8) {
      r += " ...";
      break;
    }
    r += " " + thread_name(f) +
         (f.state == Fiber::State::at_barrier
              ? " waits at __syncthreads " + std::string(f.barrier_file) + ":" +
                    std::to_string(f.barrier_line)
              : " waits in a warp collective") +
         ";";
  }
  return r;
}

char* new_stack() {
  const long page = sysconf(_SC_PAGESIZE);
  void* p = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                 -1, 0);
  if (p == MAP_FAILED) {
    std::perror("emu: fiber stack");
    std::abort();
  }
  mprotect(p, page, PROT_NONE);  // a guard page below the stack: an overflow faults
  return static_cast<char*>(p) + page;
}

void run_block(unsigned n_threads) {
  State& s = st();
  const dim3 bd = blockDim;
  // Fresh shared memory, all bits set (NaN as floats, -1 as ints).
  std::fill(s.dynamic_smem.begin(), s.dynamic_smem.end(), 0xFF);
  s.static_sites.clear();
  s.static_used = 0;
  for (unsigned i = 0; i < n_threads; ++i) {
    Fiber& f = s.fibers[i];
    f.tid = uint3{i % bd.x, (i / bd.x) % bd.y, i / (bd.x * bd.y)};
    f.state = Fiber::State::ready;
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack;
    f.ctx.uc_stack.ss_size = kStackBytes;
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, fiber_main, 0);
  }
  for (unsigned w = 0; w < s.warps.size(); ++w) {
    Warp& warp = s.warps[w];
    warp = Warp{};
    const unsigned lanes = std::min(32u, n_threads - 32 * w);
    warp.exists = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1;
  }
  s.live = static_cast<int>(n_threads);
  s.at_barrier = 0;
  while (!s.failed) {
    const int next = pick_next();
    if (next < 0) {
      if (s.live > 0) fail(deadlock_report());
      break;
    }
    s.current = next;
    threadIdx = s.fibers[next].tid;
    swapcontext(&s.scheduler, &s.fibers[next].ctx);
  }
  s.current = -1;
}

}  // namespace

void launch(const void* kernel, dim3 grid, dim3 block, std::size_t dynamic_smem,
            const std::function<void()>& body) {
  configure();
  State& s = st();
  const unsigned n_threads = block.x * block.y * block.z;
  std::string bad;
  if (n_threads == 0 || n_threads > kMaxThreads)
    bad = "block of " + std::to_string(n_threads) + " threads (1 .. 1024)";
  else if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535)
    bad = "grid (" + std::to_string(grid.x) + "," + std::to_string(grid.y) + "," +
          std::to_string(grid.z) + ")";
  else {
    const auto attr = s.max_dynamic_smem.find(kernel);
    const std::size_t allowed = attr == s.max_dynamic_smem.end()
                                    ? kDefaultDynamicLimit
                                    : static_cast<std::size_t>(attr->second);
    if (dynamic_smem > allowed)
      bad = std::to_string(dynamic_smem) + " bytes of dynamic shared memory, " +
            std::to_string(allowed) +
            " allowed (cudaFuncAttributeMaxDynamicSharedMemorySize not set high enough)";
  }
  if (!bad.empty()) {
    s.last_error = cudaErrorInvalidConfiguration;
    s.last_message = "emu: invalid launch: " + bad;
    std::fprintf(stderr, "%s\n", s.last_message.c_str());
    return;
  }
  while (s.fibers.size() < n_threads) {
    s.fibers.emplace_back();
    s.fibers.back().stack = new_stack();
  }
  s.warps.assign((n_threads + 31) / 32, Warp{});
  s.order = priority_order(s.settings.schedule, static_cast<int>(n_threads));
  s.dynamic_smem.assign(dynamic_smem, 0xFF);
  s.dynamic_bytes = dynamic_smem;
  s.body = &body;
  s.failed = false;
  gridDim = grid;
  blockDim = block;
  for (unsigned z = 0; z < grid.z && !s.failed; ++z)
    for (unsigned y = 0; y < grid.y && !s.failed; ++y)
      for (unsigned x = 0; x < grid.x && !s.failed; ++x) {
        blockIdx = uint3{x, y, z};
        run_block(n_threads);
      }
  s.body = nullptr;
  if (s.failed) {
    s.last_error = cudaErrorLaunchFailure;
    s.last_message = "emu: kernel failed: " + s.failure;
    std::fprintf(stderr, "%s\n", s.last_message.c_str());
  }
}

void* dynamic_shared_memory() {
  State& s = st();
  return s.dynamic_smem.empty() ? nullptr : s.dynamic_smem.data();
}

void* block_shared(const void* site, std::size_t bytes) {
  State& s = st();
  for (const auto& [key, offset] : s.static_sites)
    if (key == site) return s.static_smem.data() + offset;
  const std::size_t offset = (s.static_used + 15) / 16 * 16;
  if (offset + bytes > kStaticSmemLimit || offset + bytes + s.dynamic_bytes > kSmemLimit)
    fail("block-shared arrays of " + std::to_string(offset + bytes) + " bytes (static limit " +
         std::to_string(kStaticSmemLimit) + ", " + std::to_string(s.dynamic_bytes) +
         " dynamic)");
  std::fill_n(s.static_smem.begin() + static_cast<std::ptrdiff_t>(offset), bytes, 0xFF);
  s.static_sites.emplace_back(site, offset);
  s.static_used = offset + bytes;
  return s.static_smem.data() + offset;
}

void sync_threads(const char* file, int line) {
  State& s = st();
  if (s.current < 0) fail("__syncthreads outside a kernel");
  const Settings& set = s.settings;
  if (line == set.drop_line) {
    const std::string f = file;
    const auto slash = f.rfind('/');
    if ((slash == std::string::npos ? f : f.substr(slash + 1)) == set.drop_file) return;
  }
  Fiber& me = s.fibers[s.current];
  me.state = Fiber::State::at_barrier;
  me.barrier_file = file;
  me.barrier_line = line;
  if (++s.at_barrier == s.live) release_barrier();
  yield();
}

unsigned lane_id() { return static_cast<unsigned>(st().current % 32); }

void warp_exchange(WarpOp op, unsigned mask, const void* in, std::size_t /*bytes*/,
                   const std::function<void(const void* const* slots)>& read) {
  State& s = st();
  const int me = s.current;
  if (me < 0) fail("warp collective outside a kernel");
  Warp& w = s.warps[me / 32];
  const unsigned bit = 1u << (me % 32);
  const unsigned want = mask & w.exists;
  if (!(want & bit)) fail(thread_name(s.fibers[me]) + " calls a warp collective outside its mask");
  if (want & w.exited)
    fail("warp collective with mask " + std::to_string(mask) + " in " + block_name() +
         ": a lane of the mask has exited");
  // Phase 1: deposit and wait for every lane of the mask.
  if (w.arrived == 0) {
    w.expected = want;
    w.op = op;
    std::fill(std::begin(w.slots), std::end(w.slots), nullptr);
  } else if (w.expected != want || w.op != op) {
    fail("divergent warp collectives in " + block_name() + ": " + thread_name(s.fibers[me]) +
         " joins with another operation or mask");
  }
  w.slots[me % 32] = in;
  w.arrived |= bit;
  auto wait_all = [&] {
    Fiber& f = s.fibers[me];
    if (w.arrived == w.expected) {
      for (int l = 0; l < 32; ++l)
        if ((w.expected >> l & 1u) && l != me % 32)
          s.fibers[32 * (me / 32) + l].state = Fiber::State::ready;
      w.arrived = 0;
    } else {
      f.state = Fiber::State::at_warp;
    }
    yield();
  };
  wait_all();
  // Every deposit is alive: its owner is suspended inside this function.
  read(w.slots);
  // Phase 2: nobody leaves (and reuses its slot) before everyone has read.
  if (w.arrived == 0) {
    w.expected = want;
    w.op = op;
  }
  w.arrived |= bit;
  wait_all();
}

unsigned vote_ballot(unsigned mask, bool predicate) {
  const int mine = predicate ? 1 : 0;
  unsigned ballot = 0;
  warp_exchange(WarpOp::vote, mask, &mine, sizeof mine, [&](const void* const* slots) {
    for (int l = 0; l < 32; ++l)
      if (slots[l] && *static_cast<const int*>(slots[l])) ballot |= 1u << l;
  });
  return ballot;
}

// ---- runtime API --------------------------------------------------------------------------

cudaError_t set_error(cudaError_t e, const std::string& message) {
  State& s = st();
  s.last_error = e;
  s.last_message = "emu: " + message;
  return e;
}

}  // namespace anvil::emu

// ---- the tensor-core product, from the PTX ISA -----------------------------------------------

namespace anvil::kernels::ptx {

namespace {

float bf16_bits_to_float(std::uint32_t bits) { return __uint_as_float(bits << 16); }

// Half `h` (0: low 16 bits) of 32-bit register `r`.
float half_of(std::uint32_t r, int h) { return bf16_bits_to_float(h ? r >> 16 : r & 0xFFFFu); }

struct MmaOperands {
  std::uint32_t a[4], b[2];
};

}  // namespace

// PTX ISA, "Matrix Fragments for mma.m16n8k16" (.bf16): groupID = lane >> 2,
// threadID_in_group = lane % 4.
//   A (16x16, row): a_i for i in 0..7 sits at row groupID (+8 for i in {2,3,6,7}),
//                   column 2 * threadID_in_group + (i & 1) (+8 for i >= 4);
//                   register j holds a_{2j} (low half) and a_{2j+1} (high half).
//   B (16x8, col):  b_i for i in 0..3 at row (k) 2 * threadID_in_group + (i & 1) (+8 for
//                   i >= 2), column (n) groupID; register j holds b_{2j}, b_{2j+1}.
//   C/D (16x8):     c_i at row groupID (+8 for i >= 2), column 2 * threadID_in_group + (i & 1).
void mma_m16n8k16_bf16(float (&c)[4], const std::uint32_t (&a)[4], const std::uint32_t (&b)[2]) {
  const MmaOperands mine{{a[0], a[1], a[2], a[3]}, {b[0], b[1]}};
  const int lane = static_cast<int>(anvil::emu::lane_id());
  float d[4];
  anvil::emu::warp_exchange(
      anvil::emu::WarpOp::mma, 0xffffffffu, &mine, sizeof mine, [&](const void* const* slots) {
        auto op = [&](int l) -> const MmaOperands& {
          if (!slots[l]) anvil::emu::fail("mma.sync with an absent lane");
          return *static_cast<const MmaOperands*>(slots[l]);
        };
        auto a_at = [&](int row, int k) {  // A(row, k)
          const int l = 4 * (row % 8) + (k % 8) / 2;
          const int i = (k % 2) + 2 * (row >= 8) + 4 * (k >= 8);  // element a_i
          return half_of(op(l).a[i / 2], i % 2);
        };
        auto b_at = [&](int k, int n) {  // B(k, n)
          const int l = 4 * n + (k % 8) / 2;
          const int i = (k % 2) + 2 * (k >= 8);
          return half_of(op(l).b[i / 2], i % 2);
        };
        for (int e = 0; e < 4; ++e) {
          const int row = lane / 4 + 8 * (e >= 2), col = 2 * (lane % 4) + (e & 1);
          double acc = 0.0;  // bf16 products are exact; the sum is rounded once
          for (int k = 0; k < 16; ++k) acc += double(a_at(row, k)) * double(b_at(k, col));
          d[e] = static_cast<float>(acc + double(c[e]));
        }
      });
  for (int e = 0; e < 4; ++e) c[e] = d[e];
}

}  // namespace anvil::kernels::ptx

// ---- the CUDA runtime API the kernels and their tests call ------------------------------------

using anvil::emu::set_error;
using anvil::emu::st;

extern "C" {

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  return device == 0 ? cudaSuccess : set_error(cudaErrorInvalidDevice, "one emulated device");
}
cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  *ptr = std::aligned_alloc(256, (std::max<size_t>(bytes, 1) + 255) / 256 * 256);
  if (!*ptr) return set_error(cudaErrorMemoryAllocation, "out of host memory");
  std::memset(*ptr, 0xFF, bytes);  // device memory starts as garbage, not zeros
  return cudaSuccess;
}
cudaError_t cudaFree(void* ptr) {
  std::free(ptr);
  return cudaSuccess;
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind) {
  if (bytes) std::memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t) {
  return cudaMemcpy(dst, src, bytes, kind);
}
cudaError_t cudaMemset(void* dst, int value, size_t bytes) {
  if (bytes) std::memset(dst, value, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t) {
  return cudaMemset(dst, value, bytes);
}
cudaError_t cudaDeviceSynchronize(void) { return st().last_error; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return st().last_error; }
cudaError_t cudaGetLastError(void) {
  const cudaError_t e = st().last_error;
  st().last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError(void) { return st().last_error; }
const char* cudaGetErrorString(cudaError_t error) {
  if (error == cudaSuccess) return "no error";
  return st().last_message.empty() ? "emulated CUDA error" : st().last_message.c_str();
}
const char* cudaGetErrorName(cudaError_t error) { return cudaGetErrorString(error); }
cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaSuccess;
  if (value < 0 || static_cast<std::size_t>(value) > anvil::emu::kSmemLimit)
    return set_error(cudaErrorInvalidValue, "max dynamic shared memory " + std::to_string(value) +
                                                " over the 227 KB of sm_90");
  st().max_dynamic_smem[func] = value;
  return cudaSuccess;
}

}  // extern "C"
