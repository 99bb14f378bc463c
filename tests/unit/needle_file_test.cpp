// The .needle container and model files: round trips, and every kind of damaged file
// gives a one-line error, never a crash.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <random>

#include "io/needle_file.h"
#include "model/model_io.h"

using namespace needle;

namespace {

Config small_config() {
  Config c;
  c.vocab_size = 64;
  c.d_model = 32;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.num_encoder_layers = 1;
  c.num_decoder_layers = 2;
  c.contrastive_dim = 16;
  return c;
}

Params random_params(const Config& c, uint32_t seed) {
  Params p = zero_params(c);
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 0.5f);
  for_each_tensor(p, c, [&](const TensorSpec&, std::vector<float>& v) {
    for (auto& x : v) x = nd(rng);
  });
  return p;
}

std::vector<uint8_t> model_bytes(WeightType t, std::vector<uint8_t> tok = {}) {
  Config c = small_config();
  WriteOptions o;
  o.type = t;
  o.tokenizer = std::move(tok);
  o.source = "test";
  auto w = build_needle(random_params(c, 1), c, o);
  REQUIRE(w.is_ok());
  return w->serialize();
}

Result<Model> parse_model(std::span<const uint8_t> b, bool verify = true) {
  NEEDLE_ASSIGN(NeedleFile f, NeedleFile::parse(b, verify));
  return model_from_file(std::move(f));
}

}  // namespace

TEST_CASE("f32 model files round-trip every value, config and tokenizer", "[format]") {
  Config c = small_config();
  Params p = random_params(c, 7);
  WriteOptions o;
  o.type = WeightType::F32;
  o.tokenizer = {1, 2, 3, 0, 255};
  auto w = build_needle(p, c, o);
  REQUIRE(w.is_ok());
  auto bytes = w->serialize();
  auto m = parse_model(bytes);
  INFO(m.message());
  REQUIRE(m.is_ok());
  CHECK(m->tokenizer == o.tokenizer);
  CHECK(m->config.d_model == 32);
  CHECK(m->config.num_decoder_layers == 2);
  CHECK(m->quantization == "f32");
  auto q = to_params(*m);
  REQUIRE(q.is_ok());
  std::vector<float> a, b;
  for_each_tensor(p, c, [&](const TensorSpec&, std::vector<float>& v) { a.insert(a.end(), v.begin(), v.end()); });
  for_each_tensor(*q, c, [&](const TensorSpec&, std::vector<float>& v) { b.insert(b.end(), v.begin(), v.end()); });
  CHECK(a == b);
  for (auto& t : m->file.tensors()) CHECK((size_t)(t.data - bytes.data()) % kNeedleAlign == 0);
}

TEST_CASE("int4 files store kernels as Q4, the embedding as Q8, norms as f32", "[format]") {
  auto bytes = model_bytes(WeightType::Int4);
  auto m = parse_model(bytes);
  REQUIRE(m.is_ok());
  CHECK(m->file.tensor("embedding/embedding")->dtype == DType::Q8);
  CHECK(m->file.tensor("encoder/layers/0/self_attn/q_proj/kernel")->dtype == DType::Q4);
  CHECK(m->file.tensor("encoder/layers/0/ZCRMSNorm_0/scale")->dtype == DType::F32);
  CHECK(m->file.tensor("decoder/layers/1/cross_attn_gate")->dtype == DType::F32);
}

TEST_CASE("every truncation of a model file is rejected with a message", "[format][bad]") {
  auto bytes = model_bytes(WeightType::Int4, {9, 9, 9});
  // Every cut inside header, metadata and directory, then a stride through the data.
  auto dir_end = NeedleFile::parse(bytes);
  REQUIRE(dir_end.is_ok());
  for (size_t cut = 0; cut < bytes.size(); cut += (cut < 4096 ? 1 : 97)) {
    auto r = NeedleFile::parse(std::span<const uint8_t>(bytes.data(), cut));
    INFO("cut at " << cut);
    REQUIRE_FALSE(r.is_ok());
    CHECK(!r.message().empty());
    CHECK(r.message().find('\n') == std::string::npos);
  }
}

TEST_CASE("bit flips are caught by the checksums", "[format][bad]") {
  auto good = model_bytes(WeightType::Int4);
  std::mt19937 rng(3);
  int rejected = 0;
  for (int i = 0; i < 400; ++i) {
    auto b = good;
    size_t pos = rng() % b.size();
    b[pos] ^= (uint8_t)(1u << (rng() % 8));
    auto r = parse_model(b, /*verify=*/true);
    if (!r.is_ok()) ++rejected;
  }
  // A flip in alignment padding (between tensors) changes nothing that is read.
  CHECK(rejected >= 300);
}

