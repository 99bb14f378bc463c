// The fast inference engine: runs a mapped .needle model with the kernels (INT4 x INT8
// products, f32 attention), a persistent thread pool, a self-attention KV cache and
// cross-attention K/V computed once per query. Weights are used in place from the mmap.
// Checked against the plain f32 path (forward_ref) and the int4 fixtures.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "model/model_io.h"
#include "nk/kernels.h"
#include "nk/threadpool.h"

namespace needle {

// A dense layer's weight, [out, in], in whatever dtype the file stores.
struct Linear {
  DType dtype = DType::F32;
  int out = 0, in = 0;
  const nk::BlockQ4* q4 = nullptr;
  const nk::BlockQ8* q8 = nullptr;
  const float* f32 = nullptr;  // F32 (in the map) or F16/BF16 converted (owned by EngineWeights)
};

// Weights prepared for the engine; shared (read-only) by any number of engines.
struct EngineWeights {
  Config config;
  struct Attn {
    Linear q, k, v, o;
    const float *q_norm, *k_norm;
  };
  struct Enc {
    const float* norm;
    float gate;
    Attn attn;
  };
  struct Dec {
    const float *norm_self, *norm_cross;
    float gate_self, gate_cross;
    Attn self_attn, cross_attn;
  };
  Linear embedding;  // tied: input table and output head
  std::vector<Enc> encoder;
  const float* encoder_norm;
  std::vector<Dec> decoder;
  const float* decoder_norm;
  Linear contrastive_hidden, contrastive_proj;
  const float* contrastive_bias;

  std::vector<std::vector<float>> owned;  // f16/bf16 tensors widened to f32
};
// The model must outlive the weights (they point into its map).
Result<std::shared_ptr<const EngineWeights>> prepare_weights(const Model& m);

// A model built in memory from parameters (evaluation during training, tests): the file
// bytes, the validated model over them, and the engine's weights.
struct MemoryModel {
  std::vector<uint8_t> bytes;
  Model model;
  std::shared_ptr<const EngineWeights> weights;
};
Result<std::unique_ptr<MemoryModel>> memory_model(const Params& p, const Config& c, const WriteOptions& opt);

class Engine {
 public:
  // threads: 0 = all cores. One engine serves one caller at a time. `kernels` forces an
  // instruction set (tests); nullptr = the one chosen at start-up.
  Engine(std::shared_ptr<const EngineWeights> w, unsigned threads, const nk::Kernels* kernels = nullptr);
  const Config& config() const { return w_->config; }
  const char* isa() const { return k_->name; }
  unsigned threads() const { return pool_.size(); }

  // Encoder: final-normed output [len, d]. key_valid (optional) masks padded keys.
  void encode(std::span<const int32_t> tokens, std::vector<float>& out, std::span<const uint8_t> key_valid = {});

  struct DecodeState {
    int enc_len = 0, pos = 0, capacity = 0;
    std::vector<std::vector<float>> self_k, self_v;    // per layer [capacity, kv_dim]
    std::vector<std::vector<float>> cross_k, cross_v;  // per layer [enc_len, kv_dim]
    std::vector<float> logits;                         // [vocab] of the last step
  };
  // Computes the cross-attention K/V of enc_out [enc_len, d] once; reserves `max_steps`.
  void start(std::span<const float> enc_out, int enc_len, int max_steps, DecodeState& st);
  // Feeds one token and returns its logits (st.logits).
  std::span<const float> step(DecodeState& st, int32_t token);
  // Teacher-forced logits for a whole decoder sequence [tokens, vocab] (loss evaluation).
  void decode_all(std::span<const float> enc_out, int enc_len, std::span<const int32_t> tokens,
                  std::vector<float>& logits);

  // Contrastive (retrieval) embedding of a sequence, pad tokens excluded from the pooling.
  std::vector<float> contrastive(std::span<const int32_t> tokens);

 private:
  // y [rows, W.out] = x [rows, W.in] W^T, split over output rows across the pool.
  void linear(const Linear& W, const float* x, int rows, float* y);
  void embed(std::span<const int32_t> tokens, float* x);
  void attention(const float* q, int lq, const float* k, const float* v, int lk, bool causal, int q_pos0,
                 const uint8_t* key_mask, float* out);
  void project_q(const EngineWeights::Attn& a, const float* h, int len, bool rope, int pos0, float* q);
  void project_kv(const EngineWeights::Attn& a, const float* h, int len, bool rope, int pos0, float* k, float* v);

  std::shared_ptr<const EngineWeights> w_;
  const nk::Kernels* k_;
  nk::ThreadPool pool_;
  std::vector<nk::BlockQ8> xq_;  // quantized activations scratch
  std::vector<float> x_, h_, q_, kk_, vv_, ctx_, y_;
};

}  // namespace needle
