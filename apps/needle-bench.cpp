// needle-bench: end-to-end engine throughput (load, prefill, decode, memory) and kernel rates
// as a percentage of this machine's measured int8 peak and memory bandwidth. It prints numbers;
// it is not a test (docs/benchmarks.md records what it measured and how to read it).
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <memory>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "common/cli.h"
#include "model/engine.h"
#include "model/model_io.h"
#include "nk/kernels.h"
#include "nk/quant.h"
#include "nk/threadpool.h"
#include "text/tokenizer.h"
#include "train/grad.h"
#include "train/matmul.h"
#include "train/optim.h"
#include "train/trainer.h"

using namespace needle;

namespace {

constexpr const char* kTool = "needle-bench";
constexpr uint32_t kSeed = 20240611;  // input ids and random kernel operands

// ---------------------------------------------------------------------------------------------
// Clocks and statistics

double wall_now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// CPU time of the calling thread: what it would have taken had nothing else wanted the core.
double cpu_now() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double best(const std::vector<double>& v) { return v.empty() ? 0.0 : *std::min_element(v.begin(), v.end()); }

double peak_rss_mb() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

std::string load_average() {
  double la[3] = {0, 0, 0};
  if (getloadavg(la, 3) != 3) return "?";
  return fmt::format("{:.2f} {:.2f} {:.2f}", la[0], la[1], la[2]);
}

// Seconds per call: best of `trials` trials of about `secs / trials` each, on the thread's CPU
// clock (the minimum of CPU time is the stable number on a shared machine).
template <class F>
double time_per_call(F&& f, double secs, int trials = 7) {
  f();
  size_t batch = 1;
  for (;;) {  // enough calls per clock read that reading the clock does not count
    const double t0 = cpu_now();
    for (size_t i = 0; i < batch; ++i) f();
    if (cpu_now() - t0 > 50e-6 || batch >= (size_t(1) << 24)) break;
    batch *= 2;
  }
  double b = 1e30;
  for (int t = 0; t < trials; ++t) {
    size_t iters = 0;
    const double t0 = cpu_now();
    double el = 0;
    do {
      for (size_t i = 0; i < batch; ++i) f();
      iters += batch;
      el = cpu_now() - t0;
    } while (el < secs / trials);
    b = std::min(b, el / double(iters));
  }
  return b;
}

// Deterministic random input ids in [6, vocab): past pad/eos/bos/unk and the two tool symbols.
std::vector<int32_t> random_ids(size_t n, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  const uint32_t span = vocab > 6 ? uint32_t(vocab - 6) : 1u;
  std::vector<int32_t> ids(n);
  for (auto& id : ids) id = vocab > 6 ? int32_t(6 + rng() % span) : int32_t(vocab - 1);
  return ids;
}

int32_t argmax(std::span<const float> v) {
  size_t b = 0;
  for (size_t i = 1; i < v.size(); ++i)
    if (v[i] > v[b]) b = i;
  return int32_t(b);
}

std::vector<float> randn(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

// JSON numbers: finite, compact.
std::string num(double v) {
  if (!std::isfinite(v)) return "null";
  return fmt::format("{:.6g}", v);
}

std::string json_str(const std::string& s) {
  std::string o = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\', o += c;
    else if ((unsigned char)c < 0x20) o += fmt::format("\\u{:04x}", (unsigned)(unsigned char)c);
    else o += c;
  }
  return o + "\"";
}

// ---------------------------------------------------------------------------------------------
// End-to-end model benchmark

struct Options {
  std::string model;
  int enc_len = 256, gen_len = 64, runs = 5;
  bool json = false, breakdown = false;
  double secs = 0.3;  // --peak: seconds per kernel case
};

struct RunConfig {
  const nk::Kernels* k;
  unsigned threads;
};

// One fresh run: everything from mmap to the last decoded token.
struct RunTimes {
  double load_ms, engine_ms, encode_ms, start_ms, first_step_ms, first_token_ms, decode_ms;
  double prefill_cpu_ms, decode_cpu_ms;  // the calling thread's CPU time over the same phases
};

Result<RunTimes> run_once(const std::string& path, const RunConfig& cfg, std::span<const int32_t> ids, int gen_len) {
  RunTimes r{};
  const double t0 = wall_now();
  NEEDLE_ASSIGN(Model model, load_model(path));
  NEEDLE_ASSIGN(auto weights, prepare_weights(model));
  const double t1 = wall_now();
  Engine eng(weights, cfg.threads, cfg.k);
  const double t2 = wall_now();
  std::vector<float> enc;
  Engine::DecodeState st;
  const double c2 = cpu_now();
  eng.encode(ids, enc);
  const double t3 = wall_now();
  eng.start(enc, (int)ids.size(), gen_len, st);
  const double t4 = wall_now(), c4 = cpu_now();
  // Decoding is forced: gen_len steps feeding each argmax back, EOS or not.
  int32_t tok = text::kEosId;
  tok = argmax(eng.step(st, tok));
  const double t5 = wall_now();
  for (int s = 1; s < gen_len; ++s) tok = argmax(eng.step(st, tok));
  const double t6 = wall_now(), c6 = cpu_now();
  r.load_ms = (t1 - t0) * 1e3;
  r.engine_ms = (t2 - t1) * 1e3;
  r.encode_ms = (t3 - t2) * 1e3;
  r.start_ms = (t4 - t3) * 1e3;
  r.first_step_ms = (t5 - t4) * 1e3;
  r.first_token_ms = (t5 - t0) * 1e3;
  r.decode_ms = (t6 - t4) * 1e3;
  r.prefill_cpu_ms = (c4 - c2) * 1e3;
  r.decode_cpu_ms = (c6 - c4) * 1e3;
  return r;
}

struct Summary {
  RunConfig cfg;
  std::vector<RunTimes> runs;
  double get(double RunTimes::*f) const {
    std::vector<double> v;
    for (auto& r : runs) v.push_back(r.*f);
    return median(v);
  }
  double get_best(double RunTimes::*f) const {
    std::vector<double> v;
    for (auto& r : runs) v.push_back(r.*f);
    return best(v);
  }
};

// Per-run rates (tokens per second), wall clock and the calling thread's CPU time.
struct Rates {
  std::vector<double> prefill, prefill_cpu, decode, decode_cpu;
};
Rates rates(const Summary& s, const Options& o) {
  Rates r;
  for (auto& t : s.runs) {
    r.prefill.push_back(o.enc_len / ((t.encode_ms + t.start_ms) * 1e-3));
    r.prefill_cpu.push_back(o.enc_len / (t.prefill_cpu_ms * 1e-3));
    r.decode.push_back(o.gen_len / (t.decode_ms * 1e-3));
    r.decode_cpu.push_back(o.gen_len / (t.decode_cpu_ms * 1e-3));
  }
  return r;
}

// ---------------------------------------------------------------------------------------------
// Where a decode step's time goes: an instrumented single-thread copy of Engine::step (same
// kernel calls in the same order on the same weights and caches), checked against the engine's
// own logits so a change to the engine cannot silently make it describe something else.

enum Part {
  kEmbed, kNorm, kQuant, kSelfQkv, kSelfO, kCrossQ, kCrossO, kQkNormRope, kAttnSelf, kAttnCross, kResidual, kHead,
  kParts
};
const char* const kPartNames[kParts] = {
    "embed (dequantize row)",  "rmsnorm (layer + final)", "quantize_q8 (activations)",
    "GEMV self q,k,v",         "GEMV self o",             "GEMV cross q",
    "GEMV cross o",            "q/k norm + rope",         "attention self (KV cache)",
    "attention cross (enc)",   "gated residual",          "GEMV head (tied embedding)"};

class StepProfile {
 public:
  StepProfile(const EngineWeights& w, const nk::Kernels& k) : w_(w), k_(k) {}

