// The model's hyper-parameters, with the reference defaults for keys a checkpoint omits.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "io/needle_file.h"
#include "io/pickle.h"
#include "util/result.h"

namespace needle {

struct Config {
  int vocab_size = 8192;
  int d_model = 128;
  int num_heads = 4;
  int num_kv_heads = 2;
  int num_encoder_layers = 2;
  int num_decoder_layers = 2;
  int d_ff = 512;  // carried for compatibility; the model has no feed-forward
  int max_seq_len = 128;
  int pad_token_id = 0;
  double rope_theta = 10000.0;
  std::string dtype = "bfloat16";
  int contrastive_dim = 128;
  bool no_feedforward = true;
  int num_memory_slots = 64;  // carried for compatibility; unused by the architecture

  int head_dim() const { return d_model / num_heads; }
  int kv_dim() const { return num_kv_heads * head_dim(); }
  int hidden_dim() const { return d_model / 4; }  // contrastive hidden width

  // Checks the shape is one this implementation can run (divisibility, positivity, and at
  // most kMaxParams parameters).
  Status validate() const;
  static constexpr double kMaxParams = double(int64_t(1) << 31);

  // From a pickle's config dict; missing keys take the reference defaults.
  static Result<Config> from_pickle(const std::vector<std::pair<std::string, ScalarValue>>& dict);
  std::vector<std::pair<std::string, ScalarValue>> to_pickle() const;
  // "config.*" metadata keys of a .needle file; every field is written explicitly.
  static Result<Config> from_meta(const NeedleFile& f);
  void to_meta(NeedleWriter& w) const;
};

}  // namespace needle
