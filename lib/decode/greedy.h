// Query + tools in, tool calls out: prompt building, greedy decoding with the KV cache,
// a constraint engine per query, and the original's post-processing (strip a leading
// <tool_call>, parse, restore the caller's tool names).
#pragma once
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "decode/constraint.h"
#include "model/engine.h"
#include "text/json.h"
#include "text/tokenizer.h"
#include "text/tools.h"

namespace needle {

struct GenerateOptions {
  decode::ConstrainMode constrain = decode::ConstrainMode::Schema;
  // Decoder steps (EOS included); the original stops after 511. With --constrain schema the
  // output is always complete within them (see Constraint::set_budget).
  int max_tokens = 511;
  size_t max_enc_len = 1024;  // encoder tokens (query + <tools> + tools), truncated as the original
  bool ignore_eos = false;    // never stop early: EOS is masked (benchmarks, parity tests)
  int top_tools = 0;          // > 0: keep the K tools whose contrastive embedding is nearest the query's
  // Called with the text of each generated token as it is produced (--stream).
  std::function<void(std::string_view)> on_text;
};

struct Generation {
  std::string text;          // the model's text, a leading <tool_call> stripped
  std::vector<int> ids;      // generated ids, without the final EOS
  json::Value calls;         // parsed calls with the caller's names ([] when unparseable)
  bool parsed = false;       // text parsed as JSON
  bool truncated = false;    // the encoder input was cut to max_enc_len
  std::vector<std::string> kept_tools;  // with top_tools: the caller names kept, best first
  double ms = 0;             // wall time of this query
};

// One model + tokenizer; runs queries one at a time (make one per thread for parallelism;
// they can share EngineWeights).
class Generator {
 public:
  // The tokenizer comes from the model file unless `tokenizer_bytes` is given.
  static Result<std::unique_ptr<Generator>> create(std::shared_ptr<const EngineWeights> weights,
                                                   const text::Tokenizer& tokenizer, unsigned threads);

  Result<Generation> run(std::string_view query, const text::ToolSet& tools, const GenerateOptions& opt);
  // Ranks tools by cosine similarity of contrastive embeddings with the query; returns indices.
  std::vector<size_t> rank_tools(std::string_view query, const text::ToolSet& tools);

  Engine& engine() { return engine_; }
  const text::Tokenizer& tokenizer() const { return *tok_; }

 private:
  Generator(std::shared_ptr<const EngineWeights> w, const text::Tokenizer& tok, unsigned threads);
  Engine engine_;
  const text::Tokenizer* tok_;
  std::shared_ptr<const decode::TokenIndex> index_;
};

// The original's post-processing of generated text: strip a leading "<tool_call>", parse as
// JSON (a dict becomes a one-element list), restore caller names. Unparseable -> parsed=false, [].
void postprocess(std::string text, const text::ToolSet& tools, Generation& g);

}  // namespace needle