  // Runs one decode step at st.pos (the caches must hold pos rows), adding each part's wall
  // time to t[]. Returns the logits.
  const std::vector<float>& step(const Engine::DecodeState& st, Engine::DecodeState& scratch, int32_t token,
                                 double* t) {
    const auto& c = w_.config;
    const size_t d = (size_t)c.d_model, kvd = (size_t)c.kv_dim(), hd = (size_t)c.head_dim();
    const size_t nb = nk::blocks_per_row(d);
    x_.resize(d);
    h_.resize(d);
    q_.resize(d);
    ctx_.resize(d);
    y_.resize(d);
    logits_.resize((size_t)c.vocab_size);
    xq_.resize(nb);
    double clk = wall_now();
    auto lap = [&](Part p) {
      const double n = wall_now();
      t[p] += n - clk;
      clk = n;
    };
    {
      const Linear& E = w_.embedding;
      const int id = std::clamp<int>(token, 0, c.vocab_size - 1);
      if (E.dtype == DType::Q8) nk::dequantize_row_q8(E.q8 + (size_t)id * nb, x_.data(), d);
      else if (E.dtype == DType::Q4) nk::dequantize_row_q4(E.q4 + (size_t)id * nb, x_.data(), d);
      else std::memcpy(x_.data(), E.f32 + (size_t)id * d, d * sizeof(float));
      const float s = std::sqrt((float)c.d_model);
      for (auto& v : x_) v *= s;
      lap(kEmbed);
    }
    const int pos = st.pos;
    auto gemv = [&](const Linear& W, const float* in, float* out, Part p) {
      k_.quantize_q8(in, (size_t)W.in, xq_.data(), 1, (size_t)W.in);
      lap(kQuant);
      if (W.dtype == DType::Q4) k_.gemv_q4(W.q4, xq_.data(), out, (size_t)W.in, 0, (size_t)W.out);
      else k_.gemv_q8(W.q8, xq_.data(), out, (size_t)W.in, 0, (size_t)W.out);
      lap(p);
    };
    auto attend = [&](const float* kc, const float* vc, int lk, Part p) {
      nk::AttnArgs a;
      a.q = q_.data();
      a.k = kc;
      a.v = vc;
      a.out = ctx_.data();
      a.lq = 1;
      a.lk = (size_t)lk;
      a.hq = (size_t)c.num_heads;
      a.hkv = (size_t)c.num_kv_heads;
      a.hd = hd;
      k_.attention(a, 0, a.hq, 0, 1);
      lap(p);
    };
    const float theta = (float)c.rope_theta;
    for (size_t l = 0; l < w_.decoder.size(); ++l) {
      const auto& L = w_.decoder[l];
      float* kc = scratch.self_k[l].data();
      float* vc = scratch.self_v[l].data();
      std::memcpy(kc, st.self_k[l].data(), (size_t)pos * kvd * sizeof(float));  // not timed: setup
      std::memcpy(vc, st.self_v[l].data(), (size_t)pos * kvd * sizeof(float));
      clk = wall_now();
      k_.rmsnorm(x_.data(), L.norm_self, h_.data(), 1, d, 1e-6f);
      lap(kNorm);
      gemv(L.self_attn.k, h_.data(), kc + (size_t)pos * kvd, kSelfQkv);
      gemv(L.self_attn.v, h_.data(), vc + (size_t)pos * kvd, kSelfQkv);
      k_.rmsnorm(kc + (size_t)pos * kvd, L.self_attn.k_norm, kc + (size_t)pos * kvd, (size_t)c.num_kv_heads, hd, 1e-6f);
      k_.rope(kc + (size_t)pos * kvd, 1, kvd, (size_t)c.num_kv_heads, hd, (size_t)pos, theta);
      lap(kQkNormRope);
      gemv(L.self_attn.q, h_.data(), q_.data(), kSelfQkv);
      k_.rmsnorm(q_.data(), L.self_attn.q_norm, q_.data(), (size_t)c.num_heads, hd, 1e-6f);
      k_.rope(q_.data(), 1, d, (size_t)c.num_heads, hd, (size_t)pos, theta);
      lap(kQkNormRope);
      attend(kc, vc, pos + 1, kAttnSelf);
      gemv(L.self_attn.o, ctx_.data(), y_.data(), kSelfO);
      k_.gated_residual(x_.data(), y_.data(), L.gate_self, d);
      lap(kResidual);

      k_.rmsnorm(x_.data(), L.norm_cross, h_.data(), 1, d, 1e-6f);
      lap(kNorm);
      gemv(L.cross_attn.q, h_.data(), q_.data(), kCrossQ);
      k_.rmsnorm(q_.data(), L.cross_attn.q_norm, q_.data(), (size_t)c.num_heads, hd, 1e-6f);
      lap(kQkNormRope);
      attend(st.cross_k[l].data(), st.cross_v[l].data(), st.enc_len, kAttnCross);
      gemv(L.cross_attn.o, ctx_.data(), y_.data(), kCrossO);
      k_.gated_residual(x_.data(), y_.data(), L.gate_cross, d);
      lap(kResidual);
    }
    k_.rmsnorm(x_.data(), w_.decoder_norm, x_.data(), 1, d, 1e-6f);
    lap(kNorm);
    gemv(w_.embedding, x_.data(), logits_.data(), kHead);
    return logits_;
  }

