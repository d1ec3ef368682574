#include "data/pretokenize_regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "core/error.h"

namespace anvil::data {
namespace {

// Unicode White_Space as class items: what \s means in Oniguruma (and in Rust's regex).
constexpr std::string_view space_items = "\\x{09}-\\x{0D}\\x{85}\\p{Z}";
constexpr std::string_view hex_items = "0-9a-fA-F";

// Letters and numbers that Unicode 15.0 to 16.0 added. Debian's PCRE2 (10.42) knows
// Unicode 14; the Oniguruma inside HF `tokenizers` 0.23 knows 16, so \p{L} and \p{N}
// are widened by these ranges. They were found by asking both engines about every code
// point (HF: a Split on \p{L} per character), and the parity corpus holds samples of them.
constexpr std::string_view letter_items_unicode16 =
    "\\x{1C89}-\\x{1C8A}\\x{A7CB}-\\x{A7CD}\\x{A7DA}-\\x{A7DC}\\x{105C0}-\\x{105F3}"
    "\\x{10D4A}-\\x{10D65}\\x{10D6F}-\\x{10D85}\\x{10EC2}-\\x{10EC4}\\x{1123F}-\\x{11240}"
    "\\x{11380}-\\x{11389}\\x{1138B}\\x{1138E}\\x{11390}-\\x{113B5}\\x{113B7}\\x{113D1}"
    "\\x{113D3}\\x{11BC0}-\\x{11BE0}\\x{11F02}\\x{11F04}-\\x{11F10}\\x{11F12}-\\x{11F33}"
    "\\x{1342F}\\x{13441}-\\x{13446}\\x{13460}-\\x{143FA}\\x{16100}-\\x{1611D}"
    "\\x{16D40}-\\x{16D6C}\\x{18CFF}\\x{1B132}\\x{1B155}\\x{1DF25}-\\x{1DF2A}"
    "\\x{1E030}-\\x{1E06D}\\x{1E4D0}-\\x{1E4EB}\\x{1E5D0}-\\x{1E5ED}\\x{1E5F0}\\x{2B739}"
    "\\x{2EBF0}-\\x{2EE5D}\\x{31350}-\\x{323AF}";
constexpr std::string_view number_items_unicode16 =
    "\\x{10D40}-\\x{10D49}\\x{116D0}-\\x{116E3}\\x{11BF0}-\\x{11BF9}\\x{11F50}-\\x{11F59}"
    "\\x{16130}-\\x{16139}\\x{16D70}-\\x{16D79}\\x{1CCF0}-\\x{1CCF9}\\x{1D2C0}-\\x{1D2D3}"
    "\\x{1E4F0}-\\x{1E4F9}\\x{1E5F1}-\\x{1E5FA}";

// The same for the letter and mark subclasses that Llama 4's (o200k) split uses, asked of
// HF `tokenizers` the same way for every code point Unicode 14 leaves unassigned.
constexpr std::string_view upper_items_unicode16 =
    "\\x{1C89}\\x{A7CB}-\\x{A7CC}\\x{A7DA}\\x{A7DC}\\x{10D50}-\\x{10D65}";
constexpr std::string_view lower_items_unicode16 =
    "\\x{1C8A}\\x{A7CD}\\x{A7DB}\\x{10D70}-\\x{10D85}\\x{1DF25}-\\x{1DF2A}";
constexpr std::string_view modifier_items_unicode16 =
    "\\x{10D4E}\\x{10D6F}\\x{16D40}-\\x{16D42}\\x{16D6B}-\\x{16D6C}\\x{1E030}-\\x{1E06D}"
    "\\x{1E4EB}";
constexpr std::string_view other_letter_items_unicode16 =
    "\\x{105C0}-\\x{105F3}\\x{10D4A}-\\x{10D4D}\\x{10D4F}\\x{10EC2}-\\x{10EC4}"
    "\\x{1123F}-\\x{11240}\\x{11380}-\\x{11389}\\x{1138B}\\x{1138E}\\x{11390}-\\x{113B5}"
    "\\x{113B7}\\x{113D1}\\x{113D3}\\x{11BC0}-\\x{11BE0}\\x{11F02}\\x{11F04}-\\x{11F10}"
    "\\x{11F12}-\\x{11F33}\\x{1342F}\\x{13441}-\\x{13446}\\x{13460}-\\x{143FA}"
    "\\x{16100}-\\x{1611D}\\x{16D43}-\\x{16D6A}\\x{18CFF}\\x{1B132}\\x{1B155}"
    "\\x{1E4D0}-\\x{1E4EA}\\x{1E5D0}-\\x{1E5ED}\\x{1E5F0}\\x{2B739}\\x{2EBF0}-\\x{2EE5D}"
    "\\x{31350}-\\x{323AF}";
constexpr std::string_view mark_items_unicode16 =
    "\\x{897}\\x{CF3}\\x{ECE}\\x{10D69}-\\x{10D6D}\\x{10EFC}-\\x{10EFF}\\x{11241}"
    "\\x{113B8}-\\x{113C0}\\x{113C2}\\x{113C5}\\x{113C7}-\\x{113CA}\\x{113CC}-\\x{113D0}"
    "\\x{113D2}\\x{113E1}-\\x{113E2}\\x{11F00}-\\x{11F01}\\x{11F03}\\x{11F34}-\\x{11F3A}"
    "\\x{11F3E}-\\x{11F42}\\x{11F5A}\\x{13440}\\x{13447}-\\x{13455}\\x{1611E}-\\x{1612F}"
    "\\x{1E08F}\\x{1E4EC}-\\x{1E4EF}\\x{1E5EE}-\\x{1E5EF}";

// The class items for \p{X} (or \pX for one letter) widened by the ranges above, when `p`
// at i spells such a property; sets `length` to the length of the spelling.
std::string widened_property(std::string_view p, std::size_t i, std::size_t& length) {
  struct Widened {
    const char* prop;
    std::string_view items;
  };
  static constexpr Widened table[] = {{"L", letter_items_unicode16},      {"N", number_items_unicode16},
                                      {"Lu", upper_items_unicode16},      {"Ll", lower_items_unicode16},
                                      {"Lm", modifier_items_unicode16},   {"Lo", other_letter_items_unicode16},
                                      {"M", mark_items_unicode16}};
  for (const Widened& w : table) {
    const std::string braced = str_cat("\\p{", w.prop, "}");
    const std::string bare = str_cat("\\p", w.prop);
    std::size_t n = 0;
    if (p.substr(i, braced.size()) == braced) {
      n = braced.size();
    } else if (w.prop[1] == '\0' && p.substr(i, bare.size()) == bare) {
      n = bare.size();
    } else {
      continue;
    }
    length = n;
    return str_cat("\\p{", w.prop, "}", w.items);
  }
  return {};
}

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  const int n = pcre2_get_error_message(code, buffer, sizeof(buffer));
  if (n < 0) return str_cat("PCRE2 error ", code);
  return std::string(reinterpret_cast<const char*>(buffer), static_cast<std::size_t>(n));
}

// Per-thread match state. Match data is not tied to one pattern, so every Regex of a
// thread shares it; a larger JIT stack than PCRE2's 32 KiB default keeps long runs of
// whitespace or letters on the JIT path.
struct ThreadMatchState {
  pcre2_match_data* data = nullptr;
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* jit_stack = nullptr;

