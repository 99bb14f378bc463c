// Dispatch: names, support detection and the chosen table.
#include <catch2/catch.hpp>

#include <cstring>

#include "kt_util.h"

TEST_CASE("isa names round-trip") {
  for (nk::Isa i : {nk::Isa::scalar, nk::Isa::avx2, nk::Isa::avxvnni, nk::Isa::avx512, nk::Isa::neon, nk::Isa::neondot}) {
    nk::Isa back;
    REQUIRE(nk::parse_isa(nk::isa_name(i), &back));
    CHECK(back == i);
  }
  nk::Isa x;
  CHECK_FALSE(nk::parse_isa("sse9", &x));
}

TEST_CASE("supported paths: scalar always, tables carry their own name, the choice is supported") {
  auto isas = nk::supported_isas();
  REQUIRE(!isas.empty());
  CHECK(isas.front() == nk::Isa::scalar);
  for (nk::Isa i : isas) {
    const nk::Kernels* k = nk::kernels_for(i);
    REQUIRE(k != nullptr);
    CHECK(k->isa == i);
    CHECK(std::strcmp(k->name, nk::isa_name(i)) == 0);
    CHECK(k->quantize_q8 != nullptr);
    CHECK(k->gemv_q4 != nullptr);
    CHECK(k->attention != nullptr);
  }
  const nk::DispatchInfo& info = nk::dispatch_info();
  CHECK(nk::kernels_for(info.chosen) != nullptr);
  CHECK(nk::kernels().isa == info.chosen);
  if (!info.requested.empty() && info.message.empty()) CHECK(info.requested == nk::isa_name(info.chosen));
  WARN("paths tested here: " << [&] {
    std::string s;
    for (nk::Isa i : isas) s += std::string(nk::isa_name(i)) + " ";
    return s;
  }() << "; dispatch chose " << nk::isa_name(info.chosen) << (info.message.empty() ? "" : " -- " + info.message));
}
