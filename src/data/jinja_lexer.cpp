// The lexer: jinja2's, with the settings transformers uses (trim_blocks, lstrip_blocks,
// keep_trailing_newline=False). Newlines are normalised to "\n" first, as jinja2 does.
#include "data/jinja_ast.h"

#include "core/error.h"

#include <cctype>
#include <cstring>

namespace anvil::data::jinja {
namespace {

bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
bool is_name_start(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool is_name_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

class Lexer {
 public:
  Lexer(std::string src, const std::string& where) : s_(std::move(src)), where_(where) {}

  std::vector<Token> run() {
    bool line_starting = true;
    while (pos_ < s_.size()) {
      std::size_t tag = find_tag(pos_);
      std::string text = s_.substr(pos_, tag - pos_);
      if (tag == s_.size()) {
        emit_text(text);
        break;
      }
      char kind = s_[tag + 1];
      std::size_t p = tag + 2;
      char sign = p < s_.size() && (s_[p] == '-' || s_[p] == '+') ? s_[p] : 0;
      if (sign) ++p;
      if (sign == '-') {
        text.erase(text.find_last_not_of(" \t\n\r\f\v") + 1);
      } else if (sign != '+' && kind != '{') {
        std::size_t l_pos = text.rfind('\n');
        l_pos = l_pos == std::string::npos ? 0 : l_pos + 1;
        if ((l_pos > 0 || line_starting) && l_pos < text.size() &&
            text.find_first_not_of(" \t\r\f\v", l_pos) == std::string::npos) {
          text.erase(l_pos);
        }
      }
      emit_text(text);
      line_ += count_lines(pos_, p);
      pos_ = p;
      std::size_t end_start = pos_;
      if (kind == '#') {
        lex_comment();
      } else if (kind == '%' && at_word(pos_, "raw")) {
        lex_raw();
      } else {
        lex_tag(kind == '{' ? TokenKind::var_begin : TokenKind::block_begin);
      }
      line_starting = pos_ > end_start && s_[pos_ - 1] == '\n';
    }
    out_.push_back({TokenKind::eof, "", {}, line_});
    return std::move(out_);
  }

 private:
  [[noreturn]] void fail(const std::string& what) {
    throw_user_error(where_, ": line ", line_, ": template syntax error: ", what);
  }

  std::size_t find_tag(std::size_t from) const {
    for (std::size_t k = s_.find('{', from); k != std::string::npos; k = s_.find('{', k + 1)) {
      if (k + 1 < s_.size() && (s_[k + 1] == '{' || s_[k + 1] == '%' || s_[k + 1] == '#')) return k;
    }
    return s_.size();
  }

  int count_lines(std::size_t a, std::size_t b) const {
    int n = 0;
    for (std::size_t k = a; k < b && k < s_.size(); ++k) n += s_[k] == '\n';
    return n;
  }

  void emit_text(std::string text) {
    if (!text.empty()) out_.push_back({TokenKind::text, std::move(text), {}, line_});
  }

  // After a tag's end at pos_ (just past "%}" / "#}"): "-" strips all whitespace that
  // follows, "+" keeps it, else trim_blocks drops one newline.
  void after_end(char sign, bool trim_newline) {
    std::size_t from = pos_;
    if (sign == '-') {
      while (pos_ < s_.size() && is_ws(s_[pos_])) ++pos_;
    } else if (sign != '+' && trim_newline && pos_ < s_.size() && s_[pos_] == '\n') {
      ++pos_;
    }
    line_ += count_lines(from, pos_);
  }

  bool at_word(std::size_t p, const char* word) const {
    while (p < s_.size() && is_ws(s_[p])) ++p;
    std::size_t n = std::strlen(word);
    return s_.compare(p, n, word) == 0 && (p + n >= s_.size() || !is_name_char(s_[p + n]));
  }

  void lex_comment() {
    std::size_t end = s_.find("#}", pos_);
    if (end == std::string::npos) fail("missing end of comment tag");
    char sign = end > pos_ && (s_[end - 1] == '-' || s_[end - 1] == '+') ? s_[end - 1] : 0;
    line_ += count_lines(pos_, end + 2);
    pos_ = end + 2;
    after_end(sign, true);
  }

  // {% raw %}...{% endraw %}: the raw tag keeps the newline after it (jinja2's raw_begin
  // has no trim_blocks suffix); endraw strips like any block tag.
  void lex_raw() {
    std::size_t p = s_.find("raw", pos_) + 3;
    while (p < s_.size() && is_ws(s_[p])) ++p;
    char sign = 0;
    if (p < s_.size() && s_[p] == '-') sign = '-', ++p;
    if (s_.compare(p, 2, "%}") != 0) fail("expected '%}' after 'raw'");
    line_ += count_lines(pos_, p + 2);
    pos_ = p + 2;
    after_end(sign, false);
    for (std::size_t k = s_.find("{%", pos_); k != std::string::npos; k = s_.find("{%", k + 1)) {
      std::size_t q = k + 2;
      char start_sign = q < s_.size() && (s_[q] == '-' || s_[q] == '+') ? s_[q++] : 0;
      if (!at_word(q, "endraw")) continue;
      q = s_.find("endraw", q) + 6;
      while (q < s_.size() && is_ws(s_[q])) ++q;
      char end_sign = q < s_.size() && (s_[q] == '-' || s_[q] == '+') ? s_[q++] : 0;
      if (s_.compare(q, 2, "%}") != 0) fail("expected '%}' after 'endraw'");
      std::string text = s_.substr(pos_, k - pos_);
      if (start_sign == '-') {
        text.erase(text.find_last_not_of(" \t\n\r\f\v") + 1);
      } else if (start_sign != '+') {
        std::size_t l_pos = text.rfind('\n');
        if (l_pos != std::string::npos && text.find_first_not_of(" \t\r\f\v", l_pos + 1) == std::string::npos) {
          text.erase(l_pos + 1);
        }
      }
      emit_text(text);
      line_ += count_lines(pos_, q + 2);
      pos_ = q + 2;
      after_end(end_sign, true);
      return;
    }
    fail("missing end of raw directive");
  }

  void lex_tag(TokenKind begin) {
    bool var = begin == TokenKind::var_begin;
    out_.push_back({begin, "", {}, line_});
    int depth = 0;  // open brackets: "}}" / "%}" inside them are operators (jinja2's balancing)
    while (true) {
      while (pos_ < s_.size() && is_ws(s_[pos_])) line_ += s_[pos_++] == '\n';
      if (pos_ >= s_.size()) fail(var ? "unexpected end of template, expected '}}'" : "unexpected end of template, expected '%}'");
      const char* close = var ? "}}" : "%}";
      if (depth == 0) {
        char sign = (s_[pos_] == '-' || (!var && s_[pos_] == '+')) ? s_[pos_] : 0;
        std::size_t q = pos_ + (sign ? 1 : 0);
        if (s_.compare(q, 2, close) == 0) {
          out_.push_back({var ? TokenKind::var_end : TokenKind::block_end, "", {}, line_});
          pos_ = q + 2;
          after_end(sign, !var);
          return;
        }
      }
      char c = s_[pos_];
      if (is_name_start(c)) {
        std::size_t b = pos_;
        while (pos_ < s_.size() && is_name_char(s_[pos_])) ++pos_;
        out_.push_back({TokenKind::name, s_.substr(b, pos_ - b), {}, line_});
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        lex_number();
      } else if (c == '\'' || c == '"') {
        lex_string(c);
      } else {
        static const char* ops[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "/", "*", "%", "~", "[", "]",
                                    "(", ")", "{", "}", "<", ">", "=", ".", ":", "|", ",", ";"};
        const char* hit = nullptr;
        for (const char* op : ops) {
          if (s_.compare(pos_, std::strlen(op), op) == 0) {
            hit = op;
            break;
          }
        }
        if (hit == nullptr) fail(std::string("unexpected character '") + c + "'");
        std::string op(hit);
        if (op == "(" || op == "[" || op == "{") ++depth;
        if ((op == ")" || op == "]" || op == "}") && --depth < 0) fail("unexpected '" + op + "'");
        out_.push_back({TokenKind::op, op, {}, line_});
        pos_ += op.size();
      }
    }
  }

  void lex_number() {
    std::size_t b = pos_;
    auto digits = [&] {
      while (pos_ < s_.size() && (std::isdigit(static_cast<unsigned char>(s_[pos_])) || s_[pos_] == '_')) ++pos_;
    };
    digits();
    bool is_float = false;
    // A float needs digits after the dot; "a.0.1" (attribute after an integer) stays two tokens.
    bool after_dot = b > 0 && s_[b - 1] == '.';
    if (!after_dot && pos_ + 1 < s_.size() && s_[pos_] == '.' && std::isdigit(static_cast<unsigned char>(s_[pos_ + 1]))) {
      is_float = true;
      ++pos_;
      digits();
    }
    if (!after_dot && pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      std::size_t q = pos_ + 1;
      if (q < s_.size() && (s_[q] == '+' || s_[q] == '-')) ++q;
      if (q < s_.size() && std::isdigit(static_cast<unsigned char>(s_[q]))) {
        is_float = true;
        pos_ = q;
        digits();
      }
    }
    std::string text;
    for (std::size_t k = b; k < pos_; ++k) {
      if (s_[k] != '_') text += s_[k];
    }
    Token t{is_float ? TokenKind::floating : TokenKind::integer, text, {}, line_};
    try {
      t.number = is_float ? Value::floating(std::stod(text)) : Value::integer(std::stoll(text));
    } catch (const std::exception&) {
      fail("number out of range: " + text);
    }
    out_.push_back(std::move(t));
  }

  // Python's unicode-escape decoding of the literal, as jinja2 applies it.
  void lex_string(char quote) {
    int start_line = line_;
    std::string v;
    ++pos_;
    while (true) {
      if (pos_ >= s_.size()) fail("unexpected end of string literal");
      char c = s_[pos_++];
      if (c == quote) break;
      if (c == '\n') ++line_;
      if (c != '\\') {
        v += c;
        continue;
      }
      if (pos_ >= s_.size()) fail("unexpected end of string literal");
      char e = s_[pos_++];
      auto hex = [&](int n) {
        if (pos_ + n > s_.size()) fail("truncated escape in string literal");
        std::uint32_t cp = 0;
        for (int k = 0; k < n; ++k) {
          char h = s_[pos_++];
          if (!std::isxdigit(static_cast<unsigned char>(h))) fail("bad escape in string literal");
          cp = cp * 16 + static_cast<std::uint32_t>(std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : (std::tolower(h) - 'a' + 10));
        }
        utf8_append(cp, v);
      };
      switch (e) {
        case 'n': v += '\n'; break;
        case 't': v += '\t'; break;
        case 'r': v += '\r'; break;
        case 'a': v += '\a'; break;
        case 'b': v += '\b'; break;
        case 'f': v += '\f'; break;
        case 'v': v += '\v'; break;
        case '0': v += '\0'; break;
        case '\\': v += '\\'; break;
        case '\'': v += '\''; break;
        case '"': v += '"'; break;
        case '\n': ++line_; break;
        case 'x': hex(2); break;
        case 'u': hex(4); break;
        case 'U': hex(8); break;
        default: v += '\\'; v += e; break;
      }
    }
    out_.push_back({TokenKind::string, std::move(v), {}, start_line});
  }

  std::string s_;
  const std::string& where_;
  std::size_t pos_ = 0;
  int line_ = 1;
  std::vector<Token> out_;
};

// "\r\n" and "\r" become "\n", and one trailing newline is dropped (keep_trailing_newline=False).
std::string normalise_newlines(std::string_view src) {
  std::string out;
  out.reserve(src.size());
  for (std::size_t k = 0; k < src.size(); ++k) {
    if (src[k] == '\r') {
      out += '\n';
      if (k + 1 < src.size() && src[k + 1] == '\n') ++k;
    } else {
      out += src[k];
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

}  // namespace

std::vector<Token> lex_template(std::string_view source, const std::string& where) {
  return Lexer(normalise_newlines(source), where).run();
}

}  // namespace anvil::data::jinja