  ThreadMatchState() {
    data = pcre2_match_data_create(1, nullptr);
    context = pcre2_match_context_create(nullptr);
    jit_stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
    ANVIL_CHECK(data && context && jit_stack, "out of memory creating PCRE2 match state");
    pcre2_jit_stack_assign(context, nullptr, jit_stack);
  }
  ~ThreadMatchState() {
    pcre2_jit_stack_free(jit_stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
  }
  ThreadMatchState(const ThreadMatchState&) = delete;
  ThreadMatchState& operator=(const ThreadMatchState&) = delete;
};

ThreadMatchState& thread_match_state() {
  thread_local ThreadMatchState state;
  return state;
}

std::size_t utf8_char_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xF0) return 4;
  if (lead >= 0xE0) return 3;
  return 2;
}

}  // namespace

struct Regex::Code {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Code() { pcre2_code_free(code); }
};

std::string onig_to_pcre2(std::string_view p) {
  std::string out;
  out.reserve(p.size() + 32);
  int class_depth = 0;
  for (std::size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      std::size_t length = 0;
      const std::string widened = widened_property(p, i, length);
      if (!widened.empty()) {
        out += class_depth > 0 ? widened : str_cat("[", widened, "]");
        i += length - 1;
        continue;
      }
      const char e = p[i + 1];
      ++i;
      const bool in_class = class_depth > 0;
      if (e == 's') {
        out += in_class ? std::string(space_items) : str_cat("[", space_items, "]");
      } else if (e == 'S' && !in_class) {
        out += str_cat("[^", space_items, "]");
      } else if (e == 'h') {
        out += in_class ? std::string(hex_items) : str_cat("[", hex_items, "]");
      } else if (e == 'H' && !in_class) {
        out += str_cat("[^", hex_items, "]");
      } else {
        out += '\\';
        out += e;
      }
      continue;
    }
    if (c == '[') {
      if (class_depth > 0 && i + 1 < p.size() && p[i + 1] == ':') {
        // A POSIX class inside a set, [:alpha:]: copy it whole.
        const std::size_t close = p.find(":]", i + 2);
        if (close != std::string_view::npos) {
          out.append(p.substr(i, close + 2 - i));
          i = close + 1;
          continue;
        }
      }
      ++class_depth;
      out += c;
      // A ']' right after '[' or '[^' is a literal member, not the end of the set.
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];
      continue;
    }
    if (c == ']' && class_depth > 0) --class_depth;
    out += c;
  }
  return out;
}

