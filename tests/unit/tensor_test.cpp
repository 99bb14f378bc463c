#include <catch2/catch.hpp>

#include "util/tensor.h"

using namespace needle;

TEST_CASE("f16 conversion round-trips every finite half") {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if (((h >> 10) & 0x1f) == 0x1f) continue;  // inf/nan
    float f = f16_to_f32((uint16_t)h);
    REQUIRE(f32_to_f16(f) == (uint16_t)h);
  }
  CHECK(f16_to_f32(0x3c00) == 1.0f);
  CHECK(f32_to_f16(65520.0f) == 0x7c00);  // rounds to inf
  CHECK(f32_to_f16(1.0f + 1.0f / 4096) == 0x3c00);  // tie to even
}

TEST_CASE("bf16 conversion rounds to nearest even") {
  CHECK(bf16_to_f32(0x3f80) == 1.0f);
  CHECK(f32_to_bf16(1.0f) == 0x3f80);
  CHECK(f32_to_bf16(bf16_to_f32(0x4049)) == 0x4049);
}
