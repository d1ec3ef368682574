#include "data/bpe_model.h"

#include <algorithm>
#include <bit>
#include <functional>
#include <mutex>
#include <unordered_map>

#include "core/error.h"
#include "data/tokenizer_utf8.h"

namespace anvil::data {
namespace {

// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the others are
// given the characters U+0100, U+0101, ... in byte order.
struct ByteLevelTable {
  std::array<char32_t, 256> char_of{};
  std::array<std::int16_t, 512> byte_of{};  // every alphabet character is below U+0200

  ByteLevelTable() {
    byte_of.fill(-1);
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      char_of[b] = printable ? char32_t(b) : next++;
      byte_of[char_of[b]] = static_cast<std::int16_t>(b);
    }
  }
};

const ByteLevelTable& byte_level_table() {
  static const ByteLevelTable table;
  return table;
}

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

using RawVocab = std::unordered_map<std::string, std::int32_t, StringHash, std::equal_to<>>;

// Pre-token -> ids, bounded, shared by all threads. Sharded so that threads tokenizing
// different documents rarely wait on the same lock; a full shard is emptied (cheap, and
// it follows a drifting distribution of words better than refusing new entries).
class PieceCache {
 public:
  static constexpr std::size_t shard_count = 16;
  static constexpr std::size_t max_piece_bytes = 256;

  explicit PieceCache(std::size_t capacity) : shard_capacity_(capacity / shard_count) {}

  bool enabled() const { return shard_capacity_ > 0; }

  bool lookup(std::string_view piece, std::size_t hash, std::vector<std::int32_t>& out) {
    Shard& shard = shards_[hash % shard_count];
    std::lock_guard<std::mutex> lock(shard.mutex);
    const auto it = shard.map.find(piece);
    if (it == shard.map.end()) return false;
    out.insert(out.end(), it->second.begin(), it->second.end());
    return true;
  }

  void store(std::string_view piece, std::size_t hash, const std::int32_t* ids, std::size_t n) {
    if (piece.size() > max_piece_bytes) return;
    Shard& shard = shards_[hash % shard_count];
    std::lock_guard<std::mutex> lock(shard.mutex);
    if (shard.map.size() >= shard_capacity_) shard.map.clear();
    shard.map.try_emplace(std::string(piece), ids, ids + n);
  }

 private:
  struct Shard {
    std::mutex mutex;
    std::unordered_map<std::string, std::vector<std::int32_t>, StringHash, std::equal_to<>> map;
  };
  std::size_t shard_capacity_;
  std::array<Shard, shard_count> shards_;
};

// Per-thread buffers of the merge loop: a doubly linked list of symbols over arrays and a
// heap of candidate merges keyed (rank << 32 | position), smallest first.
struct MergeScratch {
  std::vector<std::int32_t> id;
  std::vector<std::uint32_t> start;  // first byte of each symbol (offsets only)
  std::vector<std::int32_t> prev;
  std::vector<std::int32_t> next;
  std::vector<std::uint64_t> heap;
};

MergeScratch& merge_scratch() {
  thread_local MergeScratch scratch;
  return scratch;
}

// The symbols a piece starts from, and (with_starts) the byte each begins at. A symbol
// without a token becomes unk (consecutive ones fused into one when fuse_unk) or, with
// no unk token, is dropped: HF's merge_word does the same.
template <bool with_starts>
void initial_symbols(const BpeAlphabet& alphabet, const BpeOptions& options,
                     std::string_view piece, std::vector<std::int32_t>& ids,
                     std::vector<std::uint32_t>& starts) {
  bool previous_unk = false;
  auto push = [&](std::int32_t id, std::size_t at) {
    ids.push_back(id);
    if constexpr (with_starts) starts.push_back(static_cast<std::uint32_t>(at));
    previous_unk = false;
  };
  auto push_unk = [&](std::size_t at) {
    if (!options.unk_id) return;
    if (!(previous_unk && options.fuse_unk)) push(*options.unk_id, at);
    previous_unk = true;
  };
  if (!alphabet.by_char) {
    for (std::size_t b = 0; b < piece.size(); ++b) {
      const std::int32_t id = alphabet.byte_ids[static_cast<std::uint8_t>(piece[b])];
      if (id >= 0) {
        push(id, b);
      } else {
        push_unk(b);
      }
    }
    return;
  }
  for (std::size_t i = 0; i < piece.size();) {
    const std::size_t begin = i;
    const char32_t ch = utf8_next(piece, i);
    const auto it = alphabet.char_ids.find(ch);
    if (it != alphabet.char_ids.end()) {
      push(it->second, begin);
      continue;
    }
    bool all_bytes = alphabet.byte_fallback;
    for (std::size_t b = begin; all_bytes && b < i; ++b) {
      all_bytes = alphabet.byte_ids[static_cast<std::uint8_t>(piece[b])] >= 0;
    }
    if (!all_bytes) {
      push_unk(begin);
      continue;
    }
    for (std::size_t b = begin; b < i; ++b) {
      push(alphabet.byte_ids[static_cast<std::uint8_t>(piece[b])], b);
    }
  }
}

}  // namespace

