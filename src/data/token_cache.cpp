#include "data/token_cache.h"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>

#include "core/error.h"
#include "data/sampler.h"
#include "io/files.h"
#include "io/safetensors.h"

namespace anvil::data {
namespace {

using nlohmann::json;

constexpr char kCacheMagic[8] = {'A', 'N', 'V', 'T', 'O', 'K', '0', '1'};
constexpr char kPartMagic[8] = {'A', 'N', 'V', 'P', 'A', 'R', 'T', '1'};
constexpr std::uint64_t kMaxHeader = 64ull << 20;
constexpr int kFormatVersion = 1;

std::uint64_t align64(std::uint64_t x) { return (x + 63) & ~std::uint64_t{63}; }

// ---- the key

class KeyHasher {
 public:
  KeyHasher() : state_(XXH3_createState()) {
    ANVIL_CHECK(state_ != nullptr);
    XXH3_128bits_reset(state_);
  }
  ~KeyHasher() { XXH3_freeState(state_); }
  KeyHasher(const KeyHasher&) = delete;
  KeyHasher& operator=(const KeyHasher&) = delete;

  void bytes(const void* p, std::size_t n) { XXH3_128bits_update(state_, p, n); }
  // A length-prefixed field, so that no two different field lists hash the same bytes.
  void field(std::string_view s) {
    const std::uint64_t n = s.size();
    bytes(&n, sizeof n);
    bytes(s.data(), s.size());
  }
  void file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in.is_open()) {
      field("<absent>");
      return;
    }
    std::vector<char> buf(1 << 20);
    std::uint64_t total = 0;
    while (in) {
      in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
      const auto got = static_cast<std::size_t>(in.gcount());
      bytes(buf.data(), got);
      total += got;
    }
    ANVIL_CHECK_INPUT(!in.bad(), path, ": read error");
    bytes(&total, sizeof total);
  }
  std::string hex() const {
    const XXH128_hash_t h = XXH3_128bits_digest(state_);
    char out[33];
    std::snprintf(out, sizeof out, "%016llx%016llx", static_cast<unsigned long long>(h.high64),
                  static_cast<unsigned long long>(h.low64));
    return out;
  }

 private:
  XXH3_state_t* state_;
};

// A uniform draw in [0, 1) fixed by (seed, salt, source, line): which records are held out
// and which get their fractional extra use. Independent of ranks and of the file order.
double record_draw(std::uint64_t seed, std::uint64_t salt, std::uint32_t source, std::int64_t line) {
  SplitMix64 g(seed ^ (salt * 0x9E3779B97F4A7C15ULL) ^ (std::uint64_t{source} << 40) ^ static_cast<std::uint64_t>(line));
  g.next();
  return static_cast<double>(g.next() >> 11) * 0x1.0p-53;
}

// ---- reports as JSON

json report_to_json(const FileReport& r) {
  json shown = json::array();
  for (const auto& [line, message] : r.shown) shown.push_back({line, message});
  return {{"path", r.path}, {"records", r.records}, {"samples", r.samples}, {"bad", r.bad}, {"shown", shown}};
}

FileReport report_from_json(const json& j) {
  FileReport r;
  r.path = j.at("path").get<std::string>();
  r.records = j.at("records").get<std::int64_t>();
  r.samples = j.at("samples").get<std::int64_t>();
  r.bad = j.at("bad").get<std::map<std::string, std::int64_t>>();
  for (const json& s : j.at("shown")) r.shown.emplace_back(s.at(0).get<std::int64_t>(), s.at(1).get<std::string>());
  return r;
}

json stats_to_json(const PackStats& s) {
  return {{"samples", s.samples},     {"documents", s.documents},       {"tokens", s.tokens},
          {"trained_tokens", s.trained_tokens}, {"truncated", s.truncated}, {"split", s.split},
          {"dropped_long", s.dropped_long},     {"dropped_untrained", s.dropped_untrained}};
}

