// A host-side tensor as read from or written to a checkpoint: dtype, shape and raw
// little-endian bytes. Conversion helpers live in tensor.cpp.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "util/result.h"

namespace needle {

enum class DType : uint32_t {
  F32 = 0,
  F16 = 1,
  BF16 = 2,
  Q8 = 3,   // int8 blocks of 32 along the last axis, f32 scale (docs/format.md)
  Q4 = 4,   // int4 blocks of 32 along the last axis, f32 scale (docs/format.md)
  I32 = 5,
};

std::string_view dtype_name(DType d);
Result<DType> dtype_from_name(std::string_view s);

struct HostTensor {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;  // little-endian element bytes, row-major

  int64_t numel() const;
  // Values as f32 (exact for F32/F16/BF16); error for quantized dtypes.
  Result<std::vector<float>> to_f32() const;
  static HostTensor from_f32(std::vector<int64_t> shape, const std::vector<float>& v);
  static HostTensor from_f16_bits(std::vector<int64_t> shape, const std::vector<uint16_t>& v);
};

std::string shape_str(const std::vector<int64_t>& shape);

// IEEE half and bfloat16 conversions (round to nearest even).
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);

}  // namespace needle
