// The training loop's state and one step of it, for the app (needle finetune / train):
//
//   auto t = Trainer::create(config, params, options, threads);
//   for (...) { auto st = t->train_step(batch); ... }     // loss, grad norm, lr, ...
//   auto v = t->eval_loss(val_batch);                      // no dropout, no update
//   auto bytes = t->to_bytes();   ...   Trainer::from_bytes(bytes)   // bit-identical resume
//
// A step: [fake-quantize kernels on QAT steps] -> text loss (+ clip_weight * CLIP loss when a
// ClipBatch is given) forward + backward with dropout -> global-norm clip -> Muon / AdamW with
// the schedule's multiplier -> step += 1.
//
// LoRA (TrainOptions::lora_rank > 0): the parameters are the frozen base; the trainer owns
// adapters (train/lora.h) and trains only them, with AdamW; no gradient or moment exists for
// the base. merged_params() is the model to export.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "model/config.h"
#include "model/weights.h"
#include "train/grad.h"
#include "train/lora.h"
#include "train/optim.h"
#include "util/result.h"

namespace nk {
class ThreadPool;
}

namespace needle::train {

struct TrainOptions {
  OptimOptions optim;
  LossOptions loss;
  Schedule schedule;        // total_steps, warmup / decay fractions, final lr fraction
  float dropout = 0.1f;     // on each residual branch
  int qat_every = 100;      // every N-th step (step % N == N - 1) runs with INT4 fake-quantized kernels; 0 = never
  float clip_weight = 0.1f; // weight of the CLIP loss in steps given a ClipBatch
  uint64_t seed = 0;        // dropout RNG seed (and LoRA's A initialization)
  int lora_rank = 0;        // > 0: train rank-r adapters on the frozen base (AdamW at optim.adam_lr)
  float lora_alpha = 0;     // adapter scale alpha / rank; 0 = rank (scale 1)
  bool recompute = false;   // activation checkpointing (PassOptions::recompute); bit-identical results
};

struct StepStats {
  int64_t step = 0;         // 0-based index of the step just taken
  double loss = 0;          // text.loss + clip_weight * clip_loss
  TextLoss text;
  double clip_loss = 0;     // 0 when no ClipBatch was given
  double grad_norm = 0;     // global norm before clipping
  double lr_scale = 0;      // schedule multiplier used
  bool fake_quant = false;  // this step ran the QAT forward
};

// Every Dense kernel replaced by its INT4 group-32 fake-quantized value (docs/needle-reference.md §3);
// the embedding, norms, gates, biases and log_temp are unchanged.
Params fake_quantize_kernels(const Params& p, const Config& c);

// A simple initialization for training from scratch (our choice; docs/training.md): embedding
// N(0, 0.02), kernels N(0, 1/fan_in) (LeCun normal), norm scales / gates / bias 0, log_temp ln(0.07).
Params init_params(const Config& c, uint64_t seed);

class Trainer {
 public:
  // threads counts the caller (0 = hardware concurrency).
  // With o.lora_rank > 0, p is the frozen base and fresh adapters are made (A from o.seed, B = 0).
  static Result<Trainer> create(const Config& c, Params p, const TrainOptions& o, unsigned threads = 0);
  static Result<Trainer> from_bytes(std::span<const uint8_t> bytes, unsigned threads = 0);
  // A LoRA state holds no base weights (only their fingerprint): pass the same base again.
  // For a full fine-tuning state `base` is ignored.
  static Result<Trainer> from_bytes(std::span<const uint8_t> bytes, Params base, unsigned threads = 0);

  Trainer(Trainer&&) noexcept;
  Trainer& operator=(Trainer&&) noexcept;
  ~Trainer();

  Result<StepStats> train_step(const TextBatch& batch, const ClipBatch* clip = nullptr);
  // Losses at the current parameters: no dropout, no fake quantization, nothing updated.
  Result<TextLoss> eval_loss(const TextBatch& batch);
  Result<double> eval_clip_loss(const ClipBatch& batch);

  // Everything a resume needs: config, options, step, RNG, parameters, optimizer moments
  // (LoRA: adapters and their moments, and the base's fingerprint instead of the base).
  std::vector<uint8_t> to_bytes() const;

  bool is_lora() const { return o_.lora_rank > 0; }
  const Lora& lora() const { return lora_; }
  // The model as trained: params() for full fine-tuning; base + s B A for LoRA.
  Params merged_params() const;
  // Frees the activation buffers kept between steps (e.g. before evaluating); the next step
  // allocates them again.
  void release_workspace();

  const Config& config() const { return c_; }
  const TrainOptions& options() const { return o_; }
  const Params& params() const { return p_; }  // LoRA: the frozen base
  const OptimState& optim_state() const { return s_; }
  int64_t step() const { return step_; }
  uint64_t rng_state() const { return rng_; }
  // Changes the schedule length or the learning rates of a resumed run (the state stays; so do
  // the LoRA rank and alpha, which the state's shapes depend on).
  void set_options(const TrainOptions& o) {
    const int rank = o_.lora_rank;
    const float alpha = o_.lora_alpha;
    o_ = o;
    o_.lora_rank = rank;
    o_.lora_alpha = alpha;
  }

 private:
  Trainer() = default;
  PassOptions pass(float dropout, uint64_t key) const;

  Config c_;
  TrainOptions o_;
  Params p_;
  OptimState s_;
  int64_t step_ = 0;
  uint64_t rng_ = 0;
  std::unique_ptr<nk::ThreadPool> pool_;
  std::unique_ptr<Workspace> ws_;  // activations reused from step to step
  Params grads_;                   // gradient buffer reused from step to step (full fine-tuning)
  Lora lora_, lora_m_, lora_v_;    // LoRA: adapters and their AdamW moments
  Lora lora_g_;                    // LoRA: gradient buffer
  uint64_t base_fingerprint_ = 0;  // LoRA: params_fingerprint of the base
};

}  // namespace needle::train