 private:
  const EngineWeights& w_;
  const nk::Kernels& k_;
  std::vector<float> x_, h_, q_, ctx_, y_, logits_;
  std::vector<nk::BlockQ8> xq_;
};

bool quantized(const Linear& l) { return l.dtype == DType::Q4 || l.dtype == DType::Q8; }

// Prints the per-part breakdown of a decode step at position gen_len (after a forced decode of
// gen_len tokens) with enc_len encoder keys, single thread, and compares its total with the
// engine's own step on one and on `threads` threads (the difference is the pool's cost).
Status breakdown(const Options& o, const nk::Kernels& k, unsigned threads, std::span<const int32_t> ids, bool json) {
  NEEDLE_ASSIGN(Model model, load_model(o.model));
  NEEDLE_ASSIGN(auto weights, prepare_weights(model));
  const EngineWeights& w = *weights;
  for (auto& L : w.decoder)
    for (auto* a : {&L.self_attn, &L.cross_attn})
      if (!quantized(a->q) || !quantized(a->k) || !quantized(a->v) || !quantized(a->o))
        return make_error("--breakdown needs a quantized (int4/int8) model");
  if (!quantized(w.embedding)) return make_error("--breakdown needs a quantized (int4/int8) model");

  Engine e1(weights, 1, &k), en(weights, threads, &k);
  std::vector<float> enc;
  Engine::DecodeState st;
  e1.encode(ids, enc);
  e1.start(enc, (int)ids.size(), o.gen_len + 1, st);
  int32_t tok = text::kEosId;
  for (int s = 0; s < o.gen_len; ++s) tok = argmax(e1.step(st, tok));
  // st now holds gen_len cached positions; every measurement below runs the step at pos gen_len.

  // Fidelity check: the profile's logits must equal the engine's (same kernels, same order).
  StepProfile prof(w, k);
  Engine::DecodeState scratch = st;
  std::vector<double> t(kParts, 0.0);
  const auto& lp = prof.step(st, scratch, tok, t.data());
  Engine::DecodeState s1 = st;
  auto le = e1.step(s1, tok);
  float maxdiff = 0;
  for (size_t i = 0; i < le.size(); ++i) maxdiff = std::max(maxdiff, std::fabs(le[i] - lp[i]));
  if (maxdiff != 0.0f)
    spdlog::warn("the profiled step differs from Engine::step (max |logit diff| {}): the engine has changed; "
                 "the breakdown may no longer describe it",
                 maxdiff);

  const int reps = 200;
  std::vector<std::vector<double>> per(kParts);
  std::vector<double> tot, eng1, engn;
  for (int r = 0; r < reps; ++r) {
    std::fill(t.begin(), t.end(), 0.0);
    prof.step(st, scratch, tok, t.data());
    double sum = 0;
    for (int p = 0; p < kParts; ++p) per[p].push_back(t[p]), sum += t[p];
    tot.push_back(sum);
    // The engine's own step at the same position (copying the state is outside the timing).
    Engine::DecodeState a = st, b = st;
    double c0 = wall_now();
    e1.step(a, tok);
    double c1 = wall_now();
    en.step(b, tok);
    double c2 = wall_now();
    eng1.push_back(c1 - c0);
    engn.push_back(c2 - c1);
  }
  // Minimum over the repetitions: what the step costs when nothing else wants the core (this
  // machine is shared); the medians show what it cost under the load of the moment.
  const double total = best(tot);
  const auto& c = w.config;
  if (json) {
    std::string s = fmt::format(
        "{{\"breakdown\":{{\"isa\":{},\"pos\":{},\"enc_len\":{},\"profiled_step_us_min\":{},"
        "\"profiled_step_us_median\":{},\"engine_step_us_1t_min\":{},\"engine_step_us_1t_median\":{},"
        "\"engine_step_threads\":{},\"engine_step_us_nt_min\":{},\"engine_step_us_nt_median\":{},\"parts_us_min\":{{",
        json_str(k.name), o.gen_len, ids.size(), num(total * 1e6), num(median(tot) * 1e6), num(best(eng1) * 1e6),
        num(median(eng1) * 1e6), threads, num(best(engn) * 1e6), num(median(engn) * 1e6));
    for (int p = 0; p < kParts; ++p)
      s += fmt::format("{}{}:{}", p ? "," : "", json_str(kPartNames[p]), num(best(per[p]) * 1e6));
    fmt::print("{}}}}}}}\n", s);
    return Status::ok();
  }
  fmt::print("\nDecode step breakdown ({}, 1 thread, position {}, {} encoder keys, {} decoder layers, {} repetitions):\n",
             k.name, o.gen_len, ids.size(), c.num_decoder_layers, reps);
  fmt::print("  {:<30} {:>9} {:>7} {:>11}\n", "part", "min us", "share", "median us");
  for (int p = 0; p < kParts; ++p) {
    const double m = best(per[p]);
    fmt::print("  {:<30} {:>9.2f} {:>6.1f}% {:>11.2f}\n", kPartNames[p], m * 1e6, 100.0 * m / total,
               median(per[p]) * 1e6);
  }
  fmt::print("  {:<30} {:>9.2f} {:>7} {:>11.2f}\n", "profiled step (sum of parts)", total * 1e6, "", median(tot) * 1e6);
  fmt::print("  {:<30} {:>9.2f} {:>7} {:>11.2f}   ({:.0f} tok/s at the min)\n", "Engine::step, 1 thread",
             best(eng1) * 1e6, "", median(eng1) * 1e6, 1.0 / best(eng1));
  fmt::print("  {:<30} {:>9.2f} {:>7} {:>11.2f}   ({:.0f} tok/s at the min)\n",
             fmt::format("Engine::step, {} threads", threads), best(engn) * 1e6, "", median(engn) * 1e6,
             1.0 / best(engn));
  return Status::ok();
}

int64_t model_params(const needle::Config& c) { return param_count(c); }

std::string dtype_summary(const EngineWeights& w) {
  if (w.decoder.empty()) return "?";
  return fmt::format("{} layers, {} head", dtype_name(w.decoder[0].self_attn.q.dtype), dtype_name(w.embedding.dtype));
}

int run_model(const Options& o, const std::vector<RunConfig>& cfgs) {
  // Shape and validity first, from a throw-away load (also warms the page cache).
  needle::Config c;
  std::string wtypes, quant;
  {
    auto probe = load_model(o.model);
    if (!probe) return app::fail(kTool, probe.message());
    auto pw = prepare_weights(*probe);
    if (!pw) return app::fail(kTool, pw.message());
    c = probe->config;
    wtypes = dtype_summary(**pw);
    quant = probe->quantization;
  }

  const auto ids = random_ids((size_t)o.enc_len, c.vocab_size, kSeed);
  const std::string la0 = load_average();
  std::vector<Summary> sums(cfgs.size());
  for (size_t i = 0; i < cfgs.size(); ++i) sums[i].cfg = cfgs[i];
  // Run r of every configuration back to back (run 0 is the warm-up), so that load on the
  // machine hits every configuration alike and their ratios stay meaningful.
  for (int r = 0; r <= o.runs; ++r) {
    for (size_t i = 0; i < cfgs.size(); ++i) {
      auto t = run_once(o.model, cfgs[i], ids, o.gen_len);
      if (!t) return app::fail(kTool, t.message(), app::kRuntimeError);
      if (r > 0) sums[i].runs.push_back(*t);
      spdlog::debug("run {} {} x{}: encode {:.2f} ms, decode {:.2f} ms", r, cfgs[i].k->name, cfgs[i].threads,
                    t->encode_ms, t->decode_ms);
    }
  }
  const double rss = peak_rss_mb();
  const std::string la1 = load_average();

  auto result_json = [&](const Summary& s) {
    const double prefill_ms = s.get(&RunTimes::encode_ms) + s.get(&RunTimes::start_ms);
    const Rates rt = rates(s, o);
    const auto& pf = rt.prefill;
    const auto& dc = rt.decode;
    return fmt::format(
        "{{\"isa\":{},\"threads\":{},\"enc_len\":{},\"gen_len\":{},\"runs\":{},"
        "\"prefill_tok_s\":{},\"prefill_tok_s_best\":{},\"prefill_tok_s_cpu\":{},"
        "\"decode_tok_s\":{},\"decode_tok_s_best\":{},\"decode_tok_s_cpu\":{},"
        "\"load_ms\":{},\"engine_ms\":{},\"encode_ms\":{},\"start_ms\":{},\"prefill_ms\":{},\"first_step_ms\":{},"
        "\"first_token_ms\":{},\"first_token_ms_best\":{},\"decode_ms\":{}",
        json_str(s.cfg.k->name), s.cfg.threads, o.enc_len, o.gen_len, s.runs.size(), num(median(pf)), num(*std::max_element(pf.begin(), pf.end())),
        num(median(rt.prefill_cpu)), num(median(dc)), num(*std::max_element(dc.begin(), dc.end())),
        num(median(rt.decode_cpu)),
        num(s.get(&RunTimes::load_ms)), num(s.get(&RunTimes::engine_ms)), num(s.get(&RunTimes::encode_ms)),
        num(s.get(&RunTimes::start_ms)), num(prefill_ms), num(s.get(&RunTimes::first_step_ms)),
        num(s.get(&RunTimes::first_token_ms)), num(s.get_best(&RunTimes::first_token_ms)),
        num(s.get(&RunTimes::decode_ms)));
  };
  auto model_json = [&] {
    return fmt::format(
        "\"model\":{},\"params\":{},\"weights\":{},\"quantization\":{},\"d_model\":{},\"encoder_layers\":{},"
        "\"decoder_layers\":{},\"vocab\":{},\"peak_rss_mb\":{},\"loadavg_before\":{},\"loadavg_after\":{}",
        json_str(o.model), model_params(c), json_str(wtypes), json_str(quant), c.d_model, c.num_encoder_layers,
        c.num_decoder_layers, c.vocab_size, num(rss), json_str(la0), json_str(la1));
  };

  if (o.json) {
    if (sums.size() == 1) {
      fmt::print("{},{}}}\n", result_json(sums[0]), model_json());
    } else {
      std::string s = "{" + model_json() + ",\"results\":[";
      for (size_t i = 0; i < sums.size(); ++i) s += (i ? "," : "") + result_json(sums[i]) + "}";
      fmt::print("{}]}}\n", s);
    }
  } else {
    fmt::print("model      {} ({:.1f}M params: d {}, {} heads / {} kv, {} encoder + {} decoder layers, vocab {}; {})\n",
               o.model, model_params(c) / 1e6, c.d_model, c.num_heads, c.num_kv_heads, c.num_encoder_layers,
               c.num_decoder_layers, c.vocab_size, wtypes);
    fmt::print("input      {} encoder tokens, {} forced decode steps; warm-up + median of {} runs (fresh load each)\n",
               o.enc_len, o.gen_len, o.runs);
    fmt::print("load avg   {} before, {} after\n\n", la0, la1);
    fmt::print("{:<8} {:>3} {:>8} {:>9} {:>8} {:>9} {:>11} {:>11} {:>10} {:>10} {:>9}\n", "isa", "thr", "load ms",
               "encode ms", "start ms", "1st tok ms", "prefill t/s", "(cpu) t/s", "decode t/s", "(cpu) t/s",
               "step us");
    for (auto& s : sums) {
      const Rates rt = rates(s, o);
      fmt::print("{:<8} {:>3} {:>8.2f} {:>9.2f} {:>8.2f} {:>10.2f} {:>11.0f} {:>11.0f} {:>10.0f} {:>10.0f} {:>9.1f}\n",
                 s.cfg.k->name, s.cfg.threads, s.get(&RunTimes::load_ms), s.get(&RunTimes::encode_ms),
                 s.get(&RunTimes::start_ms), s.get(&RunTimes::first_token_ms), median(rt.prefill),
                 median(rt.prefill_cpu), median(rt.decode), median(rt.decode_cpu), s.get(&RunTimes::decode_ms) * 1e3 / o.gen_len);
    }
    fmt::print("\npeak RSS   {:.1f} MB (whole process)\n", rss);
    fmt::print("(cpu) = the same count over the calling thread's CPU time: what an unloaded core would give.\n");
  }
  if (o.breakdown) {
    auto st = breakdown(o, *cfgs.back().k, cfgs.back().threads, ids, o.json);
    if (!st) return app::fail(kTool, st.message(), app::kRuntimeError);
  }
  return app::kOk;
}

// ---------------------------------------------------------------------------------------------
// Machine peaks (--peak): int8 multiply-accumulate throughput per instruction set and memory
// bandwidth, then the dispatched kernels as a percentage of them. One thread, CPU time.

#if defined(__x86_64__)
// Each loop runs `n` iterations of kChains independent accumulator chains (enough to cover
// latency x throughput on current cores). Written in assembly: compilers spill arrays of vector
// accumulators to the stack, which would measure stores instead of multiply-adds. The operand
// values are irrelevant (integer instructions have no slow paths). MACs per instruction: 32 for
// 256-bit, 64 for 512-bit. The caller checks the CPU supports the instructions.
constexpr int kChains = 12;
#define NB_X12(M) M(2) M(3) M(4) M(5) M(6) M(7) M(8) M(9) M(10) M(11) M(12) M(13)
#define NB_CLOBBER12 "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13"

// The AVX2 kernels' inner step: vpmaddubsw (u8 x s8 -> s16 pairs), vpmaddwd by ones (-> s32),
// vpaddd into the accumulator: three instructions per 32 MACs. Accumulators ymm2..7, temporaries
// ymm8..13 (renamed), twice per iteration = 12 groups.
#define NB_AVX2(a, t)                                \
  "vpmaddubsw %%ymm1, %%ymm0, %%ymm" #t "\n\t"      \
  "vpmaddwd %%ymm15, %%ymm" #t ", %%ymm" #t "\n\t"   \
  "vpaddd %%ymm" #t ", %%ymm" #a ", %%ymm" #a "\n\t"
__attribute__((noinline)) int64_t peak_loop_avx2(size_t n) {
  if (n == 0) return 0;
  asm volatile(
      "vpcmpeqb %%ymm0, %%ymm0, %%ymm0\n\t"
      "vpabsb %%ymm0, %%ymm1\n\t"
      "vpabsw %%ymm0, %%ymm15\n\t"
      "1:\n\t" NB_AVX2(2, 8) NB_AVX2(3, 9) NB_AVX2(4, 10) NB_AVX2(5, 11) NB_AVX2(6, 12) NB_AVX2(7, 13)
          NB_AVX2(2, 8) NB_AVX2(3, 9) NB_AVX2(4, 10) NB_AVX2(5, 11) NB_AVX2(6, 12) NB_AVX2(7, 13)
      "dec %0\n\t"
      "jnz 1b\n\t"
      "vzeroupper\n\t"
      : "+r"(n)
      :
      : "xmm0", "xmm1", "xmm15", NB_CLOBBER12, "cc");
  return (int64_t)n;
}

#define NB_VNNI_VEX(r) "%{vex%} vpdpbusd %%ymm1, %%ymm0, %%ymm" #r "\n\t"
__attribute__((noinline)) int64_t peak_loop_avxvnni(size_t n) {
  if (n == 0) return 0;
  asm volatile(
      "vpcmpeqb %%ymm0, %%ymm0, %%ymm0\n\t"
      "vpabsb %%ymm0, %%ymm1\n\t"
      "1:\n\t" NB_X12(NB_VNNI_VEX)
      "dec %0\n\t"
      "jnz 1b\n\t"
      "vzeroupper\n\t"
      : "+r"(n)
      :
      : "xmm0", "xmm1", NB_CLOBBER12, "cc");
  return (int64_t)n;
}

// EVEX vpdpbusd on 256-bit registers: what the avx512 kernels use.
#define NB_VNNI_EVEX(r) "%{evex%} vpdpbusd %%ymm1, %%ymm0, %%ymm" #r "\n\t"
__attribute__((noinline)) int64_t peak_loop_avx512_ymm(size_t n) {
  if (n == 0) return 0;
  asm volatile(
      "vpcmpeqb %%ymm0, %%ymm0, %%ymm0\n\t"
      "vpabsb %%ymm0, %%ymm1\n\t"
      "1:\n\t" NB_X12(NB_VNNI_EVEX)
      "dec %0\n\t"
      "jnz 1b\n\t"
      "vzeroupper\n\t"
      : "+r"(n)
      :
      : "xmm0", "xmm1", NB_CLOBBER12, "cc");
  return (int64_t)n;
}

// 512-bit vpdpbusd: what the CPU could do with zmm registers (no kernel uses them today).
#define NB_VNNI_ZMM(r) "vpdpbusd %%zmm1, %%zmm0, %%zmm" #r "\n\t"
__attribute__((noinline)) int64_t peak_loop_avx512_zmm(size_t n) {
  if (n == 0) return 0;
  asm volatile(
      "vpternlogd $0xff, %%zmm0, %%zmm0, %%zmm0\n\t"
      "vpabsb %%zmm0, %%zmm1\n\t"
      "1:\n\t" NB_X12(NB_VNNI_ZMM)
      "dec %0\n\t"
      "jnz 1b\n\t"
      "vzeroupper\n\t"
      : "+r"(n)
      :
      : "xmm0", "xmm1", NB_CLOBBER12, "cc");
  return (int64_t)n;
}
#undef NB_X12
#undef NB_CLOBBER12
#undef NB_AVX2
#undef NB_VNNI_VEX
#undef NB_VNNI_EVEX
#undef NB_VNNI_ZMM

// Streams through `bytes` with 256-bit loads (4 independent sums).
__attribute__((target("avx2"), noinline)) int64_t read_loop_avx2(const uint8_t* p, size_t bytes) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i + 128 <= bytes; i += 128) {
    a0 = _mm256_add_epi64(a0, _mm256_load_si256((const __m256i*)(p + i)));
    a1 = _mm256_add_epi64(a1, _mm256_load_si256((const __m256i*)(p + i + 32)));
    a2 = _mm256_add_epi64(a2, _mm256_load_si256((const __m256i*)(p + i + 64)));
    a3 = _mm256_add_epi64(a3, _mm256_load_si256((const __m256i*)(p + i + 96)));
  }
  __m256i s = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
  return _mm256_extract_epi64(s, 0) + _mm256_extract_epi64(s, 3);
}
#endif

