// Reads tokenizer.json (and the transformers config files beside it) into the parts of a
// Tokenizer. Every component is checked against what anvil implements; anything else is a
// user error naming the component, its key path and the file.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <optional>

#include "core/error.h"
#include "data/tokenizer_internal.h"

namespace anvil::data {
namespace {

using nlohmann::json;

// A JSON value and the path that names it in error messages ("file: key.path").
struct Node {
  const json& value;
  std::string path;

  const json* find(const char* key) const {
    const auto it = value.find(key);
    return it == value.end() || it->is_null() ? nullptr : &*it;
  }
  Node child(const char* key) const { return {value.at(key), path + "." + key}; }
  bool has(const char* key) const { return find(key) != nullptr; }

  bool get_bool(const std::string& file, const char* key, bool fallback) const {
    const json* v = find(key);
    if (v == nullptr) return fallback;
    ANVIL_CHECK_INPUT(v->is_boolean(), file, ": ", path, ".", key, " must be true or false");
    return v->get<bool>();
  }
  std::string get_string(const std::string& file, const char* key) const {
    const json* v = find(key);
    ANVIL_CHECK_INPUT(v != nullptr && v->is_string(), file, ": ", path, ".", key,
                      " must be a string");
    return v->get<std::string>();
  }
  std::string type(const std::string& file) const {
    ANVIL_CHECK_INPUT(value.is_object(), file, ": ", path, " must be an object");
    return get_string(file, "type");
  }
};

json parse_json(std::string_view text, const std::string& file) {
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    throw_user_error(file, ": not valid JSON: ", e.what());
  }
}

[[noreturn]] void unsupported(const std::string& file, const std::string& path,
                              const std::string& what, const char* supported) {
  throw_user_error(file, ": ", path, ": ", what,
                   " is not supported (anvil reads BPE tokenizers: byte-level ones of the GPT-2, "
                   "Llama-3, Qwen2 and SmolLM2 families, SentencePiece-style ones of the "
                   "Llama-2, Mistral and TinyLlama families; supported here: ",
                   supported, ")");
}

// A Replace's pattern: {"String": ...} (a regex pattern is not supported).
std::string literal_pattern(const Node& node, const std::string& file) {
  const json* pattern = node.find("pattern");
  ANVIL_CHECK_INPUT(pattern != nullptr && pattern->is_object(), file, ": ", node.path,
                    ".pattern must be {\"String\": ...}");
  if (!pattern->contains("String")) {
    unsupported(file, node.path + ".pattern", "a Replace with a Regex pattern",
                "Replace with a String pattern");
  }
  const std::string literal = pattern->at("String").get<std::string>();
  ANVIL_CHECK_INPUT(!literal.empty(), file, ": ", node.path, ".pattern.String must not be empty");
  return literal;
}

void parse_normalizer(const Node& node, const std::string& file, std::vector<NormalizeStep>& out) {
  const std::string type = node.type(file);
  if (type == "Sequence") {
    const json& list = node.value.at("normalizers");
    for (std::size_t i = 0; i < list.size(); ++i) {
      parse_normalizer({list[i], str_cat(node.path, ".normalizers[", i, "]")}, file, out);
    }
    return;
  }
  if (type == "Prepend") {
    out.push_back({NormalizerKind::norm_prepend, {}, node.get_string(file, "prepend")});
    return;
  }
  if (type == "Replace") {
    out.push_back({NormalizerKind::norm_replace, literal_pattern(node, file),
                   node.get_string(file, "content")});
    return;
  }
  NormalizerKind kind;
  if (type == "NFC") {
    kind = NormalizerKind::norm_nfc;
  } else if (type == "NFD") {
    kind = NormalizerKind::norm_nfd;
  } else if (type == "NFKC") {
    kind = NormalizerKind::norm_nfkc;
  } else if (type == "NFKD") {
    kind = NormalizerKind::norm_nfkd;
  } else {
    unsupported(file, node.path, str_cat("normalizer '", type, "'"),
                "none, NFC, NFD, NFKC, NFKD, Prepend, Replace (of a String) and Sequence of "
                "those");
  }
  ANVIL_CHECK_INPUT(unicode_normalization_available(), file, ": ", node.path, ": normalizer '",
                    type, "' needs anvil built with libutf8proc (Debian: libutf8proc-dev)");
  out.push_back({kind, {}, {}});
}

SplitBehavior parse_behavior(const Node& node, const std::string& file) {
  const std::string b = node.get_string(file, "behavior");
  if (b == "Removed") return SplitBehavior::split_removed;
  if (b == "Isolated") return SplitBehavior::split_isolated;
  if (b == "MergedWithPrevious") return SplitBehavior::split_merged_with_previous;
  if (b == "MergedWithNext") return SplitBehavior::split_merged_with_next;
  if (b == "Contiguous") return SplitBehavior::split_contiguous;
  throw_user_error(file, ": ", node.path, ".behavior: unknown split behavior '", b, "'");
}

// Metaspace's prepend_scheme, or the older add_prefix_space (true: always).
MetaspaceRewrite::Prepend parse_prepend_scheme(const Node& node, const std::string& file) {
  if (!node.has("prepend_scheme")) {
    return node.get_bool(file, "add_prefix_space", true)
               ? MetaspaceRewrite::Prepend::prepend_always
               : MetaspaceRewrite::Prepend::prepend_never;
  }
  const std::string scheme = node.get_string(file, "prepend_scheme");
  if (scheme == "always") return MetaspaceRewrite::Prepend::prepend_always;
  if (scheme == "first") return MetaspaceRewrite::Prepend::prepend_first;
  if (scheme == "never") return MetaspaceRewrite::Prepend::prepend_never;
  throw_user_error(file, ": ", node.path, ".prepend_scheme: unknown scheme '", scheme, "'");
}

void parse_pre_tokenizer(const Node& node, const std::string& file,
                         std::vector<PreTokenizeStep>& out,
                         std::optional<MetaspaceRewrite>& metaspace) {
  const std::string type = node.type(file);
  const std::string where = str_cat(file, ": ", node.path);
  PreTokenizeStep step;
  if (type == "Sequence") {
    const json& list = node.value.at("pretokenizers");
    for (std::size_t i = 0; i < list.size(); ++i) {
      parse_pre_tokenizer({list[i], str_cat(node.path, ".pretokenizers[", i, "]")}, file, out,
                          metaspace);
    }
    return;
  } else if (type == "Split") {
    const json* pattern = node.find("pattern");
    ANVIL_CHECK_INPUT(pattern != nullptr && pattern->is_object(), where,
                      ".pattern must be {\"Regex\": ...} or {\"String\": ...}");
    if (pattern->contains("Regex")) {
      step.regex = std::make_shared<Regex>(
          Regex::compile(pattern->at("Regex").get<std::string>(), where + ".pattern.Regex"));
    } else if (pattern->contains("String")) {
      const std::string literal = pattern->at("String").get<std::string>();
      ANVIL_CHECK_INPUT(!literal.empty(), where, ".pattern.String must not be empty");
      step.regex = std::make_shared<Regex>(
          Regex::compile(regex_escape_literal(literal), where + ".pattern.String"));
    } else {
      throw_user_error(where, ".pattern must be {\"Regex\": ...} or {\"String\": ...}");
    }
    step.behavior = parse_behavior(node, file);
    step.invert = node.get_bool(file, "invert", false);
  } else if (type == "Digits") {
    // HF's Digits is Rust's char::is_numeric, whose tables already have Unicode 17: the
    // two ranges are its numbers that \p{N} (Unicode 16 here) lacks.
    step.regex = std::make_shared<Regex>(
        Regex::compile(R"([\p{N}\x{11DE0}-\x{11DE9}\x{16FF4}-\x{16FF6}])", where));
    step.behavior = node.get_bool(file, "individual_digits", false)
                        ? SplitBehavior::split_isolated
                        : SplitBehavior::split_contiguous;
  } else if (type == "ByteLevel") {
    step.kind = PreTokenizeKind::pretok_byte_level;
    step.add_prefix_space = node.get_bool(file, "add_prefix_space", true);
    if (node.get_bool(file, "use_regex", true)) {
      step.regex = std::make_shared<Regex>(Regex::compile(gpt2_pretokenize_pattern, where));
    }
  } else if (type == "Metaspace") {
    // Its rewrite runs before the chain, so it must come first (it always does in the
    // tokenizers of the Llama-2 and Mistral families).
    ANVIL_CHECK_INPUT(out.empty() && !metaspace, where,
                      ": Metaspace is supported only as the first pre-tokenizer");
    MetaspaceRewrite rewrite;
    rewrite.replacement = node.get_string(file, "replacement");
    ANVIL_CHECK_INPUT(!rewrite.replacement.empty(), where, ".replacement must not be empty");
    rewrite.prepend = parse_prepend_scheme(node, file);
    metaspace = rewrite;
    if (!node.get_bool(file, "split", true)) return;
    step.regex = std::make_shared<Regex>(
        Regex::compile(regex_escape_literal(rewrite.replacement), where + ".replacement"));
    step.behavior = SplitBehavior::split_merged_with_next;
  } else {
    unsupported(file, node.path, str_cat("pre-tokenizer '", type, "'"),
                "Split, ByteLevel, Digits, Metaspace and Sequence of those");
  }
  out.push_back(std::move(step));
}

// TemplateProcessing's "single" template: the special ids before and after $A.
void parse_template(const Node& node, const std::string& file, std::vector<std::int32_t>& prefix,
                    std::vector<std::int32_t>& suffix) {
  const json& single = node.value.at("single");
  const json& specials = node.value.at("special_tokens");
  bool seen_sequence = false;
  for (std::size_t i = 0; i < single.size(); ++i) {
    const json& piece = single[i];
    const std::string where = str_cat(file, ": ", node.path, ".single[", i, "]");
    if (piece.contains("Sequence")) {
      const std::string id = piece.at("Sequence").at("id").get<std::string>();
      ANVIL_CHECK_INPUT(id == "A" && !seen_sequence, where,
                        ": a single-sequence template must hold $A exactly once");
      seen_sequence = true;
    } else if (piece.contains("SpecialToken")) {
      const std::string name = piece.at("SpecialToken").at("id").get<std::string>();
      const auto it = specials.find(name);
      ANVIL_CHECK_INPUT(it != specials.end(), where, ": special token '", name,
                        "' is missing from special_tokens");
      auto& target = seen_sequence ? suffix : prefix;
      for (const json& id : it->at("ids")) target.push_back(id.get<std::int32_t>());
    } else {
      throw_user_error(where, ": expected a Sequence or a SpecialToken");
    }
  }
  ANVIL_CHECK_INPUT(seen_sequence, file, ": ", node.path, ".single has no $A");
}

void parse_post_processor(const Node& node, const std::string& file,
                          std::vector<std::int32_t>& prefix, std::vector<std::int32_t>& suffix) {
  const std::string type = node.type(file);
  if (type == "Sequence") {
    const json& list = node.value.at("processors");
    for (std::size_t i = 0; i < list.size(); ++i) {
      parse_post_processor({list[i], str_cat(node.path, ".processors[", i, "]")}, file, prefix,
                           suffix);
    }
  } else if (type == "TemplateProcessing") {
    parse_template(node, file, prefix, suffix);
  } else if (type != "ByteLevel") {
    // ByteLevel as a post-processor only trims offsets: the ids are untouched.
    unsupported(file, node.path, str_cat("post-processor '", type, "'"),
                "none, ByteLevel, TemplateProcessing and Sequence of those");
  }
}

void parse_decode_steps(const Node& node, const std::string& file, std::vector<DecodeStep>& out) {
  const std::string type = node.type(file);
  DecodeStep step;
  if (type == "Sequence") {
    const json& list = node.value.at("decoders");
    for (std::size_t i = 0; i < list.size(); ++i) {
      parse_decode_steps({list[i], str_cat(node.path, ".decoders[", i, "]")}, file, out);
    }
    return;
  } else if (type == "Replace") {
    step.kind = DecodeStepKind::decode_replace;
    step.pattern = literal_pattern(node, file);
    step.content = node.get_string(file, "content");
  } else if (type == "ByteFallback") {
    step.kind = DecodeStepKind::decode_byte_fallback;
  } else if (type == "Fuse") {
    step.kind = DecodeStepKind::decode_fuse;
  } else if (type == "Strip") {
    step.kind = DecodeStepKind::decode_strip;
    step.content = node.get_string(file, "content");
    step.start = node.value.at("start").get<std::size_t>();
    step.stop = node.value.at("stop").get<std::size_t>();
  } else if (type == "Metaspace") {
    step.kind = DecodeStepKind::decode_metaspace;
    step.pattern = node.get_string(file, "replacement");
    step.prepend = parse_prepend_scheme(node, file) != MetaspaceRewrite::Prepend::prepend_never;
  } else {
    unsupported(file, node.path, str_cat("decoder '", type, "'"),
                "ByteLevel for byte-level tokenizers; Replace, ByteFallback, Fuse, Strip, "
                "Metaspace and Sequence of those for SentencePiece-style ones");
  }
  out.push_back(std::move(step));
}

DecoderKind parse_decoder(const json* decoder, const std::string& file, bool byte_level,
                          std::vector<DecodeStep>& steps) {
  if (decoder == nullptr) return DecoderKind::decoder_none;
  const Node node{*decoder, "decoder"};
  const std::string type = node.type(file);
  const bool is_byte_level =
      type == "ByteLevel" || (type == "Sequence" && decoder->at("decoders").size() == 1 &&
                              decoder->at("decoders")[0].value("type", "") == "ByteLevel");
  if (byte_level) {
    if (!is_byte_level) {
      unsupported(file, "decoder", str_cat("decoder '", type, "'"),
                  "ByteLevel with a ByteLevel pre-tokenizer");
    }
    return DecoderKind::decoder_byte_level;
  }
  ANVIL_CHECK_INPUT(!is_byte_level, file,
                    ": decoder: ByteLevel without a ByteLevel pre-tokenizer is not supported");
  parse_decode_steps(node, file, steps);
  return DecoderKind::decoder_chain;
}

// The Hugging Face token spelling of a config entry: "<s>" or {"content": "<s>", ...}.
std::optional<std::string> config_token(const json& config, const char* key,
                                        const std::string& file) {
  const auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  const bool object_form =
      it->is_object() && it->contains("content") && it->at("content").is_string();
  ANVIL_CHECK_INPUT(object_form, file, ": ", key, " must be a string or {\"content\": ...}");
  return it->at("content").get<std::string>();
}

}  // namespace

