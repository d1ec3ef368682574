#include "data/tokenizer_decoder.h"

#include <optional>
#include <string_view>

#include "data/tokenizer_utf8.h"

namespace anvil::data {
namespace {

void replace_all(std::string& text, std::string_view pattern, std::string_view content) {
  if (pattern.empty() || text.find(pattern) == std::string::npos) return;
  std::string out;
  std::size_t i = 0;
  for (std::size_t hit; (hit = text.find(pattern, i)) != std::string::npos;) {
    out.append(text, i, hit - i);
    out.append(content);
    i = hit + pattern.size();
  }
  out.append(text, i);
  text = std::move(out);
}

// The byte of a "<0xNN>" token (hex digits of either case, as HF accepts).
std::optional<char> fallback_byte(std::string_view token) {
  if (token.size() != 6 || !token.starts_with("<0x") || token.back() != '>') return std::nullopt;
  int value = 0;
  for (const char c : token.substr(3, 2)) {
    int digit = -1;
    if (c >= '0' && c <= '9') digit = c - '0';
    if (c >= 'a' && c <= 'f') digit = c - 'a' + 10;
    if (c >= 'A' && c <= 'F') digit = c - 'A' + 10;
    if (digit < 0) return std::nullopt;
    value = value * 16 + digit;
  }
  return static_cast<char>(value);
}

void byte_fallback(std::vector<std::string>& tokens) {
  std::vector<std::string> out;
  std::string bytes;
  auto flush = [&] {
    if (bytes.empty()) return;
    if (utf8_find_invalid(bytes) == std::string::npos) {
      out.push_back(bytes);
    } else {
      out.insert(out.end(), bytes.size(), "\xEF\xBF\xBD");
    }
    bytes.clear();
  };
  for (std::string& token : tokens) {
    if (const auto b = fallback_byte(token)) {
      bytes.push_back(*b);
      continue;
    }
    flush();
    out.push_back(std::move(token));
  }
  flush();
  tokens = std::move(out);
}

void strip(const DecodeStep& step, std::string& token) {
  std::string_view view = token;
  for (std::size_t n = 0; n < step.start && view.starts_with(step.content); ++n) {
    view.remove_prefix(step.content.size());
  }
  for (std::size_t n = 0; n < step.stop && view.ends_with(step.content); ++n) {
    view.remove_suffix(step.content.size());
  }
  token = std::string(view);
}

}  // namespace

void decode_chain(const std::vector<DecodeStep>& steps, std::vector<std::string>& tokens) {
  for (const DecodeStep& step : steps) {
    switch (step.kind) {
      case DecodeStepKind::decode_replace:
        for (std::string& token : tokens) replace_all(token, step.pattern, step.content);
        break;
      case DecodeStepKind::decode_byte_fallback:
        byte_fallback(tokens);
        break;
      case DecodeStepKind::decode_fuse: {
        std::string joined;
        for (const std::string& token : tokens) joined += token;
        tokens.assign(1, std::move(joined));
        break;
      }
      case DecodeStepKind::decode_strip:
        for (std::string& token : tokens) strip(step, token);
        break;
      case DecodeStepKind::decode_metaspace:
        for (std::size_t i = 0; i < tokens.size(); ++i) {
          replace_all(tokens[i], step.pattern, i == 0 && step.prepend ? "" : " ");
        }
        break;
    }
  }
}

}  // namespace anvil::data
