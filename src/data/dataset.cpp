#include "data/dataset.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string_view>

#include "core/error.h"
#include "data/tokenizer_utf8.h"

namespace anvil::data {
namespace {

using nlohmann::json;

// A record that cannot become a sample: its kind (the column of the per-file report)
// and what is wrong with it.
struct BadRecord {
  std::string kind;
  std::string message;
};

template <typename... Args>
[[noreturn]] void bad(const char* kind, Args&&... args) {
  throw BadRecord{kind, str_cat(std::forward<Args>(args)...)};
}

json parse_record(const std::string& line) {
  const std::size_t invalid = utf8_find_invalid(line);
  if (invalid != std::string::npos) bad("invalid UTF-8", "ill-formed UTF-8 at column ", invalid + 1);
  json record;
  try {
    record = json::parse(line);
  } catch (const json::parse_error& e) {
    // nlohmann says "[json.exception...] parse error at line 1, column 13: <what>; last
    // read: '<bytes>'". Its line is always 1 here (the file's line is ours).
    std::string_view what = e.what();
    const std::size_t column = what.find(", column ");
    const std::size_t colon = column == std::string_view::npos ? column : what.find(": ", column);
    if (colon != std::string_view::npos) what.remove_prefix(colon + 2);
    what = what.substr(0, what.find("; last read:"));
    bad("invalid JSON", "invalid JSON at column ", e.byte, ": ", what);
  }
  if (!record.is_object()) bad("not an object", "a record must be a JSON object, not ", record.type_name());
  return record;
}

std::string keys_of(const json& record) {
  std::string keys;
  for (const auto& [key, value] : record.items()) keys += (keys.empty() ? "\"" : ", \"") + key + "\"";
  return keys.empty() ? "no keys" : "keys " + keys;
}

RecordFormat detect_format(const json& record) {
  const bool text = record.contains("text");
  const bool prompt_completion = record.contains("prompt") || record.contains("completion");
  const bool chat = record.contains("messages");
  if (text + prompt_completion + chat > 1)
    bad("unknown format", "the record has the keys of more than one format (", keys_of(record),
        "); set data.format");
  if (text) return RecordFormat::record_text;
  if (prompt_completion) return RecordFormat::record_prompt_completion;
  if (chat) return RecordFormat::record_chat;
  bad("unknown format", "unknown record format: expected \"text\", \"prompt\" and \"completion\", or "
      "\"messages\", found ", keys_of(record));
}

std::string_view string_field(const json& record, const char* key) {
  const auto it = record.find(key);
  if (it == record.end()) bad("missing field", "missing field \"", key, "\"");
  if (!it->is_string()) bad("wrong type", "field \"", key, "\" must be a string, not ", it->type_name());
  return it->get_ref<const std::string&>();
}

bool blank(std::string_view s) { return s.find_first_not_of(" \t\r\n") == std::string_view::npos; }

}  // namespace

std::int64_t FileReport::bad_count() const {
  std::int64_t n = 0;
  for (const auto& [kind, count] : bad) n += count;
  return n;
}

void FileReport::add_bad(std::int64_t line, const std::string& kind, const std::string& message) {
  ++bad[kind];
  shown.emplace_back(line, message);
  std::sort(shown.begin(), shown.end());
  if (shown.size() > kShown) shown.resize(kShown);
}

void FileReport::merge(const FileReport& other) {
  records += other.records;
  samples += other.samples;
  for (const auto& [kind, count] : other.bad) bad[kind] += count;
  shown.insert(shown.end(), other.shown.begin(), other.shown.end());
  std::sort(shown.begin(), shown.end());
  if (shown.size() > kShown) shown.resize(kShown);
}

std::string FileReport::summary() const {
  std::string s = str_cat(path, ": ", records, " records, ", samples, " samples");
  const std::int64_t n = bad_count();
  if (n == 0) return s;
  s += str_cat(", ", n, " skipped (");
  bool first = true;
  for (const auto& [kind, count] : bad) {
    s += str_cat(first ? "" : ", ", kind, " ", count);
    first = false;
  }
  s += ")";
  for (const auto& [line, message] : shown) s += str_cat("\n  ", path, ":", line, ": ", message);
  if (n > static_cast<std::int64_t>(shown.size())) s += str_cat("\n  ... and ", n - static_cast<std::int64_t>(shown.size()), " more");
  return s;
}

RecordEncoder::RecordEncoder(const Tokenizer& tok, const RecordOptions& opt) : tok_(tok), opt_(opt) {
  if (opt.add_eos) {
    eos_ = tok.eos_id();
    ANVIL_CHECK_INPUT(eos_.has_value(), "data.add_eos is set but the tokenizer has no EOS token");
  }
}

FileReport RecordEncoder::read_file(const std::string& path, int stride, int phase, const SampleFn& on_sample) {
  ANVIL_CHECK(stride >= 1 && phase >= 0 && phase < stride, stride, " ", phase);
  std::error_code ec;
  ANVIL_CHECK_INPUT(!std::filesystem::is_directory(path, ec), path, ": is a directory, not a JSONL file");
  std::ifstream in(path, std::ios::binary);
  ANVIL_CHECK_INPUT(in.is_open(), path, ": cannot open the data file");
  FileReport report;
  report.path = path;
  const auto vocab_size = static_cast<std::int64_t>(tok_.vocab_size());

  auto encode = [&](std::string_view text, bool add_special) {
    try {
      tok_.encode_append(text, add_special, ids_);
    } catch (const Error& e) {
      if (e.kind() != ErrorKind::user) throw;
      bad("invalid UTF-8", e.what());
    }
  };

  std::string line;
  std::int64_t line_no = 0;
  line_ = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if ((line_no - 1) % stride != phase || blank(line)) continue;
    line_ = line_no;
    ++report.records;
    try {
      const json record = parse_record(line);
      const RecordFormat format = opt_.format == RecordFormat::record_auto ? detect_format(record) : opt_.format;
      ids_.clear();
      switch (format) {
        case RecordFormat::record_text: {
          const std::string_view text = string_field(record, "text");
          if (text.empty()) bad("empty sample", "empty \"text\"");
          encode(text, true);
          text_.assign(text);
          // A template that already ends texts with EOS (add_eos_token) gets no second one.
          if (eos_ && (ids_.empty() || ids_.back() != *eos_)) ids_.push_back(*eos_);
          trained_.assign(ids_.size(), 1);
          break;
        }
        case RecordFormat::record_prompt_completion: {
          const std::string_view prompt = string_field(record, "prompt");
          const std::string_view completion = string_field(record, "completion");
          if (completion.empty()) bad("empty sample", "empty \"completion\"");
          encode(prompt, true);
          // EOS belongs after the completion, not between prompt and completion.
          if (tok_.adds_eos() && !ids_.empty() && ids_.back() == tok_.eos_id()) ids_.pop_back();
          const std::size_t prompt_len = opt_.train_on == TrainOn::train_on_all ? 0 : ids_.size();
          encode(completion, false);
          text_.assign(prompt);
          text_.append(completion);
          if (eos_) ids_.push_back(*eos_);
          trained_.assign(ids_.size(), 0);
          std::fill(trained_.begin() + static_cast<std::ptrdiff_t>(prompt_len), trained_.end(), 1);
          break;
        }
        case RecordFormat::record_chat: {
          // A configuration problem, not the record's: no skipping past it.
          ANVIL_CHECK_INPUT(opt_.chat != nullptr, path, ":", line_no, ": a chat record, but ", opt_.chat_problem);
          const auto it = record.find("messages");
          if (it == record.end()) bad("missing field", "missing field \"messages\"");
          if (!it->is_array()) bad("wrong type", "field \"messages\" must be a list, not ", it->type_name());
          messages_.clear();
          for (std::size_t i = 0; i < it->size(); ++i) {
            const json& m = (*it)[i];
            if (!m.is_object()) bad("wrong type", "messages[", i, "] must be an object, not ", m.type_name());
            const auto role = m.find("role"), content = m.find("content");
            if (role == m.end() || content == m.end())
              bad("missing field", "messages[", i, "] needs \"role\" and \"content\"");
            if (!role->is_string() || !content->is_string())
              bad("wrong type", "messages[", i, "]: \"role\" and \"content\" must be strings");
            messages_.push_back({role->get_ref<const std::string&>(), content->get_ref<const std::string&>()});
          }
          if (const auto problem = opt_.chat->render(messages_, opt_.train_on, chat_))
            bad(problem->nothing_to_train ? "empty sample" : "bad conversation", problem->message);
          offsets_.clear();
          tok_.encode_append_offsets(chat_.text, false, ids_, offsets_);
          text_ = chat_.text;
          // A token trains when its text reaches into a trained range.
          trained_.assign(ids_.size(), 0);
          std::size_t r = 0;
          for (std::size_t i = 0; i < ids_.size(); ++i) {
            const std::size_t begin = offsets_[i];
            const std::size_t end = std::max(i + 1 < ids_.size() ? std::size_t{offsets_[i + 1]} : chat_.text.size(),
                                             begin + 1);
            while (r < chat_.trained.size() && chat_.trained[r].second <= begin) ++r;
            trained_[i] = r < chat_.trained.size() && chat_.trained[r].first < end;
          }
          break;
        }
        case RecordFormat::record_auto: break;
      }
      for (const std::int32_t id : ids_)
        ANVIL_CHECK(id >= 0 && id < vocab_size, "token id ", id, " outside the vocabulary of ", vocab_size);
      ++report.samples;
      on_sample(line_no, ids_, trained_);
    } catch (const BadRecord& b) {
      ANVIL_CHECK_INPUT(opt_.on_error == OnError::on_error_skip, path, ":", line_no, ": ", b.message,
                        " (data.on_error: fail; set it to skip to count and skip bad records)");
      report.add_bad(line_no, b.kind, b.message);
    }
  }
  line_ = 0;
  ANVIL_CHECK_INPUT(!in.bad(), path, ": read error");
  return report;
}

