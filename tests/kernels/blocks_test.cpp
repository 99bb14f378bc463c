#include <catch2/catch.hpp>

#include "nk/blocks.h"

TEST_CASE("blocks_per_row covers partial blocks") {
  CHECK(nk::blocks_per_row(32) == 1);
  CHECK(nk::blocks_per_row(33) == 2);
  CHECK(nk::blocks_per_row(16) == 1);
}