PackStats stats_from_json(const json& j) {
  PackStats s;
  s.samples = j.at("samples").get<std::int64_t>();
  s.documents = j.at("documents").get<std::int64_t>();
  s.tokens = j.at("tokens").get<std::int64_t>();
  s.trained_tokens = j.at("trained_tokens").get<std::int64_t>();
  s.truncated = j.at("truncated").get<std::int64_t>();
  s.split = j.at("split").get<std::int64_t>();
  s.dropped_long = j.at("dropped_long").get<std::int64_t>();
  s.dropped_untrained = j.at("dropped_untrained").get<std::int64_t>();
  return s;
}

// ---- files written with an error that names them

class OutFile {
 public:
  explicit OutFile(std::string path) : path_(std::move(path)), f_(std::fopen(path_.c_str(), "wb")) {
    ANVIL_CHECK_INPUT(f_ != nullptr, path_, ": cannot create: ", std::strerror(errno));
  }
  ~OutFile() {
    if (f_) std::fclose(f_);
  }
  OutFile(const OutFile&) = delete;
  OutFile& operator=(const OutFile&) = delete;

  void write(const void* p, std::size_t n) {
    ANVIL_CHECK_INPUT(n == 0 || std::fwrite(p, 1, n, f_) == n, path_, ": write failed: ", std::strerror(errno));
    written_ += n;
  }
  void pad_to(std::uint64_t offset) {
    static const char zeros[64] = {};
    ANVIL_CHECK(offset >= written_ && offset - written_ <= 64);
    write(zeros, offset - written_);
  }
  std::uint64_t written() const { return written_; }
  // Flushes, fsyncs and closes: the bytes are on disk when it returns.
  void close() {
    const bool ok = std::fflush(f_) == 0 && ::fsync(::fileno(f_)) == 0;
    const bool closed = std::fclose(f_) == 0;
    f_ = nullptr;
    ANVIL_CHECK_INPUT(ok && closed, path_, ": write failed: ", std::strerror(errno));
  }

 private:
  std::string path_;
  std::FILE* f_;
  std::uint64_t written_ = 0;
};

// ---- part files: records of (source, n, line) + ids + flags padded to 4 bytes

struct PartRecordHeader {
  std::uint32_t source;
  std::uint32_t n;
  std::int64_t line;
};

struct Sample {
  std::uint32_t source;
  std::int64_t line;
  std::uint32_t n;
  const std::int32_t* ids;
  const std::uint8_t* trained;
};

void read_part(const io::MappedFile& f, std::vector<Sample>& out) {
  const std::uint8_t* p = f.data();
  const std::uint8_t* end = p + f.size();
  ANVIL_CHECK(f.size() >= sizeof kPartMagic && std::memcmp(p, kPartMagic, sizeof kPartMagic) == 0, f.path(),
              ": not a part file");
  p += sizeof kPartMagic;
  while (p < end) {
    PartRecordHeader h;
    ANVIL_CHECK(end - p >= static_cast<std::ptrdiff_t>(sizeof h), f.path(), ": truncated");
    std::memcpy(&h, p, sizeof h);
    p += sizeof h;
    const std::size_t body = std::size_t{h.n} * 4 + ((std::size_t{h.n} + 3) & ~std::size_t{3});
    ANVIL_CHECK(static_cast<std::size_t>(end - p) >= body, f.path(), ": truncated");
    out.push_back({h.source, h.line, h.n, reinterpret_cast<const std::int32_t*>(p), p + std::size_t{h.n} * 4});
    p += body;
  }
}

std::string source_path(const PrepareSpec& spec, std::uint32_t source) {
  return source < spec.train.size() ? spec.train[source].path : *spec.eval;
}

}  // namespace

