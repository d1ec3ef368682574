#include "train/data_prepare.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>
#include <tuple>
#include <utility>

#include "core/error.h"
#include "core/log.h"
#include "io/files.h"
#include "train/metrics.h"

namespace anvil::train {
namespace {

namespace fs = std::filesystem;

data::RecordFormat record_format(DataFormat f) {
  switch (f) {
    case DataFormat::format_auto: return data::RecordFormat::record_auto;
    case DataFormat::format_text: return data::RecordFormat::record_text;
    case DataFormat::format_prompt_completion: return data::RecordFormat::record_prompt_completion;
    case DataFormat::format_chat: return data::RecordFormat::record_chat;
  }
  return data::RecordFormat::record_auto;
}

data::Overflow overflow_of(DataOverflow o) {
  switch (o) {
    case DataOverflow::overflow_truncate: return data::Overflow::overflow_truncate;
    case DataOverflow::overflow_split: return data::Overflow::overflow_split;
    case DataOverflow::overflow_drop: return data::Overflow::overflow_drop;
  }
  return data::Overflow::overflow_truncate;
}

// The spec of `cfg`, with the chat renderer it points to. The template is the configured
// one, else the model's (data/chat_template.h); when neither is there, chat records say why.
data::PrepareSpec make_spec(const TrainConfig& cfg, const data::Tokenizer& tok,
                            std::unique_ptr<data::ChatRenderer>& renderer) {
  data::PrepareSpec spec;
  for (const DataSource& s : cfg.data.train) spec.train.push_back({s.path, s.weight});
  spec.eval = cfg.data.eval;
  spec.eval_fraction = cfg.data.eval_fraction;
  spec.records.format = record_format(cfg.data.format);
  spec.records.add_eos = cfg.data.add_eos;
  spec.records.train_on = cfg.data.train_on;
  spec.records.on_error =
      cfg.data.on_error == DataOnError::on_error_fail ? data::OnError::on_error_fail : data::OnError::on_error_skip;
  spec.seq_len = cfg.data.seq_len;
  spec.packing = cfg.data.packing;
  spec.overflow = overflow_of(cfg.data.overflow);
  spec.shuffle = cfg.data.shuffle;
  spec.seed = static_cast<std::uint64_t>(cfg.train.seed);

  if (cfg.data.chat_template || cfg.data.format == DataFormat::format_chat) {
    // Errors name the file and the options.
    spec.chat_template = data::chat_template_find(cfg.model.path, cfg.data.chat_template.value_or(""));
  } else if (cfg.data.format == DataFormat::format_auto) {
    std::string why;
    spec.chat_template = data::chat_template_try_find(cfg.model.path, why);
    if (!spec.chat_template) spec.records.chat_problem = "no chat template: " + why;
  } else {
    spec.records.chat_problem = str_cat("data.format is ", enum_name(cfg.data.format));
  }
  if (spec.chat_template) {
    renderer = std::make_unique<data::ChatRenderer>(*spec.chat_template, tok);
    spec.records.chat = renderer.get();
  }
  return spec;
}

// All ranks: whether any rank has `failed`.
bool any_failed(comm::Comm& world, bool failed) {
  double flag = failed ? 1.0 : 0.0;
  world.allreduce(&flag, 1, DType::dtype_f64, comm::ReduceOp::reduce_max);
  return flag > 0;
}

// Ranks other than 0 after an agreed failure: rank 0 throws the error and the job's abort
// ends them here.
[[noreturn]] void wait_for_abort(comm::Comm& world) {
  world.barrier();
  throw_internal_error(__FILE__, __LINE__, "rank 0 did not abort after a data preparation error");
}

std::string percent(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f%%", 100.0 * x);
  return buf;
}

void log_reports(const PreparedData& p, const TrainConfig& cfg) {
  for (const data::FileReport& r : p.cache.reports) {
    if (r.bad_count() > 0)
      log_warn("data: ", r.summary());
    else
      log_info("data: ", r.summary());
  }
  auto describe = [&](const char* name, const data::SequenceSet& s) {
    const data::PackStats& st = s.stats;
    std::string extra;
    if (st.truncated) extra += str_cat(", ", st.truncated, " truncated");
    if (st.split) extra += str_cat(", ", st.split, " split");
    if (st.dropped_long) extra += str_cat(", ", st.dropped_long, " dropped as too long");
    if (st.dropped_untrained) extra += str_cat(", ", st.dropped_untrained, " with nothing to train left out");
    log_info("data: ", name, ": ", st.samples, " samples in ", s.count, " sequences of ", s.seq_len, " tokens, ",
             st.trained_tokens, " trained tokens: packing efficiency ", percent(s.efficiency()),
             " (trained tokens / slots)", extra,
             st.truncated + st.split + st.dropped_long > 0
                 ? str_cat(" (data.overflow: ", enum_name(cfg.data.overflow), ")")
                 : std::string());
  };
  describe("train", p.cache.train);
  if (p.cache.eval) describe("eval", *p.cache.eval);
}

}  // namespace

std::string data_cache_dir(const TrainConfig& cfg) {
  return cfg.data.cache_dir ? *cfg.data.cache_dir : (fs::path(cfg.output_dir) / "cache").string();
}

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The cache key, decided by rank 0 and broadcast, and whether a usable cache with it is
// there already (a damaged one is removed, to be built again).
std::pair<std::string, bool> cache_key_decide(const TrainConfig& cfg, const data::PrepareSpec& spec,
                                              const std::string& dir, comm::Comm& world) {
  char key_buf[33] = {};
  std::int32_t have = 0;
  if (world.rank() == 0) {
    fs::create_directories(dir);
    const std::string key = data::cache_key(spec, cfg.model.path);
    std::memcpy(key_buf, key.data(), 32);
    const std::string path = (fs::path(dir) / ("tokens-" + key + ".bin")).string();
    try {
      have = data::token_cache_open(path, key, true).has_value();
    } catch (const Error& e) {
      if (e.kind() != ErrorKind::user) throw;
      log_warn("data: ", e.what(), "; building it again");
      fs::remove(path);
    }
  }
  world.broadcast(key_buf, 32, DType::dtype_u8, 0);
  world.broadcast(&have, 1, DType::dtype_i32, 0);
  return {std::string(key_buf, 32), have != 0};
}

// Phase 1 of a build: every rank tokenizes its share of the lines into its part file. A
// user error on any rank becomes, on every rank, the error of the earliest bad line.
void tokenize_parts(const data::PrepareSpec& spec, const data::Tokenizer& tok, comm::Comm& world,
                    const std::function<std::string(int)>& part_path, const fs::path& parts) {
  std::optional<data::PartError> failure;
  try {
    failure = data::prepare_write_part(spec, tok, world.rank(), world.size(), part_path(world.rank()));
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::user) throw;
    failure = data::PartError{0, 0, e.what()};
  }
  if (failure) {
    const nlohmann::json j = {{"source", failure->source}, {"line", failure->line}, {"message", failure->message}};
    io::write_text_file_atomic(part_path(world.rank()) + ".err", j.dump());
  }
  if (!any_failed(world, failure.has_value())) return;
  if (world.rank() != 0) wait_for_abort(world);
  std::optional<data::PartError> first;
  for (int r = 0; r < world.size(); ++r) {
    const std::string err = part_path(r) + ".err";
    if (!fs::exists(err)) continue;
    const nlohmann::json j = nlohmann::json::parse(io::read_text_file(err));
    data::PartError e{j.at("source").get<std::uint32_t>(), j.at("line").get<std::int64_t>(),
                      j.at("message").get<std::string>()};
    if (!first || std::tie(e.source, e.line) < std::tie(first->source, first->line)) first = e;
  }
  fs::remove_all(parts);
  ANVIL_CHECK(first.has_value(), "a rank failed to tokenize but left no error");
  throw_user_error(first->message);
}

