// gguf-py's SpecialVocab, read from the files it reads and in the order it reads them, so an
// exported GGUF carries the special ids and flags a converted one would.
#include "export/gguf_special_vocab.h"

#include <algorithm>
#include <cctype>
#include <filesystem>

#include "core/error.h"
#include "io/files.h"

namespace anvil::exporting {

const nlohmann::json& json_field(const nlohmann::json& obj, const std::string& key) {
  static const nlohmann::json null_value;
  if (!obj.is_object()) return null_value;
  const auto it = obj.find(key);
  return it == obj.end() ? null_value : *it;
}

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// Python's truth value of a JSON field: null, "" and false are false.
bool truthy(const json& j) {
  if (j.is_null()) return false;
  if (j.is_string()) return !j.get_ref<const std::string&>().empty();
  if (j.is_boolean()) return j.get<bool>();
  if (j.is_object() || j.is_array()) return !j.empty();
  return true;
}

// The GGUF key of each special token type SpecialVocab has a writer for; the others (cls)
// it skips with a warning.
const char* id_key(const std::string& type) {
  if (type == "bos") return "tokenizer.ggml.bos_token_id";
  if (type == "eos") return "tokenizer.ggml.eos_token_id";
  if (type == "unk") return "tokenizer.ggml.unknown_token_id";
  if (type == "sep") return "tokenizer.ggml.seperator_token_id";  // sic, llama.cpp's key
  if (type == "pad") return "tokenizer.ggml.padding_token_id";
  if (type == "mask") return "tokenizer.ggml.mask_token_id";
  if (type == "eot") return "tokenizer.ggml.eot_token_id";
  if (type == "eom") return "tokenizer.ggml.eom_token_id";
  return nullptr;
}

const char* add_key(const std::string& type) {
  if (type == "bos") return "tokenizer.ggml.add_bos_token";
  if (type == "eos") return "tokenizer.ggml.add_eos_token";
  if (type == "sep") return "tokenizer.ggml.add_sep_token";
  return nullptr;
}

// What SpecialVocab collects, in insertion order (the order add_to_gguf writes).
struct Specials {
  std::vector<std::string> types = {"bos", "eos", "unk", "sep", "pad", "cls", "mask"};
  std::vector<std::pair<std::string, std::uint64_t>> ids;
  std::vector<std::pair<std::string, bool>> add;
  std::optional<std::size_t> n_vocab;

