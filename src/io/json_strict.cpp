#include "io/json_strict.h"

#include <cstdio>
#include <set>
#include <vector>

#include "core/error.h"

namespace anvil::io::detail {

std::string escape_for_message(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  const auto escape = [&](unsigned char b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "\\x%02x", b);
    out += buf;
  };
  for (std::size_t i = 0; i < s.size();) {
    const auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {
      if (b < 0x20 || b == 0x7f)
        escape(b);
      else
        out += s[i];
      ++i;
      continue;
    }
    // Well-formed multi-byte sequences pass through (names may be any Unicode); stray
    // bytes, the ones that made the text invalid, are escaped.
    const std::size_t len = (b & 0xe0) == 0xc0 ? 2 : (b & 0xf0) == 0xe0 ? 3 : (b & 0xf8) == 0xf0 ? 4 : 0;
    bool ok = len != 0 && i + len <= s.size();
    for (std::size_t k = 1; ok && k < len; ++k) ok = (static_cast<unsigned char>(s[i + k]) & 0xc0) == 0x80;
    if (ok) {
      out.append(s.substr(i, len));
      i += len;
    } else {
      escape(b);
      ++i;
    }
  }
  return out;
}

nlohmann::json parse_json_strict(std::string_view text, const std::string& label, std::string_view what,
                                 std::string_view top_level_key_noun, int max_depth) {
  using json = nlohmann::json;
  // One frame per open object: the keys seen so far and the key it sits under.
  struct Frame {
    std::set<std::string, std::less<>> keys;
    std::string parent;
  };
  std::vector<Frame> frames;
  std::string last_key;
  // nlohmann reports `depth` as the number of containers already open around the event.
  const json::parser_callback_t check = [&](int depth, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        ANVIL_CHECK_INPUT(depth < max_depth, label, ": ", what, " is nested more than ", max_depth,
                          " levels deep");
        if (event == json::parse_event_t::object_start) frames.push_back({{}, last_key});
        break;
      case json::parse_event_t::object_end:
        if (!frames.empty()) frames.pop_back();
        break;
      case json::parse_event_t::key: {
        last_key = parsed.get<std::string>();
        if (frames.empty()) break;
        Frame& f = frames.back();
        if (!f.keys.insert(last_key).second) {
          if (frames.size() == 1)
            throw_user_error(label, ": duplicate ", top_level_key_noun, " '", escape_for_message(last_key),
                             "'");
          throw_user_error(label, ": duplicate key '", escape_for_message(last_key), "' in '",
                           escape_for_message(f.parent), "'");
        }
        break;
      }
      default:
        break;
    }
    return true;
  };
  try {
    return json::parse(text.begin(), text.end(), check);
  } catch (const json::exception& e) {
    // Drop nlohmann's "[json.exception.parse_error.101] " tag; the rest is the reason.
    std::string_view reason = e.what();
    if (!reason.empty() && reason.front() == '[' && reason.find("] ") != std::string_view::npos)
      reason.remove_prefix(reason.find("] ") + 2);
    throw_user_error(label, ": ", what, " is not valid UTF-8 JSON: ", escape_for_message(reason));
  }
}

}  // namespace anvil::io::detail
