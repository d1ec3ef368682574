// BPE: merges a pre-token's symbols into vocabulary ids.
//
// Byte-level BPE (GPT-2, Llama-3, Qwen2) starts from bytes: Hugging Face byte-level vocabularies spell every byte as a printable character (GPT-2's
// bytes_to_unicode: 'Ġ' is the space byte) and merge those characters. The mapping is a
// bijection, so this model translates the vocabulary back to raw bytes once at load time
// and then merges raw bytes: the hot path never builds the character form of the text.
// SentencePiece-style BPE (Llama-2, Mistral) starts from characters, with <0xNN> byte
// tokens for characters the vocabulary lacks (byte_fallback). The merge loop is shared.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace anvil::data {

// GPT-2's byte <-> character table.
char32_t byte_level_char(std::uint8_t byte);
// The byte a byte-level character stands for, or -1 for a character outside the alphabet.
int byte_level_byte(char32_t ch);
// Raw bytes of a byte-level token; nullopt when it has a character outside the alphabet
// (such a token can never come out of byte-level BPE).
std::optional<std::string> byte_level_to_bytes(std::string_view token);
std::string bytes_to_byte_level(std::string_view bytes);

// (left id, right id) -> (rank, merged id), open addressing: this lookup is the inner loop
// of every BPE merge.
class MergeTable {
 public:
  struct Entry {
    std::uint64_t key = empty_key;
    std::int32_t rank = 0;
    std::int32_t merged = 0;
  };
  void build(std::size_t expected_size);
  // A pair given twice keeps the later rank, as HF's map does.
  void insert(std::int32_t left, std::int32_t right, std::int32_t rank, std::int32_t merged);
  const Entry* find(std::int32_t left, std::int32_t right) const;
  std::size_t size() const { return size_; }

 private:
  static constexpr std::uint64_t empty_key = ~std::uint64_t{0};
  static std::uint64_t key_of(std::int32_t l, std::int32_t r) {
    return (std::uint64_t(std::uint32_t(l)) << 32) | std::uint32_t(r);
  }
  std::size_t slot_of(std::uint64_t key) const {
    return static_cast<std::size_t>((key * 0x9E3779B97F4A7C15ULL) >> shift_);
  }
  std::vector<Entry> slots_;
  int shift_ = 64;
  std::size_t size_ = 0;
};

// The symbols BPE starts a piece from.
struct BpeAlphabet {
  // false: byte-level BPE, one symbol per byte (byte_ids). true: SentencePiece-style BPE,
  // one symbol per character (char_ids); a character without a token becomes its bytes'
  // <0xNN> tokens (byte_ids, -1 where absent) when byte_fallback is on, else unk.
  bool by_char = false;
  bool byte_fallback = false;
  std::array<std::int32_t, 256> byte_ids{};
  std::unordered_map<char32_t, std::int32_t> char_ids;
};

struct BpeOptions {
  bool ignore_merges = false;          // a piece that is a whole vocabulary token is kept
  std::optional<std::int32_t> unk_id;  // for bytes without a token; dropped when absent
  bool fuse_unk = false;
  std::size_t cache_capacity = 1 << 16;  // pieces remembered; 0 disables the cache
};

class BpeModel {
 public:
  // raw_vocab: every token as the bytes of a piece it matches (for ignore_merges); merges
  // built by the loader; token_bytes[id]: how many bytes of a piece the token stands for
  // (-1: no such token).
  BpeModel(BpeAlphabet alphabet,
           std::vector<std::pair<std::string, std::int32_t>> raw_vocab, MergeTable merges,
           std::vector<std::int32_t> token_bytes, BpeOptions options);
  BpeModel(BpeModel&&) noexcept;
  BpeModel& operator=(BpeModel&&) noexcept;
  ~BpeModel();

  // Appends the ids of one pre-token (raw bytes, non-empty). Thread safe.
  void encode_piece(std::string_view piece, std::vector<std::int32_t>& out) const;
  // The same, and for each id appended the byte of `piece` where its text begins.
  void encode_piece_offsets(std::string_view piece, std::vector<std::int32_t>& out,
                            std::vector<std::uint32_t>& starts) const;

 private:
  // starts: null, or where to append each id's first byte in the piece.
  template <bool with_starts>
  void merge(std::string_view piece, std::vector<std::int32_t>& out,
             std::vector<std::uint32_t>* starts) const;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace anvil::data