std::int32_t dataset_pad_id(const Tokenizer& tok) {
  if (const auto pad = tok.pad_id()) return *pad;
  if (const auto eos = tok.eos_id()) return *eos;
  return 0;
}

SequenceSet dataset_load_jsonl(const std::string& path, const Tokenizer& tok, const DatasetOptions& opt,
                               FileReport* report_out) {
  const auto vocab_size = static_cast<std::int64_t>(tok.vocab_size());
  const std::int32_t pad_id = dataset_pad_id(tok);
  // tokenizer.json's "padding" may name any number.
  ANVIL_CHECK_INPUT(pad_id >= 0 && pad_id < vocab_size, "the tokenizer's pad id ", pad_id,
                    " is outside its vocabulary of ", vocab_size, " tokens");
  SequencePacker packer(opt.seq_len, opt.packing, pad_id, opt.overflow);
  RecordEncoder encoder(tok, opt.records);
  const FileReport report = encoder.read_file(
      path, 1, 0,
      [&](std::int64_t, std::span<const std::int32_t> ids, std::span<const std::uint8_t> trained) {
        packer.add(ids, trained);
      });
  if (report_out) *report_out = report;
  ANVIL_CHECK_INPUT(report.records > 0, path, ": no records (the file is empty)");
  ANVIL_CHECK_INPUT(report.samples > 0, path, ": none of the ", report.records, " records is usable: ",
                    report.summary());
  SequenceSet set = packer.finish();
  ANVIL_CHECK_INPUT(set.count > 0, path, ": none of the ", report.samples,
                    " samples has a token to train within seq_len ", opt.seq_len);
  return set;
}

}  // namespace anvil::data
