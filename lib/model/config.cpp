#include "model/config.h"

#include <cmath>
#include <functional>

namespace needle {
namespace {

// One table of every field, shared by the pickle and .needle readers and writers.
struct IntField {
  const char* name;
  int Config::*ptr;
};
constexpr IntField kIntFields[] = {
    {"vocab_size", &Config::vocab_size},
    {"d_model", &Config::d_model},
    {"num_heads", &Config::num_heads},
    {"num_kv_heads", &Config::num_kv_heads},
    {"num_encoder_layers", &Config::num_encoder_layers},
    {"num_decoder_layers", &Config::num_decoder_layers},
    {"d_ff", &Config::d_ff},
    {"max_seq_len", &Config::max_seq_len},
    {"pad_token_id", &Config::pad_token_id},
    {"contrastive_dim", &Config::contrastive_dim},
    {"num_memory_slots", &Config::num_memory_slots},
};

}  // namespace

Status Config::validate() const {
  auto pos = [](int v) { return v > 0 && v <= (1 << 20); };
  if (!pos(vocab_size) || !pos(d_model) || !pos(num_heads) || !pos(num_kv_heads) || !pos(contrastive_dim))
    return make_error("config has a non-positive or implausible size");
  if (num_encoder_layers < 0 || num_decoder_layers < 1 || num_encoder_layers > 1024 || num_decoder_layers > 1024)
    return make_error("config has an implausible layer count ({} encoder, {} decoder)", num_encoder_layers,
                      num_decoder_layers);
  if (d_model % num_heads != 0) return make_error("d_model {} is not divisible by num_heads {}", d_model, num_heads);
  if (num_heads % num_kv_heads != 0)
    return make_error("num_heads {} is not divisible by num_kv_heads {}", num_heads, num_kv_heads);
  if (head_dim() % 2 != 0) return make_error("head_dim {} must be even for RoPE", head_dim());
  if (d_model % 4 != 0) return make_error("d_model {} must be divisible by 4 (contrastive hidden)", d_model);
  if (!no_feedforward) return make_error("config has no_feedforward=False; only the attention-only model is supported");
  if (!(rope_theta > 0) || !std::isfinite(rope_theta)) return make_error("rope_theta must be positive");
  if (vocab_size < 6) return make_error("vocab_size {} is too small for the special tokens", vocab_size);
  // Each size is bounded above, but their product is not: a config alone (needle-finetune
  // --init random --config) must not ask for terabytes. An upper estimate of the parameter
  // count (embedding, attention per layer, contrastive head), in double so it cannot overflow.
  const double d = d_model, kv = (double)num_kv_heads * head_dim();
  const double per_layer = 2 * d * d + 2 * kv * d + 4 * d;
  const double params = (double)vocab_size * d + (num_encoder_layers + 2.0 * num_decoder_layers) * per_layer +
                        d * (d / 4) + (double)contrastive_dim * (d / 4);
  if (params > kMaxParams)
    return make_error("config is implausibly large: about {:.3g} parameters (at most {:.3g}; the released model has 2.6e7)",
                      params, kMaxParams);
  return Status::ok();
}

Result<Config> Config::from_pickle(const std::vector<std::pair<std::string, ScalarValue>>& dict) {
  Config c;
  for (auto& [key, v] : dict) {
    bool known = false;
    for (auto& f : kIntFields) {
      if (key != f.name) continue;
      known = true;
      if (auto* i = std::get_if<int64_t>(&v); i && *i >= INT32_MIN && *i <= INT32_MAX)
        c.*f.ptr = (int)*i;
      else
        return make_error("config key '{}' must be an integer", key);
    }
    if (key == "rope_theta") {
      known = true;
      if (auto* d = std::get_if<double>(&v)) c.rope_theta = *d;
      else if (auto* i = std::get_if<int64_t>(&v)) c.rope_theta = (double)*i;
      else return make_error("config key 'rope_theta' must be a number");
    } else if (key == "dtype") {
      known = true;
      if (auto* s = std::get_if<std::string>(&v)) c.dtype = *s;
      else return make_error("config key 'dtype' must be a string");
    } else if (key == "no_feedforward") {
      known = true;
      if (auto* b = std::get_if<bool>(&v)) c.no_feedforward = *b;
      else return make_error("config key 'no_feedforward' must be a boolean");
    }
    (void)known;  // unknown keys are ignored, as the original's Config(**dict) would fail on them
  }
  NEEDLE_TRY(c.validate());
  return c;
}

std::vector<std::pair<std::string, ScalarValue>> Config::to_pickle() const {
  std::vector<std::pair<std::string, ScalarValue>> out;
  for (auto& f : kIntFields) out.emplace_back(f.name, (int64_t)(this->*f.ptr));
  out.emplace_back("rope_theta", rope_theta);
  out.emplace_back("dtype", dtype);
  out.emplace_back("no_feedforward", no_feedforward);
  return out;
}

Result<Config> Config::from_meta(const NeedleFile& f) {
  Config c;
  for (auto& fld : kIntFields) {
    auto* v = f.meta(std::string("config.") + fld.name);
    if (!v) return make_error("metadata lacks config.{}", fld.name);
    auto* i = std::get_if<int64_t>(v);
    if (!i || *i < INT32_MIN || *i > INT32_MAX) return make_error("metadata config.{} is not an integer", fld.name);
    c.*fld.ptr = (int)*i;
  }
  auto* th = f.meta("config.rope_theta");
  if (!th || !std::get_if<double>(th)) return make_error("metadata lacks config.rope_theta");
  c.rope_theta = std::get<double>(*th);
  if (auto* s = f.meta("config.dtype"); s && std::get_if<std::string>(s)) c.dtype = std::get<std::string>(*s);
  auto* nf = f.meta("config.no_feedforward");
  if (!nf || !std::get_if<bool>(nf)) return make_error("metadata lacks config.no_feedforward");
  c.no_feedforward = std::get<bool>(*nf);
  NEEDLE_TRY(c.validate());
  return c;
}

void Config::to_meta(NeedleWriter& w) const {
  for (auto& f : kIntFields) w.set_meta(std::string("config.") + f.name, (int64_t)(this->*f.ptr));
  w.set_meta("config.rope_theta", rope_theta);
  w.set_meta("config.dtype", dtype);
  w.set_meta("config.no_feedforward", no_feedforward);
}

}  // namespace needle