  bool has_type(const std::string& t) const { return std::find(types.begin(), types.end(), t) != types.end(); }
  bool has_add(const std::string& t) const {
    return std::any_of(add.begin(), add.end(), [&](const auto& a) { return a.first == t; });
  }
  void set_add(const std::string& t, bool value) {
    for (auto& a : add)
      if (a.first == t) {
        a.second = value;
        return;
      }
    add.emplace_back(t, value);
  }
  void set_add_default(const std::string& t, bool value) {
    if (!has_add(t)) add.emplace_back(t, value);
  }
  // The first id found for a type wins; ids past the vocabulary are skipped.
  void set_id(const std::string& t, const json& id, const std::string& file) {
    if (!id.is_number_integer()) return;
    ANVIL_CHECK_INPUT(id.get<std::int64_t>() >= 0, file, ": ", t, "_token id ", id.dump(), " is negative");
    const auto u = id.get<std::uint64_t>();
    if (n_vocab && u >= *n_vocab) return;
    if (std::any_of(ids.begin(), ids.end(), [&](const auto& p) { return p.first == t; })) return;
    ids.emplace_back(t, u);
  }
};

json special_token_id(const json& item) { return json_field(json_field(item, "SpecialToken"), "id"); }
json sequence_id(const json& item) { return json_field(json_field(item, "Sequence"), "id"); }

// SpecialVocab's reading of a TemplateProcessing: a special token first in `single` is BOS
// (add_bos), one last is EOS (add_eos; a last token other than eos_token becomes EOS, the
// old one EOT), and a separator between A and B in `pair` sets add_sep.
void read_template_processing(const json& processor, json& config, bool have_config, Specials& sv, json& bos,
                              json& cls, json& eos, json& sep) {
  json single = json_field(processor, "single"), pair = json_field(processor, "pair");
  if (!single.is_array()) single = json::array();
  if (!pair.is_array()) pair = json::array();
  json first, last;
  if (single.size() > 1) {
    first = special_token_id(single.front());
    if (truthy(first)) {
      if (!have_config) {
        bos = first;
      } else if (first != bos && first != cls) {
        if (!truthy(bos)) config["bos_token"] = bos = first;
        if (!truthy(cls)) config["cls_token"] = cls = first;
      }
      sv.set_add("bos", first == bos || first == cls);
    }
    last = special_token_id(single.back());
    if (truthy(last)) {
      if (!have_config) {
        eos = last;
      } else if (last != eos) {
        for (const char* t : {"eot", "eom"})
          if (!sv.has_type(t)) {
            sv.types.push_back(t);
            config[std::string(t) + "_token"] = eos;
            break;
          }
        config["eos_token"] = eos = last;
      }
      sv.set_add("eos", last == eos);
    }
  }
  if (pair.empty()) return;
  const std::size_t start = truthy(first) && special_token_id(pair.front()) == first ? 1 : 0;
  const std::size_t stop = pair.size() - (truthy(last) && special_token_id(pair.back()) == last ? 1 : 0);
  if (stop <= start + 2 || sequence_id(pair[start]) != "A" || sequence_id(pair[stop - 1]) != "B") return;
  // What lies between A and B: [sep] [eos].
  bool add_sep = false;
  const json e0 = special_token_id(pair[start + 1]);
  if (truthy(e0) && (e0 == sep || e0 == eos) && !truthy(last)) add_sep = true;
  if (stop - start - 2 == 2) {
    const json e1 = special_token_id(pair[start + 2]);
    if (truthy(e1) && (e1 == sep || e1 == eos)) add_sep = true;
  }
  sv.set_add("sep", add_sep);
  if (add_sep && !truthy(sep) && have_config) config["sep_token"] = eos;
}

void read_post_processor(const TokenizerFiles& f, json& config, Specials& sv) {
  const bool have_config = truthy(config);
  json bos = json_field(config, "bos_token"), cls = json_field(config, "cls_token");
  json eos = json_field(config, "eos_token"), sep = json_field(config, "sep_token");
  if (!truthy(bos) && truthy(cls) && have_config) config["bos_token"] = bos = cls;
  if (!truthy(eos) && truthy(sep) && have_config) config["eos_token"] = eos = sep;
  const json& pp = json_field(f.tokenizer, "post_processor");
  if (!truthy(pp)) return;
  const json processors = pp.contains("processors") ? pp["processors"] : json::array({pp});
  ANVIL_CHECK_INPUT(processors.is_array(), f.tokenizer_path, ": post_processor.processors must be a list");
  for (const json& processor : processors) {
    const json& type_field = json_field(processor, "type");
    const std::string type = type_field.is_string() ? type_field.get<std::string>() : "";
    if (type == "ByteLevel") {
      sv.set_add_default("bos", false);
      sv.set_add_default("eos", false);
    } else if (type == "TemplateProcessing") {
      read_template_processing(processor, config, have_config, sv, bos, cls, eos, sep);
    } else {
      // RobertaProcessing and BertProcessing set cls/sep tokens that llama.cpp reads only
      // for encoder models; anvil's models are decoders.
      ANVIL_CHECK_INPUT(type == "Sequence", f.tokenizer_path, ": post_processor '", type,
                        "' is not supported for GGUF export (ByteLevel and TemplateProcessing are)");
    }
  }
}

std::string read_file(const fs::path& p) { return io::read_text_file(p.string()); }

// tokenizer_config.json's chat_template first, else chat_template.jinja (with
// additional_chat_templates/*.jinja, a list), else chat_template.json.
json chat_template(const TokenizerFiles& f, const json& config) {
  const fs::path dir(f.dir);
  json alt;
  if (fs::is_regular_file(dir / "chat_template.jinja")) {
    alt = read_file(dir / "chat_template.jinja");
    std::vector<fs::path> extra;
    if (fs::is_directory(dir / "additional_chat_templates"))
      for (const auto& e : fs::directory_iterator(dir / "additional_chat_templates"))
        if (e.path().extension() == ".jinja") extra.push_back(e.path());
    if (!extra.empty()) {
      std::sort(extra.begin(), extra.end());
      alt = json::array({{{"name", "default"}, {"template", alt}}});
      for (const fs::path& p : extra) alt.push_back({{"name", p.stem().string()}, {"template", read_file(p)}});
    }
  } else if (fs::is_regular_file(dir / "chat_template.json")) {
    const std::string path = (dir / "chat_template.json").string();
    json j;
    try {
      j = json::parse(read_file(path));
    } catch (const json::parse_error& e) {
      throw_user_error(path, ": not valid JSON: ", e.what());
    }
    alt = json_field(j, "chat_template");
  }
  return config.contains("chat_template") ? config["chat_template"] : alt;
}

// gguf-py's add_chat_template: a list gives tokenizer.chat_template.<name> for each named
// template (name reduced to [A-Za-z0-9_]), tokenizer.chat_templates listing them, and the
// "default" one as tokenizer.chat_template.
void append_chat_template(const json& t, const std::string& file, std::vector<GgufKv>& out) {
  if (t.is_string()) {
    out.push_back({"tokenizer.chat_template", io::gguf_value_string(t.get<std::string>())});
    return;
  }
  if (!t.is_array()) return;  // SpecialVocab ignores any other type
  std::optional<std::string> fallback;
  std::vector<io::GgufValue> names;
  for (const json& choice : t) {
    ANVIL_CHECK_INPUT(choice.is_object(), file, ": chat_template must be a string or a list of {name, template}");
    std::string name = choice.value("name", "");
    for (char& c : name)
      if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
    const json& tmpl = json_field(choice, "template");
    if (name.empty() || !tmpl.is_string()) continue;
    if (name == "default") {
      fallback = tmpl.get<std::string>();
    } else {
      out.push_back({"tokenizer.chat_template." + name, io::gguf_value_string(tmpl.get<std::string>())});
      if (std::none_of(names.begin(), names.end(), [&](const io::GgufValue& v) { return v.s == name; }))
        names.push_back(io::gguf_value_string(name));
    }
  }
  if (!names.empty())
    out.push_back({"tokenizer.chat_templates", io::gguf_value_array(io::GgufValueType::gguf_string, std::move(names))});
  if (fallback) out.push_back({"tokenizer.chat_template", io::gguf_value_string(*fallback)});
}

}  // namespace