char32_t byte_level_char(std::uint8_t byte) { return byte_level_table().char_of[byte]; }

int byte_level_byte(char32_t ch) { return ch < 512 ? byte_level_table().byte_of[ch] : -1; }

std::optional<std::string> byte_level_to_bytes(std::string_view token) {
  std::string bytes;
  bytes.reserve(token.size());
  std::size_t i = 0;
  while (i < token.size()) {
    const int b = byte_level_byte(utf8_next(token, i));
    if (b < 0) return std::nullopt;
    bytes.push_back(static_cast<char>(b));
  }
  return bytes;
}

std::string bytes_to_byte_level(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const char c : bytes) utf8_append(byte_level_char(static_cast<std::uint8_t>(c)), out);
  return out;
}

void MergeTable::build(std::size_t expected_size) {
  const std::size_t capacity = std::bit_ceil(std::max<std::size_t>(16, expected_size * 2));
  slots_.assign(capacity, Entry{});
  shift_ = 64 - std::countr_zero(capacity);
  size_ = 0;
}

void MergeTable::insert(std::int32_t left, std::int32_t right, std::int32_t rank,
                        std::int32_t merged) {
  ANVIL_CHECK(size_ * 2 < slots_.size(), "merge table built too small");
  const std::uint64_t key = key_of(left, right);
  const std::size_t mask = slots_.size() - 1;
  for (std::size_t s = slot_of(key);; s = (s + 1) & mask) {
    Entry& e = slots_[s];
    if (e.key == empty_key) {
      e = {key, rank, merged};
      ++size_;
      return;
    }
    if (e.key == key) {
      e.rank = rank;
      e.merged = merged;
      return;
    }
  }
}

const MergeTable::Entry* MergeTable::find(std::int32_t left, std::int32_t right) const {
  if (slots_.empty()) return nullptr;
  const std::uint64_t key = key_of(left, right);
  const std::size_t mask = slots_.size() - 1;
  for (std::size_t s = slot_of(key);; s = (s + 1) & mask) {
    const Entry& e = slots_[s];
    if (e.key == key) return &e;
    if (e.key == empty_key) return nullptr;
  }
}

struct BpeModel::Impl {
  BpeAlphabet alphabet;
  RawVocab raw_vocab;
  MergeTable merges;
  std::vector<std::int32_t> token_bytes;
  BpeOptions options;
  std::unique_ptr<PieceCache> cache;
};

BpeModel::BpeModel(BpeAlphabet alphabet,
                   std::vector<std::pair<std::string, std::int32_t>> raw_vocab, MergeTable merges,
                   std::vector<std::int32_t> token_bytes, BpeOptions options)
    : impl_(std::make_unique<Impl>()) {
  impl_->alphabet = std::move(alphabet);
  if (options.ignore_merges) {
    impl_->raw_vocab.reserve(raw_vocab.size());
    for (auto& [bytes, id] : raw_vocab) impl_->raw_vocab.emplace(std::move(bytes), id);
  }
  impl_->merges = std::move(merges);
  impl_->token_bytes = std::move(token_bytes);
  impl_->options = options;
  impl_->cache = std::make_unique<PieceCache>(options.cache_capacity);
}

BpeModel::BpeModel(BpeModel&&) noexcept = default;
BpeModel& BpeModel::operator=(BpeModel&&) noexcept = default;
BpeModel::~BpeModel() = default;

void BpeModel::encode_piece(std::string_view piece, std::vector<std::int32_t>& out) const {
  if (piece.size() == 1 && !impl_->alphabet.by_char) {
    // One byte: no merge can apply.
    const std::int32_t id = impl_->alphabet.byte_ids[static_cast<std::uint8_t>(piece[0])];
    if (id >= 0) {
      out.push_back(id);
    } else if (impl_->options.unk_id) {
      out.push_back(*impl_->options.unk_id);
    }
    return;
  }
  if (impl_->options.ignore_merges) {
    const auto it = impl_->raw_vocab.find(piece);
    if (it != impl_->raw_vocab.end()) {
      out.push_back(it->second);
      return;
    }
  }
  PieceCache& cache = *impl_->cache;
  if (!cache.enabled()) {
    merge<false>(piece, out, nullptr);
    return;
  }
  const std::size_t hash = StringHash{}(piece);
  if (cache.lookup(piece, hash, out)) return;
  const std::size_t first = out.size();
  merge<false>(piece, out, nullptr);
  cache.store(piece, hash, out.data() + first, out.size() - first);
}

