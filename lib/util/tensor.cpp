#include "util/tensor.h"

#include <cstring>

namespace needle {

std::string_view dtype_name(DType d) {
  switch (d) {
    case DType::F32: return "f32";
    case DType::F16: return "f16";
    case DType::BF16: return "bf16";
    case DType::Q8: return "int8";
    case DType::Q4: return "int4";
    case DType::I32: return "i32";
  }
  return "?";
}

Result<DType> dtype_from_name(std::string_view s) {
  for (DType d : {DType::F32, DType::F16, DType::BF16, DType::Q8, DType::Q4, DType::I32})
    if (dtype_name(d) == s) return d;
  return make_error("unknown dtype '{}' (expected f32, f16, bf16, int8 or int4)", s);
}

int64_t HostTensor::numel() const {
  int64_t n = 1;
  for (auto s : shape) n *= s;
  return n;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  if (shape.size() == 1) s += ",";
  return s + ")";
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do { ++e; man <<= 1; } while (!(man & 0x400));
      bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (man << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000;
  uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0));
  if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);  // rounds to inf
  if (ax < 0x38800000u) {                                  // subnormal or zero in f16
    if (ax < 0x33000000u) return (uint16_t)sign;             // < half of smallest subnormal
    uint32_t e = ax >> 23, m = (ax & 0x7fffff) | 0x800000;
    uint32_t shift = 126 - e;  // 14 + (113 - e) - ...: brings value to units of 2^-24
    uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1))) ++r;
    return (uint16_t)(sign | r);
  }
  uint32_t r = ((ax >> 13) - (112u << 10));
  uint32_t rem = ax & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) ++r;
  return (uint16_t)(sign | r);
}

float bf16_to_f32(uint16_t h) {
  uint32_t bits = (uint32_t)h << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t f32_to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40);
  x += 0x7fff + ((x >> 16) & 1);
  return (uint16_t)(x >> 16);
}

Result<std::vector<float>> HostTensor::to_f32() const {
  int64_t n = numel();
  std::vector<float> out((size_t)n);
  auto need = [&](size_t esz) { return data.size() == (size_t)n * esz; };
  switch (dtype) {
    case DType::F32:
      if (!need(4)) break;
      std::memcpy(out.data(), data.data(), data.size());
      return out;
    case DType::F16:
    case DType::BF16: {
      if (!need(2)) break;
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, data.data() + 2 * i, 2);
        out[(size_t)i] = dtype == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
      }
      return out;
    }
    default:
      return make_error("cannot read {} tensor as f32 directly", dtype_name(dtype));
  }
  return make_error("tensor data size {} does not match shape {} of {}", data.size(),
                    shape_str(shape), dtype_name(dtype));
}

HostTensor HostTensor::from_f32(std::vector<int64_t> shape, const std::vector<float>& v) {
  HostTensor t;
  t.dtype = DType::F32;
  t.shape = std::move(shape);
  t.data.resize(v.size() * 4);
  std::memcpy(t.data.data(), v.data(), t.data.size());
  return t;
}

HostTensor HostTensor::from_f16_bits(std::vector<int64_t> shape, const std::vector<uint16_t>& v) {
  HostTensor t;
  t.dtype = DType::F16;
  t.shape = std::move(shape);
  t.data.resize(v.size() * 2);
  std::memcpy(t.data.data(), v.data(), t.data.size());
  return t;
}

}  // namespace needle
