#include "data/dataset.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace anvil::data {
namespace {

using nlohmann::json;

const char* format_name(RecordFormat format) {
  switch (format) {
    case RecordFormat::record_text: return "text";
    case RecordFormat::record_prompt_completion: return "prompt/completion";
    case RecordFormat::record_auto: break;
  }
  return "auto";
}

// Where a record is, for every message about it: "path:line: ...".
struct Where {
  const std::string& path;
  std::int64_t line;
};

template <typename... Args>
[[noreturn]] void fail(const Where& at, Args&&... args) {
  throw_user_error(at.path, ":", at.line, ": ", std::forward<Args>(args)...);
}

json parse_record(const std::string& line, const Where& at) {
  json record;
  try {
    record = json::parse(line);
  } catch (const json::parse_error& e) {
    // nlohmann says "[json.exception...] parse error at line 1, column 13: <what>; last
    // read: '<bytes>'". Its line is always 1 here (the file's line is ours), and the bytes
    // may be the invalid UTF-8 complained of, which must not reach a log.
    std::string_view what = e.what();
    const std::size_t column = what.find(", column ");
    const std::size_t colon = column == std::string_view::npos ? column : what.find(": ", column);
    if (colon != std::string_view::npos) what.remove_prefix(colon + 2);
    what = what.substr(0, what.find("; last read:"));
    fail(at, "invalid JSON at column ", e.byte, ": ", what);
  }
  if (!record.is_object()) fail(at, "a record must be a JSON object, not ", record.type_name());
  return record;
}

std::string keys_of(const json& record) {
  std::string keys;
  for (const auto& [key, value] : record.items()) keys += (keys.empty() ? "\"" : ", \"") + key + "\"";
  return keys.empty() ? "no keys" : "keys " + keys;
}

RecordFormat detect_format(const json& record, const Where& at) {
  const bool text = record.contains("text");
  const bool prompt_completion = record.contains("prompt") || record.contains("completion");
  if (text && !prompt_completion) return RecordFormat::record_text;
  if (prompt_completion && !text) return RecordFormat::record_prompt_completion;
  if (text) fail(at, "the record has both \"text\" and \"prompt\"/\"completion\"; set data.format");
  if (record.contains("messages"))
    fail(at, "chat records (\"messages\") are not supported yet; use \"text\" or \"prompt\"/\"completion\"");
  fail(at, "unknown record format: expected a \"text\" key or \"prompt\" and \"completion\" keys, found ",
       keys_of(record));
}

std::string_view string_field(const json& record, const char* key, const Where& at) {
  const auto it = record.find(key);
  if (it == record.end()) fail(at, "missing field \"", key, "\"");
  if (!it->is_string()) fail(at, "field \"", key, "\" must be a string, not ", it->type_name());
  return it->get_ref<const std::string&>();
}

// A record's tokens and which predictions are trained; the buffers are reused record
// after record.
class SampleEncoder {
 public:
  SampleEncoder(const Tokenizer& tok, std::optional<std::int32_t> eos) : tok_(tok), eos_(eos) {}

  void text(std::string_view text, const Where& at) {
    if (text.empty()) fail(at, "empty \"text\"");
    ids_.clear();
    encode(text, true, at);
    // A template that already ends texts with EOS (add_eos_token) gets no second one.
    if (eos_ && (ids_.empty() || ids_.back() != *eos_)) ids_.push_back(*eos_);
    trained_.assign(ids_.size(), 1);
  }

  void prompt_completion(std::string_view prompt, std::string_view completion, const Where& at) {
    if (completion.empty()) fail(at, "empty \"completion\"");
    ids_.clear();
    encode(prompt, true, at);
    // EOS belongs after the completion, not between prompt and completion.
    if (tok_.adds_eos() && !ids_.empty() && ids_.back() == tok_.eos_id()) ids_.pop_back();
    const std::size_t prompt_len = ids_.size();
    encode(completion, false, at);
    if (eos_) ids_.push_back(*eos_);
    trained_.assign(ids_.size(), 0);
    std::fill(trained_.begin() + static_cast<std::ptrdiff_t>(prompt_len), trained_.end(), 1);
  }

  const std::vector<std::int32_t>& ids() const { return ids_; }
  const std::vector<std::uint8_t>& trained() const { return trained_; }

 private:
  void encode(std::string_view text, bool add_special, const Where& at) {
    try {
      tok_.encode_append(text, add_special, ids_);
    } catch (const Error& e) {
      if (e.kind() != ErrorKind::user) throw;
      fail(at, e.what());  // invalid UTF-8 and the like: the tokenizer says what, we say where
    }
  }

  const Tokenizer& tok_;
  std::optional<std::int32_t> eos_;
  std::vector<std::int32_t> ids_;
  std::vector<std::uint8_t> trained_;
};

}  // namespace

std::int32_t dataset_pad_id(const Tokenizer& tok) {
  if (const auto pad = tok.pad_id()) return *pad;
  if (const auto eos = tok.eos_id()) return *eos;
  return 0;
}

SequenceSet dataset_load_jsonl(const std::string& path, const Tokenizer& tok, const DatasetOptions& opt) {
  std::error_code ec;
  ANVIL_CHECK_INPUT(!std::filesystem::is_directory(path, ec), path, ": is a directory, not a JSONL file");
  std::ifstream in(path, std::ios::binary);
  ANVIL_CHECK_INPUT(in.is_open(), path, ": cannot open the data file");
  std::optional<std::int32_t> eos;
  if (opt.add_eos) {
    eos = tok.eos_id();
    ANVIL_CHECK_INPUT(eos.has_value(), path, ": add_eos is set but the tokenizer has no EOS token");
  }

  const auto vocab_size = static_cast<std::int64_t>(tok.vocab_size());
  const std::int32_t pad_id = dataset_pad_id(tok);
  // tokenizer.json's "padding" may name any number.
  ANVIL_CHECK_INPUT(pad_id >= 0 && pad_id < vocab_size, "the tokenizer's pad id ", pad_id,
                    " is outside its vocabulary of ", vocab_size, " tokens");
  SequencePacker packer(opt.seq_len, opt.packing, pad_id);
  SampleEncoder encoder(tok, eos);
  RecordFormat format = opt.format;
  std::int64_t first_line = 0, records = 0, line_no = 0;
  std::string line;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r\n") == std::string::npos) continue;
    const Where at{path, line_no};
    const json record = parse_record(line, at);
    if (opt.format == RecordFormat::record_auto) {
      const RecordFormat found = detect_format(record, at);
      if (records == 0) {
        format = found;
        first_line = line_no;
      } else if (found != format) {
        fail(at, "a ", format_name(found), " record, but the first record (line ", first_line, ") is ",
             format_name(format));
      }
    }
    ++records;

    if (format == RecordFormat::record_text) {
      encoder.text(string_field(record, "text", at), at);
    } else {
      const std::string_view prompt = string_field(record, "prompt", at);
      encoder.prompt_completion(prompt, string_field(record, "completion", at), at);
    }
    for (const std::int32_t id : encoder.ids())
      ANVIL_CHECK(id >= 0 && id < vocab_size, "token id ", id, " outside the vocabulary of ", vocab_size);
    packer.add(encoder.ids(), encoder.trained());
  }
  ANVIL_CHECK_INPUT(!in.bad(), path, ": read error");
  ANVIL_CHECK_INPUT(records > 0, path, ": no records (the file is empty)");

  SequenceSet set = packer.finish();
  ANVIL_CHECK_INPUT(set.count > 0, path, ": none of the ", records,
                    " records has a token to train within seq_len ", opt.seq_len);
  return set;
}

}  // namespace anvil::data
