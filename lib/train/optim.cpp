#include "train/optim.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "train/matmul.h"

namespace needle::train {
namespace {

// The tensors of several same-shaped ModelTs, side by side in visiting order.
std::vector<std::vector<float>*> tensors_of(Params& p, const Config& c) {
  std::vector<std::vector<float>*> out;
  for_each_tensor(p, c, [&](const TensorSpec&, std::vector<float>& v) { out.push_back(&v); });
  return out;
}

}  // namespace

bool uses_muon(const TensorSpec& s, const OptimOptions& o) { return o.muon && s.role == Role::Kernel; }

OptimState init_optim_state(const Config& c, const OptimOptions& o) {
  OptimState s;
  s.m = zero_params(c);
  s.v = zero_params(c);
  for_each_tensor(s.v, c, [&](const TensorSpec& spec, std::vector<float>& v) {
    if (uses_muon(spec, o)) std::vector<float>().swap(v);  // Muon keeps no second moment
  });
  return s;
}

double global_norm(const Params& g, const Config& c) {
  double ss = 0;
  for_each_tensor(const_cast<Params&>(g), c, [&](const TensorSpec&, std::vector<float>& v) {
    for (float x : v) ss += (double)x * x;
  });
  return std::sqrt(ss);
}

double clip_by_global_norm(Params& g, const Config& c, float clip) {
  const double norm = global_norm(g, c);
  if (clip > 0 && norm > clip) {
    const float f = (float)(clip / norm);
    for_each_tensor(g, c, [&](const TensorSpec&, std::vector<float>& v) {
      for (float& x : v) x *= f;
    });
  }
  return norm;
}

int64_t Schedule::warmup_steps() const { return (int64_t)std::floor(warmup_frac * (double)total_steps); }
int64_t Schedule::decay_steps() const { return (int64_t)std::floor(decay_frac * (double)total_steps); }

double Schedule::operator()(int64_t step) const {
  const int64_t W = warmup_steps(), D = decay_steps(), decay_start = total_steps - D;
  if (step < W) return (double)step / (double)W;
  if (D > 0 && step >= decay_start) {
    const double t = std::min(1.0, (double)(step - decay_start) / (double)D);
    return (1.0 - final_frac) * 0.5 * (1.0 + std::cos(std::numbers::pi * t)) + final_frac;
  }
  return 1.0;
}

void newton_schulz(float* x, int rows, int cols, int steps, nk::ThreadPool* pool) {
  constexpr float a = 3.4445f, b = -4.7750f, c = 2.0315f;
  const bool tall = rows > cols;
  const int r = tall ? cols : rows, n = tall ? rows : cols;  // work on X [r, n] with r <= n
  std::vector<float> X((size_t)r * n), Xt((size_t)n * r), A((size_t)r * r), B((size_t)r * r), Y((size_t)r * n);
  if (tall) transpose(X.data(), x, rows, cols);
  else std::copy(x, x + (size_t)r * n, X.begin());

  double ss = 0;
  for (float v : X) ss += (double)v * v;
  const float inv = (float)(1.0 / (std::sqrt(ss) + 1e-7));
  for (float& v : X) v *= inv;

  for (int it = 0; it < steps; ++it) {
    transpose(Xt.data(), X.data(), r, n);
    // A = X X^T
    gemm_threaded(r, r, n, X.data(), (size_t)n, 1, Xt.data(), (size_t)r, A.data(), (size_t)r, false, pool);
    for (size_t i = 0; i < B.size(); ++i) B[i] = b * A[i];  // B = b A + c A A
    std::vector<float> AA((size_t)r * r);
    gemm_threaded(r, r, r, A.data(), (size_t)r, 1, A.data(), (size_t)r, AA.data(), (size_t)r, false, pool);
    for (size_t i = 0; i < B.size(); ++i) B[i] += c * AA[i];
    for (size_t i = 0; i < Y.size(); ++i) Y[i] = a * X[i];  // X = a X + B X
    gemm_threaded(r, n, r, B.data(), (size_t)r, 1, X.data(), (size_t)n, Y.data(), (size_t)n, true, pool);
    X.swap(Y);
  }
  if (tall) transpose(x, X.data(), r, n);
  else std::copy(X.begin(), X.end(), x);
}

void adamw_update(float* p, const float* g, float* m, float* v, size_t n, int64_t t, float lr, float b1, float b2,
                  float eps, float wd) {
  const double bc1 = 1.0 - std::pow((double)b1, (double)t), bc2 = 1.0 - std::pow((double)b2, (double)t);
  const float ib1 = (float)(1.0 / bc1), ib2 = (float)(1.0 / bc2);
  for (size_t i = 0; i < n; ++i) {
    m[i] = b1 * m[i] + (1.0f - b1) * g[i];
    v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
    const float mh = m[i] * ib1, vh = v[i] * ib2;
    p[i] -= lr * (mh / (std::sqrt(vh) + eps) + wd * p[i]);
  }
}

void muon_update(float* p, const float* g, float* m, int rows, int cols, float lr, float momentum, float wd,
                 int ns_steps, nk::ThreadPool* pool) {
  const size_t n = (size_t)rows * cols;
  std::vector<float> u(n);
  for (size_t i = 0; i < n; ++i) {
    m[i] = momentum * m[i] + (1.0f - momentum) * g[i];
    u[i] = momentum * m[i] + (1.0f - momentum) * g[i];  // Nesterov
  }
  newton_schulz(u.data(), rows, cols, ns_steps, pool);
  const float step = lr * std::sqrt(std::max(1.0f, (float)rows / (float)cols));
  const float decay = 1.0f - lr * wd;
  for (size_t i = 0; i < n; ++i) p[i] = p[i] * decay - step * u[i];
}

void optimizer_step(Params& p, const Params& g, OptimState& s, const Config& c, const OptimOptions& o,
                    double lr_scale, nk::ThreadPool* pool) {
  s.count += 1;
  auto gs = tensors_of(const_cast<Params&>(g), c), ms = tensors_of(s.m, c), vs = tensors_of(s.v, c);
  size_t i = 0;
  const float adam_lr = (float)(o.adam_lr * lr_scale), muon_lr = (float)(o.muon_lr * lr_scale);
  for_each_tensor(p, c, [&](const TensorSpec& spec, std::vector<float>& w) {
    const std::vector<float>& gr = *gs[i];
    std::vector<float>& m = *ms[i];
    std::vector<float>& v = *vs[i];
    ++i;
    if (uses_muon(spec, o)) {
      muon_update(w.data(), gr.data(), m.data(), (int)spec.shape[0], (int)spec.shape[1], muon_lr, o.muon_momentum,
                  o.muon_weight_decay, o.muon_ns_steps, pool);
    } else {
      adamw_update(w.data(), gr.data(), m.data(), v.data(), w.size(), s.count, adam_lr, o.adam_b1, o.adam_b2,
                   o.adam_eps, o.adam_weight_decay);
    }
  });
}

}  // namespace needle::train
