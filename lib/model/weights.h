// Every tensor of the model, in one per-layer structure, and one visitor over all of them.
// The same structure holds mapped file tensors (ModelT<TensorView>), f32 parameters
// (ModelT<std::vector<float>>), gradients and optimizer moments, so the loader, converter,
// exporter, checksum and optimizer all walk one list: adding a tensor is one edit here.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

namespace needle {

// What a tensor is, which decides how it is stored (docs/format.md).
enum class Role {
  Embedding,  // (vocab, d): tied input/output embedding
  Kernel,     // Dense kernel, stored [out, in] (transposed from the pickle's (in, out))
  Norm,       // ZCRMSNorm scale
  Gate,       // residual gate (scalar per layer)
  Bias,       // dense bias
  Scalar,     // other scalars (log_temp)
};

struct TensorSpec {
  std::string name;         // name in the .needle file, e.g. "encoder/layers/3/self_attn/q_proj/kernel"
  std::string pickle_path;  // leaf in the original pickle, e.g. "encoder/layers/EncoderBlock_0/self_attn/q_proj/kernel"
  int layer = -1;           // index along the pickle's stacked layer axis, -1 when not stacked
  Role role = Role::Norm;
  std::vector<int64_t> shape;  // shape as stored in .needle (kernels [out, in])

  // The per-layer shape inside the pickle leaf (kernels (in, out)).
  std::vector<int64_t> pickle_shape() const {
    return role == Role::Kernel ? std::vector<int64_t>{shape[1], shape[0]} : shape;
  }
};

template <class T>
struct AttnT {
  T q, k, v, o;          // q_proj, k_proj, v_proj, out_proj kernels
  T q_norm, k_norm;      // per-head ZCRMSNorm scales (head_dim)
};

template <class T>
struct EncoderLayerT {
  T norm, gate;
  AttnT<T> attn;
};

template <class T>
struct DecoderLayerT {
  T norm_self, norm_cross;   // ZCRMSNorm_0 (before self-attn), ZCRMSNorm_1 (before cross-attn)
  T gate_self, gate_cross;
  AttnT<T> self_attn, cross_attn;
};

template <class T>
struct ModelT {
  T embedding;
  std::vector<EncoderLayerT<T>> encoder;
  T encoder_norm;
  std::vector<DecoderLayerT<T>> decoder;
  T decoder_norm;
  T contrastive_hidden, contrastive_hidden_bias, contrastive_proj;
  T log_temp;

  void resize(const Config& c) {
    encoder.resize((size_t)c.num_encoder_layers);
    decoder.resize((size_t)c.num_decoder_layers);
  }
};

// Calls f(const TensorSpec&, T&) for every tensor, in file order. `m` must be resized.
template <class T, class F>
void for_each_tensor(ModelT<T>& m, const Config& c, F&& f) {
  const int64_t d = c.d_model, kv = c.kv_dim(), hd = c.head_dim(), h4 = c.hidden_dim();
  auto visit = [&](std::string name, std::string ppath, int layer, Role role, std::vector<int64_t> shape, T& t) {
    f(TensorSpec{std::move(name), std::move(ppath), layer, role, std::move(shape)}, t);
  };
  auto attn = [&](const std::string& base, const std::string& pbase, int layer, AttnT<T>& a) {
    visit(base + "/q_proj/kernel", pbase + "/q_proj/kernel", layer, Role::Kernel, {d, d}, a.q);
    visit(base + "/k_proj/kernel", pbase + "/k_proj/kernel", layer, Role::Kernel, {kv, d}, a.k);
    visit(base + "/v_proj/kernel", pbase + "/v_proj/kernel", layer, Role::Kernel, {kv, d}, a.v);
    visit(base + "/out_proj/kernel", pbase + "/out_proj/kernel", layer, Role::Kernel, {d, d}, a.o);
    visit(base + "/q_norm/scale", pbase + "/q_norm/scale", layer, Role::Norm, {hd}, a.q_norm);
    visit(base + "/k_norm/scale", pbase + "/k_norm/scale", layer, Role::Norm, {hd}, a.k_norm);
  };
  visit("embedding/embedding", "embedding/embedding", -1, Role::Embedding, {(int64_t)c.vocab_size, d}, m.embedding);
  const std::string ep = "encoder/layers/EncoderBlock_0";
  for (int i = 0; i < (int)m.encoder.size(); ++i) {
    const std::string b = "encoder/layers/" + std::to_string(i);
    auto& L = m.encoder[(size_t)i];
    visit(b + "/ZCRMSNorm_0/scale", ep + "/ZCRMSNorm_0/scale", i, Role::Norm, {d}, L.norm);
    visit(b + "/attn_gate", ep + "/attn_gate", i, Role::Gate, {}, L.gate);
    attn(b + "/self_attn", ep + "/self_attn", i, L.attn);
  }
  visit("encoder/final_norm/scale", "encoder/final_norm/scale", -1, Role::Norm, {d}, m.encoder_norm);
  const std::string dp = "decoder/layers/DecoderBlock_0";
  for (int i = 0; i < (int)m.decoder.size(); ++i) {
    const std::string b = "decoder/layers/" + std::to_string(i);
    auto& L = m.decoder[(size_t)i];
    visit(b + "/ZCRMSNorm_0/scale", dp + "/ZCRMSNorm_0/scale", i, Role::Norm, {d}, L.norm_self);
    visit(b + "/ZCRMSNorm_1/scale", dp + "/ZCRMSNorm_1/scale", i, Role::Norm, {d}, L.norm_cross);
    visit(b + "/self_attn_gate", dp + "/self_attn_gate", i, Role::Gate, {}, L.gate_self);
    visit(b + "/cross_attn_gate", dp + "/cross_attn_gate", i, Role::Gate, {}, L.gate_cross);
    attn(b + "/self_attn", dp + "/self_attn", i, L.self_attn);
    attn(b + "/cross_attn", dp + "/cross_attn", i, L.cross_attn);
  }
  visit("decoder/ZCRMSNorm_0/scale", "decoder/ZCRMSNorm_0/scale", -1, Role::Norm, {d}, m.decoder_norm);
  visit("contrastive_hidden/kernel", "contrastive_hidden/kernel", -1, Role::Kernel, {h4, d}, m.contrastive_hidden);
  visit("contrastive_hidden/bias", "contrastive_hidden/bias", -1, Role::Bias, {h4}, m.contrastive_hidden_bias);
  visit("contrastive_proj/kernel", "contrastive_proj/kernel", -1, Role::Kernel, {(int64_t)c.contrastive_dim, h4},
        m.contrastive_proj);
  visit("log_temp", "log_temp", -1, Role::Scalar, {}, m.log_temp);
}

// The list of specs for a config (for --info, validation and tests).
std::vector<TensorSpec> model_specs(const Config& c);

using Params = ModelT<std::vector<float>>;  // f32 parameters (also gradients, moments)

// A Params with every tensor allocated to its spec's size and zeroed.
Params zero_params(const Config& c);
int64_t param_count(const Config& c);

}  // namespace needle