struct Peak {
  std::string name;  // e.g. "avxvnni"
  std::string what;  // instruction description
  nk::Isa isa;
  double gmacs;
};

std::vector<Peak> measure_peaks(double secs) {
  std::vector<Peak> out;
#if defined(__x86_64__)
  const size_t n = 4096;
  std::atomic<int64_t> sink{0};
  auto add = [&](const char* name, const char* what, nk::Isa isa, int64_t (*loop)(size_t), int macs_per_insn) {
    const double t = time_per_call([&] { sink += loop(n); }, secs);
    out.push_back({name, what, isa, double(n) * kChains * macs_per_insn / t * 1e-9});
  };
  for (nk::Isa isa : nk::supported_isas()) {
    if (isa == nk::Isa::avx2) add("avx2", "vpmaddubsw+vpmaddwd+vpaddd ymm", isa, peak_loop_avx2, 32);
    if (isa == nk::Isa::avxvnni) add("avxvnni", "vpdpbusd ymm (VEX)", isa, peak_loop_avxvnni, 32);
    if (isa == nk::Isa::avx512) {
      add("avx512", "vpdpbusd ymm (EVEX)", isa, peak_loop_avx512_ymm, 32);
      add("avx512-zmm", "vpdpbusd zmm (512-bit)", isa, peak_loop_avx512_zmm, 64);
    }
  }
  if (sink.load() == 42) std::fputc(' ', stderr);
#else
  (void)secs;
#endif
  return out;
}

struct Bandwidth {
  std::string what;
  size_t bytes;
  double gbs;
};

std::vector<Bandwidth> measure_bandwidth(double secs) {
  std::vector<Bandwidth> out;
#if defined(__x86_64__)
  const bool avx2 = nk::kernels_for(nk::Isa::avx2) != nullptr;
  if (!avx2) return out;
  const size_t big = size_t(256) << 20;
  std::unique_ptr<uint8_t[], void (*)(void*)> buf((uint8_t*)std::aligned_alloc(64, big), std::free);
  std::memset(buf.get(), 1, big);
  std::atomic<int64_t> sink{0};
  const std::pair<const char*, size_t> sizes[] = {{"read, 256 KiB (L2)", size_t(256) << 10},
                                                  {"read, 4 MiB (L3)", size_t(4) << 20},
                                                  {"read, 16 MiB (a decode step's data)", size_t(16) << 20},
                                                  {"read, 256 MiB (DRAM)", big}};
  for (auto& [what, bytes] : sizes) {
    const size_t b = bytes;
    const double t = time_per_call([&] { sink += read_loop_avx2(buf.get(), b); }, secs);
    out.push_back({what, b, double(b) / t * 1e-9});
  }
  {
    const size_t half = big / 2;
    const double t = time_per_call([&] { std::memcpy(buf.get() + half, buf.get(), half); }, secs);
    out.push_back({"memcpy 128 MiB (read+write)", half, 2.0 * double(half) / t * 1e-9});
  }
  if (sink.load() == 42) std::fputc(' ', stderr);
#else
  (void)secs;
#endif
  return out;
}

