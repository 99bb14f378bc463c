// Weight quantizers (f32 rows -> Q4/Q8 blocks) and dequantizers. Scalar only: they run when a
// model is converted or loaded, not per token.
#pragma once
#include <cstddef>

#include "nk/blocks.h"

namespace nk {

// Q4 with the training-time (QAT) rule, per block of 32 along the row:
//   d = max|w| * (1.0f / 7.0f) (an f32 product), floored at 1e-8f;
//   q = clip(round_half_even(w * (1.0f / d)), -8, 7).
// A partial last block is padded with zeros (they do not change max|w|).
// dequantize_q4(quantize_q4(w)) equals the QAT fake-quantized weight bit for bit.
void quantize_row_q4(const float* w, BlockQ4* out, size_t k);
// Q8: d = max|w| * (1.0f / 127.0f), floored at 1e-8f; q = clip(round_half_even(w * (1/d)), -127, 127).
void quantize_row_q8(const float* w, BlockQ8* out, size_t k);
// Back to f32 (q * d), k elements.
void dequantize_row_q4(const BlockQ4* in, float* w, size_t k);
void dequantize_row_q8(const BlockQ8* in, float* w, size_t k);

// Element j of a Q4 block as a signed integer in [-8, 7].
inline int q4_get(const BlockQ4& b, int j) {
  return j < kBlock / 2 ? (b.qs[j] & 0x0F) - 8 : (b.qs[j - kBlock / 2] >> 4) - 8;
}

}  // namespace nk