std::string cache_key(const PrepareSpec& spec, const std::string& model_dir) {
  KeyHasher h;
  h.field(str_cat("anvil-token-cache ", kFormatVersion));
  for (const char* name : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}) {
    h.field(name);
    h.file((std::filesystem::path(model_dir) / name).string());
  }
  for (const DataSource& s : spec.train) {
    h.field("train");
    h.file(s.path);
    h.field(str_cat(s.weight));
  }
  h.field("eval");
  if (spec.eval) h.file(*spec.eval);
  const RecordOptions& r = spec.records;
  h.field(str_cat(spec.eval_fraction, " ", static_cast<int>(r.format), " ", r.add_eos, " ", static_cast<int>(r.train_on), " ",
                  static_cast<int>(r.on_error), " ",
                  spec.seq_len, " ", spec.packing, " ", static_cast<int>(spec.overflow), " ", spec.shuffle, " ",
                  spec.seed));
  h.field("chat_template");
  h.field(spec.chat_template ? spec.chat_template->text : std::string("none"));
  return h.hex();
}

std::optional<PartError> prepare_write_part(const PrepareSpec& spec, const Tokenizer& tok, int rank, int world,
                                            const std::string& part_path) {
  RecordEncoder encoder(tok, spec.records);
  OutFile out(part_path);
  out.write(kPartMagic, sizeof kPartMagic);
  json reports = json::array();
  const auto sources = static_cast<std::uint32_t>(spec.train.size() + (spec.eval ? 1 : 0));
  for (std::uint32_t source = 0; source < sources; ++source) {
    const std::string path = source_path(spec, source);
    try {
      const FileReport report = encoder.read_file(
          path, world, rank,
          [&](std::int64_t line, std::span<const std::int32_t> ids, std::span<const std::uint8_t> trained) {
            const PartRecordHeader h{source, static_cast<std::uint32_t>(ids.size()), line};
            out.write(&h, sizeof h);
            out.write(ids.data(), ids.size_bytes());
            out.write(trained.data(), trained.size());
            static const std::uint8_t zeros[4] = {};
            out.write(zeros, ((trained.size() + 3) & ~std::size_t{3}) - trained.size());
          });
      reports.push_back(report_to_json(report));
    } catch (const Error& e) {
      if (e.kind() != ErrorKind::user) throw;
      return PartError{source, encoder.line(), e.what()};
    }
  }
  out.close();
  io::write_text_file_atomic(part_path + ".json", reports.dump());
  return std::nullopt;
}

