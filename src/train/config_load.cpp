// The config loader: YAML file + --set overrides -> TrainConfig, collecting every problem
// (unknown keys, types, ranges, missing keys, cross-key rules) before reporting them at once.
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <climits>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

#include "core/error.h"
#include "train/config.h"
#include "train/config_check.h"
#include "train/config_schema.h"
#include "train/config_suggest.h"
#include "train/config_value.h"

namespace anvil::train {

namespace {

// Where a value came from: the file (line known or not) or one --set.
struct Origin {
  int set_index = -1;  // >= 0: the override at this index
  int line = -1;       // 0-based line in the file, -1: none (a default or a missing key)
};

class Problems {
 public:
  Problems(std::string label, const std::vector<std::string>& overrides)
      : label_(std::move(label)), overrides_(overrides) {}

  void add(const Origin& origin, std::string_view key, const std::string& message) {
    std::string where = origin.set_index >= 0 ? "--set " + overrides_[origin.set_index]
                        : origin.line >= 0    ? str_cat(label_, ":", origin.line + 1)
                                              : label_;
    std::string text = where + ": " + (key.empty() ? "" : std::string(key) + ": ") + message;
    // File problems in line order (those without a line after them), then each --set.
    const int group = origin.set_index + 1;
    const int line = origin.line >= 0 ? origin.line : INT_MAX;
    entries_.push_back({group, line, entries_.size(), std::move(text)});
  }

  bool empty() const { return entries_.empty(); }

  [[noreturn]] void throw_all() {
    std::sort(entries_.begin(), entries_.end(), [](const Entry& a, const Entry& b) {
      return std::tie(a.group, a.line, a.order) < std::tie(b.group, b.line, b.order);
    });
    if (entries_.size() == 1) throw_user_error(entries_.front().text);
    std::string message = str_cat(label_, ": ", entries_.size(), " problems in the config");
    for (const Entry& e : entries_) message += "\n" + e.text;
    throw_user_error(message);
  }

 private:
  struct Entry {
    int group;
    int line;
    std::size_t order;
    std::string text;
  };
  std::string label_;
  const std::vector<std::string>& overrides_;
  std::vector<Entry> entries_;
};

bool is_section(std::string_view name) {
  const auto& s = config_sections();
  return std::find(s.begin(), s.end(), name) != s.end();
}

// The likeliest key meant by an unknown `path`: the same leaf under another section
// ("train.seq_len" -> "data.seq_len"), a typo of a key in the same section, or a typo of
// any full path ("trian.lr" -> "train.lr"). "" when nothing is close.
std::string suggest_key(std::string_view path) {
  const auto dot = path.find('.');
  const std::string_view section = dot == std::string_view::npos ? "" : path.substr(0, dot);
  const std::string_view leaf = dot == std::string_view::npos ? path : path.substr(dot + 1);
  std::vector<std::string> paths, same_section_leaves;
  for (const ConfigKey& key : config_schema()) {
    if (key.leaf() == leaf) return key.path;
    paths.push_back(key.path);
    if (key.section() == section) same_section_leaves.emplace_back(key.leaf());
  }
  if (!section.empty() && is_section(section)) {
    const std::string leaf_match = closest_match(leaf, same_section_leaves);
    if (!leaf_match.empty()) return std::string(section) + "." + leaf_match;
  }
  if (section.empty()) {  // an unknown top-level name may be a misspelt section
    std::vector<std::string> top = config_sections();
    for (const ConfigKey& key : config_schema())
      if (key.section().empty()) top.push_back(key.path);
    const std::string top_match = closest_match(path, top);
    if (!top_match.empty()) return top_match;
  }
  return closest_match(path, paths);
}

std::string first_key_of(std::string_view section) {
  for (const ConfigKey& key : config_schema())
    if (key.section() == section) return key.path;
  return std::string(section);
}

std::string unknown_key_message(std::string_view path, const char* what) {
  const std::string guess = suggest_key(path);
  return guess.empty() ? str_cat("unknown ", what)
                       : str_cat("unknown ", what, " (did you mean '", guess, "'?)");
}

ConfigValue default_value(const ConfigKey& key) {
  const ParsedValue v = config_value_parse(key, YAML::Load(key.default_yaml));
  ANVIL_CHECK(v.error.empty(), "schema default of ", key.path, ": ", v.error);
  return v.value;
}

class Loader {
 public:
  Loader(const std::string& label, const std::vector<std::string>& overrides, const ConfigContext& ctx)
      : overrides_(overrides), ctx_(ctx), problems_(label, overrides) {}

