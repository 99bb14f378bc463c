// Teacher-forced cross-entropy of a reference answer: the original's validation loss.
#pragma once
#include <span>
#include <vector>

#include "model/engine.h"

namespace needle::eval {

struct LossSum {
  double sum = 0;    // summed cross-entropy (nats) over target tokens
  size_t tokens = 0;
};

// Runs the encoder on `enc_ids` and the decoder on `dec_input`; sums -log p(target_t).
LossSum teacher_forced_loss(Engine& e, std::span<const int32_t> enc_ids, std::span<const int32_t> dec_input,
                            std::span<const int32_t> target);

// log(sum(exp(row))) computed stably in double.
double log_sum_exp(std::span<const float> row);

}  // namespace needle::eval