TEST_CASE("write() streams exactly the bytes serialize() builds, in the documented layout", "[format]") {
  // Odd sizes everywhere so that every padding rule is exercised: meta values of 1 and 100,003
  // bytes, tensors of 12, 0 and 70 bytes (data offsets 0, 64, 64; data size 128).
  NeedleWriter w;
  std::vector<uint8_t> big(100003);
  for (size_t i = 0; i < big.size(); ++i) big[i] = (uint8_t)(i * 7 + 3);
  w.set_meta("i", int64_t{-5});
  w.set_meta("big", MetaBytes(big));
  w.set_meta("s", std::string("x"));
  w.set_meta("f", 2.5);
  w.set_meta("b", true);
  w.set_meta("last", MetaBytes{9, 8, 7});  // a byte string last: the piece after it is empty
  std::vector<uint8_t> t1(12), t3(70);
  for (size_t i = 0; i < t1.size(); ++i) t1[i] = (uint8_t)(i + 1);
  for (size_t i = 0; i < t3.size(); ++i) t3[i] = (uint8_t)(200 - i);
  REQUIRE(w.add_tensor("t1", DType::F32, {3}, t1).is_ok());
  REQUIRE(w.add_tensor("t2", DType::F32, {0}, {}).is_ok());
  REQUIRE(w.add_tensor("t3", DType::F16, {35}, t3).is_ok());
  const std::vector<uint8_t> mem = w.serialize();

  const auto path = std::filesystem::temp_directory_path() / ("needle_file_test_" + std::to_string(::getpid()));
  REQUIRE(w.write(path.string()).is_ok());
  auto disk = read_file(path.string());
  std::filesystem::remove(path);
  REQUIRE(disk.is_ok());
  CHECK(*disk == mem);

  // The layout, read field by field: header 72 bytes, meta right after it, the directory after
  // the meta, data at the next multiple of 64, each tensor at a multiple of 64, zero padding.
  auto u64 = [&](size_t at) {
    uint64_t v;
    std::memcpy(&v, mem.data() + at, 8);
    return v;
  };
  CHECK(std::memcmp(mem.data(), kNeedleMagic, 8) == 0);
  const uint64_t meta_off = u64(16), meta_size = u64(24), dir_off = u64(32), dir_size = u64(40);
  const uint64_t data_off = u64(48), data_size = u64(56);
  CHECK(meta_off == 72);
  // 4 (count) + per entry 4 + key + 1 (type) + value (8 | 8 + size | 1)
  CHECK(meta_size == 4 + (4 + 1 + 1 + 8) + (4 + 3 + 1 + 8 + 100003) + (4 + 1 + 1 + 8 + 1) + (4 + 1 + 1 + 8) +
                         (4 + 1 + 1 + 1) + (4 + 4 + 1 + 8 + 3));
  CHECK(dir_off == meta_off + meta_size);
  CHECK(data_off % 64 == 0);
  CHECK(data_off >= dir_off + dir_size);
  CHECK(data_off < dir_off + dir_size + 64);
  CHECK(data_size == 64 + 128);
  CHECK(mem.size() == data_off + data_size);
  CHECK(std::equal(t1.begin(), t1.end(), mem.begin() + (ptrdiff_t)data_off));
  CHECK(std::equal(t3.begin(), t3.end(), mem.begin() + (ptrdiff_t)(data_off + 64)));
  for (uint64_t i = dir_off + dir_size; i < data_off; ++i) CHECK(mem[i] == 0);
  for (uint64_t i = data_off + 12; i < data_off + 64; ++i) CHECK(mem[i] == 0);
  for (uint64_t i = data_off + 64 + 70; i < mem.size(); ++i) CHECK(mem[i] == 0);

  // And it reads back, checksums included.
  auto f = NeedleFile::parse(mem, /*verify_data=*/true);
  REQUIRE(f.is_ok());
  CHECK(std::get<int64_t>(*f->meta("i")) == -5);
  CHECK(std::get<MetaBytes>(*f->meta("big")) == big);
  CHECK(std::get<std::string>(*f->meta("s")) == "x");
  CHECK(std::get<double>(*f->meta("f")) == 2.5);
  CHECK(std::get<bool>(*f->meta("b")));
  REQUIRE(f->tensors().size() == 3);
  CHECK(f->tensor("t3")->nbytes == 70);
  CHECK(std::memcmp(f->tensor("t3")->data, t3.data(), 70) == 0);
}

TEST_CASE("an unknown major version is rejected naming both versions", "[format][bad]") {
  auto b = model_bytes(WeightType::F32);
  uint32_t v = 7;
  std::memcpy(b.data() + 8, &v, 4);
  auto r = NeedleFile::parse(b);
  REQUIRE_FALSE(r.is_ok());
  CHECK_THAT(r.message(), Catch::Contains("version 7.0") && Catch::Contains("version 1.x"));
}

TEST_CASE("hostile directories: out of range, overlapping and misshapen tensors", "[format][bad]") {
  // Build files directly with the writer so checksums are valid and only the structure is bad.
  NeedleWriter w;
  Config c = small_config();
  c.to_meta(w);
  REQUIRE(w.add_tensor("a", DType::F32, {4}, std::vector<uint8_t>(16)).is_ok());
  auto bytes = w.serialize();
  // Model missing tensors.
  auto m = parse_model(bytes);
  REQUIRE_FALSE(m.is_ok());
  CHECK_THAT(m.message(), Catch::Contains("lacks tensor"));
  // Wrong size for the declared shape.
  CHECK_FALSE(w.add_tensor("b", DType::F32, {5}, std::vector<uint8_t>(16)).is_ok());
  // Implausible shapes.
  CHECK_FALSE(tensor_nbytes(DType::F32, {1 << 30, 1 << 30, 1 << 30}).is_ok());
  CHECK_FALSE(tensor_nbytes(DType::F32, {-1}).is_ok());
}

TEST_CASE("wrong shapes in a model file are reported by name", "[format][bad]") {
  Config c = small_config();
  Params p = random_params(c, 2);
  p.encoder[0].attn.q.resize(10);  // corrupt one tensor's element count
  WriteOptions o;
  auto w = build_needle(p, c, o);
  REQUIRE_FALSE(w.is_ok());
  CHECK_THAT(w.message(), Catch::Contains("encoder/layers/0/self_attn/q_proj/kernel"));
}