void prepare_assemble(const PrepareSpec& spec, const Tokenizer& tok, const std::vector<std::string>& part_paths,
                      const std::string& key, const std::string& cache_path) {
  const std::uint32_t n_train = static_cast<std::uint32_t>(spec.train.size());
  const auto sources = n_train + (spec.eval ? 1u : 0u);
  // Parts, and the per-file reports summed over them.
  std::vector<std::shared_ptr<io::MappedFile>> parts;
  std::vector<Sample> samples;
  std::vector<FileReport> reports(sources);
  for (std::uint32_t s = 0; s < sources; ++s) reports[s].path = source_path(spec, s);
  for (const std::string& p : part_paths) {
    parts.push_back(io::MappedFile::open(p));
    read_part(*parts.back(), samples);
    const json j = json::parse(io::read_text_file(p + ".json"));
    ANVIL_CHECK(j.size() == sources, p, ".json: ", j.size(), " reports for ", sources, " files");
    for (std::uint32_t s = 0; s < sources; ++s) reports[s].merge(report_from_json(j[s]));
  }
  for (const FileReport& r : reports) {
    ANVIL_CHECK_INPUT(r.records > 0, r.path, ": no records (the file is empty)");
    ANVIL_CHECK_INPUT(r.samples > 0, "none of the records is usable: ", r.summary());
  }
  std::sort(samples.begin(), samples.end(),
            [](const Sample& a, const Sample& b) { return std::tie(a.source, a.line) < std::tie(b.source, b.line); });

  // The eval split, then each training record's uses by weight.
  std::vector<const Sample*> train, eval;
  for (const Sample& s : samples) {
    if (s.source == n_train || (spec.eval_fraction > 0 && record_draw(spec.seed, 1, s.source, s.line) < spec.eval_fraction)) {
      eval.push_back(&s);
      continue;
    }
    const double w = spec.train[s.source].weight;
    const auto whole = static_cast<std::int64_t>(std::floor(w));
    const std::int64_t uses = whole + (record_draw(spec.seed, 2, s.source, s.line) < w - static_cast<double>(whole));
    for (std::int64_t k = 0; k < uses; ++k) train.push_back(&s);
  }
  ANVIL_CHECK_INPUT(!train.empty(), "no training records are left after data.eval_fraction and the weights");
  ANVIL_CHECK_INPUT(!(spec.eval || spec.eval_fraction > 0) || !eval.empty(),
                    "the eval split is empty: ", spec.eval ? "data.eval has no usable record"
                                                            : "data.eval_fraction holds out no record; raise it");
  if (spec.shuffle) {
    std::vector<std::int64_t> order;
    sampler_permutation(static_cast<std::int64_t>(train.size()), spec.seed ^ 0x5eedda7aULL, 0, order);
    std::vector<const Sample*> shuffled(train.size());
    for (std::size_t i = 0; i < order.size(); ++i) shuffled[i] = train[static_cast<std::size_t>(order[i])];
    train.swap(shuffled);
  }

  const std::int32_t pad_id = dataset_pad_id(tok);
  ANVIL_CHECK_INPUT(pad_id >= 0 && static_cast<std::size_t>(pad_id) < tok.vocab_size(), "the tokenizer's pad id ",
                    pad_id, " is outside its vocabulary of ", tok.vocab_size(), " tokens");
  auto pack = [&](const std::vector<const Sample*>& list) {
    SequencePacker packer(spec.seq_len, spec.packing, pad_id, spec.overflow);
    for (const Sample* s : list) packer.add({s->ids, s->n}, {s->trained, s->n});
    return packer.finish();
  };
  std::vector<std::pair<std::string, SequenceSet>> sets;
  sets.emplace_back("train", pack(train));
  ANVIL_CHECK_INPUT(sets[0].second.count > 0, "none of the ", train.size(),
                    " training samples has a token to train within data.seq_len ", spec.seq_len);
  if (!eval.empty()) {
    sets.emplace_back("eval", pack(eval));
    ANVIL_CHECK_INPUT(sets[1].second.count > 0, "none of the ", eval.size(),
                      " eval samples has a token to train within data.seq_len ", spec.seq_len);
  }

  // The header, with offsets relative to the data start.
  json header;
  header["key"] = key;
  header["seq_len"] = spec.seq_len;
  header["pad_id"] = pad_id;
  std::uint64_t offset = 0, data_hash_len = 0;
  for (const auto& [name, set] : sets) {
    const auto tokens = static_cast<std::uint64_t>(set.count * set.seq_len);
    json j = {{"count", set.count}, {"ids", offset}, {"flags", align64(offset + tokens * 4)}, {"stats", stats_to_json(set.stats)}};
    offset = align64(align64(offset + tokens * 4) + tokens);
    header["sets"][name] = j;
  }
  data_hash_len = offset;
  json jr = json::array();
  for (const FileReport& r : reports) jr.push_back(report_to_json(r));
  header["reports"] = jr;
  // The data region in file order, padding included, to a sink: once for the checksum,
  // once for the file.
  auto emit = [&](auto&& sink) {
    static const std::uint8_t zeros[64] = {};
    std::uint64_t at = 0;
    for (const auto& [name, set] : sets) {
      const json& j = header["sets"][name];
      const auto tokens = static_cast<std::uint64_t>(set.count * set.seq_len);
      sink(zeros, j["ids"].get<std::uint64_t>() - at);
      sink(set.ids, tokens * 4);
      at = j["ids"].get<std::uint64_t>() + tokens * 4;
      sink(zeros, j["flags"].get<std::uint64_t>() - at);
      sink(set.flags, tokens);
      at = j["flags"].get<std::uint64_t>() + tokens;
    }
    sink(zeros, data_hash_len - at);
  };
  XXH64_state_t* xs = XXH64_createState();
  XXH64_reset(xs, 0);
  emit([&](const void* q, std::uint64_t n) { XXH64_update(xs, q, static_cast<std::size_t>(n)); });
  header["data_xxh64"] = std::to_string(XXH64_digest(xs));
  XXH64_freeState(xs);
  const std::string text = header.dump();

  const std::string partial = cache_path + ".partial";
  try {
    OutFile out(partial);
    out.write(kCacheMagic, sizeof kCacheMagic);
    const std::uint64_t len = text.size();
    out.write(&len, sizeof len);
    out.write(text.data(), text.size());
    const std::uint64_t data_start = align64(out.written());
    out.pad_to(data_start);
    emit([&](const void* q, std::uint64_t n) { out.write(q, static_cast<std::size_t>(n)); });
    out.close();
    std::filesystem::rename(partial, cache_path);
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove(partial, ec);
    throw;
  }
}

