#include "data/pretokenize.h"

#include <algorithm>

#include "core/error.h"

namespace anvil::data {

const char* const gpt2_pretokenize_pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

namespace {

struct Segment {
  std::uint32_t begin = 0;
  std::uint32_t end = 0;
  bool flag = false;  // before the behavior: "is a match"; after it: "is removed"
};

// Scratch buffers for one step of the chain. Steps run depth first, so each depth owns
// its buffers and a thread reuses them from one call to the next (no allocation once
// they have grown).
struct StepScratch {
  std::vector<TextSpan> matches;
  std::vector<Segment> segments;
  std::vector<Segment> pieces;
  std::string prefixed;
};

StepScratch& step_scratch(std::size_t depth) {
  thread_local std::vector<std::unique_ptr<StepScratch>> by_depth;
  while (by_depth.size() <= depth) by_depth.push_back(std::make_unique<StepScratch>());
  return *by_depth[depth];
}

// HF's Pattern::find_matches: the matches and the gaps between them, covering the text.
void segments_from_matches(const std::vector<TextSpan>& matches, std::uint32_t n, bool invert,
                           std::vector<Segment>& out) {
  out.clear();
  std::uint32_t prev = 0;
  for (const TextSpan& m : matches) {
    if (prev != m.begin) out.push_back({prev, m.begin, invert});
    out.push_back({m.begin, m.end, !invert});
    prev = m.end;
  }
  if (prev != n) out.push_back({prev, n, invert});
}

// HF's NormalizedString::split: turns (span, is_match) into (span, should_remove).
void apply_behavior(const std::vector<Segment>& in, SplitBehavior behavior,
                    std::vector<Segment>& out) {
  out.clear();
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::split_isolated:
      for (const Segment& s : in) out.push_back({s.begin, s.end, false});
      return;
    case SplitBehavior::split_removed:
      out = in;
      return;
    case SplitBehavior::split_contiguous:
      for (const Segment& s : in) {
        if (s.flag == previous_match && !out.empty()) {
          out.back().end = s.end;
        } else {
          out.push_back({s.begin, s.end, false});
        }
        previous_match = s.flag;
      }
      return;
    case SplitBehavior::split_merged_with_previous:
      for (const Segment& s : in) {
        if (s.flag && !previous_match && !out.empty()) {
          out.back().end = s.end;
        } else {
          out.push_back({s.begin, s.end, false});
        }
        previous_match = s.flag;
      }
      return;
    case SplitBehavior::split_merged_with_next:
      for (auto it = in.rbegin(); it != in.rend(); ++it) {
        if (it->flag && !previous_match && !out.empty()) {
          out.back().begin = it->begin;
        } else {
          out.push_back({it->begin, it->end, false});
        }
        previous_match = it->flag;
      }
      std::reverse(out.begin(), out.end());
      return;
  }
}

class CollectSink final : public PieceSink {
 public:
  void on_piece(std::string_view piece, PieceOrigin) override { pieces.emplace_back(piece); }
  std::vector<std::string> pieces;
};

}  // namespace

void MetaspaceRewrite::apply(std::string_view text, bool at_start, std::string& out,
                             std::vector<std::uint32_t>* origin) const {
  out.clear();
  if (origin) origin->clear();
  const bool add = prepend == Prepend::prepend_always ||
                   (prepend == Prepend::prepend_first && at_start);
  // HF tests "starts with the replacement" after the spaces are replaced.
  if (add && !text.empty() && !text.starts_with(' ') && !text.starts_with(replacement)) {
    out = replacement;
    if (origin) origin->assign(replacement.size(), 0u);
  }
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == ' ') {
      out += replacement;
      if (origin) origin->insert(origin->end(), replacement.size(), static_cast<std::uint32_t>(i));
    } else {
      out.push_back(text[i]);
      if (origin) origin->push_back(static_cast<std::uint32_t>(i));
    }
  }
}

void PreTokenizer::run(std::string_view text, PieceSink& sink) const {
  if (text.empty()) return;
  run_from(0, text, PieceOrigin{}, sink);
}

std::vector<std::string> PreTokenizer::pieces(std::string_view text) const {
  CollectSink sink;
  run(text, sink);
  return std::move(sink.pieces);
}

void PreTokenizer::run_from(std::size_t step_index, std::string_view text, PieceOrigin origin,
                           PieceSink& sink) const {
  if (step_index == steps_.size()) {
    sink.on_piece(text, origin);
    return;
  }
  const PreTokenizeStep& step = steps_[step_index];
  StepScratch& scratch = step_scratch(step_index);
  SplitBehavior behavior = step.behavior;
  bool invert = step.invert;
  if (step.kind == PreTokenizeKind::pretok_byte_level) {
    // HF prepends the space to every piece that reaches ByteLevel, not only to the
    // start of the text.
    if (step.add_prefix_space && text.front() != ' ') {
      scratch.prefixed.assign(1, ' ');
      scratch.prefixed.append(text);
      text = scratch.prefixed;
      ++origin.lead;
    }
    if (!step.regex) {
      run_from(step_index + 1, text, origin, sink);
      return;
    }
    behavior = SplitBehavior::split_isolated;
    invert = false;
  }
  scratch.matches.clear();
  step.regex->find_all(text, scratch.matches);
  segments_from_matches(scratch.matches, static_cast<std::uint32_t>(text.size()), invert,
                        scratch.segments);
  apply_behavior(scratch.segments, behavior, scratch.pieces);
  for (const Segment& piece : scratch.pieces) {
    if (piece.flag || piece.begin == piece.end) continue;
    run_from(step_index + 1, text.substr(piece.begin, piece.end - piece.begin),
             origin.sub(piece.begin), sink);
  }
}

}  // namespace anvil::data
