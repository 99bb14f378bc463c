// needle-finetune: fine-tune (or pretrain, --init random) on a Needle JSONL file on the CPU,
// following the original recipe: per-tool split, base evaluation, training with validation
// every epoch keeping the best checkpoint, final evaluation, BASE_EVAL / FINETUNED_EVAL lines.
// --lora RANK trains low-rank adapters on the frozen base instead and merges them at export.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <charconv>
#include <cmath>
#include <csignal>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <new>
#include <optional>
#include <random>
#include <thread>

#include "common/cli.h"
#include "common/progress.h"
#include "decode/greedy.h"
#include "eval/metrics.h"
#include "io/file.h"
#include "io/pickle.h"
#include "model/model_io.h"
#include "model/engine.h"
#include "train/finetune_data.h"
#include "train/lora.h"
#include "train/trainer.h"

using namespace needle;

namespace {

constexpr const char* kTool = "needle-finetune";
std::atomic<int> g_signal{0};
extern "C" void on_signal(int sig) { g_signal = sig; }

struct Opts {
  std::string data, out, export_pkl, init = "model", config_path, tokenizer_path, checkpoint_dir, resume, log_jsonl;
  std::string val_file, test_file;  // --val / --test: held-out sets given as files instead of split from DATA
  std::string type = "int4", optimizer = "muon", recompute = "auto";
  int epochs = 3, batch = 16, warmup_pct = 5, per_tool = 10, checkpoint_every = 100, qat_every = 100;
  int lora = 0;
  float lr = 3e-5f, muon_lr = 0.02f, dropout = 0.1f, contrastive_weight = 0.0f, lora_alpha = 0.0f;
  size_t max_enc_len = 1024, max_dec_len = 512;
  uint64_t seed = 0;
  bool no_eval = false;
};

constexpr float kLoraDefaultLr = 1e-3f;

// Memory goes back to the system when a phase ends (training -> evaluation -> training), so the
// process's peak is the largest phase, not their sum. glibc keeps freed blocks under its
// (growing) mmap threshold in the heap, resident; a fixed 1 MiB threshold maps every large
// buffer (activations, tensors) on its own, and malloc_trim returns what is left.
void memory_policy() {
#if defined(__GLIBC__)
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
#endif
}
void return_free_memory() {
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

// An in-memory f32 model from parameters that are not needed afterwards: each copy is freed as
// soon as the next exists (parameters -> encoded tensors -> file bytes), so the peak is two
// copies, not three (memory_model keeps its input alive).
Result<std::unique_ptr<MemoryModel>> consume_into_memory_model(Params p, const Config& c) {
  WriteOptions wo;
  wo.type = WeightType::F32;
  auto mm = std::make_unique<MemoryModel>();
  {
    NEEDLE_ASSIGN(NeedleWriter w, build_needle(p, c, wo));
    p = Params{};  // frees the parameters
    mm->bytes = w.serialize();
  }
  NEEDLE_ASSIGN(NeedleFile f, NeedleFile::parse(mm->bytes, /*verify_data=*/true));
  NEEDLE_ASSIGN(mm->model, model_from_file(std::move(f)));
  NEEDLE_ASSIGN(mm->weights, prepare_weights(mm->model));
  return mm;
}

// Generates on `idx` and scores with the reference metrics (examples without calls skipped,
// as the original's evaluation does). Takes the parameters by value (see above).
Result<eval::MetricsReport> evaluate(Params p, const Config& c, const text::Tokenizer& tok,
                                     const std::vector<train::Example>& ex, const std::vector<size_t>& idx,
                                     unsigned threads) {
  NEEDLE_ASSIGN(auto mm, consume_into_memory_model(std::move(p), c));
  std::vector<std::string> preds(idx.size());
  std::vector<std::string> errors(idx.size());
  std::atomic<size_t> next{0};
  // Worker threads: an exception (out of memory) must not escape them (std::terminate).
  auto work = [&] {
    size_t i = 0;
    try {
      auto g = Generator::create(mm->weights, tok, 1);
      if (!g) {
        errors[0] = g.message();
        return;
      }
      GenerateOptions go;
      while ((i = next++) < idx.size()) {
        auto r = (*g)->run(ex[idx[i]].query, ex[idx[i]].tools, go);
        if (!r) errors[i] = r.message();
        else preds[i] = r->parsed ? json::dump_compact(r->calls) : r->text;
      }
    } catch (const std::bad_alloc&) {
      errors[std::min(i, idx.size() - 1)] = "out of memory";
    }
  };
  std::vector<std::thread> ts;
  for (unsigned t = 1; t < std::max(1u, threads); ++t) ts.emplace_back(work);
  work();
  for (auto& t : ts) t.join();
  eval::MetricsAccumulator acc(eval::MetricsOptions{.skip_empty_references = true});
  for (size_t i = 0; i < idx.size(); ++i) {
    if (!errors[i].empty()) return make_error("evaluation failed: {}", errors[i]);
    acc.add(preds[i], ex[idx[i]].answers);
  }
  return acc.finalize();
}

// Validation loss per target token: `ce` the class-weighted cross-entropy (the training objective,
// what selects the best epoch), `nll` the unweighted one (what needle-eval --loss reports).
struct ValLoss {
  double ce = 0, nll = 0;
};

Result<ValLoss> val_loss(train::Trainer& t, const std::vector<train::Example>& ex, const std::vector<size_t>& idx,
                         int batch) {
  double sum = 0, nll = 0;
  int64_t toks = 0;
  for (size_t i = 0; i < idx.size(); i += (size_t)batch) {
    std::vector<size_t> b(idx.begin() + (ptrdiff_t)i, idx.begin() + (ptrdiff_t)std::min(idx.size(), i + (size_t)batch));
    auto tb = train::make_batch(ex, b);
    NEEDLE_ASSIGN(auto l, t.eval_loss(tb));
    sum += l.ce * (double)tb.target_tokens();
    nll += l.nll * (double)tb.target_tokens();
    toks += tb.target_tokens();
  }
  if (!toks) return ValLoss{};
  return ValLoss{sum / (double)toks, nll / (double)toks};
}

// Checkpoint: one .needle-container file (checksummed, written atomically) holding the
// trainer state, the data position and the best parameters so far.
struct Progress {
  int64_t epoch = 0, batch = 0;
  double best_score = -1;
  int64_t best_epoch = -1;
  std::vector<uint8_t> best;  // serialized f32 .needle of the best parameters
};

Status save_checkpoint(const std::string& dir, const train::Trainer& t, const Progress& pr) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return make_error("cannot create checkpoint directory '{}': {}", dir, ec.message());
  NeedleWriter w;
  w.set_meta("ckpt.trainer", MetaBytes(t.to_bytes()));
  w.set_meta("ckpt.epoch", pr.epoch);
  w.set_meta("ckpt.batch", pr.batch);
  w.set_meta("ckpt.best_score", pr.best_score);
  w.set_meta("ckpt.best_epoch", pr.best_epoch);
  w.set_meta("ckpt.best", MetaBytes(pr.best));
  return w.write(dir + "/checkpoint.needle");
}

Result<std::pair<train::Trainer, Progress>> load_checkpoint(const std::string& dir, Params base, unsigned threads) {
  NEEDLE_ASSIGN(NeedleFile f, NeedleFile::open(dir + "/checkpoint.needle", true));
  auto bytes = [&](const char* k) -> Result<const MetaBytes*> {
    auto* v = f.meta(k);
    if (!v || !std::get_if<MetaBytes>(v)) return make_error("checkpoint lacks {}", k);
    return std::get_if<MetaBytes>(v);
  };
  auto i64 = [&](const char* k) -> Result<int64_t> {
    auto* v = f.meta(k);
    if (!v || !std::get_if<int64_t>(v)) return make_error("checkpoint lacks {}", k);
    return std::get<int64_t>(*v);
  };
  NEEDLE_ASSIGN(const MetaBytes* tb, bytes("ckpt.trainer"));
  NEEDLE_ASSIGN(train::Trainer t, train::Trainer::from_bytes(*tb, std::move(base), threads));
  Progress pr;
  NEEDLE_ASSIGN(pr.epoch, i64("ckpt.epoch"));
  NEEDLE_ASSIGN(pr.batch, i64("ckpt.batch"));
  NEEDLE_ASSIGN(pr.best_epoch, i64("ckpt.best_epoch"));
  auto* bs = f.meta("ckpt.best_score");
  if (!bs || !std::get_if<double>(bs)) return make_error("checkpoint lacks ckpt.best_score");
  pr.best_score = std::get<double>(*bs);
  NEEDLE_ASSIGN(const MetaBytes* best, bytes("ckpt.best"));
  pr.best = *best;
  return std::pair{std::move(t), std::move(pr)};
}

Result<Config> config_from_json(const std::string& path) {
  NEEDLE_ASSIGN(auto bytes, read_file(path, 1 << 20));
  NEEDLE_ASSIGN(json::Value v, json::parse(std::string(bytes.begin(), bytes.end())));
  if (!v.is_object()) return make_error("{}: expected a JSON object of config keys", path);
  std::vector<std::pair<std::string, ScalarValue>> dict;
  for (auto& [k, x] : v.object) {
    if (x.type == json::Type::Int) {
      // The digits as written (JSON integers are unbounded): anything outside int64 is an error,
      // not a wrapped or undefined conversion of the nearest double.
      int64_t i = 0;
      const char* b = x.text.data();
      const char* e = b + x.text.size();
      if (b != e && *b == '+') ++b;
      auto [end, ec] = std::from_chars(b, e, i);
      if (ec != std::errc() || end != e) return make_error("{}: config key '{}' must be an integer that fits in 64 bits", path, k);
      dict.emplace_back(k, i);
    }
    else if (x.type == json::Type::Float) dict.emplace_back(k, x.number);
    else if (x.is_bool()) dict.emplace_back(k, x.boolean);
    else if (x.is_string()) dict.emplace_back(k, x.text);
    else return make_error("{}: config key '{}' must be a scalar", path, k);
  }
  auto c = Config::from_pickle(dict);
  if (!c) return make_error("{}: {}", path, c.message());
  return c;
}

json::Value eval_json(const eval::MetricsReport& r) {
  return eval::to_json(r, eval::ReportJsonOptions{.round_digits = 4});
}

// --val FILE / --test FILE: a held-out set from its own file. Bad lines are warned about and
// skipped as in DATA; a file without one valid example is an error naming the first problem.
Result<std::vector<train::Example>> load_held_out(const std::string& path, const text::Tokenizer& tok,
                                                  const train::SeqLimits& lim) {
  train::LoadReport rep;
  NEEDLE_ASSIGN(auto ex, train::load_examples(path, tok, lim, rep));
  for (auto& e : rep.skipped) spdlog::warn("{}: line {}: {} (skipped)", path, e.line_no, e.message);
  if (ex.empty())
    return rep.skipped.empty() ? make_error("{}: no valid examples (the file holds no example)", path)
                               : make_error("{}: no valid examples ({} skipped; first {})", path, rep.skipped.size(),
                                            rep.first_skip());
  return ex;
}

// --log-jsonl: one JSON object per line, flushed at once. A failed write (disk full, file size
// limit) is an error that stops the run: a log that silently ends is worse than none.
class JsonlLog {
 public:
  Status open(const std::string& path) {
    path_ = path;
    f_ = std::fopen(path.c_str(), "a");
    if (!f_) return make_error("cannot open --log-jsonl file '{}': {}", path, std::strerror(errno));
    return Status::ok();
  }
  ~JsonlLog() {
    if (f_) std::fclose(f_);
  }
  Status write(const std::string& line) {
    if (!f_) return Status::ok();
    errno = 0;
    if (std::fputs(line.c_str(), f_) < 0 || std::fputc('\n', f_) == EOF || std::fflush(f_) != 0) {
      const int e = errno;
      std::fclose(f_);
      f_ = nullptr;
      return make_error("cannot write --log-jsonl file '{}': {}", path_, e ? std::strerror(e) : "write error");
    }
    return Status::ok();
  }

