// Encode throughput of anvil's tokenizer on one thread.
//
//   bench_tokenizer MODEL_DIR CORPUS_TXT [PASSES]
//
// Encodes every line of the corpus (without special tokens) PASSES times (default 3).
// The first pass starts with an empty piece cache ("cold"); the median of the others is
// the steady state ("warm"). Prints one JSON line; tests/bench/bench_tokenizer.py runs it
// next to Hugging Face `tokenizers` on the same corpus.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/tokenizer.h"

namespace {

std::vector<std::string> read_lines(const char* path) {
  std::ifstream in(path, std::ios::binary);
  ANVIL_CHECK_INPUT(in.good(), path, ": cannot be opened");
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: bench_tokenizer MODEL_DIR CORPUS_TXT [PASSES]\n");
    return 2;
  }
  try {
    const int passes = argc > 3 ? std::max(2, std::atoi(argv[3])) : 3;
    const auto load_start = std::chrono::steady_clock::now();
    const anvil::data::Tokenizer tok = anvil::data::Tokenizer::load(argv[1]);
    const double load_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();
    const std::vector<std::string> lines = read_lines(argv[2]);
    std::size_t bytes = 0;
    for (const auto& l : lines) bytes += l.size();

    std::vector<double> seconds;
    std::size_t tokens = 0;
    std::vector<std::int32_t> ids;
    for (int pass = 0; pass < passes; ++pass) {
      tokens = 0;
      const auto start = std::chrono::steady_clock::now();
      for (const auto& l : lines) {
        ids.clear();
        tok.encode_append(l, false, ids);
        tokens += ids.size();
      }
      seconds.push_back(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    std::vector<double> warm(seconds.begin() + 1, seconds.end());
    std::sort(warm.begin(), warm.end());
    const double warm_s = warm[warm.size() / 2];
    std::printf(
        "{\"impl\": \"anvil\", \"bytes\": %zu, \"lines\": %zu, \"tokens\": %zu, "
        "\"load_s\": %.3f, \"cold_s\": %.4f, \"warm_s\": %.4f, \"cold_mb_s\": %.2f, "
        "\"warm_mb_s\": %.2f}\n",
        bytes, lines.size(), tokens, load_s, seconds[0], warm_s, bytes / seconds[0] / 1e6,
        bytes / warm_s / 1e6);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_tokenizer: %s\n", e.what());
    return 1;
  }
  return 0;
}
