#include "train/finetune_data.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <random>

namespace needle::train {

std::string LoadReport::first_skip() const {
  if (skipped.empty()) return {};
  auto it = std::min_element(skipped.begin(), skipped.end(),
                             [](const eval::LineError& a, const eval::LineError& b) { return a.line_no < b.line_no; });
  return fmt::format("line {}: {}", it->line_no, it->message);
}

Result<std::vector<Example>> load_examples(const std::string& path, const text::Tokenizer& tok,
                                           const SeqLimits& lim, LoadReport& report) {
  NEEDLE_ASSIGN(auto reader, eval::NeedleExampleReader::open(path));
  std::vector<Example> out;
  eval::NeedleExample ne;
  auto skip = [&](size_t line, std::string msg) { report.skipped.push_back({line, std::move(msg)}); };
  while (reader.next(ne)) {
    for (auto& e : reader.take_errors()) report.skipped.push_back(e);
    auto tools = text::parse_tools(ne.tools);
    if (!tools) {
      skip(ne.line_no, tools.message());
      continue;
    }
    Example e;
    e.line_no = ne.line_no;
    e.query = ne.query;
    e.tools = std::move(tools).value();
    e.answers = ne.answers;
    auto calls = eval::as_call_list(ne.answers);
    if (!calls.empty())
      if (const json::Value* n = calls[0].find("name"); n && n->is_string()) e.primary_tool = text::snake_case(n->text);
    auto enc = text::build_encoder_input(tok, e.query, e.tools, lim.max_enc_len);
    e.enc = std::move(enc.ids);
    auto dec = text::build_decoder_example(tok, text::answer_model_text(ne.answers), lim.max_dec_len);
    if (!dec) {
      skip(ne.line_no, dec.message());
      continue;
    }
    e.dec = std::move(dec).value();
    out.push_back(std::move(e));
    report.lines_ok++;
  }
  for (auto& e : reader.take_errors()) report.skipped.push_back(e);
  return out;
}

Split split_per_tool(const std::vector<Example>& ex, size_t per_tool, uint64_t seed, SplitParts parts) {
  std::map<std::string, std::vector<size_t>> by_tool;
  for (size_t i = 0; i < ex.size(); ++i) by_tool[ex[i].primary_tool].push_back(i);
  Split s;
  std::mt19937_64 rng(seed);
  s.tools = by_tool.size();
  for (auto& [tool, idx] : by_tool) {
    std::shuffle(idx.begin(), idx.end(), rng);
    const size_t n = idx.size();
    size_t k = per_tool;
    if (n < 12 * per_tool) k = std::max<size_t>(n >= 3 ? 1 : 0, n / 12);
    if (n < 120) s.small_tools.emplace_back(tool, n);
    const size_t k_test = parts.test ? k : 0, k_val = parts.val ? k : 0;
    for (size_t j = 0; j < n; ++j) (j < k_test ? s.test : j < k_test + k_val ? s.val : s.train).push_back(idx[j]);
  }
  // Train order is shuffled per epoch by the caller; keep the split lists sorted for stability.
  std::sort(s.test.begin(), s.test.end());
  std::sort(s.val.begin(), s.val.end());
  std::sort(s.train.begin(), s.train.end());
  return s;
}

TextBatch make_batch(const std::vector<Example>& ex, const std::vector<size_t>& idx) {
  TextBatch b;
  b.batch = (int)idx.size();
  for (size_t i : idx) {
    b.enc_len = std::max(b.enc_len, (int)ex[i].enc.size());
    b.dec_len = std::max(b.dec_len, (int)ex[i].dec.input.size());
  }
  const size_t B = idx.size(), Le = (size_t)b.enc_len, Ld = (size_t)b.dec_len;
  b.src.assign(B * Le, 0);
  b.enc_seg.assign(B * Le, 0);
  b.tgt_in.assign(B * Ld, 0);
  b.tgt_out.assign(B * Ld, 0);
  b.dec_seg.assign(B * Ld, 0);
  b.loss_class.assign(B * Ld, 0);
  for (size_t r = 0; r < B; ++r) {
    const Example& e = ex[idx[r]];
    for (size_t t = 0; t < e.enc.size(); ++t) {
      b.src[r * Le + t] = e.enc[t];
      b.enc_seg[r * Le + t] = 1;
    }
    for (size_t t = 0; t < e.dec.input.size(); ++t) {
      b.tgt_in[r * Ld + t] = e.dec.input[t];
      b.tgt_out[r * Ld + t] = e.dec.target[t];
      b.dec_seg[r * Ld + t] = 1;
      b.loss_class[r * Ld + t] = e.dec.target_class[t];
    }
  }
  return b;
}

}  // namespace needle::train