int run_peak(const Options& o, const std::vector<const nk::Kernels*>& isas, unsigned threads) {
  const std::string la0 = load_average();
  const auto peaks = measure_peaks(o.secs);
  const auto bw = measure_bandwidth(o.secs);
  double best_peak = 0;
  for (auto& p : peaks) best_peak = std::max(best_peak, p.gmacs);
  auto peak_of = [&](nk::Isa isa) {
    for (auto& p : peaks)
      if (p.isa == isa) return p.gmacs;  // the first one: the width the kernels use
    return 0.0;
  };
  double bw_l2 = 0, bw_l3 = 0, bw_dram = 0;
  for (auto& b : bw) {
    if (b.what.find("L2") != std::string::npos) bw_l2 = b.gbs;
    if (b.what.find("L3") != std::string::npos) bw_l3 = b.gbs;
    if (b.what.find("DRAM") != std::string::npos) bw_dram = b.gbs;
  }

  struct Shape {
    const char* what;
    size_t m, n, k;
    bool q8w;
  };
  const Shape shapes[] = {
      {"gemv q4 512x512 (q, o)", 1, 512, 512, false},
      {"gemv q4 256x512 (k, v)", 1, 256, 512, false},
      {"gemv q8 8192x512 (head)", 1, 8192, 512, true},
      {"gemm q4 M=256 512x512", 256, 512, 512, false},
      {"gemm q4 M=256 256x512", 256, 256, 512, false},
      {"gemm q4 M=512 512x512", 512, 512, 512, false},
  };
  struct Row {
    std::string isa, what;
    double us, gmacs, pct_isa, pct_best, gbs, pct_l3;
    double us_pool, pct_pool;  // through the pool on `threads` threads (wall, median)
  };
  std::vector<Row> rows;
  nk::ThreadPool pool(threads);
  for (const Shape& s : shapes) {
    const size_t nb = nk::blocks_per_row(s.k);
    auto wf = randn(s.n * s.k, kSeed + 1), xf = randn(s.m * s.k, kSeed + 2);
    std::vector<nk::BlockQ4> w4(s.q8w ? 0 : s.n * nb);
    std::vector<nk::BlockQ8> w8(s.q8w ? s.n * nb : 0), xq(s.m * nb);
    for (size_t r = 0; r < s.n; ++r) {
      if (s.q8w) nk::quantize_row_q8(wf.data() + r * s.k, w8.data() + r * nb, s.k);
      else nk::quantize_row_q4(wf.data() + r * s.k, w4.data() + r * nb, s.k);
    }
    std::vector<float> y(s.m * s.n);
    for (const nk::Kernels* kp : isas) {
      const nk::Kernels& k = *kp;
      k.quantize_q8(xf.data(), s.k, xq.data(), s.m, s.k);
      auto call = [&](size_t n0, size_t n1) {
        if (s.m == 1) {
          if (s.q8w) k.gemv_q8(w8.data(), xq.data(), y.data(), s.k, n0, n1);
          else k.gemv_q4(w4.data(), xq.data(), y.data(), s.k, n0, n1);
        } else {
          if (s.q8w) k.gemm_q8(w8.data(), xq.data(), y.data(), s.n, s.m, s.k, n0, n1);
          else k.gemm_q4(w4.data(), xq.data(), y.data(), s.n, s.m, s.k, n0, n1);
        }
      };
      const double secs = k.isa == nk::Isa::scalar ? std::min(o.secs, 0.1) : o.secs;
      const double t = time_per_call([&] { call(0, s.n); }, secs);
      const double macs = double(s.m) * double(s.n) * double(s.k);
      const double wbytes = double(s.n * nb) * double(s.q8w ? sizeof(nk::BlockQ8) : sizeof(nk::BlockQ4));
      Row r;
      r.isa = k.name;
      r.what = s.what;
      r.us = t * 1e6;
      r.gmacs = macs / t * 1e-9;
      const double pi = peak_of(k.isa);
      r.pct_isa = pi > 0 ? 100.0 * r.gmacs / pi : NAN;
      r.pct_best = best_peak > 0 ? 100.0 * r.gmacs / best_peak : NAN;
      r.gbs = wbytes / t * 1e-9;
      r.pct_l3 = s.m == 1 && bw_l3 > 0 ? 100.0 * r.gbs / bw_l3 : NAN;
      // Through the pool, as the engine splits it (16-row aligned chunks), wall clock.
      r.us_pool = NAN;
      r.pct_pool = NAN;
      if (threads > 1 && k.isa != nk::Isa::scalar) {
        const size_t min_rows = std::max<size_t>(16, 65536 / std::max<size_t>(1, s.k * s.m));
        std::vector<double> ts;
        const double until = wall_now() + o.secs;
        while (wall_now() < until || ts.size() < 20) {
          const double a = wall_now();
          pool.parallel_range(s.n, min_rows, [&](size_t n0, size_t n1, unsigned) { call(n0, n1); }, 16);
          ts.push_back(wall_now() - a);
          if (ts.size() >= 100000) break;
        }
        r.us_pool = median(ts) * 1e6;
        r.pct_pool = pi > 0 ? 100.0 * macs / (median(ts) * 1e9) / (pi * threads) : NAN;
      }
      rows.push_back(r);
    }
  }
  const std::string la1 = load_average();

  if (o.json) {
    std::string s = "{\"peaks_gmac_s\":{";
    for (size_t i = 0; i < peaks.size(); ++i) s += fmt::format("{}{}:{}", i ? "," : "", json_str(peaks[i].name), num(peaks[i].gmacs));
    s += "},\"bandwidth_gb_s\":{";
    for (size_t i = 0; i < bw.size(); ++i) s += fmt::format("{}{}:{}", i ? "," : "", json_str(bw[i].what), num(bw[i].gbs));
    s += fmt::format("}},\"threads\":{},\"loadavg_before\":{},\"loadavg_after\":{},\"kernels\":[", threads, json_str(la0),
                     json_str(la1));
    for (size_t i = 0; i < rows.size(); ++i) {
      auto& r = rows[i];
      s += fmt::format(
          "{}{{\"isa\":{},\"case\":{},\"us\":{},\"gmac_s\":{},\"pct_isa_peak\":{},\"pct_best_peak\":{},\"weight_gb_s\":{},"
          "\"pct_l3_bw\":{},\"pool_us\":{},\"pool_pct_peak\":{}}}",
          i ? "," : "", json_str(r.isa), json_str(r.what), num(r.us), num(r.gmacs), num(r.pct_isa), num(r.pct_best),
          num(r.gbs), num(r.pct_l3), num(r.us_pool), num(r.pct_pool));
    }
    fmt::print("{}]}}\n", s);
    return app::kOk;
  }
  fmt::print("load avg {} before, {} after; one thread, CPU time, best of 7 trials\n\n", la0, la1);
  fmt::print("int8 multiply-accumulate peak (int8 MACs per second, one core):\n");
  for (auto& p : peaks) fmt::print("  {:<11} {:<32} {:8.1f} GMAC/s\n", p.name, p.what, p.gmacs);
  fmt::print("memory bandwidth (one core):\n");
  for (auto& b : bw) fmt::print("  {:<36} {:8.1f} GB/s\n", b.what, b.gbs);
  (void)bw_l2;
  (void)bw_dram;
  fmt::print("\n{:<8} {:<25} {:>10} {:>8} {:>7} {:>7} {:>8} {:>7}", "isa", "kernel (1 thread)", "us", "GMAC/s",
             "%isa pk", "%best", "GB/s wt", "%L3 bw");
  if (threads > 1) fmt::print(" {:>10} {:>8}", fmt::format("us {}thr", threads), "%pk x" + std::to_string(threads));
  fmt::print("\n");
  for (auto& r : rows) {
    auto pct = [](double v) { return std::isfinite(v) ? fmt::format("{:.0f}%", v) : std::string("-"); };
    fmt::print("{:<8} {:<25} {:>10.2f} {:>8.1f} {:>7} {:>7} {:>8.1f} {:>7}", r.isa, r.what, r.us, r.gmacs,
               pct(r.pct_isa), pct(r.pct_best), r.gbs, pct(r.pct_l3));
    if (threads > 1)
      fmt::print(" {:>10} {:>8}", std::isfinite(r.us_pool) ? fmt::format("{:.2f}", r.us_pool) : std::string("-"),
                 pct(r.pct_pool));
    fmt::print("\n");
  }
  fmt::print("\n%isa pk: of the peak of the instruction the ISA's kernels use; %best: of the best measured peak;\n"
             "GB/s wt: weight bytes streamed per second (GEMV: compare with the read bandwidth above).\n");
  return app::kOk;
}

// ---------------------------------------------------------------------------------------------
// Training (--train): full fine-tuning steps (Trainer::train_step: forward, backward, clipping,
// Muon/AdamW) of a model shape on random tokens, as tokens/s and GFLOP/s against this machine's
// measured f32 FMA peak; with --breakdown also the phases of a step and the main GEMM shapes.

#if defined(__x86_64__)
// f32 FMA throughput: 12 independent vfmadd231ps chains on zeros (values do not matter; zeros
// avoid denormals). 16 FLOP per ymm instruction, 32 per zmm.
#define NB_X12(M) M(2) M(3) M(4) M(5) M(6) M(7) M(8) M(9) M(10) M(11) M(12) M(13)
#define NB_CLOBBER12 "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13"
#define NB_FMA_YMM(r) "vfmadd231ps %%ymm1, %%ymm0, %%ymm" #r "\n\t"
#define NB_ZERO_YMM(r) "vxorps %%ymm" #r ", %%ymm" #r ", %%ymm" #r "\n\t"
__attribute__((noinline)) int64_t fma_loop_ymm(size_t n) {
  if (n == 0) return 0;
  asm volatile(NB_ZERO_YMM(0) NB_ZERO_YMM(1) NB_X12(NB_ZERO_YMM)
               "1:\n\t" NB_X12(NB_FMA_YMM)
               "dec %0\n\t"
               "jnz 1b\n\t"
               "vzeroupper\n\t"
               : "+r"(n)
               :
               : "xmm0", "xmm1", NB_CLOBBER12, "cc");
  return (int64_t)n;
}
#define NB_FMA_ZMM(r) "vfmadd231ps %%zmm1, %%zmm0, %%zmm" #r "\n\t"
#define NB_ZERO_ZMM(r) "vpxord %%zmm" #r ", %%zmm" #r ", %%zmm" #r "\n\t"
__attribute__((noinline)) int64_t fma_loop_zmm(size_t n) {
  if (n == 0) return 0;
  asm volatile(NB_ZERO_ZMM(0) NB_ZERO_ZMM(1) NB_X12(NB_ZERO_ZMM)
               "1:\n\t" NB_X12(NB_FMA_ZMM)
               "dec %0\n\t"
               "jnz 1b\n\t"
               "vzeroupper\n\t"
               : "+r"(n)
               :
               : "xmm0", "xmm1", NB_CLOBBER12, "cc");
  return (int64_t)n;
}
#undef NB_X12
#undef NB_CLOBBER12
#undef NB_FMA_YMM
#undef NB_ZERO_YMM
#undef NB_FMA_ZMM
#undef NB_ZERO_ZMM
#endif