std::string regex_escape_literal(std::string_view literal) {
  std::string out;
  out.reserve(literal.size() * 2);
  for (const char c : literal) {
    const auto u = static_cast<unsigned char>(c);
    const bool plain =
        u >= 0x80 || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (!plain) out += '\\';
    out += c;
  }
  return out;
}

Regex Regex::compile(std::string_view pattern, const std::string& where) {
  const std::string translated = onig_to_pcre2(pattern);
  pcre2_compile_context* ccontext = pcre2_compile_context_create(nullptr);
  ANVIL_CHECK(ccontext != nullptr, "out of memory creating a PCRE2 compile context");
  pcre2_set_newline(ccontext, PCRE2_NEWLINE_LF);
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  // MULTILINE: in Oniguruma ^ and $ are always line anchors (Ruby semantics).
  pcre2_code* code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                    PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE, &error_code, &error_offset, ccontext);
  pcre2_compile_context_free(ccontext);
  ANVIL_CHECK_INPUT(code != nullptr, where, ": regex '", std::string(pattern),
                    "' is not supported: ", pcre2_message(error_code), " at offset ", error_offset,
                    " of its PCRE2 form '", translated, "'");
  Regex regex;
  regex.code_ = std::make_unique<Code>();
  regex.code_->code = code;
  regex.code_->jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  regex.pattern_ = std::string(pattern);
  return regex;
}

Regex::Regex(Regex&&) noexcept = default;
Regex& Regex::operator=(Regex&&) noexcept = default;
Regex::~Regex() = default;

void Regex::find_all(std::string_view text, std::vector<TextSpan>& out) const {
  ThreadMatchState& state = thread_match_state();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  const std::size_t n = text.size();
  std::size_t pos = 0;
  std::size_t last_end = static_cast<std::size_t>(-1);
  while (pos <= n) {
    int rc = PCRE2_ERROR_JIT_STACKLIMIT;
    if (code_->jit) {
      rc = pcre2_jit_match(code_->code, subject, n, pos, PCRE2_NO_UTF_CHECK, state.data,
                           state.context);
    }
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
      // The interpreter keeps its backtracking state on the heap: slower, no stack limit.
      rc = pcre2_match(code_->code, subject, n, pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, state.data,
                       state.context);
    }
    if (rc == PCRE2_ERROR_NOMATCH) return;
    ANVIL_CHECK_INPUT(rc >= 0, "regex '", pattern_,
                      "' failed on the input text: ", pcre2_message(rc));
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(state.data);
    const std::size_t begin = ovector[0];
    const std::size_t end = ovector[1];
    if (begin == end && end == last_end) {
      if (pos >= n) return;
      pos += utf8_char_length(static_cast<unsigned char>(text[pos]));
      continue;
    }
    out.push_back({static_cast<std::uint32_t>(begin), static_cast<std::uint32_t>(end)});
    pos = end;
    last_end = end;
  }
}

bool Regex::matches_at(std::string_view text, std::size_t pos) const {
  ThreadMatchState& state = thread_match_state();
  const int rc = pcre2_match(code_->code, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(),
                             pos, PCRE2_NO_UTF_CHECK | PCRE2_ANCHORED, state.data, state.context);
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  ANVIL_CHECK_INPUT(rc >= 0, "regex '", pattern_,
                    "' failed on the input text: ", pcre2_message(rc));
  return true;
}

}  // namespace anvil::data
