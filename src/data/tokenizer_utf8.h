// UTF-8 helpers for the tokenizer: validation, lossy decoding, code point stepping and
// Unicode White_Space. The normalizers are in tokenizer_normalize.h.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace anvil::data {

// Byte offset of the first byte that does not start a well-formed UTF-8 sequence, or
// std::string_view::npos when the whole text is well formed.
std::size_t utf8_find_invalid(std::string_view text);

bool utf8_is_ascii(std::string_view text);

// Appends `bytes` to `out`, replacing each maximal ill-formed subsequence with U+FFFD, the
// way Hugging Face's decoders (Rust's String::from_utf8_lossy) do, so decode matches them.
void utf8_append_lossy(std::string_view bytes, std::string& out);

// Decodes the code point starting at text[i] (text must be well formed) and moves i past it.
char32_t utf8_next(std::string_view text, std::size_t& i);

void utf8_append(char32_t code_point, std::string& out);

// Unicode White_Space, the meaning of `\s` in the regex engines Hugging Face uses.
bool unicode_is_white_space(char32_t code_point);

}  // namespace anvil::data