void append_special_vocab(const TokenizerFiles& f, std::optional<std::size_t> n_vocab, std::vector<GgufKv>& out) {
  Specials sv;
  sv.n_vocab = n_vocab;
  json config = f.config.is_object() ? f.config : json();  // edited as SpecialVocab edits its copy
  read_post_processor(f, config, sv);
  json chat;
  if (truthy(config)) {
    chat = chat_template(f, config);
    const json added = f.tokenizer.value("added_tokens", json::array());
    for (const std::string& t : sv.types) {
      const json& add_entry = json_field(config, "add_" + t + "_token");
      if (add_entry.is_boolean()) sv.set_add_default(t, add_entry.get<bool>());
      json entry = json_field(config, t + "_token");
      if (entry.is_object()) entry = json_field(entry, "content");
      if (!entry.is_string()) continue;
      // The id of the first added token with that content; a token only in the model's
      // vocabulary is not looked up (config.json's id may still name it).
      for (const json& a : added)
        if (json_field(a, "content") == entry) {
          sv.set_id(t, json_field(a, "id"), f.tokenizer_path);
          break;
        }
    }
  }
  for (const std::string& t : sv.types) {
    json id = json_field(f.model_config, t + "_token_id");
    if (id.is_null()) id = json_field(json_field(f.model_config, "text_config"), t + "_token_id");
    sv.set_id(t, id, f.dir + "/config.json");
  }
  for (const auto& [t, id] : sv.ids)
    if (const char* key = id_key(t)) out.push_back({key, io::gguf_value_u32(static_cast<std::uint32_t>(id))});
  for (const auto& [t, value] : sv.add)
    if (const char* key = add_key(t)) out.push_back({key, io::gguf_value_bool(value)});
  append_chat_template(chat, f.config_path, out);
}

}  // namespace anvil::exporting
