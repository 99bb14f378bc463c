// Test helpers: golden arrays written by the original JAX code (<name>.json + <name>.bin)
// and the paths of fixture files.
#pragma once
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "io/file.h"
#include "io/pickle.h"
#include "model/engine.h"
#include "model/model_io.h"
#include "text/json.h"

namespace fixtures {

inline std::string test_data(const std::string& name) { return std::string(NEEDLE_TEST_DATA) + "/" + name; }
inline std::string shared(const std::string& name) { return std::string(NEEDLE_SHARED_FIXTURES) + "/" + name; }
inline bool exists(const std::string& p) { return std::filesystem::exists(p); }

// n standard-normal floats from a seeded mt19937 (the same values on every platform's libstdc++).
inline std::vector<float> randn(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

// Long loops over golden examples check every N-th one when NEEDLE_TEST_SAMPLE_STRIDE=N
// (default 1: all). scripts/test-sanitize sets it: under ASan+UBSan the point is every code
// path, not the 144th repetition of one (the Release stage always checks them all).
inline int sample_stride() {
  const char* s = std::getenv("NEEDLE_TEST_SAMPLE_STRIDE");
  const int n = s ? std::atoi(s) : 1;
  return n > 0 ? n : 1;
}
// How many of `total` examples a stride keeps.
inline int sampled_count(int total) { return (total + sample_stride() - 1) / sample_stride(); }

class Arrays {
 public:
  explicit Arrays(const std::string& base) {
    auto meta = needle::read_file(base + ".json");
    REQUIRE(meta.is_ok());
    auto parsed = needle::json::parse(std::string(meta->begin(), meta->end()));
    REQUIRE(parsed.is_ok());
    meta_ = std::move(parsed).value();
    auto bin = needle::read_file(base + ".bin");
    REQUIRE(bin.is_ok());
    bin_ = std::move(bin).value();
  }
  bool has(const std::string& name) const { return meta_.find(name) != nullptr; }
  std::vector<int64_t> shape(const std::string& name) const {
    std::vector<int64_t> s;
    for (auto& d : entry(name).find("shape")->array) s.push_back((int64_t)d.number);
    return s;
  }
  std::vector<float> f32(const std::string& name) const { return get<float>(name, "f32"); }
  std::vector<int32_t> i32(const std::string& name) const { return get<int32_t>(name, "i32"); }
  std::vector<std::string> names() const {
    std::vector<std::string> n;
    for (auto& [k, v] : meta_.object) n.push_back(k);
    return n;
  }

 private:
  const needle::json::Value& entry(const std::string& name) const {
    const auto* e = meta_.find(name);
    INFO("fixture array " << name);
    REQUIRE(e != nullptr);
    return *e;
  }
  template <class T>
  std::vector<T> get(const std::string& name, const char* dtype) const {
    const auto& e = entry(name);
    REQUIRE(e.find("dtype")->text == dtype);
    size_t off = (size_t)e.find("offset")->number, nbytes = (size_t)e.find("nbytes")->number;
    REQUIRE(off + nbytes <= bin_.size());
    std::vector<T> v(nbytes / sizeof(T));
    std::memcpy(v.data(), bin_.data() + off, nbytes);
    return v;
  }
  needle::json::Value meta_;
  std::vector<uint8_t> bin_;
};

// A pickle checkpoint's config and f32 parameters.
struct PickleModel {
  needle::Config cfg;
  needle::Params params;
};
inline PickleModel load_pickle(const std::string& path) {
  auto bytes = needle::read_file(path);
  REQUIRE(bytes.is_ok());
  auto ck = needle::read_pickle_checkpoint(*bytes);
  INFO(ck.message());
  REQUIRE(ck.is_ok());
  auto cfg = needle::Config::from_pickle(ck->config);
  REQUIRE(cfg.is_ok());
  auto p = needle::params_from_pickle(*ck, *cfg);
  INFO(p.message());
  REQUIRE(p.is_ok());
  return {*cfg, std::move(p).value()};
}

// The pickle converted to an in-memory .needle of `type` (with `tokenizer` embedded), ready
// for the engine.
inline std::unique_ptr<needle::MemoryModel> memory_model(const std::string& pkl, needle::WeightType type,
                                                         std::vector<uint8_t> tokenizer = {}) {
  auto m = load_pickle(pkl);
  needle::WriteOptions o;
  o.type = type;
  o.tokenizer = std::move(tokenizer);
  auto mm = needle::memory_model(m.params, m.cfg, o);
  INFO(mm.message());
  REQUIRE(mm.is_ok());
  return std::move(mm).value();
}

// ||a - b|| / ||b|| over the given ranges.
inline double rel_err(const float* a, const float* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    double d = (double)a[i] - b[i];
    num += d * d;
    den += (double)b[i] * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}
inline double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  return rel_err(a.data(), b.data(), a.size());
}

}  // namespace fixtures