struct FmaPeak {
  std::string what;
  double gflops;  // one core
};

// f32 FMA peaks of one core (CPU time), widest last.
std::vector<FmaPeak> measure_fma_peaks(double secs) {
  std::vector<FmaPeak> out;
#if defined(__x86_64__)
  const size_t n = 4096;
  std::atomic<int64_t> sink{0};
  auto add = [&](const char* what, int64_t (*loop)(size_t), int flop_per_insn) {
    const double t = time_per_call([&] { sink += loop(n); }, secs);
    out.push_back({what, double(n) * 12 * flop_per_insn / t * 1e-9});
  };
  if (nk::kernels_for(nk::Isa::avx2)) add("vfmadd231ps ymm (256-bit)", fma_loop_ymm, 16);
  if (nk::kernels_for(nk::Isa::avx512)) add("vfmadd231ps zmm (512-bit)", fma_loop_zmm, 32);
  if (sink.load() == 42) std::fputc(' ', stderr);
#else
  (void)secs;
#endif
  return out;
}

struct TrainBench {
  int batch = 16, enc_len = 256, dec_len = 64;
  std::string shape = "26m";      // 26m | e2e | tiny
  std::string optimizer = "muon"; // muon | adamw
};

Result<needle::Config> train_shape(const std::string& name) {
  needle::Config c;
  c.vocab_size = 8192;
  c.contrastive_dim = 128;
  if (name == "26m") {
    c.d_model = 512, c.num_heads = 8, c.num_kv_heads = 4, c.num_encoder_layers = 12, c.num_decoder_layers = 8;
  } else if (name == "e2e") {
    c.vocab_size = 2000, c.d_model = 192, c.num_heads = 6, c.num_kv_heads = 2, c.num_encoder_layers = 3,
    c.num_decoder_layers = 3, c.contrastive_dim = 64;
  } else if (name == "tiny") {
    c.vocab_size = 1000, c.d_model = 64, c.num_heads = 4, c.num_kv_heads = 2, c.num_encoder_layers = 2,
    c.num_decoder_layers = 3, c.contrastive_dim = 32;
  } else {
    return make_error("--shape: expected 26m, e2e or tiny, got '{}'", name);
  }
  NEEDLE_TRY(c.validate());
  return c;
}

// Model FLOPs of one step, the usual convention: the forward's products (dense layers, attention
// scores and weighted sums over all Lq x Lk pairs, the tied head over every decoder row) once,
// the backward as twice the forward, plus Newton-Schulz as the reference formulates it (three
// full products per iteration on the wide orientation) for every Muon tensor. Recomputation
// and the symmetric half-products are not counted either way.
struct StepFlops {
  double forward = 0, newton_schulz = 0;
  double fwd_bwd() const { return 3 * forward; }
  double total() const { return fwd_bwd() + newton_schulz; }
};

StepFlops step_flops(const needle::Config& c, const TrainBench& tb, const train::OptimOptions& oo) {
  const double d = c.d_model, kv = c.kv_dim(), hd = c.head_dim(), H = c.num_heads, V = c.vocab_size;
  const double B = tb.batch, Le = tb.enc_len, Ld = tb.dec_len, Te = B * Le, Td = B * Ld;
  const double Lenc = c.num_encoder_layers, Ldec = c.num_decoder_layers;
  StepFlops f;
  f.forward += Lenc * (4 * Te * d * d + 4 * Te * d * kv + 4 * B * H * Le * Le * hd);             // encoder
  f.forward += Ldec * (4 * Td * d * d + 4 * Td * d * kv + 4 * B * H * Ld * Ld * hd);             // self
  f.forward += Ldec * (4 * Td * d * d + 4 * Te * d * kv + 4 * B * H * Ld * Le * hd);             // cross
  f.forward += 2 * Td * d * V;                                                                   // head
  needle::Params shapes = needle::zero_params(c);
  for_each_tensor(shapes, c, [&](const needle::TensorSpec& s, std::vector<float>&) {
    if (!train::uses_muon(s, oo) || s.shape.size() != 2) return;
    const double r = (double)std::min(s.shape[0], s.shape[1]), n = (double)std::max(s.shape[0], s.shape[1]);
    f.newton_schulz += oo.muon_ns_steps * (4 * r * r * n + 2 * r * r * r);
  });
  return f;
}

train::TextBatch random_text_batch(const needle::Config& c, const TrainBench& tb) {
  std::mt19937 rng(kSeed);
  std::uniform_int_distribution<int> tok(6, c.vocab_size - 1);
  train::TextBatch b;
  b.batch = tb.batch;
  b.enc_len = tb.enc_len;
  b.dec_len = tb.dec_len;
  for (int i = 0; i < tb.batch * tb.enc_len; ++i) b.src.push_back(tok(rng)), b.enc_seg.push_back(1);
  for (int i = 0; i < tb.batch * tb.dec_len; ++i) {
    b.tgt_in.push_back(tok(rng));
    b.tgt_out.push_back(tok(rng));
    b.dec_seg.push_back(1);
    b.loss_class.push_back(i % 4);
  }
  return b;
}

