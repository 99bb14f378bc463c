#include "decode/greedy.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "decode/constraint_reference.h"
#include "decode/constraint_text.h"
#include "text/prompt.h"

namespace needle {

Generator::Generator(std::shared_ptr<const EngineWeights> w, const text::Tokenizer& tok, unsigned threads)
    : engine_(std::move(w), threads), tok_(&tok) {}

Result<std::unique_ptr<Generator>> Generator::create(std::shared_ptr<const EngineWeights> weights,
                                                     const text::Tokenizer& tokenizer, unsigned threads) {
  if (tokenizer.vocab_size() != weights->config.vocab_size)
    return make_error("tokenizer has {} pieces but the model's vocabulary is {}", tokenizer.vocab_size(),
                      weights->config.vocab_size);
  std::unique_ptr<Generator> g(new Generator(std::move(weights), tokenizer, threads));
  NEEDLE_ASSIGN(g->index_, decode::TokenIndex::build(decode::vocab_from_tokenizer(tokenizer)));
  return g;
}

void postprocess(std::string text, const text::ToolSet& tools, Generation& g) {
  constexpr std::string_view kLead = "<tool_call>";
  if (text.rfind(kLead, 0) == 0) text.erase(0, kLead.size());
  // The space SentencePiece puts before the first piece after <tool_call> is not output.
  const size_t b = text.find_first_not_of(" \t\r\n");
  text.erase(0, b == std::string::npos ? text.size() : b);
  g.text = std::move(text);
  auto v = json::parse(g.text);
  g.parsed = v.is_ok();
  if (!g.parsed) {
    g.calls = json::Value::make_array();
    return;
  }
  json::Value calls = std::move(v).value();
  if (calls.is_object()) {
    json::Value list = json::Value::make_array();
    list.array.push_back(std::move(calls));
    calls = std::move(list);
  }
  g.calls = text::restore_names(calls, tools);
}

std::vector<size_t> Generator::rank_tools(std::string_view query, const text::ToolSet& tools) {
  auto embed = [&](std::string_view s) {
    std::vector<int> ids = tok_->encode(s);
    if (ids.size() > 1024) ids.resize(1024);
    if (ids.empty()) ids.push_back(text::kUnkId);
    std::vector<int32_t> t(ids.begin(), ids.end());
    return engine_.contrastive(t);
  };
  auto q = embed(query);
  std::vector<std::pair<float, size_t>> scored;
  for (size_t i = 0; i < tools.tools.size(); ++i) {
    auto e = embed(json::dump_compact(tools.tools[i].v1));
    float s = 0;
    for (size_t k = 0; k < q.size(); ++k) s += q[k] * e[k];
    scored.emplace_back(-s, i);
  }
  std::stable_sort(scored.begin(), scored.end());
  std::vector<size_t> out;
  for (auto& [s, i] : scored) out.push_back(i);
  return out;
}

Result<Generation> Generator::run(std::string_view query, const text::ToolSet& all_tools, const GenerateOptions& opt) {
  const auto t0 = std::chrono::steady_clock::now();
  Generation g;
  const text::ToolSet* tools = &all_tools;
  text::ToolSet kept;
  if (opt.top_tools > 0 && (size_t)opt.top_tools < all_tools.tools.size()) {
    auto order = rank_tools(query, all_tools);
    for (int i = 0; i < opt.top_tools; ++i) kept.tools.push_back(all_tools.tools[order[(size_t)i]]);
    tools = &kept;
  }
  for (auto& t : tools->tools) g.kept_tools.push_back(t.name);

  auto enc = text::build_encoder_input(*tok_, query, *tools, opt.max_enc_len);
  g.truncated = enc.truncated();
  std::vector<int32_t> enc_ids(enc.ids.begin(), enc.ids.end());
  std::vector<float> enc_out;
  engine_.encode(enc_ids, enc_out);

  std::unique_ptr<decode::Constraint> c;
  switch (opt.constrain) {
    case decode::ConstrainMode::Off: c = decode::make_off_constraint(index_); break;
    case decode::ConstrainMode::Reference: {
      // As the original: the tries come from the tools JSON the encoder sees.
      NEEDLE_ASSIGN(c, decode::make_reference_constraint(
                           index_, decode::reference_tools_from_json(tools->model_json())));
      break;
    }
    case decode::ConstrainMode::Schema: {
      NEEDLE_ASSIGN(c, decode::make_constraint(decode::ConstrainMode::Schema, index_, decode::tool_specs(*tools)));
      break;
    }
  }

  Engine::DecodeState st;
  const int max_steps = std::max(opt.max_tokens, 0);
  // Schema decoding closes the output within max_tokens (EOS included); the other engines
  // ignore this. Not with ignore_eos, which asks for max_tokens steps whatever is written.
  if (!opt.ignore_eos) c->set_budget(max_steps);
  engine_.start(enc_out, (int)enc_ids.size(), std::min(max_steps + 1, 64), st);
  const int vocab = engine_.config().vocab_size;
  std::vector<float> logits((size_t)vocab);
  int32_t tok = text::kEosId;
  for (int step = 0; step < max_steps; ++step) {
    auto l = engine_.step(st, tok);
    std::copy(l.begin(), l.end(), logits.begin());
    c->apply(logits.data(), (size_t)vocab);
    if (opt.ignore_eos) logits[text::kEosId] = -std::numeric_limits<float>::infinity();
    const int next = (int)(std::max_element(logits.begin(), logits.end()) - logits.begin());
    if (next == text::kEosId) break;
    NEEDLE_TRY(c->advance(next));
    g.ids.push_back(next);
    if (opt.on_text) opt.on_text(tok_->piece_text(next));
    tok = next;
  }
  NEEDLE_ASSIGN(std::string text, tok_->decode(g.ids));
  postprocess(std::move(text), *tools, g);
  g.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return g;
}

}  // namespace needle