void BpeModel::encode_piece_offsets(std::string_view piece, std::vector<std::int32_t>& out,
                                    std::vector<std::uint32_t>& starts) const {
  // The ids (cached), then each one's start from the token lengths. An unk token stands
  // for a varying number of bytes, and bytes without a token may have been dropped, so a
  // piece whose lengths do not add up is merged again, tracking where each symbol began.
  const std::size_t first = out.size();
  const std::size_t first_start = starts.size();
  encode_piece(piece, out);
  std::size_t at = 0;
  for (std::size_t i = first; i < out.size(); ++i) {
    const std::int32_t bytes = impl_->token_bytes[out[i]];
    if (bytes < 0 || (impl_->options.unk_id && out[i] == *impl_->options.unk_id)) {
      at = piece.size() + 1;  // not a known length
      break;
    }
    starts.push_back(static_cast<std::uint32_t>(at));
    at += static_cast<std::size_t>(bytes);
  }
  if (at == piece.size()) return;
  out.resize(first);
  starts.resize(first_start);
  merge<true>(piece, out, &starts);
}

template <bool with_starts>
void BpeModel::merge(std::string_view piece, std::vector<std::int32_t>& out,
                     std::vector<std::uint32_t>* starts) const {
  MergeScratch& s = merge_scratch();
  s.id.clear();
  if constexpr (with_starts) s.start.clear();
  initial_symbols<with_starts>(impl_->alphabet, impl_->options, piece, s.id, s.start);
  const auto n = static_cast<std::int32_t>(s.id.size());
  if (n <= 1) {
    out.insert(out.end(), s.id.begin(), s.id.end());
    if constexpr (with_starts) starts->insert(starts->end(), s.start.begin(), s.start.end());
    return;
  }
  s.prev.resize(n);
  s.next.resize(n);
  s.heap.clear();
  const MergeTable& merges = impl_->merges;
  auto push = [&s](std::int32_t rank, std::int32_t pos) {
    s.heap.push_back((std::uint64_t(std::uint32_t(rank)) << 32) | std::uint32_t(pos));
    std::push_heap(s.heap.begin(), s.heap.end(), std::greater<>{});
  };
  for (std::int32_t i = 0; i < n; ++i) {
    s.prev[i] = i - 1;
    s.next[i] = i + 1 < n ? i + 1 : -1;
    if (i + 1 < n) {
      if (const auto* e = merges.find(s.id[i], s.id[i + 1])) push(e->rank, i);
    }
  }
  // Lowest rank first, leftmost among equal ranks. Entries go stale when a neighbour
  // merges; a stale entry is recognised because the pair now at its position has a
  // different rank (or none), and skipped.
  while (!s.heap.empty()) {
    std::pop_heap(s.heap.begin(), s.heap.end(), std::greater<>{});
    const std::uint64_t top = s.heap.back();
    s.heap.pop_back();
    const auto rank = static_cast<std::int32_t>(top >> 32);
    const auto pos = static_cast<std::int32_t>(top & 0xFFFFFFFFu);
    if (s.id[pos] < 0) continue;
    const std::int32_t right = s.next[pos];
    if (right < 0) continue;
    const auto* e = merges.find(s.id[pos], s.id[right]);
    if (e == nullptr || e->rank != rank) continue;
    s.id[pos] = e->merged;
    s.id[right] = -1;
    s.next[pos] = s.next[right];
    if (s.next[pos] >= 0) s.prev[s.next[pos]] = pos;
    if (s.prev[pos] >= 0) {
      if (const auto* l = merges.find(s.id[s.prev[pos]], s.id[pos])) push(l->rank, s.prev[pos]);
    }
    if (s.next[pos] >= 0) {
      if (const auto* r = merges.find(s.id[pos], s.id[s.next[pos]])) push(r->rank, pos);
    }
  }
  for (std::int32_t i = 0; i >= 0; i = s.next[i]) {
    out.push_back(s.id[i]);
    if constexpr (with_starts) starts->push_back(s.start[i]);
  }
}

}  // namespace anvil::data
