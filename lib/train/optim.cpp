#include "train/optim.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "nk/threadpool.h"
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

namespace {

// Newton-Schulz scratch, per thread (the optimizer runs several tensors at once), reused from
// call to call: a step calls it for every kernel, and fresh buffers cost page faults and zeroing.
struct NsScratch {
  std::vector<float> xt, yt, a, aa, b;
};
NsScratch& ns_scratch() {
  thread_local NsScratch s;
  return s;
}

}  // namespace

void newton_schulz(float* x, int rows, int cols, int steps, nk::ThreadPool* pool) {
  constexpr float a = 3.4445f, b = -4.7750f, c = 2.0315f;
  const bool tall = rows > cols;
  const int r = tall ? cols : rows, n = tall ? rows : cols;  // X [r, n] with r <= n
  // The iteration runs on Xt = X^T [n, r] (row-major), the layout in which every product below
  // reads its operands contiguously: a tall input already is Xt, a wide one is transposed once.
  //   A = X X^T           = gram of Xt's columns        (symmetric: upper half computed)
  //   AA = A A = A A^T    = gram of A                   (symmetric too)
  //   B = b A + c AA
  //   X <- a X + B X,  i.e.  Xt <- a Xt + Xt B          (B symmetric: (B X)^T = Xt B)
  NsScratch& s = ns_scratch();
  const size_t rn = (size_t)r * n, rr = (size_t)r * r;
  s.xt.resize(rn);
  s.yt.resize(rn);
  s.a.resize(rr);
  s.aa.resize(rr);
  s.b.resize(rr);
  float *X = s.xt.data(), *Y = s.yt.data();
  if (tall) std::copy(x, x + rn, X);
  else transpose(X, x, r, n);

  double part[8] = {};  // eight interleaved partial sums (a fixed order): no serial add chain
  size_t i8 = 0;
  for (; i8 + 8 <= rn; i8 += 8)
    for (size_t q = 0; q < 8; ++q) part[q] += (double)X[i8 + q] * X[i8 + q];
  for (; i8 < rn; ++i8) part[0] += (double)X[i8] * X[i8];
  const double ss = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
  const float inv = (float)(1.0 / (std::sqrt(ss) + 1e-7));
  for (size_t i = 0; i < rn; ++i) X[i] *= inv;

  float *A = s.a.data(), *AA = s.aa.data(), *B = s.b.data();
  for (int it = 0; it < steps; ++it) {
    gram(r, n, X, 1, (size_t)r, A, (size_t)r, pool);   // X(i, k) = Xt[k, i]
    gram(r, r, A, 1, (size_t)r, AA, (size_t)r, pool);  // A(i, k) = A[k, i] (symmetric)
    for (size_t i = 0; i < rr; ++i) B[i] = b * A[i] + c * AA[i];
    for (size_t i = 0; i < rn; ++i) Y[i] = a * X[i];
    gemm_threaded(n, r, r, X, (size_t)r, 1, B, (size_t)r, Y, (size_t)r, /*accumulate=*/true, pool);
    std::swap(X, Y);
  }
  if (tall) std::copy(X, X + rn, x);
  else transpose(x, X, n, r);
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
  thread_local std::vector<float> u;  // reused: no allocation per tensor and step
  u.resize(n);
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
  const float adam_lr = (float)(o.adam_lr * lr_scale), muon_lr = (float)(o.muon_lr * lr_scale);
  // Every tensor's update reads and writes only that tensor's state, so the tensors are spread
  // over the pool whole (one task each, the costliest first so the last tasks are short), and
  // each is updated by one thread with the same code whatever the thread count: results do not
  // depend on it. Newton-Schulz inside a task runs on that thread alone (no nested pool use).
  struct Job {
    TensorSpec spec;
    float* w;
    size_t i;
    double cost;
  };
  std::vector<Job> jobs;
  size_t i = 0;
  for_each_tensor(p, c, [&](const TensorSpec& spec, std::vector<float>& w) {
    double cost = (double)w.size();
    if (uses_muon(spec, o)) {
      const double r = (double)std::min(spec.shape[0], spec.shape[1]), n = (double)std::max(spec.shape[0], spec.shape[1]);
      cost = o.muon_ns_steps * (2 * r * r * n + r * r * r);
    }
    jobs.push_back({spec, w.data(), i++, cost});
  });
  std::stable_sort(jobs.begin(), jobs.end(), [](const Job& x, const Job& y) { return x.cost > y.cost; });
  auto run = [&](size_t t, unsigned) {
    const Job& j = jobs[t];
    const std::vector<float>& gr = *gs[j.i];
    std::vector<float>& m = *ms[j.i];
    std::vector<float>& v = *vs[j.i];
    if (uses_muon(j.spec, o)) {
      muon_update(j.w, gr.data(), m.data(), (int)j.spec.shape[0], (int)j.spec.shape[1], muon_lr, o.muon_momentum,
                  o.muon_weight_decay, o.muon_ns_steps, nullptr);
    } else {
      adamw_update(j.w, gr.data(), m.data(), v.data(), gr.size(), s.count, adam_lr, o.adam_b1, o.adam_b2, o.adam_eps,
                   o.adam_weight_decay);
    }
  };
  if (pool && pool->size() > 1) pool->parallel_for(jobs.size(), run);
  else for (size_t t = 0; t < jobs.size(); ++t) run(t, 0);
}

}  // namespace needle::train