std::unique_ptr<Tokenizer::Impl> Tokenizer::Impl::from_json(
    std::string_view tokenizer_json, std::string_view tokenizer_config_json,
    std::string_view special_tokens_map_json, const std::string& label) {
  auto impl = std::make_unique<Impl>();
  impl->label = label;
  const std::string file = label + "/tokenizer.json";
  const std::string config_file = label + "/tokenizer_config.json";
  const std::string map_file = label + "/special_tokens_map.json";
  const json root = parse_json(tokenizer_json, file);
  ANVIL_CHECK_INPUT(root.is_object(), file, ": must hold a JSON object");
  try {
    std::vector<NormalizeStep> norms;
    if (const auto it = root.find("normalizer"); it != root.end() && !it->is_null()) {
      parse_normalizer({*it, "normalizer"}, file, norms);
    }
    impl->normalizer = Normalizer(std::move(norms));

    // A ByteLevel pre-tokenizer makes a byte-level tokenizer; without one, BPE runs over
    // characters (SentencePiece-style, whose pre-tokenizer is Metaspace or none).
    std::vector<PreTokenizeStep> steps;
    if (const auto pre = root.find("pre_tokenizer"); pre != root.end() && !pre->is_null()) {
      parse_pre_tokenizer({*pre, "pre_tokenizer"}, file, steps, impl->metaspace);
    }
    const auto byte_levels = std::count_if(steps.begin(), steps.end(), [](const auto& s) {
      return s.kind == PreTokenizeKind::pretok_byte_level;
    });
    impl->byte_level = byte_levels > 0;
    ANVIL_CHECK_INPUT(
        byte_levels == 0 ||
            (byte_levels == 1 && steps.back().kind == PreTokenizeKind::pretok_byte_level &&
             !impl->metaspace),
        file,
        ": pre_tokenizer: ByteLevel must be the one and last step, without Metaspace "
        "(anvil merges raw bytes after all splitting is done)");
    impl->pre_tokenizer = PreTokenizer(std::move(steps));

    if (const auto it = root.find("post_processor"); it != root.end() && !it->is_null()) {
      parse_post_processor({*it, "post_processor"}, file, impl->prefix_ids, impl->suffix_ids);
    }
    const auto dec = root.find("decoder");
    impl->decoder = parse_decoder(dec == root.end() || dec->is_null() ? nullptr : &*dec, file,
                                  impl->byte_level, impl->decode_steps);

    impl->load_vocab(root, file);
  } catch (const json::exception& e) {
    // A key of the wrong type or missing deep inside a component.
    throw_user_error(file, ": unexpected structure: ", e.what());
  }

  // transformers' files: the named special tokens, and whether to add BOS/EOS.
  const json config = tokenizer_config_json.empty()
                          ? json::object()
                          : parse_json(tokenizer_config_json, config_file);
  const json map = special_tokens_map_json.empty() ? json::object()
                                                   : parse_json(special_tokens_map_json, map_file);
  ANVIL_CHECK_INPUT(config.is_object(), config_file, ": must hold a JSON object");
  ANVIL_CHECK_INPUT(map.is_object(), map_file, ": must hold a JSON object");
  auto resolve = [&](const char* key) -> std::optional<std::int32_t> {
    std::optional<std::string> name = config_token(config, key, config_file);
    const std::string* source = &config_file;
    if (!name) {
      name = config_token(map, key, map_file);
      source = &map_file;
    }
    if (!name) return std::nullopt;
    const auto it = impl->id_of.find(*name);
    ANVIL_CHECK_INPUT(it != impl->id_of.end(), *source, ": ", key, " '", *name,
                      "' is not a token of ", file);
    return it->second;
  };
  impl->bos = resolve("bos_token");
  impl->eos = resolve("eos_token");
  impl->pad = resolve("pad_token");
  if (!impl->pad) {
    if (const auto it = root.find("padding"); it != root.end() && it->is_object()) {
      const auto pad_id = it->find("pad_id");
      if (pad_id != it->end() && pad_id->is_number_integer())
        impl->pad = pad_id->get<std::int32_t>();
    }
  }
  // add_bos_token / add_eos_token, where the config sets them, rebuild the template as
  // transformers' fast tokenizers do: [BOS] $A [EOS].
  for (const char* key : {"add_bos_token", "add_eos_token"}) {
    const auto it = config.find(key);
    if (it == config.end() || it->is_null()) continue;
    ANVIL_CHECK_INPUT(it->is_boolean(), config_file, ": ", key, " must be true or false");
    const bool bos_side = std::string_view(key) == "add_bos_token";
    const auto& id = bos_side ? impl->bos : impl->eos;
    auto& ids = bos_side ? impl->prefix_ids : impl->suffix_ids;
    ids.clear();
    if (it->get<bool>()) {
      ANVIL_CHECK_INPUT(id.has_value(), config_file, ": ", key, " is true but no ",
                        bos_side ? "bos_token" : "eos_token", " is named");
      ids.push_back(*id);
    }
  }
  for (const std::int32_t id : impl->prefix_ids) {
    ANVIL_CHECK_INPUT(
        id >= 0 && static_cast<std::size_t>(id) < impl->has_token.size() && impl->has_token[id],
        file, ": post_processor adds id ", id, ", which has no token");
  }
  for (const std::int32_t id : impl->suffix_ids) {
    ANVIL_CHECK_INPUT(
        id >= 0 && static_cast<std::size_t>(id) < impl->has_token.size() && impl->has_token[id],
        file, ": post_processor adds id ", id, ", which has no token");
  }
  return impl;
}

}  // namespace anvil::data
