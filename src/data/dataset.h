// Training data records: JSONL files, one JSON object a line (blank lines are skipped,
// other keys ignored), each tokenized into one sample (ids + which predictions train):
//   {"text": "..."}                           every next-token prediction is trained
//   {"prompt": "...", "completion": "..."}    the completion (and EOS) are trained
//   {"messages": [{"role", "content"}, ...]}  rendered with a chat template
//                                             (data/chat_template.h); assistant turns train
// With format auto each record's keys decide its format.
//
// Bad records (invalid JSON or UTF-8, missing or mistyped fields, empty samples, broken
// conversations) are counted per file by kind, the first few kept with their line
// numbers, and skipped; with OnError::on_error_fail the first one is a user error
// "path:line: what".
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "data/chat_template.h"
#include "data/packing.h"
#include "data/tokenizer.h"

namespace anvil::data {

enum class RecordFormat { record_auto, record_text, record_prompt_completion, record_chat };
enum class OnError { on_error_skip, on_error_fail };

struct RecordOptions {
  RecordFormat format = RecordFormat::record_auto;
  bool add_eos = true;          // end text and prompt/completion samples with EOS (chat: the template's own)
  TrainOn train_on = TrainOn::train_on_assistant;  // which predictions train (chat_template.h)
  OnError on_error = OnError::on_error_skip;
  // Chat records need a renderer; when it is absent, `chat_problem` says why (no template
  // configured and none detected) and a chat record is a user error saying so.
  const ChatRenderer* chat = nullptr;
  std::string chat_problem;
};

// What reading one file found: records, and the bad ones by kind.
struct FileReport {
  static constexpr std::size_t kShown = 5;  // bad records kept with their message

  std::string path;
  std::int64_t records = 0;  // non-blank lines
  std::int64_t samples = 0;  // records that became samples
  std::map<std::string, std::int64_t> bad;                  // kind -> count
  std::vector<std::pair<std::int64_t, std::string>> shown;  // (line, message), the first kShown by line

  std::int64_t bad_count() const;
  void add_bad(std::int64_t line, const std::string& kind, const std::string& message);
  // Adds another reader's counts of the same file (ranks read interleaved lines).
  void merge(const FileReport& other);
  // "path: 1000 records, 997 samples, 3 skipped (invalid JSON 2, missing field 1); line 12: ..."
  std::string summary() const;
};

// Tokenizes records into samples. One per thread (it reuses its buffers).
class RecordEncoder {
 public:
  RecordEncoder(const Tokenizer& tok, const RecordOptions& opt);

  // Reads `path`, tokenizing the records on lines where (line - 1) % stride == phase (the
  // lines of one of `stride` ranks), handing each sample to `on_sample(line, ids, trained)`.
  // The file must exist and be readable (a user error otherwise).
  using SampleFn = std::function<void(std::int64_t line, std::span<const std::int32_t> ids,
                                      std::span<const std::uint8_t> trained)>;
  FileReport read_file(const std::string& path, int stride, int phase, const SampleFn& on_sample);
  // The line read_file was at: after a user error, the record at fault (0: the file itself).
  std::int64_t line() const { return line_; }
  // The text the sample just handed to on_sample was tokenized from: a chat record as its
  // template rendered it, a prompt/completion record as prompt + completion.
  const std::string& text() const { return text_; }

 private:
  const Tokenizer& tok_;
  RecordOptions opt_;
  std::optional<std::int32_t> eos_;
  std::vector<std::int32_t> ids_;
  std::vector<std::uint8_t> trained_;
  std::vector<std::uint32_t> offsets_;
  RenderedChat chat_;
  std::string text_;
  std::vector<ChatMessage> messages_;
  std::int64_t line_ = 0;
};

// The id that fills the end of rows: the tokenizer's pad token, else EOS, else 0. Its
// targets are always ignored, so the choice only matters to what attention sees.
std::int32_t dataset_pad_id(const Tokenizer& tok);

// One file read, tokenized and packed in memory, in file order: tests and small tools.
// A file with no records, or none with anything to train, is a user error.
struct DatasetOptions {
  RecordOptions records;
  std::int64_t seq_len = 0;
  bool packing = true;
  Overflow overflow = Overflow::overflow_truncate;
};
SequenceSet dataset_load_jsonl(const std::string& path, const Tokenizer& tok, const DatasetOptions& opt,
                               FileReport* report = nullptr);

}  // namespace anvil::data