  TrainConfig run(const std::string& text) {
    YAML::Node root;
    try {
      root = YAML::Load(text);
    } catch (const YAML::Exception& e) {
      problems_.add({-1, e.mark.line}, "", "YAML syntax error: " + e.msg);
      problems_.throw_all();  // nothing below can be trusted
    }
    if (!read_file(root)) problems_.throw_all();
    read_overrides();
    TrainConfig cfg;
    resolve(cfg);
    const auto parsed = [this](std::string_view key) { return failed_.count(key) == 0; };
    for (const KeyProblem& p : config_check_rules(cfg, ctx_, parsed))
      problems_.add(origin_of(p.key), p.key, p.message);
    if (!problems_.empty()) problems_.throw_all();
    return cfg;
  }

 private:
  // False when the file is not a mapping at all: then nothing else is worth reporting.
  bool read_file(const YAML::Node& root) {
    if (root.IsNull()) return true;  // an empty file: every key from --set or its default
    if (!root.IsMap()) {
      problems_.add(
          {-1, root.Mark().line}, "",
          "expected a mapping of keys and sections (output_dir:, model:, lora:, ...) at the top level");
      return false;
    }
    std::map<std::string, int, std::less<>> seen;
    for (const auto& entry : root) {
      const std::string name = entry.first.Scalar();
      const int line = entry.first.Mark().line;
      if (const auto it = seen.find(name); it != seen.end()) {
        problems_.add({-1, line}, name, str_cat("appears twice (first on line ", it->second + 1, ")"));
        continue;
      }
      seen.emplace(name, line);
      if (is_section(name)) {
        read_section(name, line, entry.second);
      } else if (config_schema_find(name)) {
        inputs_[name] = {entry.second, {-1, line}};
      } else {
        problems_.add({-1, line}, name, unknown_key_message(name, entry.second.IsMap() ? "section" : "key"));
      }
    }
    return true;
  }

  void read_section(const std::string& section, int line, const YAML::Node& node) {
    section_lines_[section] = line;
    if (node.IsNull()) return;  // "lora:" alone: the section with every default
    if (!node.IsMap()) {
      problems_.add(
          {-1, line}, section,
          "expected a mapping of keys, e.g. '" + section + ":' followed by indented 'key: value' lines");
      return;
    }
    std::map<std::string, int, std::less<>> seen;
    for (const auto& entry : node) {
      const std::string path = section + "." + entry.first.Scalar();
      const int key_line = entry.first.Mark().line;
      if (const auto it = seen.find(path); it != seen.end()) {
        problems_.add({-1, key_line}, path, str_cat("appears twice (first on line ", it->second + 1, ")"));
        continue;
      }
      seen.emplace(path, key_line);
      if (path == kLegacyTrainOnPrompt)
        read_legacy_train_on_prompt(entry.second, key_line);
      else if (config_schema_find(path))
        inputs_[path] = {entry.second, {-1, key_line}};
      else
        problems_.add({-1, key_line}, path, unknown_key_message(path, "key"));
    }
  }

  // data.train_on_prompt, which data.train_on replaced: the configs of checkpoints written
  // before carry it, and those still resume and export. true trained on every token
  // (train_on: all), false on the answers (assistant).
  static constexpr std::string_view kLegacyTrainOnPrompt = "data.train_on_prompt";
  void read_legacy_train_on_prompt(const YAML::Node& node, int line) {
    bool all = false;
    if (!node.IsScalar() || !YAML::convert<bool>::decode(node, all)) {
      problems_.add({-1, line}, std::string(kLegacyTrainOnPrompt), "expected true or false (now data.train_on)");
      return;
    }
    if (inputs_.count("data.train_on") == 0) inputs_["data.train_on"] = {YAML::Node(all ? "all" : "assistant"), {-1, line}};
  }

