// Optimizers for fine-tuning as the reference does it (docs/needle-reference.md §5, our exact
// reading in docs/training.md): global-norm clipping, Muon on the 2-D Dense kernels (per layer),
// AdamW on everything else, and the warmup / constant / cosine-tail schedule.
#pragma once
#include <cstdint>
#include <vector>

#include "model/config.h"
#include "model/weights.h"

namespace nk {
class ThreadPool;
}

namespace needle::train {

struct OptimOptions {
  bool muon = true;            // false: AdamW on every tensor (kernels included)
  // AdamW (optax.adamw semantics: bias-corrected moments, eps outside the sqrt, decoupled decay).
  float adam_lr = 3e-5f;       // peak
  float adam_b1 = 0.9f, adam_b2 = 0.95f, adam_eps = 1e-8f;
  float adam_weight_decay = 0.0f;
  // Muon (Nesterov momentum, Newton-Schulz orthogonalization, shape scale sqrt(max(1, out/in))).
  float muon_lr = 0.02f;       // peak
  float muon_momentum = 0.95f;
  float muon_weight_decay = 0.01f;
  int muon_ns_steps = 5;
  float clip_norm = 1.0f;      // global-norm clipping threshold; <= 0 disables
};

// Per-tensor moments in the same per-layer structure as the parameters. For a Muon tensor `m`
// is its momentum buffer and `v` is empty; for an AdamW tensor both are used.
struct OptimState {
  Params m, v;
  int64_t count = 0;  // optimizer steps taken (AdamW bias correction uses count after increment)
};

// Which tensors Muon updates: the Dense kernels (Role::Kernel), each layer's 2-D matrix.
bool uses_muon(const TensorSpec& s, const OptimOptions& o);

OptimState init_optim_state(const Config& c, const OptimOptions& o);

// sqrt(sum of squares of every gradient), accumulated in double.
double global_norm(const Params& g, const Config& c);
// Scales g by clip / norm when norm > clip (optax.clip_by_global_norm). Returns the norm before.
double clip_by_global_norm(Params& g, const Config& c, float clip);

// Learning-rate multiplier of step `step` (0-based) out of `total`: linear warmup from 0 over the
// first 5% (lr(s) = s / W, as optax.linear_schedule), constant 1, then a cosine over the last 5%
// from 1 down to `final_frac` (optax.cosine_decay_schedule with alpha = final_frac).
struct Schedule {
  int64_t total_steps = 1;
  double warmup_frac = 0.05, decay_frac = 0.05, final_frac = 0.05;
  int64_t warmup_steps() const;
  int64_t decay_steps() const;
  double operator()(int64_t step) const;
};

// X <- NewtonSchulz5(X / (||X||_F + 1e-7)) on a rows x cols matrix, in place: the quintic
// iteration X <- a X + (b A + c A A) X, A = X X^T, (a, b, c) = (3.4445, -4.7750, 2.0315), run on
// the wide orientation (transposed when rows > cols). Its singular values land in ~[0.7, 1.2].
void newton_schulz(float* x, int rows, int cols, int steps, nk::ThreadPool* pool);

// One AdamW update of n values. t = optimizer step count after increment (>= 1).
void adamw_update(float* p, const float* g, float* m, float* v, size_t n, int64_t t, float lr, float b1, float b2,
                  float eps, float wd);
// One Muon update of a [rows, cols] kernel: m = mu m + (1 - mu) g; u = NS(mu m + (1 - mu) g)
// (Nesterov); p = p (1 - lr wd) - lr sqrt(max(1, rows / cols)) u. rows = out, cols = in.
void muon_update(float* p, const float* g, float* m, int rows, int cols, float lr, float momentum, float wd,
                 int ns_steps, nk::ThreadPool* pool);

// One optimizer step on every tensor with the schedule's multiplier `lr_scale` (gradients are
// expected already clipped).
void optimizer_step(Params& p, const Params& g, OptimState& s, const Config& c, const OptimOptions& o,
                    double lr_scale, nk::ThreadPool* pool);

}  // namespace needle::train
