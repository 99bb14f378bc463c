// The training forward and backward of the whole model in f32, and the reference losses:
//   text_loss = ce + z_loss on teacher-forced decoder targets (docs/needle-reference.md §5,
//               fixtures/README.md "grads_tiny"), and
//   clip_loss = the symmetric CLIP loss of the contrastive head on (query, tool) pairs.
// Each returns the loss and, when asked, adds `scale * d loss / d params` into a gradient Params
// (so a weighted sum of losses is two calls into one gradient). docs/training.md has the math.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "model/config.h"
#include "model/weights.h"
#include "train/lora.h"
#include "util/result.h"

namespace nk {
class ThreadPool;
}

namespace needle::train {

// Token classes of the weighted cross-entropy (the fixture's loss_class values).
enum LossClass : int32_t { kClassBase = 0, kClassName = 1, kClassValue = 2, kClassKey = 3 };

// A padded batch for the text loss. Row-major [batch, len] arrays; seg = 1 on real tokens and 0
// on padding. tgt_out[b, t] is the token after tgt_in[b, t]; only positions with dec_seg > 0
// count in the loss.
struct TextBatch {
  int batch = 0, enc_len = 0, dec_len = 0;
  std::vector<int32_t> src, enc_seg;                           // [batch, enc_len]
  std::vector<int32_t> tgt_in, tgt_out, dec_seg, loss_class;   // [batch, dec_len]
  // Shapes agree, ids are in [0, vocab), classes in [0, 4).
  Status validate(const Config& c) const;
  int64_t target_tokens() const;  // sum of (dec_seg > 0)
};

// (query, tool) pairs for the CLIP loss: row i of `query` belongs with row i of `tool`.
// Padding is config.pad_token_id; the contrastive head pools over the non-pad positions.
struct ClipBatch {
  int batch = 0, query_len = 0, tool_len = 0;
  std::vector<int32_t> query;  // [batch, query_len]
  std::vector<int32_t> tool;   // [batch, tool_len]
  Status validate(const Config& c) const;
};

struct LossOptions {
  std::array<float, 4> class_weights{1.0f, 2.0f, 4.0f, 1.5f};  // base, name, value, key
  float z_loss = 1e-4f;
};

struct TextLoss {
  double loss = 0;    // ce + z_loss
  double ce = 0;      // sum(CE_t * w[class_t] * m_t) / max(sum m_t, 1)
  double z_loss = 0;  // z * sum(logsumexp_t^2 * m_t) / max(sum m_t, 1)
  double nll = 0;     // sum(CE_t * m_t) / max(sum m_t, 1): unweighted, what needle-eval --loss reports
  int64_t tokens = 0; // sum m_t
};

// Activations and scratch buffers kept from one pass to the next, so a training loop does not
// allocate (and page-fault in) hundreds of MB per step. Optional; use one per thread of control.
struct WorkspaceImpl;
class Workspace {
 public:
  Workspace();
  ~Workspace();
  Workspace(Workspace&&) noexcept;
  Workspace& operator=(Workspace&&) noexcept;
  WorkspaceImpl& impl() { return *impl_; }

 private:
  std::unique_ptr<WorkspaceImpl> impl_;
};

// How one pass runs: residual-branch dropout (a pure function of `dropout_key`, so a pass is
// reproducible), the thread pool (nullable: single-threaded) and an optional workspace.
struct PassOptions {
  float dropout = 0.0f;
  uint64_t dropout_key = 0;
  nk::ThreadPool* pool = nullptr;
  Workspace* workspace = nullptr;
  // LoRA: every adapted kernel acts as W + s B A (computed factored: y = x W^T + s (x A^T) B^T).
  const Lora* lora = nullptr;
  // Receives += scale * d loss / d (A, B) (zero_lora-shaped). With lora_grads set, `grads` may be
  // null: the base is frozen and none of its gradients is computed (no dW GEMMs at all).
  Lora* lora_grads = nullptr;
  // INT4 QAT forward without a copy of the model: every Dense kernel is used as
  // fake_quantize(W) -- with LoRA fake_quantize(merged_kernel(W, A, B)) -- computed per layer on
  // the fly; gradients pass straight through (to W, or by the chain rule through W + s B A to A, B).
  bool fake_quant = false;
  // Activation checkpointing: the forward keeps only each attention block's input and the
  // backward recomputes the block's forward (bit-identical; one more forward per step; at the
  // 26M shape, batch 16 x 320, ~250 MiB of activations instead of ~1.2 GB). Forward-only passes
  // never keep per-block activations.
  bool recompute = false;
};

// text_loss of a batch. grads (nullable) must be zero_params(c)-shaped or empty (then allocated
// and zeroed); it receives += scale * d text_loss / d params. The backward runs when grads or
// pass.lora_grads is given.
Result<TextLoss> text_loss(const Config& c, const Params& p, const TextBatch& batch, const LossOptions& opt,
                           const PassOptions& pass, Params* grads = nullptr, float scale = 1.0f);

// The symmetric CLIP loss: temperature exp(clip(log_temp, -ln 100, ln 100)), logits =
// q_emb t_emb^T / temperature, (mean row-wise CE + mean column-wise CE) / 2, diagonal targets.
Result<double> clip_loss(const Config& c, const Params& p, const ClipBatch& batch, const PassOptions& pass,
                         Params* grads = nullptr, float scale = 1.0f);

}  // namespace needle::train