std::optional<TokenCache> token_cache_open(const std::string& path, const std::string& key, bool verify) {
  if (!std::filesystem::exists(path)) return std::nullopt;
  auto file = io::MappedFile::open(path);
  const std::uint8_t* p = file->data();
  const std::size_t size = file->size();
  const char* damaged = ": not a complete anvil token cache (remove it to rebuild it)";
  ANVIL_CHECK_INPUT(size >= 16 && std::memcmp(p, kCacheMagic, sizeof kCacheMagic) == 0, path, damaged);
  std::uint64_t len = 0;
  std::memcpy(&len, p + 8, sizeof len);
  ANVIL_CHECK_INPUT(len <= kMaxHeader && 16 + len <= size, path, damaged);
  json header;
  try {
    header = json::parse(std::string_view(reinterpret_cast<const char*>(p) + 16, len));
  } catch (const json::exception&) {
    throw_user_error(path, damaged);
  }
  TokenCache cache;
  cache.path = path;
  try {
    ANVIL_CHECK_INPUT(header.at("key").get<std::string>() == key, path, ": holds another key (",
                      header.at("key").get<std::string>(), ", expected ", key, ")");
    const std::uint64_t data_start = align64(16 + len);
    const auto seq_len = header.at("seq_len").get<std::int64_t>();
    const auto pad_id = header.at("pad_id").get<std::int32_t>();
    ANVIL_CHECK_INPUT(seq_len >= 2 && data_start <= size, path, damaged);
    if (verify) {
      const std::uint64_t want = std::stoull(header.at("data_xxh64").get<std::string>());
      ANVIL_CHECK_INPUT(XXH64(p + data_start, size - data_start, 0) == want, path,
                        ": checksum mismatch: the cache is damaged (remove it to rebuild it)");
    }
    for (const auto& [name, j] : header.at("sets").items()) {
      SequenceSet s;
      s.seq_len = seq_len;
      s.count = j.at("count").get<std::int64_t>();
      s.pad_id = pad_id;
      const auto ids = data_start + j.at("ids").get<std::uint64_t>();
      const auto flags = data_start + j.at("flags").get<std::uint64_t>();
      const auto tokens = static_cast<std::uint64_t>(s.count) * static_cast<std::uint64_t>(seq_len);
      ANVIL_CHECK_INPUT(s.count > 0 && ids % 4 == 0 && ids + tokens * 4 <= size && flags + tokens <= size, path,
                        damaged);
      s.ids = reinterpret_cast<const std::int32_t*>(p + ids);
      s.flags = p + flags;
      s.stats = stats_from_json(j.at("stats"));
      s.storage = file;
      if (name == "train")
        cache.train = std::move(s);
      else if (name == "eval")
        cache.eval = std::move(s);
    }
    ANVIL_CHECK_INPUT(cache.train.count > 0, path, damaged);
    for (const json& r : header.at("reports")) cache.reports.push_back(report_from_json(r));
  } catch (const json::exception&) {
    throw_user_error(path, damaged);
  }
  return cache;
}

}  // namespace anvil::data