  // "--set train.lr=1e-4": the value is YAML, so "[q_proj, v_proj]", "null" and "'123'" mean
  // what they mean in the file. A later --set of the same key wins.
  void read_overrides() {
    for (std::size_t i = 0; i < overrides_.size(); ++i) {
      const Origin origin{static_cast<int>(i), -1};
      const std::string& text = overrides_[i];
      const auto eq = text.find('=');
      if (eq == std::string::npos || eq == 0) {
        problems_.add(origin, "", "expected KEY=VALUE, e.g. --set train.lr=1e-4");
        continue;
      }
      const std::string path = text.substr(0, eq);
      if (is_section(path)) {
        problems_.add(origin, path, str_cat("is a section; set one of its keys, e.g. ", first_key_of(path)));
        continue;
      }
      if (!config_schema_find(path)) {
        problems_.add(origin, path, unknown_key_message(path, "key"));
        continue;
      }
      try {
        inputs_[path] = {YAML::Load(text.substr(eq + 1)), origin};
      } catch (const YAML::Exception& e) {
        problems_.add(origin, path, "YAML syntax error in the value: " + e.msg);
      }
    }
  }

  void resolve(TrainConfig& cfg) {
    for (const ConfigKey& key : config_schema()) {
      const auto it = inputs_.find(key.path);
      if (it != inputs_.end()) {
        const ParsedValue v = config_value_parse(key, it->second.node);
        if (v.error.empty()) {
          key.field.set(cfg, v.value);
          continue;
        }
        Origin origin = it->second.origin;
        if (origin.set_index < 0 && v.error_line >= 0) origin.line = v.error_line;
        problems_.add(origin, key.path, v.error);
        failed_.insert(key.path);
      } else if (key.required()) {
        // The line of the section it belongs in, when that section is there.
        const auto section = section_lines_.find(key.section());
        const Origin origin{-1, section != section_lines_.end() ? section->second : -1};
        problems_.add(origin, key.path, "required key is missing: " + key.doc);
        failed_.insert(key.path);
      } else {
        key.field.set(cfg, default_value(key));
      }
    }
  }

  Origin origin_of(std::string_view key) const {
    const auto it = inputs_.find(key);
    return it != inputs_.end() ? it->second.origin : Origin{};
  }

  struct Input {
    YAML::Node node;
    Origin origin;
  };
  const std::vector<std::string>& overrides_;
  const ConfigContext& ctx_;
  Problems problems_;
  std::map<std::string, Input, std::less<>> inputs_;
  std::map<std::string, int, std::less<>> section_lines_;
  std::set<std::string, std::less<>> failed_;
};

}  // namespace

TrainConfig config_load_from_string(const std::string& yaml_text, const std::string& label,
                                    const std::vector<std::string>& overrides, const ConfigContext& ctx) {
  return Loader(label, overrides, ctx).run(yaml_text);
}

TrainConfig config_load(const std::string& path, const std::vector<std::string>& overrides,
                        const ConfigContext& ctx) {
  std::ifstream file(path, std::ios::binary);
  ANVIL_CHECK_INPUT(file.good(), path, ": cannot read the config file");
  std::ostringstream text;
  text << file.rdbuf();
  return config_load_from_string(text.str(), path, overrides, ctx);
}

TrainConfig config_defaults() {
  TrainConfig cfg;
  for (const ConfigKey& key : config_schema())
    if (!key.required()) key.field.set(cfg, default_value(key));
  return cfg;
}

std::string config_to_yaml(const TrainConfig& cfg) {
  YAML::Emitter out;
  out.SetNullFormat(YAML::LowerNull);
  out << YAML::BeginMap;
  std::string_view open_section;
  for (const ConfigKey& key : config_schema()) {
    if (key.section() != open_section) {
      if (!open_section.empty()) out << YAML::EndMap;
      open_section = key.section();
      out << YAML::Key << std::string(open_section) << YAML::Value << YAML::BeginMap;
    }
    out << YAML::Key << std::string(key.leaf()) << YAML::Value;
    config_value_emit(out, key, key.field.get(cfg));
  }
  if (!open_section.empty()) out << YAML::EndMap;
  out << YAML::EndMap;
  ANVIL_CHECK(out.good(), "config_to_yaml: ", out.GetLastError());
  return std::string(out.c_str()) + "\n";
}

}  // namespace anvil::train