// CPU time of the whole process (every thread), user + system.
double process_cpu_now() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + 1e-6 * double(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

// Wall seconds of fn, median and best of `runs` calls after one warm-up call; *cpu (optional)
// gets the median process CPU seconds per call.
template <class F>
std::pair<double, double> wall_runs(int runs, F&& fn, double* cpu = nullptr) {
  fn();
  std::vector<double> t, c;
  for (int r = 0; r < runs; ++r) {
    const double a = wall_now(), ca = process_cpu_now();
    fn();
    t.push_back(wall_now() - a);
    c.push_back(process_cpu_now() - ca);
  }
  if (cpu) *cpu = median(c);
  return {median(t), best(t)};
}

int run_train(const Options& o, const TrainBench& tb, const std::vector<int>& thread_list) {
  auto cfg = train_shape(tb.shape);
  if (!cfg) return app::fail(kTool, cfg.message());
  const needle::Config c = *cfg;
  if (tb.optimizer != "muon" && tb.optimizer != "adamw")
    return app::fail(kTool, fmt::format("--optimizer: expected muon or adamw, got '{}'", tb.optimizer));
  train::TrainOptions to;
  to.schedule.total_steps = 1000;
  to.qat_every = 0;
  to.optim.muon = tb.optimizer == "muon";
  const train::TextBatch batch = random_text_batch(c, tb);
  const double tokens = double(tb.batch) * (tb.enc_len + tb.dec_len);
  const StepFlops fl = step_flops(c, tb, to.optim);
  const std::string la0 = load_average();
  const auto peaks = measure_fma_peaks(std::min(o.secs, 0.3));
  const double core_peak = peaks.empty() ? 0.0 : peaks.back().gflops;

  struct Row {
    int threads;
    double med, best, cpu;
  };
  std::vector<Row> rows;
  for (int t : thread_list) {
    auto tr = train::Trainer::create(c, train::init_params(c, 1), to, (unsigned)t);
    if (!tr) return app::fail(kTool, tr.message(), app::kRuntimeError);
    Status st = Status::ok();
    double cpu = 0;
    auto [med, bst] = wall_runs(o.runs, [&] {
      auto r = tr->train_step(batch);
      if (!r && st) st = make_error("{}", r.message());
    }, &cpu);
    if (!st) return app::fail(kTool, st.message(), app::kRuntimeError);
    rows.push_back({t, med, bst, cpu});
  }
  const double rss = peak_rss_mb();
  const std::string la1 = load_average();

  auto pct = [&](double flops, double secs, int threads) {
    return core_peak > 0 ? 100.0 * flops / secs * 1e-9 / (core_peak * threads) : NAN;
  };
  if (o.json) {
    std::string s = fmt::format(
        "{{\"shape\":{},\"params\":{},\"batch\":{},\"enc_len\":{},\"dec_len\":{},\"optimizer\":{},\"isa\":{},"
        "\"step_gflop\":{},\"fwd_bwd_gflop\":{},\"newton_schulz_gflop\":{},\"core_peak_gflop_s\":{},"
        "\"peak_rss_mb\":{},\"loadavg_before\":{},\"loadavg_after\":{},\"results\":[",
        json_str(tb.shape), param_count(c), tb.batch, tb.enc_len, tb.dec_len, json_str(tb.optimizer),
        json_str(nk::kernels().name), num(fl.total() * 1e-9), num(fl.fwd_bwd() * 1e-9), num(fl.newton_schulz * 1e-9),
        num(core_peak), num(rss), json_str(la0), json_str(la1));
    for (size_t i = 0; i < rows.size(); ++i) {
      const Row& r = rows[i];
      s += fmt::format("{}{{\"threads\":{},\"step_s\":{},\"step_s_best\":{},\"tok_s\":{},\"tok_s_best\":{},"
                       "\"gflop_s\":{},\"pct_peak\":{},\"cpu_s\":{},\"tok_s_cpu\":{}}}",
                       i ? "," : "", r.threads, num(r.med), num(r.best), num(tokens / r.med), num(tokens / r.best),
                       num(fl.total() / r.med * 1e-9), num(pct(fl.total(), r.med, r.threads)), num(r.cpu),
                       num(tokens * r.threads / r.cpu));
    }
    fmt::print("{}]}}\n", s);
  } else {
    fmt::print("model      {} shape: {:.1f}M params (d {}, {} heads / {} kv, {} + {} layers, vocab {}), isa {}\n",
               tb.shape, param_count(c) / 1e6, c.d_model, c.num_heads, c.num_kv_heads, c.num_encoder_layers,
               c.num_decoder_layers, c.vocab_size, nk::kernels().name);
    fmt::print("step       full fine-tuning, {}, batch {} x ({} enc + {} dec) = {:.0f} tokens, dropout {}; "
               "warm-up + median of {} steps\n",
               tb.optimizer == "muon" ? "Muon + AdamW" : "AdamW", tb.batch, tb.enc_len, tb.dec_len, tokens, to.dropout,
               o.runs);
    fmt::print("work       {:.0f} GFLOP per step: forward+backward {:.0f} (3 x forward), Newton-Schulz {:.0f}\n",
               fl.total() * 1e-9, fl.fwd_bwd() * 1e-9, fl.newton_schulz * 1e-9);
    for (auto& p : peaks) fmt::print("f32 peak   {:<26} {:7.1f} GFLOP/s per core\n", p.what, p.gflops);
    fmt::print("load avg   {} before, {} after\n\n", la0, la1);
    fmt::print("{:>3} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9} {:>8} {:>9}\n", "thr", "step s", "best s", "tok/s", "best t/s",
               "GFLOP/s", "% peak", "cpu s", "(cpu) t/s");
    for (auto& r : rows)
      fmt::print("{:>3} {:>9.2f} {:>9.2f} {:>9.0f} {:>9.0f} {:>8.1f} {:>8.1f}% {:>8.2f} {:>9.0f}\n", r.threads, r.med,
                 r.best, tokens / r.med, tokens / r.best, fl.total() / r.med * 1e-9, pct(fl.total(), r.med, r.threads),
                 r.cpu, tokens * r.threads / r.cpu);
    fmt::print("\npeak RSS   {:.0f} MB (whole process{})\n", rss, rows.size() > 1 ? ", largest configuration" : "");
    fmt::print("% peak = GFLOP/s / (threads x the widest f32 FMA peak above). cpu s = CPU time of all threads per step;\n"
               "(cpu) t/s = tokens x threads / cpu s: the rate if every thread had its core (spinning counts as busy).\n");
  }
  if (!o.breakdown) return app::kOk;

  // Where a step goes, on the last thread count: the phases of train_step run one by one, then
  // the main GEMM shapes of the step alone (one thread: CPU time; pool: wall time).
  const int threads = thread_list.back();
  nk::ThreadPool pool((unsigned)threads);
  train::Workspace ws;
  const needle::Params p = train::init_params(c, 1);
  const train::PassOptions pass{to.dropout, 1, &pool, &ws};
  needle::Params g = needle::zero_params(c);
  auto [t_fwd, b_fwd] = wall_runs(o.runs, [&] { (void)train::text_loss(c, p, batch, to.loss, pass); });
  auto [t_fb, b_fb] = wall_runs(o.runs, [&] {
    for_each_tensor(g, c, [](const needle::TensorSpec&, std::vector<float>& v) { std::fill(v.begin(), v.end(), 0.0f); });
    (void)train::text_loss(c, p, batch, to.loss, pass, &g);
  });
  needle::Params pp = p;
  train::OptimState os = train::init_optim_state(c, to.optim);
  auto [t_clip, b_clip] = wall_runs(o.runs, [&] { (void)train::clip_by_global_norm(g, c, to.optim.clip_norm); });
  auto [t_opt, b_opt] = wall_runs(o.runs, [&] { train::optimizer_step(pp, g, os, c, to.optim, 1.0, &pool); });
  (void)b_fwd, (void)b_fb, (void)b_clip, (void)b_opt;

  struct Gemm {
    std::string what;
    double flops;
    std::function<void(nk::ThreadPool*)> run;
  };
  const int d = c.d_model, kvd = c.kv_dim(), hd = c.head_dim(), Te = tb.batch * tb.enc_len, Td = tb.batch * tb.dec_len;
  const int Le = tb.enc_len, V = c.vocab_size;
  const size_t big = (size_t)std::max(Te, Td) * std::max(d, V / 4) + (size_t)V * d;
  std::vector<float> A = randn(big, kSeed + 3), Bm = randn(big, kSeed + 4), C(big + (size_t)Td * V);
  const std::vector<Gemm> gemms = {
      {fmt::format("x W^T  {}x{} . ({}x{})^T", Te, d, d, d), 2.0 * Te * d * d,
       [&](nk::ThreadPool* pl) { train::matmul_forward(C.data(), A.data(), Bm.data(), Te, d, d, pl); }},
      {fmt::format("dout W {}x{} . {}x{}", Te, d, d, d), 2.0 * Te * d * d,
       [&](nk::ThreadPool* pl) { train::matmul_backward(C.data(), nullptr, A.data(), A.data(), Bm.data(), Te, d, d, pl); }},
      {fmt::format("dW += dout^T x {}x{} . {}x{}", d, Te, Te, d), 2.0 * Te * d * d,
       [&](nk::ThreadPool* pl) { train::matmul_backward(nullptr, C.data(), A.data(), Bm.data(), Bm.data(), Te, d, d, pl); }},
      {fmt::format("x W^T  {}x{} . ({}x{})^T (k, v)", Te, d, kvd, d), 2.0 * Te * d * kvd,
       [&](nk::ThreadPool* pl) { train::matmul_forward(C.data(), A.data(), Bm.data(), Te, d, kvd, pl); }},
      {fmt::format("head h E^T {}x{} . ({}x{})^T", Td, d, V, d), 2.0 * Td * d * V,
       [&](nk::ThreadPool* pl) { train::matmul_forward(C.data(), A.data(), Bm.data(), Td, d, V, pl); }},
      {fmt::format("head dh = dlogits E {}x{} . {}x{}", Td, V, V, d), 2.0 * Td * d * V,
       [&](nk::ThreadPool* pl) { train::matmul_backward(C.data(), nullptr, A.data(), A.data(), Bm.data(), Td, d, V, pl); }},
      {fmt::format("attn S = Q K^T {}x{} . {}x{} (one head)", Le, hd, hd, Le), 2.0 * Le * Le * hd,
       [&](nk::ThreadPool*) { train::gemm(Le, Le, hd, A.data(), (size_t)d, 1, Bm.data(), (size_t)Le, C.data(), (size_t)Le, false); }},
      {fmt::format("attn O = P V {}x{} . {}x{} (one head)", Le, Le, Le, hd), 2.0 * Le * Le * hd,
       [&](nk::ThreadPool*) { train::gemm(Le, hd, Le, A.data(), (size_t)Le, 1, Bm.data(), (size_t)kvd, C.data(), (size_t)d, false); }},
      {fmt::format("attn dV = P^T dO {}x{} . {}x{} (one head)", Le, Le, Le, hd), 2.0 * Le * Le * hd,
       [&](nk::ThreadPool*) { train::gemm(Le, hd, Le, A.data(), 1, (size_t)Le, Bm.data(), (size_t)d, C.data(), (size_t)kvd, true); }},
      {fmt::format("Newton-Schulz {}x{} (x{})", d, d, to.optim.muon_ns_steps),
       to.optim.muon_ns_steps * 6.0 * d * d * d,
       [&](nk::ThreadPool* pl) {
         std::copy_n(A.data(), (size_t)d * d, C.data());
         train::newton_schulz(C.data(), d, d, to.optim.muon_ns_steps, pl);
       }},
      {fmt::format("Newton-Schulz {}x{} (x{})", kvd, d, to.optim.muon_ns_steps),
       to.optim.muon_ns_steps * (4.0 * kvd * kvd * d + 2.0 * kvd * kvd * kvd),
       [&](nk::ThreadPool* pl) {
         std::copy_n(A.data(), (size_t)kvd * d, C.data());
         train::newton_schulz(C.data(), kvd, d, to.optim.muon_ns_steps, pl);
       }},
  };
  struct GRow {
    std::string what;
    double gflop, t1, tp;
  };
  std::vector<GRow> grows;
  for (const Gemm& gm : gemms) {
    const double t1 = time_per_call([&] { gm.run(nullptr); }, std::min(o.secs, 0.5), 3);
    double tp = NAN;
    if (threads > 1 && gm.what.find("one head") == std::string::npos) tp = wall_runs(5, [&] { gm.run(&pool); }).first;
    grows.push_back({gm.what, gm.flops * 1e-9, t1, tp});
  }
  const double t_step = rows.back().med;
  if (o.json) {
    std::string s = fmt::format("{{\"breakdown_threads\":{},\"forward_s\":{},\"forward_backward_s\":{},\"clip_s\":{},"
                                "\"optimizer_s\":{},\"gemms\":[",
                                threads, num(t_fwd), num(t_fb), num(t_clip), num(t_opt));
    for (size_t i = 0; i < grows.size(); ++i)
      s += fmt::format("{}{{\"case\":{},\"gflop\":{},\"s_1thread\":{},\"gflop_s_1thread\":{},\"s_pool\":{},\"gflop_s_pool\":{}}}",
                       i ? "," : "", json_str(grows[i].what), num(grows[i].gflop), num(grows[i].t1),
                       num(grows[i].gflop / grows[i].t1), num(grows[i].tp), num(grows[i].gflop / grows[i].tp));
    fmt::print("{}]}}\n", s);
    return app::kOk;
  }
  fmt::print("\nphases on {} thread(s), each run alone (median of {}; wall):\n", threads, o.runs);
  fmt::print("  {:<34} {:>8} {:>7} {:>9} {:>8}\n", "phase", "s", "share", "GFLOP/s", "% peak");
  auto phase = [&](const char* what, double secs, double flops) {
    fmt::print("  {:<34} {:>8.3f} {:>6.0f}% {:>9} {:>8}\n", what, secs, 100.0 * secs / t_step,
               flops > 0 ? fmt::format("{:.1f}", flops / secs * 1e-9) : std::string("-"),
               flops > 0 ? fmt::format("{:.1f}%", pct(flops, secs, threads)) : std::string("-"));
  };
  phase("forward (text loss, no grads)", t_fwd, fl.forward);
  phase("backward (fwd+bwd minus fwd)", t_fb - t_fwd, 2 * fl.forward);
  phase("global-norm clip", t_clip, 0);
  phase(to.optim.muon ? "optimizer (Muon NS + AdamW)" : "optimizer (AdamW)", t_opt, fl.newton_schulz);
  phase("sum of the phases", t_fb + t_clip + t_opt, fl.total());
  phase("train_step (measured above)", t_step, fl.total());
  fmt::print("\nGEMM shapes of a step (one thread: CPU time, best of 3; pool: wall, median of 5):\n");
  fmt::print("  {:<44} {:>7} {:>9} {:>7} {:>9} {:>7}\n", "product", "GFLOP", "1 thr GF/s", "%core", "pool GF/s",
             "%peak");
  for (auto& r : grows) {
    fmt::print("  {:<44} {:>7.3f} {:>9.1f} {:>6.0f}% {:>9} {:>7}\n", r.what, r.gflop, r.gflop / r.t1,
               core_peak > 0 ? 100.0 * r.gflop / r.t1 / core_peak : NAN,
               std::isfinite(r.tp) ? fmt::format("{:.1f}", r.gflop / r.tp) : std::string("-"),
               std::isfinite(r.tp) ? fmt::format("{:.0f}%", pct(r.gflop * 1e9, r.tp, threads)) : std::string("-"));
  }
  fmt::print("  (Newton-Schulz GFLOP as the reference formulates it, 3 full products per iteration)\n");
  return app::kOk;
}

// "all", or a comma-separated list of ISA names.
Result<std::vector<const nk::Kernels*>> parse_isas(const std::string& s) {
  std::vector<const nk::Kernels*> out;
  if (s.empty()) {
    out.push_back(&nk::kernels());
    return out;
  }
  if (s == "all") {
    for (nk::Isa isa : nk::supported_isas()) out.push_back(nk::kernels_for(isa));
    return out;
  }
  std::stringstream ss(s);
  std::string name;
  while (std::getline(ss, name, ',')) {
    nk::Isa isa;
    if (!nk::parse_isa(name, &isa)) return make_error("--isa: unknown instruction set '{}'", name);
    const nk::Kernels* k = nk::kernels_for(isa);
    if (!k) return make_error("--isa: '{}' is not supported by this CPU or build", name);
    out.push_back(k);
  }
  if (out.empty()) return make_error("--isa is empty");
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "needle-bench: measure the engine (load, prefill, decode, memory) and the kernels against this\n"
      "machine's int8 peak. Numbers only; not a test.\n\n"
      "  needle-bench -m MODEL [--enc-len 256] [--gen-len 64] [-t N] [--runs 5] [--json] [--isa NAME]\n"
      "  needle-bench -m MODEL --isa all --threads-list 1,2     (every configuration, interleaved runs)\n"
      "  needle-bench -m MODEL --breakdown                      (where a decode step's time goes)\n"
      "  needle-bench --peak [--isa all] [-t 2]                 (int8 peak, bandwidth, kernel rates)\n"
      "  needle-bench --train [-t 2] [--breakdown]              (training steps: tok/s, GFLOP/s vs f32 peak)\n\n"
      "Each run loads the model afresh (mmap + validate + prepare_weights), encodes enc-len random ids\n"
      "(fixed seed, ids in [6, vocab)), computes the cross-attention K/V (Engine::start) and decodes\n"
      "gen-len tokens, feeding back each argmax even when it is EOS. One warm-up run, then the median\n"
      "of --runs. prefill tok/s = enc-len / (encode + start); first token = from the start of loading\n"
      "to the first logits; peak RSS = getrusage ru_maxrss of the whole process.",
      kTool};
  app::CommonOptions common;
  app::add_common_options(app, common);
  Options o;
  std::string isa_arg;
  std::vector<int> thread_list;
  bool peak = false;
  app.add_option("--enc-len", o.enc_len, "Encoder input tokens (default 256)")->check(CLI::Range(1, 65536));
  app.add_option("--gen-len", o.gen_len, "Forced decode steps (default 64)")->check(CLI::Range(1, 65536));
  app.add_option("--runs", o.runs, "Measured runs after one warm-up; the median is reported (default 5)")
      ->check(CLI::Range(1, 10000));
  app.add_flag("--json", o.json, "Print one JSON object instead of a table");
  app.add_option("--isa", isa_arg,
                 "Instruction set: scalar, avx2, avxvnni, avx512, neon, neondot, a comma-separated list, or "
                 "all (default: the one chosen at start-up)");
  app.add_option("--threads-list", thread_list, "Several thread counts, e.g. 1,2 (overrides -t)")
      ->delimiter(',')
      ->check(CLI::Range(1, 1024));
  app.add_flag("--breakdown", o.breakdown, "Also time each part of one decode step (one thread)");
  app.add_flag("--peak", peak, "Measure int8 peak, memory bandwidth and kernel rates (no model needed)");
  app.add_option("--seconds", o.secs, "--peak: seconds per measured case (default 0.3)")->check(CLI::Range(0.01, 60.0));
  bool train = false;
  TrainBench tb;
  bool runs_given = false;
  app.add_flag("--train", train,
               "Time full fine-tuning steps (no model needed): tok/s and GFLOP/s against the f32 FMA peak; "
               "--runs steps after one warm-up (default 3), --breakdown adds phases and GEMM shapes");
  app.add_option("--shape", tb.shape, "--train: model shape 26m (default), e2e or tiny");
  app.add_option("--batch", tb.batch, "--train: sequences per batch (default 16)")->check(CLI::Range(1, 4096));
  app.add_option("--dec-len", tb.dec_len, "--train: decoder tokens per sequence (default 64)")
      ->check(CLI::Range(1, 65536));
  app.add_option("--optimizer", tb.optimizer, "--train: muon (default; Muon + AdamW) or adamw");
  if (int rc = app::parse(app, argc, argv); rc >= 0) return rc;
  runs_given = app.count("--runs") > 0;
  app::init_logging(common);
  if (!nk::dispatch_info().message.empty()) spdlog::warn("{}", nk::dispatch_info().message);

  auto isas = parse_isas(isa_arg);
  if (!isas) return app::fail(kTool, isas.message());
  const unsigned threads = (unsigned)app::resolved_threads(common);
  if (peak) return run_peak(o, *isas, threads);
  if (train) {
    tb.enc_len = o.enc_len;
    if (!runs_given) o.runs = 3;
    if (thread_list.empty()) thread_list.push_back((int)threads);
    return run_train(o, tb, thread_list);
  }

  auto path = app::resolve_model(common);
  if (!path) return app::fail(kTool, path.message());
  o.model = *path;
  std::vector<RunConfig> cfgs;
  if (thread_list.empty()) thread_list.push_back((int)threads);
  for (const nk::Kernels* k : *isas)
    for (int t : thread_list) cfgs.push_back({k, (unsigned)t});
  return run_model(o, cfgs);
}
