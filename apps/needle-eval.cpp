// needle-eval: run a JSONL file through the model and score it with the reference metrics
// (Needle format) or BFCL's single-turn rules; or measure the teacher-forced loss (--loss).
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <random>
#include <thread>

#include "common/cli.h"
#include "common/model_loader.h"
#include "common/progress.h"
#include "decode/greedy.h"
#include "eval/bfcl.h"
#include "eval/jsonl.h"
#include "eval/loss.h"
#include "eval/metrics.h"
#include "io/file.h"
#include "text/prompt.h"

using namespace needle;

namespace {

constexpr const char* kTool = "needle-eval";

struct Item {
  size_t line_no = 0;
  std::string query;
  text::ToolSet tools;
  json::Value answers;           // Needle: the reference answers
  json::Value functions;         // BFCL: the function list
  const json::Value* ground_truth = nullptr;  // BFCL: nullptr when the category has no answers
  std::string id, category;
  json::Value extra_id;          // the line's "id", passed through to --out
};

struct Outcome {
  bool ok = false;
  std::string error;
  Generation gen;
  eval::LossSum loss;
};

struct Options {
  std::string data, format = "needle", answers, out, report, constrain = "schema";
  size_t limit = 0;
  bool shuffle = false, loss = false;
  uint64_t seed = 0;
};

// The first skipped line's reason, so that "no valid examples" names the problem even with -q.
std::string g_first_skip;

void report_line_error(size_t& skipped, size_t line_no, const std::string& msg) {
  spdlog::warn("line {}: {} (skipped)", line_no, msg);
  if (g_first_skip.empty()) g_first_skip = fmt::format("line {}: {}", line_no, msg);
  ++skipped;
}

Result<std::vector<Item>> read_needle(const Options& o, size_t& skipped) {
  eval::NeedleReadOptions ro;
  NEEDLE_ASSIGN(auto reader, eval::NeedleExampleReader::open(o.data, ro));
  std::vector<Item> items;
  eval::NeedleExample ex;
  while (reader.next(ex)) {
    for (auto& e : reader.take_errors()) report_line_error(skipped, e.line_no, e.message);
    auto tools = text::parse_tools(ex.tools);
    if (!tools) {
      report_line_error(skipped, ex.line_no, tools.message());
      continue;
    }
    Item it;
    it.line_no = ex.line_no;
    it.query = ex.query;
    it.tools = std::move(tools).value();
    it.answers = ex.answers;
    if (auto* id = ex.line.find("id")) it.extra_id = *id;
    items.push_back(std::move(it));
  }
  for (auto& e : reader.take_errors()) report_line_error(skipped, e.line_no, e.message);
  return items;
}

Result<std::vector<Item>> read_bfcl(const Options& o, size_t& skipped, std::map<std::string, json::Value>& answers) {
  if (!o.answers.empty()) {
    std::vector<eval::BfclLineError> errs;
    NEEDLE_ASSIGN(answers, eval::load_bfcl_answers(o.answers, &errs));
    for (auto& e : errs) spdlog::warn("{}: line {}: {} (skipped)", o.answers, e.line_no, e.message);
    // An answers file without one usable answer would score every example as wrong.
    if (answers.empty())
      return errs.empty() ? make_error("{}: no answers (the file holds no answer line)", o.answers)
                          : make_error("{}: no valid answers ({} skipped; first line {}: {})", o.answers, errs.size(),
                                       errs[0].line_no, errs[0].message);
  }
  const std::string fallback = eval::bfcl_category_from_filename(o.data);
  NEEDLE_ASSIGN(auto reader, eval::JsonlReader::open(o.data));
  std::vector<Item> items;
  eval::JsonlLine line;
  while (reader.next(line)) {
    for (auto& e : reader.take_errors()) report_line_error(skipped, e.line_no, e.message);
    auto q = eval::parse_bfcl_question(line.value, fallback);
    if (!q) {
      report_line_error(skipped, line.line_no, q.message());
      continue;
    }
    auto tools = text::parse_tools(eval::bfcl_functions_to_needle_tools(q->functions));
    if (!tools) {
      report_line_error(skipped, line.line_no, tools.message());
      continue;
    }
    Item it;
    it.line_no = line.line_no;
    it.query = q->query;
    it.tools = std::move(tools).value();
    it.functions = q->functions;
    it.id = q->id;
    it.category = q->category;
    it.extra_id = json::Value::from_string(q->id);
    if (auto a = answers.find(q->id); a != answers.end()) it.ground_truth = &a->second;
    else if (!o.answers.empty() && it.category != "irrelevance" && it.category != "relevance")
      spdlog::debug("line {}: no answer for id {}", line.line_no, q->id);
    items.push_back(std::move(it));
  }
  for (auto& e : reader.take_errors()) report_line_error(skipped, e.line_no, e.message);
  return items;
}

// Generation or loss for one item, on one worker's generator.
Outcome process(Generator& gen, const Item& it, const Options& o, const GenerateOptions& gopt) {
  Outcome out;
  if (o.loss) {
    auto answer = text::answer_model_text(it.answers);
    auto dec = text::build_decoder_example(gen.tokenizer(), answer);
    if (!dec) {
      out.error = dec.message();
      return out;
    }
    auto enc = text::build_encoder_input(gen.tokenizer(), it.query, it.tools);
    std::vector<int32_t> e(enc.ids.begin(), enc.ids.end()), di(dec->input.begin(), dec->input.end()),
        tg(dec->target.begin(), dec->target.end());
    out.loss = eval::teacher_forced_loss(gen.engine(), e, di, tg);
    out.ok = true;
    return out;
  }
  auto g = gen.run(it.query, it.tools, gopt);
  if (!g) {
    out.error = g.message();
    return out;
  }
  out.gen = std::move(g).value();
  out.ok = true;
  return out;
}

std::string prediction_text(const Generation& g) { return g.parsed ? json::dump_compact(g.calls) : g.text; }

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "needle-eval: evaluate a model on a JSONL file.\n\n"
      "  needle-eval [-m MODEL] DATA.jsonl [--report report.json] [--out predictions.jsonl]\n"
      "  needle-eval DATA.jsonl --format bfcl --answers POSSIBLE_ANSWERS.jsonl\n"
      "  needle-eval DATA.jsonl --loss          (teacher-forced cross-entropy, no generation)\n\n"
      "Needle format: one {\"query\",\"tools\",\"answers\"} object per line (tools and answers as JSON "
      "values or JSON strings). Metrics as the original (docs/metrics.md): call F1, name F1, exact match, "
      "parse rate, args accuracy, per-tool accuracy, precision and recall.\n"
      "Malformed lines are reported with their line number on stderr and skipped.",
      kTool};
  app::CommonOptions common;
  app::add_common_options(app, common);
  Options o;
  std::string tokenizer_path;
  int max_tokens = 511;
  app.add_option("data", o.data, "Input JSONL file ('-' = stdin)")->required();
  app.add_option("--format", o.format, "needle (default) or bfcl")->check(CLI::IsMember({"needle", "bfcl"}));
  app.add_option("--answers", o.answers, "BFCL possible-answers JSONL ({\"id\",\"ground_truth\"} per line)");
  app.add_option("--limit", o.limit, "Evaluate at most N examples (after --shuffle)");
  app.add_flag("--shuffle", o.shuffle, "Shuffle the examples before --limit");
  app.add_option("--seed", o.seed, "Seed for --shuffle (default 0)");
  app.add_option("--constrain", o.constrain, "schema (default), reference or off")
      ->check(CLI::IsMember({"schema", "reference", "off"}));
  app.add_option("--max-tokens", max_tokens, "Most decoder steps per example (default 511)")->check(CLI::Range(1, 4096));
  app.add_option("--out", o.out, "Write one line per example: prediction, parsed calls, per-call correctness");
  app.add_option("--report", o.report, "Write every metric as one JSON object");
  app.add_flag("--loss", o.loss, "Mean teacher-forced cross-entropy per target token and perplexity (no generation)");
  app.add_option("--tokenizer", tokenizer_path, "SentencePiece model (default: the one embedded in the model)");
  if (int rc = app::parse(app, argc, argv); rc >= 0) return rc;
  app::init_logging(common);
  if (o.loss && o.format != "needle") return app::fail(kTool, "--loss needs --format needle (reference answers)");

  auto lm = app::load_model_and_tokenizer(common, tokenizer_path);
  if (!lm) return app::fail(kTool, lm.message());

  size_t skipped = 0;
  std::map<std::string, json::Value> bfcl_answers;
  auto items_r = o.format == "bfcl" ? read_bfcl(o, skipped, bfcl_answers) : read_needle(o, skipped);
  if (!items_r) return app::fail(kTool, items_r.message());
  std::vector<Item> items = std::move(items_r).value();
  if (o.shuffle) std::shuffle(items.begin(), items.end(), std::mt19937_64(o.seed));
  if (o.limit && items.size() > o.limit) items.resize(o.limit);
  if (items.empty())
    return app::fail(kTool, skipped ? fmt::format("{}: no valid examples ({} skipped; first {})", o.data, skipped, g_first_skip)
                                    : fmt::format("{}: no valid examples (the file holds no example)", o.data));


  GenerateOptions gopt;
  gopt.constrain = *decode::parse_constrain_mode(o.constrain);
  gopt.max_tokens = max_tokens;

  // Examples run in parallel, one single-threaded engine per worker sharing the weights.
  const unsigned workers = (unsigned)std::min<size_t>((size_t)app::resolved_threads(common), items.size());
  std::vector<std::unique_ptr<Generator>> gens;
  for (unsigned w = 0; w < workers; ++w) {
    auto g = Generator::create((*lm)->weights, (*lm)->tokenizer, 1);
    if (!g) return app::fail(kTool, g.message());
    gens.push_back(std::move(g).value());
  }
  std::vector<Outcome> outcomes(items.size());
  app::Progress progress(kTool, items.size(), "examples", !common.quiet);
  std::atomic<size_t> next{0};
  auto work = [&](unsigned w) {
    for (size_t i; (i = next++) < items.size();) {
      outcomes[i] = process(*gens[w], items[i], o, gopt);
      progress.tick();
    }
  };
  std::vector<std::thread> threads;
  for (unsigned w = 1; w < workers; ++w) threads.emplace_back(work, w);
  work(0);
  for (auto& t : threads) t.join();
  progress.finish();
  const double secs = progress.elapsed_s();

  // Score in input order.
  eval::MetricsAccumulator metrics;
  eval::BfclScorer bfcl;
  eval::LossSum loss;
  std::string out_lines;
  size_t n = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    const Item& it = items[i];
    const Outcome& oc = outcomes[i];
    if (!oc.ok) {
      report_line_error(skipped, it.line_no, oc.error);
      continue;
    }
    ++n;
    json::Value line = json::Value::make_object();
    line.set("line", json::Value::from_int((int64_t)it.line_no));
    if (!it.extra_id.is_null()) line.set("id", it.extra_id);
    if (o.loss) {
      loss.sum += oc.loss.sum;
      loss.tokens += oc.loss.tokens;
      line.set("loss_sum", json::Value::from_double(oc.loss.sum));
      line.set("loss_tokens", json::Value::from_int((int64_t)oc.loss.tokens));
    } else if (o.format == "bfcl") {
      auto v = eval::bfcl_check(it.functions, it.ground_truth, it.category, prediction_text(oc.gen));
      bfcl.add(it.category, v);
      line.set("category", json::Value::from_string(it.category));
      line.set("prediction", json::Value::from_string(oc.gen.text));
      line.set("calls", oc.gen.calls);
      line.set("correct", json::Value::from_bool(v.correct));
      if (!v.correct) line.set("reason", json::Value::from_string(v.reason));
    } else {
      auto r = metrics.add(prediction_text(oc.gen), it.answers);
      line.set("prediction", json::Value::from_string(oc.gen.text));
      line.set("score", eval::to_json(r));
    }
    if (!o.out.empty()) out_lines += json::dump_compact(line) + "\n";
  }

  json::Value rep = json::Value::make_object();
  rep.set("n", json::Value::from_int((int64_t)n));
  rep.set("skipped", json::Value::from_int((int64_t)skipped));
  rep.set("seconds", json::Value::from_double(std::round(secs * 1000) / 1000));
  rep.set("examples_per_s", json::Value::from_double(std::round(n / std::max(secs, 1e-9) * 100) / 100));
  if (o.loss) {
    const double mean = loss.tokens ? loss.sum / (double)loss.tokens : 0.0;
    rep.set("loss", json::Value::from_double(mean));
    rep.set("perplexity", json::Value::from_double(std::exp(mean)));
    rep.set("loss_tokens", json::Value::from_int((int64_t)loss.tokens));
    fmt::print("examples     {} ({} skipped)\nloss         {:.6f} nats/token over {} target tokens\nperplexity   {:.4f}\n",
               n, skipped, mean, loss.tokens, std::exp(mean));
  } else if (o.format == "bfcl") {
    rep.set("bfcl", bfcl.to_json());
    fmt::print("examples     {} ({} skipped), {:.1f} examples/s\n", n, skipped, n / std::max(secs, 1e-9));
    fmt::print("{:<28} {:>8} {:>8} {:>9}\n", "category", "correct", "total", "accuracy");
    for (auto& c : bfcl.categories())
      fmt::print("{:<28} {:>8} {:>8} {:>9.4f}\n", c.category, c.correct, c.total, c.accuracy());
    fmt::print("{:<28} {:>8} {:>8} {:>9.4f}\n", "overall", bfcl.correct(), bfcl.total(),
               bfcl.total() ? (double)bfcl.correct() / bfcl.total() : 0.0);
  } else {
    auto r = metrics.finalize();
    auto mj = eval::to_json(r);
    for (auto& [k, v] : mj.object) rep.set(k, v);
    rep.set("n", json::Value::from_int((int64_t)n));
    fmt::print("examples     {} ({} skipped), {:.1f} examples/s\n", n, skipped, n / std::max(secs, 1e-9));
    fmt::print("call F1      {:.4f}  (precision {:.4f}, recall {:.4f}; per-example mean {:.4f})\n", r.call_f1,
               r.call_precision, r.call_recall, r.call_f1_mean);
    fmt::print("name F1      {:.4f}  (precision {:.4f}, recall {:.4f})\n", r.name_f1, r.name_precision,
               r.name_recall);
    fmt::print("exact match  {:.4f}  ({}/{})\n", r.exact_match, r.exact, r.n);
    fmt::print("parse rate   {:.4f}\n", r.parse_rate);
    fmt::print("args acc     {:.4f}  ({}/{})\n", r.args_acc, r.args_correct, r.args_total);
    if (!r.per_tool.empty()) {
      fmt::print("{:<40} {:>8} {:>8} {:>9}\n", "tool", "correct", "total", "accuracy");
      for (auto& t : r.per_tool)
        fmt::print("{:<40} {:>8} {:>8} {:>9.4f}\n", t.name, t.correct, t.total,
                   t.total ? (double)t.correct / t.total : 0.0);
    }
  }
  if (!o.report.empty()) {
    std::string s = json::dump_compact(rep) + "\n";
    if (auto st = write_file_atomic(o.report, std::span<const uint8_t>((const uint8_t*)s.data(), s.size())); !st)
      return app::fail(kTool, st.message(), app::kRuntimeError);
  }
  if (!o.out.empty()) {
    if (auto st = write_file_atomic(o.out, std::span<const uint8_t>((const uint8_t*)out_lines.data(), out_lines.size()));
        !st)
      return app::fail(kTool, st.message(), app::kRuntimeError);
  }
  return app::kOk;
}
