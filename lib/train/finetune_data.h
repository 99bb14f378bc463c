// Data for fine-tuning: examples from Needle JSONL, the reference's per-tool split, and padded
// batches in the trainer's layout.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "eval/jsonl.h"
#include "eval/metrics.h"
#include "text/prompt.h"
#include "text/tools.h"
#include "train/grad.h"

namespace needle::train {

struct Example {
  size_t line_no = 0;
  std::string query;
  text::ToolSet tools;
  json::Value answers;         // as read (for evaluation)
  std::string primary_tool;    // snake_case of the first call's name ("" for no-call examples):
                               // name-style variants (getWeather, get-weather, get.weather) are
                               // one tool, as the model sees them
  std::vector<int> enc;        // encoder ids
  text::DecoderExample dec;    // decoder input / target / classes
};

struct LoadReport {
  size_t lines_ok = 0;
  std::vector<eval::LineError> skipped;  // bad lines, with their numbers

  // "line N: reason" of the first skipped line ("" when none): what an error about too little
  // data names, so that it says what is wrong even when the per-line warnings are off.
  std::string first_skip() const;
};

struct SeqLimits {
  size_t max_enc_len = text::kMaxEncLen;
  size_t max_dec_len = text::kMaxDecLen;  // longer answers are dropped, as the reference does
};

// Reads and tokenizes every example; bad lines (not JSON, missing fields, answers that do
// not parse, answers too long) are reported in `report` and skipped.
Result<std::vector<Example>> load_examples(const std::string& path, const text::Tokenizer& tok,
                                           const SeqLimits& lim, LoadReport& report);

struct Split {
  std::vector<size_t> train, val, test;  // indices into the examples
  std::vector<std::pair<std::string, size_t>> small_tools;  // tools with < 120 examples, and their counts
  size_t tools = 0;  // groups (primary tools, no-call examples counting as one)
};

// Which held-out parts the split makes from the data (a part given as its own file is not).
struct SplitParts {
  bool test = true;
  bool val = true;
};

// The reference split: per primary tool (Example::primary_tool, snake_cased), `per_tool` test
// and `per_tool` validation examples and the rest for training; a tool with n < 12 * per_tool
// examples gives n / 12 to each of test and val (at least 1 each when n >= 3, so small tools
// split proportionally). A part left out of `parts` gets nothing (its share goes to training).
// Deterministic for a seed; with both parts, the same split as before SplitParts existed.
Split split_per_tool(const std::vector<Example>& ex, size_t per_tool, uint64_t seed, SplitParts parts = {});

// Pads examples[idx[b]] into one batch (right padding with id 0, segments 1 on real tokens).
TextBatch make_batch(const std::vector<Example>& ex, const std::vector<size_t>& idx);

}  // namespace needle::train