// Phase 2: rank 0 assembles the parts into the cache file at `path`.
void assemble_parts(const data::PrepareSpec& spec, const data::Tokenizer& tok, comm::Comm& world,
                    const std::function<std::string(int)>& part_path, const fs::path& parts, const std::string& key,
                    const std::string& path) {
  std::string assemble_error;
  if (world.rank() == 0) {
    std::vector<std::string> part_paths;
    for (int r = 0; r < world.size(); ++r) part_paths.push_back(part_path(r));
    try {
      data::prepare_assemble(spec, tok, part_paths, key, path);
    } catch (const Error& e) {
      if (e.kind() != ErrorKind::user) throw;
      assemble_error = e.what();
    }
    fs::remove_all(parts);
  }
  if (any_failed(world, !assemble_error.empty())) {
    if (world.rank() != 0) wait_for_abort(world);
    throw_user_error(assemble_error);
  }
}

// Builds the cache `path` for `key` over the ranks of `world`.
void cache_build(const TrainConfig& cfg, const data::PrepareSpec& spec, const data::Tokenizer& tok,
                 comm::Comm& world, const std::string& dir, const std::string& key, const std::string& path) {
  const auto t0 = std::chrono::steady_clock::now();
  const bool root = world.rank() == 0;
  const fs::path parts = fs::path(dir) / ("tokens-" + key + ".parts");
  if (root) {
    fs::remove_all(parts);
    fs::create_directories(parts);
    log_info("data: tokenizing ", cfg.data.train.size() + (cfg.data.eval ? 1 : 0), " file(s) on ", world.size(),
             " rank(s) into ", path);
  }
  world.barrier();
  const auto part_path = [&](int r) { return (parts / ("part-" + std::to_string(r))).string(); };
  tokenize_parts(spec, tok, world, part_path, parts);
  const double tokenized_s = seconds_since(t0);
  assemble_parts(spec, tok, world, part_path, parts, key, path);
  if (root) {
    char line[128];
    std::snprintf(line, sizeof line, "data: tokenized on %d rank(s) in %.1f s, assembled in %.1f s", world.size(),
                  tokenized_s, seconds_since(t0) - tokenized_s);
    log_info(line);
  }
}

}  // namespace

PreparedData data_prepare(const TrainConfig& cfg, const data::Tokenizer& tok, comm::Comm& world) {
  const auto t0 = std::chrono::steady_clock::now();
  std::unique_ptr<data::ChatRenderer> renderer;
  const data::PrepareSpec spec = make_spec(cfg, tok, renderer);
  const std::string dir = data_cache_dir(cfg);
  PreparedData out;
  bool have = false;
  std::tie(out.key, have) = cache_key_decide(cfg, spec, dir, world);
  const std::string path = (fs::path(dir) / ("tokens-" + out.key + ".bin")).string();
  if (!have) {
    out.built = true;
    cache_build(cfg, spec, tok, world, dir, out.key, path);
  }
  auto cache = data::token_cache_open(path, out.key, false);
  ANVIL_CHECK_INPUT(cache.has_value(), path, ": the token cache is missing (is data.cache_dir on a file system "
                    "that every node sees?)");
  out.cache = std::move(*cache);
  if (world.rank() == 0) {
    log_reports(out, cfg);
    log_info("data: ", out.built ? "built " : "reused ", out.cache.path, " in ", format_duration(seconds_since(t0)));
  }
  return out;
}

}  // namespace anvil::train
