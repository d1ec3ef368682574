#include "checkpoint/checkpoint_file.h"

#include <algorithm>
#include <future>
#include <optional>

#include "checkpoint/checkpoint_v1.h"
#include "comm/mpi_handle.h"
#include "core/error.h"
#include "io/files.h"

namespace anvil::checkpoint {

namespace {

using model::LoraBlock;
using model::LoraLayout;
using model::Proj;

constexpr const char* kStateNames[6] = {"state/step",    "state/tokens_seen",   "state/skipped_steps",
                                        "state/seed",    "state/sampler_epoch", "state/sampler_cursor"};

std::array<std::int64_t*, 6> state_fields(State& s) {
  return {&s.step, &s.tokens_seen, &s.skipped_steps, &s.seed, &s.sampler_epoch, &s.sampler_cursor};
}

// The stacks of a LoRA: every projection with adapters, A then B, in Proj order. A stack's
// slabs are that projection's adapters in layout order: one per layer for a dense model;
// the layers that have the projection, times each expert for a routed expert's.
struct Stack {
  Proj proj;
  char which;
  bool shared_expert = false;  // Llama 4's shared experts, apart from its dense MLPs
  std::vector<std::int64_t> slots;  // indices into the full layout's slots()
  std::int64_t slabs() const { return static_cast<std::int64_t>(slots.size()); }
};
std::vector<Stack> stacks(const LoraLayout& full) {
  std::vector<Stack> out;
  for (int p = 0; p < model::kProjCount; ++p)
    for (const bool shared : {false, true}) {
      std::vector<std::int64_t> slots;
      for (std::size_t i = 0; i < full.slots().size(); ++i) {
        const model::LoraSlot& s = full.slots()[i];
        const bool in_shared = s.module.find(".shared_expert.") != std::string::npos;
        if (s.proj == static_cast<Proj>(p) && in_shared == shared) slots.push_back(static_cast<std::int64_t>(i));
      }
      if (slots.empty()) continue;
      for (const char which : {'A', 'B'}) out.push_back({static_cast<Proj>(p), which, shared, slots});
    }
  return out;
}

// (rows, cols) of one layer's matrix and where layer l's sits in the full layout.
std::int64_t matrix_rows(const model::LoraSlot& s, char which, int r) { return which == 'A' ? r : s.out; }
std::int64_t matrix_cols(const model::LoraSlot& s, char which, int r) { return which == 'A' ? s.in : r; }
std::int64_t matrix_offset(const model::LoraSlot& s, char which) { return which == 'A' ? s.a_offset : s.b_offset; }

// This rank's blocks, found by (slot of the full layout, A/B): lora_tp_blocks lists A then
// B of every slot of the local layout, which under ep lacks the other ranks' experts.
class BlockIndex {
 public:
  explicit BlockIndex(const Shards& s) : blocks_(model::lora_tp_blocks(*s.spec, s.shard, *s.full, *s.local)) {
    at_.assign(2 * s.full->slots().size(), -1);
    for (std::size_t i = 0; i < blocks_.size(); ++i) {
      const auto slot = static_cast<std::size_t>(blocks_[i].slot - s.full->slots().data());
      at_[2 * slot + (blocks_[i].which == 'B')] = static_cast<std::int64_t>(i);
    }
  }
  bool held(std::int64_t slot) const { return at_[static_cast<std::size_t>(2 * slot)] >= 0; }
  const LoraBlock& at(std::int64_t slot, char which) const {
    const std::int64_t i = at_[static_cast<std::size_t>(2 * slot + (which == 'B'))];
    ANVIL_CHECK(i >= 0 && blocks_[static_cast<std::size_t>(i)].which == which, "no TP block for adapter slot ", slot);
    return blocks_[static_cast<std::size_t>(i)];
  }

