#include "train/metrics.h"

#include <filesystem>
#include <sstream>

#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/files.h"

namespace anvil::train {

namespace {

// JSON has no NaN/Infinity: write null, which every reader accepts.
nlohmann::json number(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(); }

}  // namespace

MetricsWriter::MetricsWriter(const std::string& path, std::int64_t resumed_step) : path_(path) {
  std::string kept;
  if (resumed_step >= 0 && std::filesystem::exists(path)) {
    std::istringstream lines(io::read_text_file(path));
    for (std::string line; std::getline(lines, line);) {
      const auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_object() && j.contains("step") && j["step"].is_number_integer() &&
          j["step"].get<std::int64_t>() <= resumed_step)
        kept += line + "\n";
    }
  }
  io::write_text_file_atomic(path, kept);
  file_ = std::fopen(path.c_str(), "a");
  ANVIL_CHECK_INPUT(file_ != nullptr, path, ": cannot create: ", std::strerror(errno));
}

MetricsWriter::~MetricsWriter() {
  if (file_) std::fclose(file_);
}

void MetricsWriter::write_line(const std::string& line) {
  const bool ok = std::fputs(line.c_str(), file_) >= 0 && std::fputc('\n', file_) != EOF &&
                  std::fflush(file_) == 0;
  ANVIL_CHECK_INPUT(ok, path_, ": write failed: ", std::strerror(errno));
}

void MetricsWriter::write_step(const StepMetrics& m) {
  nlohmann::json j = {{"step", m.step},
                      {"loss", number(m.loss)},
                      {"lr", m.lr},
                      {"grad_norm", number(m.grad_norm)},
                      {"tokens", m.tokens},
                      {"tokens_per_s", number(m.tokens_per_s)},
                      {"elapsed_s", m.elapsed_s}};
  if (m.mfu) j["mfu"] = number(*m.mfu);
  j["peak_rss_mib"] = std::round(m.peak_rss_mib * 10) / 10;
  j["comm_share"] = std::round(m.comm_share * 1e4) / 1e4;
  j["data_share"] = std::round(m.data_share * 1e4) / 1e4;
  if (m.aux_loss) j["aux_loss"] = number(*m.aux_loss);
  if (!m.expert_load.empty()) {
    nlohmann::json load = nlohmann::json::array();
    for (const auto& [lo, hi] : m.expert_load) load.push_back({{"min", lo}, {"max", hi}});
    j["expert_load"] = load;
  }
  if (m.spike) j["spike"] = true;
  if (m.skipped_total > 0 || m.skipped) {
    j["skipped"] = m.skipped;
    j["skipped_total"] = m.skipped_total;
  }
  write_line(j.dump());
}

void MetricsWriter::write_end(std::int64_t steps, const std::vector<double>& peak_rss_mib_per_rank) {
  nlohmann::json peaks = nlohmann::json::array();
  for (const double v : peak_rss_mib_per_rank) peaks.push_back(std::round(v * 10) / 10);
  write_line(nlohmann::json{{"end", true}, {"steps", steps}, {"peak_rss_mib_per_rank", peaks}}.dump());
}

void MetricsWriter::write_eval(std::int64_t step, double eval_loss, std::int64_t eval_tokens,
                               double elapsed_s) {
  write_line(nlohmann::json{{"step", step},
                            {"eval_loss", number(eval_loss)},
                            {"eval_tokens", eval_tokens},
                            {"elapsed_s", elapsed_s}}
                 .dump());
}

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const auto total = static_cast<long long>(s + 0.5);
  char buf[32];
  if (total >= 3600) std::snprintf(buf, sizeof buf, "%lldh%02lldm", total / 3600, total / 60 % 60);
  else if (total >= 60) std::snprintf(buf, sizeof buf, "%lldm%02llds", total / 60, total % 60);
  else std::snprintf(buf, sizeof buf, "%llds", total);
  return buf;
}

ProgressLine::ProgressLine(std::int64_t total_steps, std::int64_t every)
    : total_(total_steps), every_(every > 0 ? every : 1), tty_(::isatty(STDERR_FILENO) == 1) {}

void ProgressLine::update(const StepMetrics& m) {
  const bool last = m.step == total_;
  if (!tty_ && m.step % every_ != 0 && !last && m.step != 1) return;
  const double eta = m.step > 0 ? m.elapsed_s / static_cast<double>(m.step) *
                                      static_cast<double>(total_ - m.step)
                                : 0.0;
  char buf[256];
  std::snprintf(buf, sizeof buf, "step %lld/%lld | loss %.4f | lr %.3g | grad norm %.3g | %.0f tok/s | ETA %s%s",
                static_cast<long long>(m.step), static_cast<long long>(total_), m.loss, m.lr,
                m.grad_norm, m.tokens_per_s, format_duration(eta).c_str(),
                m.skipped ? (m.spike ? " | skipped (loss spike)" : " | skipped (non-finite)") : (m.spike ? " | loss spike" : ""));
  if (tty_) {
    std::fprintf(stderr, "\r\033[K%s", buf);
    open_line_ = true;
  } else {
    std::fprintf(stderr, "%s\n", buf);
  }
  std::fflush(stderr);
}

void ProgressLine::note(const std::string& line) {
  if (open_line_) std::fputc('\n', stderr);
  open_line_ = false;
  std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
}

void ProgressLine::finish() {
  if (open_line_) std::fputc('\n', stderr);
  open_line_ = false;
}

}  // namespace anvil::train
