#include "eval/loss.h"

#include <algorithm>
#include <cmath>

namespace needle::eval {

double log_sum_exp(std::span<const float> row) {
  const float mx = *std::max_element(row.begin(), row.end());
  double s = 0;
  for (float x : row) s += std::exp((double)x - mx);
  return mx + std::log(s);
}

LossSum teacher_forced_loss(Engine& e, std::span<const int32_t> enc_ids, std::span<const int32_t> dec_input,
                            std::span<const int32_t> target) {
  std::vector<float> enc, logits;
  e.encode(enc_ids, enc);
  e.decode_all(enc, (int)enc_ids.size(), dec_input, logits);
  const size_t V = (size_t)e.config().vocab_size;
  LossSum out;
  for (size_t t = 0; t < target.size(); ++t) {
    std::span<const float> row(logits.data() + t * V, V);
    out.sum += log_sum_exp(row) - row[(size_t)target[t]];
    out.tokens++;
  }
  return out;
}

}  // namespace needle::eval
