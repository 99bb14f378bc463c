// Quantized block formats shared by the kernels and the .needle file (docs/format.md).
// Plain structs; the file stores arrays of them as-is (little-endian).
#pragma once
#include <cstddef>
#include <cstdint>

namespace nk {

constexpr int kBlock = 32;  // elements per quantization block, along a row

// 32 signed 4-bit weights q in [-8, 7], value = q * d.
// Nibbles are stored offset by 8 (0..15): qs[j] low nibble = element j, high nibble =
// element j + 16 (j < 16), as ggml's Q4_0. The scale is f32, not f16: the training-time
// QAT scale max|w| * (1/7) is an arbitrary f32, and an f16 scale would make dequantized
// weights differ from the QAT forward (docs/format.md explains the measured choice).
struct BlockQ4 {
  float d;
  uint8_t qs[kBlock / 2];
};
static_assert(sizeof(BlockQ4) == 20, "BlockQ4 layout is part of the file format");

// 32 signed 8-bit values q in [-127, 127], value = q * d.
struct BlockQ8 {
  float d;
  int8_t qs[kBlock];
};
static_assert(sizeof(BlockQ8) == 36, "BlockQ8 layout is part of the file format");

// Number of blocks that cover a row of `cols` elements (the last block is zero-padded).
constexpr size_t blocks_per_row(size_t cols) { return (cols + kBlock - 1) / kBlock; }

}  // namespace nk
