// Added tokens (special tokens such as <|eot_id|>, and user-added words): found in the
// text before pre-tokenization and given their id directly, as Hugging Face does.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace anvil::data {

struct AddedToken {
  std::string content;
  std::int32_t id = -1;
  bool single_word = false;  // only matches when not inside a word
  bool lstrip = false;       // swallows the whitespace on its left
  bool rstrip = false;       // swallows the whitespace on its right
  bool normalized = false;   // matched in normalized text (else in the raw text)
  bool special = false;      // skipped by decode(skip_special = true)
};

// A piece of text: an added token (id >= 0) or text to tokenize (id == -1).
struct AddedSplit {
  std::uint32_t begin = 0;
  std::uint32_t end = 0;
  std::int32_t id = -1;
};

// Finds added tokens leftmost-longest (the Aho-Corasick match kind HF uses) and applies
// their single_word / lstrip / rstrip flags exactly as HF's AddedVocabulary::find_matches.
class AddedTokenMatcher {
 public:
  // `pattern` is what is searched for (the content, or its normalized form).
  void add(std::string_view pattern, const AddedToken& token);
  bool empty() const { return tokens_.empty(); }

  // Cuts `text` (well-formed UTF-8) into splits that cover it in order. Appends to out.
  void split(std::string_view text, std::vector<AddedSplit>& out) const;

 private:
  struct Node {
    std::vector<std::pair<std::uint8_t, std::int32_t>> children;
    std::int32_t token = -1;  // index into tokens_ of a pattern ending here
  };
  // Longest pattern starting at text[pos]: its token index and length, or -1.
  std::int32_t longest_at(std::string_view text, std::size_t pos, std::size_t& length) const;

  std::vector<Node> nodes_{Node{}};
  std::vector<AddedToken> tokens_;
  std::array<bool, 256> first_byte_{};
};

}  // namespace anvil::data