 private:
  std::vector<LoraBlock> blocks_;
  std::vector<std::int64_t> at_;  // (2 · full slots) index into blocks_, -1: not this rank's
};

// One stack's slab shape (rows, cols) and this rank's block of it, the same in every slab
// (`block` floats). When the layout puts the slabs one after the other, each the same size
// (a dense model: one per layer), slab l's block sits at first->local_offset + l * stride
// and the file's hyperslab maps onto the rank's buffer itself (io::H5Store reads and writes
// it in place); otherwise (experts, or dense and sparse layers mixed) the blocks are staged.
// Under ep a routed expert's stack holds, per layer, E slabs of which this rank has a run of
// E / ep: `held` slabs in runs of `run` every `period` (io::StackBlock), from `held0`;
// `subset` marks such a stack (its slab numbers and the rank's block numbers then differ).
struct StackPlan {
  Stack stack;
  std::int64_t layers = 0, rows = 0, cols = 0, block = 0, stride = 0;
  const LoraBlock* first = nullptr;  // the first held slab's
  bool even = true;
  std::int64_t sum_first = 0;  // where the stack's slabs start among all stacks' checksums
  std::int64_t held0 = 0, held = 0, run = 0, period = 0;
  bool subset = false;
};
const LoraBlock& slab_block(const BlockIndex& blocks, const StackPlan& p, std::int64_t l) {
  return blocks.at(p.stack.slots[static_cast<std::size_t>(l)], p.stack.which);
}
// Slab of the file that the rank's i-th held slab is.
std::int64_t held_slab(const StackPlan& p, std::int64_t i) {
  return p.subset ? p.held0 + (i / p.run) * p.period + i % p.run : i;
}
StackPlan stack_plan(const LoraLayout& full, const BlockIndex& blocks, const Stack& st) {
  const model::LoraSlot& slot = full.slots()[static_cast<std::size_t>(st.slots.front())];
  const int r = full.spec().rank;
  StackPlan p{st, st.slabs(), matrix_rows(slot, st.which, r), matrix_cols(slot, st.which, r)};
  std::vector<std::int64_t> held;
  for (std::int64_t l = 0; l < p.layers; ++l)
    if (blocks.held(st.slots[static_cast<std::size_t>(l)])) held.push_back(l);
  ANVIL_CHECK(!held.empty(), "no slab of a checkpoint stack is this rank's");
  p.held = static_cast<std::int64_t>(held.size());
  p.subset = p.held < p.layers;
  if (p.subset) {  // runs of consecutive slabs, evenly spaced (the ep block of every layer)
    p.held0 = held.front();
    while (p.run < p.held && held[static_cast<std::size_t>(p.run)] == p.held0 + p.run) ++p.run;
    p.period = p.run < p.held ? held[static_cast<std::size_t>(p.run)] - p.held0 : p.layers;
    ANVIL_CHECK(p.held % p.run == 0, "an ep rank's expert slabs are not in equal runs");
    for (std::int64_t i = 0; i < p.held; ++i)
      ANVIL_CHECK(held[static_cast<std::size_t>(i)] == held_slab(p, i), "an ep rank's expert slabs are not evenly spaced");
  }
  p.first = &slab_block(blocks, p, held_slab(p, 0));
  p.block = p.first->nrows * p.first->ncols;
  p.stride = p.held > 1 ? slab_block(blocks, p, held_slab(p, 1)).local_offset - p.first->local_offset : p.block;
  for (std::int64_t i = 0; i < p.held; ++i)
    p.even = p.even && slab_block(blocks, p, held_slab(p, i)).local_offset == p.first->local_offset + i * p.stride;
  return p;
}
std::vector<StackPlan> stack_plans(const Shards& shards, const BlockIndex& blocks) {
  std::vector<StackPlan> plans;
  std::int64_t sums = 0;
  for (const Stack& st : stacks(*shards.full)) {
    plans.push_back(stack_plan(*shards.full, blocks, st));
    plans.back().sum_first = sums;
    sums += plans.back().layers;
  }
  return plans;
}
io::MatrixBlock file_block(const StackPlan& p) {
  return io::MatrixBlock{p.first->row0, p.first->nrows, p.first->col0, p.first->ncols};
}
// The slabs [first, first + count) of a stack of n that TP rank t of `size` writes when
// every rank holds them whole (n split as evenly as it goes, rank 0 first; none when n <
// size): the ranks share the writing of a replicated stack, each one contiguous range.
struct LayerRange {
  std::int64_t first = 0, count = 0;
};
LayerRange owned_layers(std::int64_t n, int t, int size) {
  const std::int64_t first = n * t / size, end = n * (t + 1) / size;
  return {first, end - first};
}
// This rank's block is each slab whole (tp 1, or an adapter the TP ranks replicate).
bool replicated(const StackPlan& p) { return p.first->nrows == p.rows && p.first->ncols == p.cols; }

// A layer's checksum share, kept as two 32-bit halves so that adding the shares of the TP
// ranks in i64 (what Comm reduces) is exact; halves_total adds them over `tp` and puts
// each layer's sum back together (mod 2^64, as io::slab_sum adds).
void add_halves(std::vector<std::int64_t>& halves, std::int64_t layer, std::uint64_t sum) {
  halves[static_cast<std::size_t>(2 * layer)] += static_cast<std::int64_t>(sum & 0xffffffffu);
  halves[static_cast<std::size_t>(2 * layer + 1)] += static_cast<std::int64_t>(sum >> 32);
}
std::vector<std::uint64_t> halves_total(comm::Comm& tp, comm::Comm& ep, std::vector<std::int64_t> halves) {
  tp.allreduce(halves.data(), static_cast<std::int64_t>(halves.size()), DType::dtype_i64, comm::ReduceOp::reduce_sum);
  // Under ep each expert's slab is summed on the one ep rank holding it (the rest on ep rank 0).
  ep.allreduce(halves.data(), static_cast<std::int64_t>(halves.size()), DType::dtype_i64, comm::ReduceOp::reduce_sum);
  std::vector<std::uint64_t> sums(halves.size() / 2);
  for (std::size_t l = 0; l < sums.size(); ++l)
    sums[l] = static_cast<std::uint64_t>(halves[2 * l]) + (static_cast<std::uint64_t>(halves[2 * l + 1]) << 32);
  return sums;
}

// Whether TP rank tp_rank writes slab l of a stack: for a replicated stack, when l is in
// its layer range; else when its block is the writer's.
bool writes_slab(const StackPlan& p, const LoraBlock& b, std::int64_t l, int tp_rank, int tp_size) {
  if (!replicated(p)) return b.writer;
  if (p.subset) return tp_rank == 0;  // an ep rank's runs of expert slabs: TP rank 0 writes them all
  const LayerRange own = owned_layers(p.layers, tp_rank, tp_size);
  return l >= own.first && l < own.first + own.count;
}

// Whether this rank's share of slab l's checksum counts its block b: the blocks it writes
// (a block several ranks hold counts once, and what is summed is what is written, even
// should the copies differ); a stack every ep rank holds whole counts on ep rank 0 only
// (halves_total adds over ep). The writer and the reader both sum by this rule.
bool counts_in_share(const StackPlan& p, const LoraBlock& b, std::int64_t l, int tp_rank, int tp_size, int ep_rank) {
  return (p.subset || ep_rank == 0) && writes_slab(p, b, l, tp_rank, tp_size);
}

// This rank's share of each layer's checksum of one stack, from its buffer `local`. Touches
// no MPI or HDF5: it runs on a thread beside the one that writes the file.
std::vector<std::int64_t> checksum_share(const BlockIndex& blocks, const StackPlan& p, const float* local,
                                         int tp_rank, int tp_size, int ep_rank) {
  std::vector<std::int64_t> halves(static_cast<std::size_t>(2 * p.layers), 0);
  for (std::int64_t l = 0; l < p.layers; ++l) {
    if (!blocks.held(p.stack.slots[static_cast<std::size_t>(l)])) continue;
    const LoraBlock& b = slab_block(blocks, p, l);
    if (counts_in_share(p, b, l, tp_rank, tp_size, ep_rank))
      add_halves(halves, l, io::slab_sum(local + b.local_offset, b.nrows, b.ncols, b.row0, b.col0, p.cols));
  }
  return halves;
}

// The dataset of group g that holds stack st, and its shape.
io::H5Store::StackShape stack_shape(Group g, const LoraLayout& full, const Stack& st) {
  const model::LoraSlot& first = full.slots()[static_cast<std::size_t>(st.slots.front())];
  const int r = full.spec().rank;
  return {stack_name(g, st.proj, st.which, st.shared_expert), st.slabs(), matrix_rows(first, st.which, r),
          matrix_cols(first, st.which, r)};
}

// Reads every stack of group g whole, each slab checked, and hands each slab's matrix
// (rows, cols) to take(stack, slab, matrix, rows, cols).
template <class Take>
void read_stacks(const io::H5Store& h5, Group g, const LoraLayout& full, Take&& take) {
  std::vector<float> whole;
  for (const Stack& st : stacks(full)) {
    const io::H5Store::StackShape s = stack_shape(g, full, st);
    whole.resize(static_cast<std::size_t>(s.n * s.rows * s.cols));
    h5.read_slabs_checked(s.name, s.n, s.rows, s.cols, whole.data());
    for (std::int64_t l = 0; l < s.n; ++l) take(st, l, whole.data() + l * s.rows * s.cols, s.rows, s.cols);
  }
}

}  // namespace

void write_meta_state(io::H5Store& h5, std::int64_t format, const Meta& meta, const State& state) {
  h5.write_i64(kFormatName, format);
  h5.write_text(kMetaConfig, meta.config_yaml);
  h5.write_text(kMetaModelConfig, meta.model_config_json);
  h5.write_text(kMetaBasePath, meta.base_model_path);
  h5.write_text(kMetaBaseHash, meta.base_model_hash);
  h5.write_text(kMetaDataKey, meta.data_key);
  h5.write_text(kMetaLora, lora_spec_to_json(meta.lora));
  State s = state;
  const auto fields = state_fields(s);
  for (std::size_t i = 0; i < fields.size(); ++i) h5.write_i64(kStateNames[i], *fields[i]);
}

void checkpoint_write(const std::string& path, const comm::ProcessGrid& grid, const Meta& meta,
                      const State& state, const Shards& shards, const GroupBuffers& buffers) {
  io::H5Store h5 = io::H5Store::create(path, comm::mpi_handle(grid.world()));
  write_meta_state(h5, kFormat, meta, state);
  const BlockIndex blocks(shards);
  const std::vector<StackPlan> plans = stack_plans(shards, blocks);
  // Stack k of the file is plans[k % n] of group k / n.
  const std::size_t n = plans.size(), total = n * kGroupCount;
  const auto local = [&](std::size_t k) { return static_cast<const float*>(buffers[k / n]); };
  const auto name = [&](std::size_t k) {
    return stack_name(static_cast<Group>(k / n), plans[k % n].stack.proj, plans[k % n].stack.which,
                      plans[k % n].stack.shared_expert);
  };
  // A second thread sums the rank's blocks of every stack while this one writes them; the
  // TP group adds the sums up once at the end (no rank waits for another between writes).
  std::future<std::vector<std::int64_t>> shares = std::async(std::launch::async, [&] {
    std::vector<std::int64_t> all;
    for (std::size_t k = 0; k < total; ++k) {
      const std::vector<std::int64_t> one =
          checksum_share(blocks, plans[k % n], local(k), grid.tp_rank(), grid.tp_size(), shards.shard.ep_rank);
      all.insert(all.end(), one.begin(), one.end());
    }
    return all;
  });
  // The disk starts on each stack as soon as it is written, not at the final sync.
  io::Writeback writeback(path);
  // A replicated stack: each TP rank writes a contiguous range of whole layers from its own
  // copy. A split one: each rank its block of every layer (its writer's, where TP ranks
  // hold the same rows). Only replica 0 writes: of the dense parts the first rank of dp,
  // of the routed experts the first of edp (under ep every ep rank writes its experts).
  std::vector<float> staged;
  for (std::size_t k = 0; k < total; ++k) {
    const StackPlan& p = plans[k % n];
    const bool replica0 = model::proj_is_expert(p.stack.proj) ? grid.edp_rank() == 0 : grid.dp_rank() == 0;
    std::optional<io::StackBlock> mine;
    LayerRange range{0, p.layers};
    if (p.subset) {  // the runs of this ep rank's experts, staged in slab order
      if (replica0 && (replicated(p) ? grid.tp_rank() == 0 : p.first->writer))
        mine = io::StackBlock{p.held0, p.held, file_block(p), p.run, p.period};
      staged.resize(static_cast<std::size_t>(p.held * p.block));
      for (std::int64_t i = 0; i < p.held; ++i)
        std::copy_n(local(k) + slab_block(blocks, p, held_slab(p, i)).local_offset, p.block, staged.data() + i * p.block);
      h5.write_slabs(name(k), p.layers, p.rows, p.cols, mine, staged.data(), p.block);
      writeback.start();
      continue;
    }
    if (replicated(p)) {
      range = owned_layers(p.layers, grid.tp_rank(), grid.tp_size());
      if (replica0 && range.count > 0) mine = io::StackBlock{range.first, range.count, file_block(p)};
    } else if (replica0 && p.first->writer) {
      mine = io::StackBlock{0, p.layers, file_block(p)};
    }
    if (p.even || !mine) {
      h5.write_slabs(name(k), p.layers, p.rows, p.cols, mine, local(k) + p.first->local_offset + range.first * p.stride,
                     p.stride);
    } else {
      staged.resize(static_cast<std::size_t>(range.count * p.block));
      for (std::int64_t l = 0; l < range.count; ++l)
        std::copy_n(local(k) + slab_block(blocks, p, range.first + l).local_offset, p.block,
                    staged.data() + l * p.block);
      h5.write_slabs(name(k), p.layers, p.rows, p.cols, mine, staged.data(), p.block);
    }
    writeback.start();
  }
  const std::vector<std::uint64_t> sums = halves_total(grid.tp(), grid.ep(), shares.get());
  const std::int64_t per_group = plans.back().sum_first + plans.back().layers;
  for (std::size_t k = 0; k < total; ++k) {
    const StackPlan& p = plans[k % n];
    const auto first = sums.begin() + static_cast<std::ptrdiff_t>(static_cast<std::int64_t>(k / n) * per_group + p.sum_first);
    h5.seal_slabs(name(k), {first, first + p.layers});
  }
  h5.close();
}

CheckpointReader CheckpointReader::open(const std::string& path, const comm::Comm& comm) {
  io::H5Store h5 = io::H5Store::open(path, comm::mpi_handle(comm));
  const std::int64_t format = h5.read_i64(kFormatName);
  ANVIL_CHECK_INPUT(format == kFormat || format == kFormatV1, path, ": anvil checkpoint format ", format,
                    " (dataset ", kFormatName, "), this anvil reads ", kFormatV1, " and ", kFormat);
  return CheckpointReader(std::move(h5), format);
}

Meta CheckpointReader::meta() const {
  Meta m;
  m.config_yaml = h5_.read_text(kMetaConfig);
  m.model_config_json = h5_.read_text(kMetaModelConfig);
  m.base_model_path = h5_.read_text(kMetaBasePath);
  m.base_model_hash = h5_.read_text(kMetaBaseHash);
  // Format 1 files written before the token cache existed have no data key.
  if (format_ != kFormatV1 || h5_.exists(kMetaDataKey)) m.data_key = h5_.read_text(kMetaDataKey);
  m.lora = lora_spec_from_json(h5_.read_text(kMetaLora), path() + ": " + kMetaLora);
  return m;
}

State CheckpointReader::state() const {
  State s;
  const auto fields = state_fields(s);
  for (std::size_t i = 0; i < fields.size(); ++i) *fields[i] = h5_.read_i64(kStateNames[i]);
  return s;
}

void CheckpointReader::read_group(Group g, const Shards& shards, comm::Comm& tp, comm::Comm& ep, float* local) const {
  if (format_ == kFormatV1) {
    ANVIL_CHECK_INPUT(shards.shard.ep_size == 1, path(), ": a format-1 checkpoint resumes at parallel.ep 1 only");
    return read_group_v1(h5_, g, shards, local);
  }
  const BlockIndex blocks(shards);
  const std::vector<StackPlan> plans = stack_plans(shards, blocks);
  // Each held block is copied to its place and, where this rank's share of the layer's
  // checksum counts it, summed on the way; the TP group checks the sums in one all-reduce
  // once every stack is in.
  std::vector<std::uint64_t> stored;
  std::vector<std::int64_t> halves(static_cast<std::size_t>(2 * (plans.back().sum_first + plans.back().layers)), 0);
  for (const StackPlan& p : plans) {
    std::vector<io::SlabRead> pieces;
    for (std::int64_t i = 0; i < p.held; ++i) {
      const std::int64_t l = held_slab(p, i);
      const LoraBlock& b = slab_block(blocks, p, l);
      pieces.push_back({l, io::MatrixBlock{b.row0, b.nrows, b.col0, b.ncols}, local + b.local_offset,
                        counts_in_share(p, b, l, tp.rank(), tp.size(), ep.rank())});
    }
    const io::StackSums s =
        h5_.read_slab_pieces(stack_name(g, p.stack.proj, p.stack.which, p.stack.shared_expert), p.layers, p.rows, p.cols,
                             pieces);
    stored.insert(stored.end(), s.stored.begin(), s.stored.end());
    for (std::int64_t l = 0; l < p.layers; ++l) add_halves(halves, p.sum_first + l, s.read[static_cast<std::size_t>(l)]);
  }
  const std::vector<std::uint64_t> sums = halves_total(tp, ep, std::move(halves));
  for (const StackPlan& p : plans)
    for (std::int64_t l = 0; l < p.layers; ++l) {
      const auto i = static_cast<std::size_t>(p.sum_first + l);
      if (sums[i] != stored[i])
        throw_user_error(path(), ": dataset '", stack_name(g, p.stack.proj, p.stack.which, p.stack.shared_expert),
                         "' fails its checksum at slab ", l, " of ", p.layers, " (the file is damaged)");
    }
}

void CheckpointReader::open_stacks(const LoraLayout& full) const {
  if (format_ == kFormatV1) return;
  std::vector<io::H5Store::StackShape> shapes;
  for (int g = 0; g < kGroupCount; ++g)
    for (const Stack& st : stacks(full)) shapes.push_back(stack_shape(static_cast<Group>(g), full, st));
  h5_.open_stacks(shapes);
}

void CheckpointReader::read_ahead() const { h5_.read_ahead(); }

void CheckpointReader::read_group_full(Group g, const LoraLayout& full, float* params) const {
  if (format_ == kFormatV1) return read_group_full_v1(h5_, g, full, params);
  const auto take = [&](const Stack& st, std::int64_t l, const float* slab, std::int64_t rows, std::int64_t cols) {
    const model::LoraSlot& slot = full.slots()[static_cast<std::size_t>(st.slots[static_cast<std::size_t>(l)])];
    std::copy_n(slab, rows * cols, params + matrix_offset(slot, st.which));
  };
  read_stacks(h5_, g, full, take);
}

std::vector<std::string> CheckpointReader::verify() const {
  std::vector<std::string> bad;
  const std::vector<std::string> present = h5_.list();
  for (const std::string& name : present)
    if (std::string problem = h5_.verify(name); !problem.empty()) bad.push_back(std::move(problem));

  // What must be there. The groups' names come from meta/lora and meta/model_config; when
  // those are damaged they are reported above and the groups cannot be listed.
  std::vector<std::string> expected = {kFormatName, kMetaConfig, kMetaModelConfig, kMetaBasePath, kMetaBaseHash,
                                       kMetaLora};
  if (format_ != kFormatV1) expected.push_back(kMetaDataKey);
  expected.insert(expected.end(), std::begin(kStateNames), std::end(kStateNames));
  try {
    const model::LoraSpec lora = lora_spec_from_json(h5_.read_text(kMetaLora), kMetaLora);
    const model::ModelSpec spec = model::model_spec_from_json(h5_.read_text(kMetaModelConfig), kMetaModelConfig);
    const LoraLayout full(spec, lora);
    for (int g = 0; g < kGroupCount; ++g) {
      if (format_ == kFormatV1) {
        for (const auto& s : full.slots())
          for (const char which : {'A', 'B'}) expected.push_back(matrix_name_v1(static_cast<Group>(g), s, which));
      } else {
        for (const Stack& st : stacks(full))
          expected.push_back(stack_name(static_cast<Group>(g), st.proj, st.which, st.shared_expert));
      }
    }
  } catch (const Error&) {
  }
  for (const std::string& name : expected)
    if (!std::binary_search(present.begin(), present.end(), name))
      bad.push_back(str_cat(path(), ": dataset '", name, "' is missing"));
  return bad;
}

CheckpointAdapter checkpoint_read_adapter(const std::string& path) {
  const auto self = comm::self_comm("self");
  const CheckpointReader reader = CheckpointReader::open(path, *self);
  CheckpointAdapter c;
  c.format = reader.format();
  c.step = reader.state().step;
  c.meta = reader.meta();
  c.spec = model::model_spec_from_json(c.meta.model_config_json, path + ": " + kMetaModelConfig);
  const LoraLayout layout(c.spec, c.meta.lora);
  c.params.assign(static_cast<std::size_t>(layout.size()), 0.0f);
  reader.read_group_full(Group::group_adapter, layout, c.params.data());
  return c;
}

}  // namespace anvil::checkpoint