 private:
  std::string path_;
  std::FILE* f_ = nullptr;
};

// A finite number as JSON, or null (not computed).
std::string json_number(std::optional<double> v) {
  return v && std::isfinite(*v) ? fmt::format("{:.6f}", *v) : std::string("null");
}

int run(int argc, char** argv);

}  // namespace

// Running out of memory (a large config, a large batch) is one line and exit 1, not an abort.
int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::bad_alloc&) {
    return app::fail(kTool,
                     "out of memory (the model, batch or data does not fit: try a smaller --batch-size, "
                     "--max-enc-len/--max-dec-len, --lora or --recompute on)",
                     app::kRuntimeError);
  }
}

namespace {

int run(int argc, char** argv) {
  CLI::App app{
      "needle-finetune: fine-tune a Needle model on a JSONL file on the CPU.\n\n"
      "  needle-finetune DATA.jsonl [-m BASE.needle] -o OUT.needle [--epochs 3] [--batch-size 16]\n"
      "  needle-finetune DATA.jsonl --init random --config CONFIG.json --tokenizer needle.model -o OUT.needle\n"
      "  needle-finetune DATA.jsonl -m BASE.needle -o OUT.needle --checkpoint-dir ckpt   (then --resume ckpt)\n"
      "  needle-finetune DATA.jsonl -m BASE.needle -o OUT.needle --lora 8 [--lora-alpha 16]   (low-rank adapters)\n\n"
      "Recipe (as the original): split per primary tool (10 test, 10 val, rest train; tool names grouped by\n"
      "their snake_case form, so getWeather and get-weather are one tool; --val/--test FILE replace that part\n"
      "of the split); evaluate the base on test; train, validating every epoch (loss and call F1) and keeping\n"
      "the best; evaluate the best on test; print BASE_EVAL:{json} and FINETUNED_EVAL:{json}; write OUT\n"
      "(INT4 by default). --log-jsonl FILE: one JSON line per step ({\"event\":\"step\",...}), per epoch's\n"
      "validation ({\"event\":\"val\",\"epoch\":N,\"val_loss\":...,\"val_nll\":...,\"call_f1\":...}) and the base's\n"
      "validation loss before training ({\"event\":\"val_base\",\"epoch\":0,...}). val_loss is the class-weighted\n"
      "cross-entropy per target token (the training objective); val_nll the unweighted one, as needle-eval --loss.\n"
      "SIGINT/SIGTERM save a checkpoint (with --checkpoint-dir) and exit 130; --resume continues bit-identically.\n"
      "A failed write (checkpoint, log, output: disk full) stops the run with exit 1, the previous\n"
      "checkpoint intact.\n"
      "LoRA (--lora RANK): the base stays frozen; rank-RANK adapters W + (alpha/RANK) B A on every attention\n"
      "q/k/v/out projection are trained with AdamW (--lr, default 1e-3 with --lora) and merged into the kernels\n"
      "at export, so OUT is an ordinary model. Far less memory (no gradients or moments for the base,\n"
      "activations recomputed) and cheaper steps; --resume needs the same -m BASE.",
      kTool};
  app::CommonOptions common;
  app::add_common_options(app, common);
  Opts o;
  app.add_option("data", o.data, "Training data: Needle JSONL ({query, tools, answers} per line)")->required();
  app.add_option("-o,--output", o.out, "Output model (.needle)")->required();
  app.add_option("--type", o.type, "Output weights: int4 (default), int8, f16, f32")
      ->check(CLI::IsMember({"int4", "int8", "f16", "f32"}));
  app.add_option("--export-pkl", o.export_pkl, "Also write the original pickle layout");
  app.add_option("--init", o.init, "model (default: start from -m) or random (pretrain; needs --config)")
      ->check(CLI::IsMember({"model", "random"}));
  app.add_option("--config", o.config_path, "With --init random: JSON object of config keys (reference defaults fill the rest)");
  app.add_option("--tokenizer", o.tokenizer_path, "SentencePiece model (default: the base model's)");
  app.add_option("--epochs", o.epochs, "Epochs (default 3)")->check(CLI::Range(1, 100000));
  app.add_option("--batch-size", o.batch, "Examples per step (default 16)")->check(CLI::Range(1, 4096));
  app.add_option("--lr", o.lr, "AdamW peak learning rate (default 3e-5; 1e-3 for the adapters with --lora)");
  app.add_option("--muon-lr", o.muon_lr, "Muon peak learning rate for 2-D kernels (default 0.02)");
  app.add_option("--optimizer", o.optimizer, "muon (default: Muon on kernels, AdamW on the rest) or adamw")
      ->check(CLI::IsMember({"muon", "adamw"}));
  app.add_option("--warmup", o.warmup_pct, "Warmup, percent of all steps (default 5)")->check(CLI::Range(0, 100));
  app.add_option("--dropout", o.dropout, "Dropout on residual branches (default 0.1)");
  app.add_option("--qat-every", o.qat_every, "Every N-th step runs with INT4 fake-quantized kernels (0 = never)");
  app.add_option("--contrastive-weight", o.contrastive_weight, "Weight of the CLIP loss (default 0: off)");
  app.add_option("--max-enc-len", o.max_enc_len, "Encoder tokens (default 1024)")->check(CLI::Range(8, 4096));
  app.add_option("--max-dec-len", o.max_dec_len, "Decoder tokens; longer answers are dropped (default 512)")
      ->check(CLI::Range(4, 4096));
  app.add_option("--val-split", o.per_tool, "Test and validation examples per tool (default 10)")->check(CLI::Range(0, 100000));
  app.add_option("--val", o.val_file, "Validation set (Needle JSONL) instead of the per-tool validation split of DATA");
  app.add_option("--test", o.test_file, "Test set (Needle JSONL) instead of the per-tool test split of DATA");
  app.add_option("--seed", o.seed, "Seed for the split, data order, init and dropout (default 0)");
  app.add_option("--checkpoint-dir", o.checkpoint_dir, "Write a checkpoint here every --checkpoint-every steps and each epoch");
  app.add_option("--checkpoint-every", o.checkpoint_every, "Steps between checkpoints (default 100)")->check(CLI::Range(1, 1 << 30));
  app.add_option("--resume", o.resume, "Continue the run saved in this checkpoint directory");
  app.add_option("--log-jsonl", o.log_jsonl,
                 "Append JSON lines to this file: metrics per step, validation per epoch, the base's validation loss");
  app.add_flag("--no-eval", o.no_eval, "Skip the base and final generation evaluations");
  app.add_option("--lora", o.lora, "Train rank-RANK LoRA adapters on the frozen base (attention q/k/v/out projections)")
      ->check(CLI::Range(1, 4096));
  app.add_option("--lora-alpha", o.lora_alpha, "LoRA scale numerator: W + (alpha/rank) B A (default: alpha = rank)")
      ->check(CLI::PositiveNumber);
  app.add_option("--recompute", o.recompute,
                 "Recompute activations in the backward (far less memory, one more forward per step): auto (on with --lora), on, off")
      ->check(CLI::IsMember({"auto", "on", "off"}));
  if (int rc = app::parse(app, argc, argv); rc >= 0) return rc;
  app::init_logging(common);
  memory_policy();
  const unsigned threads = (unsigned)app::resolved_threads(common);
  if (!o.resume.empty() && o.checkpoint_dir.empty()) o.checkpoint_dir = o.resume;
  if (o.lora > 0 && app.count("--optimizer") && o.optimizer == "muon")
    return app::fail(kTool, "--lora trains its adapters with AdamW; --optimizer muon does not apply");
  if (o.lora == 0 && app.count("--lora-alpha")) return app::fail(kTool, "--lora-alpha needs --lora RANK");
  if (o.lora > 0 && !app.count("--lr")) o.lr = kLoraDefaultLr;

  // Model and tokenizer.
  Config cfg;
  Params params;
  std::vector<uint8_t> tok_bytes;
  std::unique_ptr<Model> base;
  if (o.init == "random") {
    if (o.config_path.empty()) return app::fail(kTool, "--init random needs --config CONFIG.json");
    if (o.tokenizer_path.empty()) return app::fail(kTool, "--init random needs --tokenizer needle.model");
    auto c = config_from_json(o.config_path);
    if (!c) return app::fail(kTool, c.message());
    cfg = *c;
    params = train::init_params(cfg, o.seed);
  } else {
    auto path = app::resolve_model(common);
    if (!path) return app::fail(kTool, path.message());
    auto m = load_model(*path);
    if (!m) return app::fail(kTool, m.message());
    cfg = m->config;
    tok_bytes = m->tokenizer;
    auto p = to_params(*m);
    if (!p) return app::fail(kTool, p.message());
    params = std::move(p).value();
  }
  if (!o.tokenizer_path.empty()) {
    auto b = read_file(o.tokenizer_path, 64u << 20);
    if (!b) return app::fail(kTool, b.message());
    tok_bytes = std::move(b).value();
  }
  if (tok_bytes.empty()) return app::fail(kTool, "the base model embeds no tokenizer: pass --tokenizer needle.model");
  auto tok = text::Tokenizer::from_bytes(std::span<const uint8_t>(tok_bytes));
  if (!tok) return app::fail(kTool, tok.message());
  if (tok->vocab_size() != cfg.vocab_size)
    return app::fail(kTool, fmt::format("tokenizer has {} pieces, the model's vocabulary is {}", tok->vocab_size(), cfg.vocab_size));

  if (o.lora > cfg.d_model)
    return app::fail(kTool, fmt::format("--lora {} is larger than the model's d_model ({})", o.lora, cfg.d_model));

  // Data.
  train::LoadReport rep;
  train::SeqLimits lim{o.max_enc_len, o.max_dec_len};
  auto examples_r = train::load_examples(o.data, *tok, lim, rep);
  if (!examples_r) return app::fail(kTool, examples_r.message());
  auto examples = std::move(examples_r).value();
  for (auto& e : rep.skipped) spdlog::warn("{}: line {}: {} (skipped)", o.data, e.line_no, e.message);
  // --val / --test: loaded after DATA's split and appended to `examples` (indices past DATA's).
  auto split = train::split_per_tool(examples, (size_t)o.per_tool, o.seed,
                                     train::SplitParts{.test = o.test_file.empty(), .val = o.val_file.empty()});
  for (auto [file, part] : {std::pair{&o.val_file, &split.val}, std::pair{&o.test_file, &split.test}}) {
    if (file->empty()) continue;
    auto held = load_held_out(*file, *tok, lim);
    if (!held) return app::fail(kTool, held.message());
    for (auto& e : *held) {
      part->push_back(examples.size());
      examples.push_back(std::move(e));
    }
  }
  {
    auto label = [](const std::string& t) { return t.empty() ? std::string("<no call>") : t; };
    constexpr size_t kListed = 10;  // more small tools than this: one summary line, not one each
    if (split.small_tools.size() <= kListed) {
      for (auto& [tool, n] : split.small_tools)
        spdlog::warn("tool '{}' has only {} examples (under 120): results for it will be noisy", label(tool), n);
    } else {
      std::string some;
      for (size_t i = 0; i < 5; ++i)
        some += fmt::format("{}'{}' ({})", i ? ", " : "", label(split.small_tools[i].first), split.small_tools[i].second);
      spdlog::warn("{} of {} tools have under 120 examples (results for them will be noisy): {}, ... (-v lists them all)",
                   split.small_tools.size(), split.tools, some);
      for (auto& [tool, n] : split.small_tools) spdlog::debug("tool '{}': {} examples", label(tool), n);
    }
  }
  if (split.train.size() < (size_t)o.batch)
    return app::fail(kTool, fmt::format("{}: too little data: {} training examples for a batch of {} ({} valid lines, {} skipped{})",
                                        o.data, split.train.size(), o.batch, rep.lines_ok, rep.skipped.size(),
                                        rep.skipped.empty() ? "" : "; first " + rep.first_skip()));
  spdlog::info("{} examples in {} tools: {} train, {} val{}, {} test{} ({} lines skipped)", rep.lines_ok, split.tools,
               split.train.size(), split.val.size(), o.val_file.empty() ? "" : " (--val)", split.test.size(),
               o.test_file.empty() ? "" : " (--test)", rep.skipped.size());

  // Base evaluation (before the trainer takes the parameters: no second copy of the model).
  if (!o.no_eval && o.resume.empty() && !split.test.empty()) {
    auto base_eval = evaluate(params, cfg, *tok, examples, split.test, threads);
    if (!base_eval) return app::fail(kTool, base_eval.message(), app::kRuntimeError);
    fmt::print("BASE_EVAL:{}\n", json::dump_compact(eval_json(*base_eval)));
    std::fflush(stdout);
    return_free_memory();
  }

  // Trainer (fresh or resumed).
  const int64_t steps_per_epoch = (int64_t)(split.train.size() / (size_t)o.batch);
  train::TrainOptions to;
  to.optim.muon = o.lora == 0 && o.optimizer == "muon";
  to.optim.adam_lr = o.lr;
  to.optim.muon_lr = o.muon_lr;
  to.schedule.total_steps = steps_per_epoch * o.epochs;
  to.schedule.warmup_frac = o.warmup_pct / 100.0;
  to.dropout = o.dropout;
  to.qat_every = o.qat_every;
  to.clip_weight = o.contrastive_weight;
  to.seed = o.seed;
  to.lora_rank = o.lora;
  to.lora_alpha = o.lora_alpha;
  to.recompute = o.recompute == "on" || (o.recompute == "auto" && o.lora > 0);
  Progress pr;
  std::optional<train::Trainer> trainer;
  if (!o.resume.empty()) {
    // A LoRA checkpoint holds the adapters and the base's fingerprint, not the base: the base
    // loaded above (the same -m) goes back in.
    auto r = load_checkpoint(o.resume, std::move(params), threads);
    if (!r) return app::fail(kTool, fmt::format("cannot resume from {}: {}", o.resume, r.message()));
    trainer.emplace(std::move(r->first));
    pr = std::move(r->second);
    spdlog::info("resumed from {} at epoch {}, batch {} (step {})", o.resume, pr.epoch, pr.batch, trainer->step());
  } else {
    auto t = train::Trainer::create(cfg, std::move(params), to, threads);
    if (!t) return app::fail(kTool, t.message());
    trainer.emplace(std::move(t).value());
  }
  params = Params{};
  if (trainer->is_lora()) {
    const auto& l = trainer->lora();
    const int64_t n = train::lora_param_count(l), total = param_count(cfg);
    spdlog::info("LoRA rank {}, alpha {} (scale {}): {} trainable parameters ({:.2f}% of {}), base frozen", l.rank,
                 l.alpha, l.scale(), n, 100.0 * (double)n / (double)total, total);
  }

  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  JsonlLog log;
  if (!o.log_jsonl.empty())
    if (auto st = log.open(o.log_jsonl); !st) return app::fail(kTool, st.message(), app::kRuntimeError);

  // A checkpoint that cannot be written stops the run (exit 1): going on would leave the user
  // believing progress is saved. The previous checkpoint stays intact (atomic write).
  auto checkpoint = [&]() -> Status {
    if (o.checkpoint_dir.empty()) return Status::ok();
    return save_checkpoint(o.checkpoint_dir, *trainer, pr);
  };

  // The base's validation loss (a fresh run only: a resumed run logged it when it started).
  if (o.resume.empty() && !split.val.empty()) {
    auto vl = val_loss(*trainer, examples, split.val, o.batch);
    if (!vl) return app::fail(kTool, vl.message(), app::kRuntimeError);
    trainer->release_workspace();
    return_free_memory();
    spdlog::info("base: val loss {:.4f} (class-weighted), val NLL {:.4f} nats/token", vl->ce, vl->nll);
    if (auto st = log.write(fmt::format(
            "{{\"event\":\"val_base\",\"epoch\":0,\"step\":{},\"val_loss\":{},\"val_nll\":{},\"call_f1\":null}}",
            trainer->step(), json_number(vl->ce), json_number(vl->nll)));
        !st)
      return app::fail(kTool, st.message(), app::kRuntimeError);
  }

  app::Progress bar(kTool, (size_t)(steps_per_epoch * o.epochs), "steps", !common.quiet);
  // Ends the progress line before an error line (one line, not glued to the bar).
  auto fail_run = [&](const std::string& msg) {
    bar.finish();
    return app::fail(kTool, msg, app::kRuntimeError);
  };
  bar.tick((size_t)trainer->step());
  double tokens_done = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (; pr.epoch < o.epochs; ++pr.epoch, pr.batch = 0) {
    std::vector<size_t> order = split.train;
    std::shuffle(order.begin(), order.end(), std::mt19937_64(o.seed * 1000003 + (uint64_t)pr.epoch));
    for (; pr.batch < steps_per_epoch; ++pr.batch) {
      std::vector<size_t> idx(order.begin() + pr.batch * o.batch, order.begin() + (pr.batch + 1) * o.batch);
      auto tb = train::make_batch(examples, idx);
      auto st = trainer->train_step(tb);
      if (!st) return fail_run(st.message());
      int64_t toks = 0;
      for (int v : tb.enc_seg) toks += v;
      toks += tb.target_tokens();
      tokens_done += (double)toks;
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      bar.set_status(fmt::format("loss {:.4f} {:.0f} tok/s", st->loss, tokens_done / std::max(secs, 1e-9)));
      bar.tick();
      if (auto ls = log.write(fmt::format(
              "{{\"event\":\"step\",\"step\":{},\"epoch\":{},\"loss\":{:.6f},\"ce\":{:.6f},\"z_loss\":{:.6f},\"grad_norm\":{:.6f},\"lr_scale\":{:.6f},\"tokens\":{},\"tok_s\":{:.1f}}}",
              st->step, pr.epoch, st->loss, st->text.ce, st->text.z_loss, st->grad_norm, st->lr_scale, toks,
              tokens_done / std::max(secs, 1e-9)));
          !ls)
        return fail_run(ls.message());
      const int sig = g_signal;
      if (sig != 0 || (trainer->step() % o.checkpoint_every == 0)) {
        ++pr.batch;  // the position to continue from
        Status saved = checkpoint();
        --pr.batch;
        if (sig != 0) {
          bar.finish();
          if (o.checkpoint_dir.empty()) {
            fmt::print(stderr, "{}: interrupted by signal {}; no --checkpoint-dir, progress is lost\n", kTool, sig);
            return 130;
          }
          if (!saved)
            return app::fail(kTool, fmt::format("interrupted by signal {}; the checkpoint could not be written: {}", sig,
                                                saved.message()),
                             app::kRuntimeError);
          fmt::print(stderr, "{}: interrupted by signal {}; checkpoint saved: continue with --resume {}\n", kTool, sig,
                     o.checkpoint_dir);
          return 130;
        }
        if (!saved) return fail_run("checkpoint failed: " + saved.message());
      }
    }
    // Validation: loss and call F1; keep the best (F1, then lower loss). The activation buffers
    // are freed first (the next step allocates them again), so evaluation does not add to them.
    trainer->release_workspace();
    return_free_memory();
    auto vl = split.val.empty() ? Result<ValLoss>(ValLoss{}) : val_loss(*trainer, examples, split.val, o.batch);
    if (!vl) return fail_run(vl.message());
    trainer->release_workspace();
    return_free_memory();
    double f1 = 0;
    const bool with_f1 = !o.no_eval && !split.val.empty();
    if (with_f1) {
      auto ve = evaluate(trainer->merged_params(), cfg, *tok, examples, split.val, threads);
      if (!ve) return fail_run(ve.message());
      f1 = ve->call_f1;
    }
    return_free_memory();
    const double score = f1 - 1e-6 * vl->ce;
    if (with_f1)
      spdlog::info("epoch {}: val loss {:.4f} (class-weighted), val NLL {:.4f}, val call F1 {:.4f}", pr.epoch + 1,
                   vl->ce, vl->nll, f1);
    else spdlog::info("epoch {}: val loss {:.4f} (class-weighted), val NLL {:.4f}", pr.epoch + 1, vl->ce, vl->nll);
    if (!split.val.empty())
      if (auto ls = log.write(fmt::format(
              "{{\"event\":\"val\",\"epoch\":{},\"step\":{},\"val_loss\":{},\"val_nll\":{},\"call_f1\":{}}}",
              pr.epoch + 1, trainer->step(), json_number(vl->ce), json_number(vl->nll),
              with_f1 ? json_number(f1) : std::string("null")));
          !ls)
        return fail_run(ls.message());
    if (score > pr.best_score || pr.best.empty()) {
      pr.best_score = score;
      pr.best_epoch = pr.epoch;
      if (trainer->is_lora()) {
        pr.best = train::lora_to_bytes(trainer->lora(), cfg);  // the adapters only: kilobytes, not the model
      } else {
        WriteOptions wo;
        wo.type = WeightType::F32;
        auto w = build_needle(trainer->params(), cfg, wo);
        if (!w) return fail_run(w.message());
        pr.best = w->serialize();
      }
    }
    ++pr.epoch;
    pr.batch = 0;
    Status saved = checkpoint();
    --pr.epoch;
    if (!saved) return fail_run("checkpoint failed: " + saved.message());
  }
  bar.finish();

  // The best parameters (LoRA: the base with the best adapters merged into its kernels). The
  // trainer is not needed any more: free it before building the output.
  Params best;
  if (trainer->is_lora()) {
    auto l = train::lora_from_bytes(pr.best, cfg);
    if (!l) return app::fail(kTool, l.message(), app::kRuntimeError);
    best = trainer->params();
    trainer.reset();
    train::merge_lora(best, *l, cfg);
  } else {
    trainer.reset();
    auto bestf = NeedleFile::parse(pr.best);
    if (!bestf) return app::fail(kTool, bestf.message(), app::kRuntimeError);
    auto bestm = model_from_file(std::move(bestf).value());
    if (!bestm) return app::fail(kTool, bestm.message(), app::kRuntimeError);
    auto b = to_params(*bestm);
    if (!b) return app::fail(kTool, b.message(), app::kRuntimeError);
    best = std::move(b).value();
  }
  pr.best = {};
  return_free_memory();
  spdlog::info("best epoch {}", pr.best_epoch + 1);
  // Written first, then evaluated (the evaluation consumes the parameters: one copy less at
  // the peak; and a failing evaluation does not lose the model).
  WriteOptions wo;
  wo.type = *weight_type_from_name(o.type);
  wo.tokenizer = tok_bytes;
  wo.source = "needle-finetune " + o.data;
  if (auto st = save_needle(o.out, best, cfg, wo); !st) return app::fail(kTool, st.message(), app::kRuntimeError);
  spdlog::info("wrote {}", o.out);
  if (!o.export_pkl.empty()) {
    auto bytes = write_pickle_checkpoint(params_to_pickle(best, cfg));
    if (!bytes) return app::fail(kTool, bytes.message(), app::kRuntimeError);
    if (auto st = write_file_atomic(o.export_pkl, *bytes); !st) return app::fail(kTool, st.message(), app::kRuntimeError);
  }
  if (!o.no_eval && !split.test.empty()) {
    auto fe = evaluate(std::move(best), cfg, *tok, examples, split.test, threads);
    if (!fe) return app::fail(kTool, fe.message(), app::kRuntimeError);
    fmt::print("FINETUNED_EVAL:{}\n", json::dump_compact(eval_json(*fe)));
  }
  return app::kOk;
}
}  // namespace
