// The safe pickle reader and the float16 writer: the five real checkpoints (numpy 1/2,
// protocols 4/5, f16/f32/bf16), samples made by numpy in tests/data/bad_pickles, byte-exact
// write-back of the training code's file, and hostile or corrupt input.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <unistd.h>

#include "io/pickle.h"

using namespace needle;
namespace fs = std::filesystem;

namespace {

std::vector<uint8_t> slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

std::string data_path(const std::string& name) { return std::string(NEEDLE_TEST_DATA) + "/" + name; }

Result<PickleCheckpoint> read_bytes(const std::vector<uint8_t>& b) { return read_pickle_checkpoint(b); }

PickleCheckpoint load(const std::string& path) {
  auto bytes = slurp(path);
  REQUIRE(!bytes.empty());
  auto r = read_pickle_checkpoint(bytes);
  INFO(path << ": " << r.message());
  REQUIRE(r);
  return std::move(r).value();
}

std::vector<float> f32(const HostTensor& t) {
  auto r = t.to_f32();
  REQUIRE(r);
  return *r;
}

const HostTensor* find(const PickleCheckpoint& c, const std::string& path) {
  for (const auto& [p, t] : c.params)
    if (p == path) return &t;
  return nullptr;
}

const ScalarValue* find_scalar(const std::vector<std::pair<std::string, ScalarValue>>& v, const std::string& k) {
  for (const auto& [key, s] : v)
    if (key == k) return &s;
  return nullptr;
}

// Same paths in the same order, same shapes, same values as f32 (with `b` rounded to
// bfloat16 first when `as_bf16`: the bf16 fixture holds the f16 values rounded to bf16).
void require_same_params(const PickleCheckpoint& a, const PickleCheckpoint& b, bool as_bf16 = false) {
  REQUIRE(a.params.size() == b.params.size());
  for (size_t i = 0; i < a.params.size(); ++i) {
    INFO(a.params[i].first);
    REQUIRE(a.params[i].first == b.params[i].first);
    REQUIRE(a.params[i].second.shape == b.params[i].second.shape);
    std::vector<float> want = f32(b.params[i].second);
    if (as_bf16)
      for (float& x : want) x = bf16_to_f32(f32_to_bf16(x));
    REQUIRE(f32(a.params[i].second) == want);
  }
}

// The error is one line, names an offset, and starts with "pickle".
void require_clean_error(const Result<PickleCheckpoint>& r) {
  REQUIRE(!r);
  CHECK(r.message().find('\n') == std::string::npos);
  CHECK(r.message().rfind("pickle", 0) == 0);
  CHECK(r.message().find("offset") != std::string::npos);
}

void require_error(const std::vector<uint8_t>& bytes, const std::string& needle_text) {
  auto r = read_pickle_checkpoint(bytes);
  INFO("message: " << r.message());
  require_clean_error(r);
  CHECK(r.message().find(needle_text) != std::string::npos);
}

// A small pickle assembler for hand-made inputs.
struct Asm {
  std::vector<uint8_t> b{0x80, 4};
  Asm& op(uint8_t c) { b.push_back(c); return *this; }
  Asm& raw(std::string_view s) { b.insert(b.end(), s.begin(), s.end()); return *this; }
  Asm& le(uint64_t v, int width) {
    for (int k = 0; k < width; ++k) b.push_back(static_cast<uint8_t>(v >> (8 * k)));
    return *this;
  }
  Asm& str(std::string_view s) { op(0x8c).le(s.size(), 1); return raw(s); }
  Asm& bytes(const std::vector<uint8_t>& d) { op(0x8e).le(d.size(), 8); b.insert(b.end(), d.begin(), d.end()); return *this; }
  Asm& integer(int64_t v) { return op(0x8a).le(8, 1).le(static_cast<uint64_t>(v), 8); }  // LONG1, 8 bytes
  Asm& global(std::string_view m, std::string_view n) { return str(m).str(n).op(0x93); }
  // An ndarray as numpy's __reduce__ pickles it; `code` like "f2", `order` '<' or '>'.
  Asm& ndarray(const std::vector<int64_t>& shape, std::string_view code, const std::vector<uint8_t>& data,
               bool fortran = false, std::string_view order = "<") {
    global("numpy.core.multiarray", "_reconstruct").global("numpy", "ndarray");
    integer(0).op(0x85).op('C').le(1, 1).raw("b").op(0x87).op('R');
    op('(').integer(1).op('(');
    for (int64_t d : shape) integer(d);
    op('t');
    global("numpy", "dtype").str(code).op(0x89).op(0x88).op(0x87).op('R');
    op('(').integer(3).str(order).op('N').op('N').op('N').integer(-1).integer(-1).integer(0).op('t').op('b');
    op(fortran ? 0x88 : 0x89).bytes(data).op('t').op('b');
    return *this;
  }
  std::vector<uint8_t> done() { b.push_back('.'); return b; }
};


// A small checkpoint touching every writer path: 4-d shape, 0-d, a tensor over 64 KiB
// (written outside frames), every scalar kind, an extra key.
PickleCheckpoint synthetic() {
  PickleCheckpoint c;
  std::vector<float> w(120), big(70000);
  for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(i) / 8 - 7;
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<float>(i % 2048) / 1024 - 1;
  c.params.emplace_back("enc/w", HostTensor::from_f32({2, 3, 4, 5}, w));
  c.params.emplace_back("enc/b", HostTensor::from_f32({70000}, big));
  c.params.emplace_back("log_temp", HostTensor::from_f16_bits({}, {f32_to_f16(0.5f)}));
  c.config = {{"vocab", int64_t{8192}}, {"big", int64_t{1} << 40}, {"neg", int64_t{-5}},
              {"theta", 10000.0},       {"name", std::string("na\xc3\xafve")},  // "naïve"
              {"flag", true},           {"none", std::monostate{}},
              {"min", INT64_MIN},       {"max", INT64_MAX},
              {"m40", -(int64_t{1} << 40)}, {"m31", int64_t{INT32_MIN} - 1}, {"p31", int64_t{1} << 31}};
  c.extra = {{"pretrain_step", int64_t{1234}}};
  return c;
}

bool python_with_numpy() {
  return std::system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") == 0;
}

fs::path temp_dir() {
  fs::path d = fs::temp_directory_path() / ("needle_pickle_test_" + std::to_string(getpid()));
  fs::create_directories(d);
  return d;
}

void write_file(const fs::path& p, const std::vector<uint8_t>& b) {
  std::ofstream f(p, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

}  // namespace

TEST_CASE("pickle: the four tiny checkpoints hold the same values", "[pickle]") {
  PickleCheckpoint np1 = load(data_path("tiny_np1_f16.pkl"));
  REQUIRE(np1.params.size() == 31);
  for (const auto& [p, t] : np1.params) CHECK(t.dtype == DType::F16);
  const HostTensor* emb = find(np1, "embedding/embedding");
  REQUIRE(emb);
  CHECK(emb->shape == std::vector<int64_t>{1000, 64});
  CHECK(f32(*emb)[0] == f16_to_f32(f32_to_f16(-0.04547f)));
  const HostTensor* lt = find(np1, "log_temp");
  REQUIRE(lt);
  CHECK(lt->shape.empty());
  CHECK(f32(*lt) == std::vector<float>{0.300048828125f});
  REQUIRE(find(np1, "encoder/layers/EncoderBlock_0/self_attn/k_proj/kernel"));
  CHECK(find(np1, "encoder/layers/EncoderBlock_0/self_attn/k_proj/kernel")->shape ==
        std::vector<int64_t>{2, 64, 32});
  REQUIRE(np1.config.size() == 11);
  CHECK(np1.config[0] == std::pair<std::string, ScalarValue>{"vocab_size", int64_t{1000}});
  CHECK(*find_scalar(np1.config, "d_model") == ScalarValue{int64_t{64}});
  CHECK(*find_scalar(np1.config, "dtype") == ScalarValue{std::string("bfloat16")});
  CHECK(np1.extra.empty());

  struct Variant {
    const char* file;
    DType dtype;
  };
  for (auto v : {Variant{"tiny_np2_f16.pkl", DType::F16}, Variant{"tiny_np2_f32_p5.pkl", DType::F32},
                 Variant{"tiny_bf16.pkl", DType::BF16}}) {
    INFO(v.file);
    PickleCheckpoint c = load(data_path(v.file));
    for (const auto& [p, t] : c.params) CHECK(t.dtype == v.dtype);
    require_same_params(c, np1, v.dtype == DType::BF16);
    CHECK(c.config == np1.config);
    if (std::string(v.file) == "tiny_bf16.pkl") {
      REQUIRE(c.extra.size() == 1);
      CHECK(c.extra[0] == std::pair<std::string, ScalarValue>{"pretrain_step", int64_t{1234}});
    } else {
      CHECK(c.extra.empty());
    }
  }
}

TEST_CASE("pickle: the writer reproduces the training code's file byte for byte", "[pickle]") {
  auto original = slurp(data_path("tiny_np1_f16.pkl"));
  auto written = write_pickle_checkpoint(load(data_path("tiny_np1_f16.pkl")));
  REQUIRE(written);
  CHECK(*written == original);
  // numpy 2 module paths and protocol 5 f32 are written back in the numpy 1 f16 layout.
  for (const char* f : {"tiny_np2_f16.pkl", "tiny_np2_f32_p5.pkl"}) {
    auto w = write_pickle_checkpoint(load(data_path(f)));
    REQUIRE(w);
    CHECK(*w == original);
  }
  // bf16 leaves become f16 (these bf16 values are all exact in f16); the extra key stays.
  auto bf = load(data_path("tiny_bf16.pkl"));
  auto w = write_pickle_checkpoint(bf);
  REQUIRE(w);
  auto back = read_bytes(*w);
  REQUIRE(back);
  for (const auto& [p, t] : back->params) CHECK(t.dtype == DType::F16);
  require_same_params(*back, bf);
  CHECK(back->config == bf.config);
  CHECK(back->extra == bf.extra);
}

TEST_CASE("pickle: write then read round-trips a checkpoint", "[pickle]") {
  PickleCheckpoint c = synthetic();
  auto w = write_pickle_checkpoint(c);
  REQUIRE(w);
  auto r = read_bytes(*w);
  INFO(r.message());
  REQUIRE(r);
  require_same_params(*r, c);  // values chosen to be exact in f16
  for (const auto& [p, t] : r->params) CHECK(t.dtype == DType::F16);
  CHECK(r->config == c.config);
  CHECK(r->extra == c.extra);

  // Many config keys: SETITEMS batches of 1000, LONG_BINGET-free but long memo.
  PickleCheckpoint many;
  many.params.emplace_back("x", HostTensor::from_f32({1}, {1.0f}));
  for (int i = 0; i < 2500; ++i) many.config.emplace_back(fmt::format("k{}", i), int64_t{i} * 1000003);
  auto w2 = write_pickle_checkpoint(many);
  REQUIRE(w2);
  auto r2 = read_bytes(*w2);
  REQUIRE(r2);
  CHECK(r2->config == many.config);
}

TEST_CASE("pickle: the writer rejects checkpoints it cannot express", "[pickle]") {
  auto err = [](const PickleCheckpoint& c) { return write_pickle_checkpoint(c).message(); };
  PickleCheckpoint c;
  c.params.emplace_back("a/b", HostTensor::from_f32({1}, {1.0f}));
  c.params.emplace_back("a", HostTensor::from_f32({1}, {1.0f}));
  CHECK(err(c).find("prefix") != std::string::npos);
  c.params = {{"a//b", HostTensor::from_f32({1}, {1.0f})}};
  CHECK(err(c).find("empty component") != std::string::npos);
  c.params = {{"a", HostTensor::from_f32({1}, {1.0f})}, {"a", HostTensor::from_f32({1}, {1.0f})}};
  CHECK(!err(c).empty());
  c.params = {{"a", HostTensor{DType::F16, {3}, {0, 0}}}};
  CHECK(err(c).find("bytes of data") != std::string::npos);
  c.params = {{"a", HostTensor::from_f32({1}, {1.0f})}};
  c.extra = {{"config", int64_t{1}}};
  CHECK(err(c).find("collides") != std::string::npos);
}

TEST_CASE("pickle: numpy-made variants (protocols 2/3/5, Fortran order, big-endian, f64)", "[pickle]") {
  std::vector<float> w = {-1, -0.5f, 0, 0.5f, 1, 1.5f}, v(24);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i) * 0.25f;
  for (const char* f : {"good_p2_f16.pkl", "good_p3_f16.pkl", "good_p5_f32_fortran.pkl",
                        "good_p4_bigendian_fortran.pkl", "good_p4_f64_ordered.pkl"}) {
    INFO(f);
    PickleCheckpoint c = load(data_path(std::string("bad_pickles/") + f));
    REQUIRE(c.params.size() == 4);
    CHECK(c.params[0].first == "w");
    CHECK(c.params[0].second.shape == std::vector<int64_t>{2, 3});
    CHECK(f32(c.params[0].second) == w);
    CHECK(c.params[1].first == "v");
    CHECK(c.params[1].second.shape == std::vector<int64_t>{2, 3, 4});
    CHECK(f32(c.params[1].second) == v);
    CHECK(c.params[2].first == "b/c");
    CHECK(f32(c.params[2].second) == std::vector<float>{1.5f, -2});
    CHECK(c.params[3].first == "t");
    CHECK(c.params[3].second.shape.empty());
    CHECK(f32(c.params[3].second) == std::vector<float>{0.25f});
    std::vector<std::pair<std::string, ScalarValue>> cfg = {
        {"n", int64_t{3}}, {"name", std::string("x")}, {"f", 2.5}, {"flag", true},
        {"none", std::monostate{}}, {"big", int64_t{1} << 40}};
    CHECK(c.config == cfg);
    CHECK(c.extra == std::vector<std::pair<std::string, ScalarValue>>{{"step", int64_t{7}}});
  }
}

TEST_CASE("pickle: the released-size checkpoint", "[pickle][full]") {
  fs::path p = fs::path(NEEDLE_SHARED_FIXTURES) / "checkpoints" / "full_np1_f16.pkl";
  if (!fs::exists(p)) {
    WARN("skipped: " << p << " is not present");
    return;
  }
  auto bytes = slurp(p);
  auto r = read_pickle_checkpoint(bytes);
  INFO(r.message());
  REQUIRE(r);
  int64_t n = 0;
  for (const auto& [path, t] : r->params) n += t.numel();
  CHECK(r->params.size() == 31);
  CHECK(n == 26315421);
  CHECK(find(*r, "embedding/embedding")->shape == std::vector<int64_t>{8192, 512});
  CHECK(*find_scalar(r->config, "num_encoder_layers") == ScalarValue{int64_t{12}});
  auto w = write_pickle_checkpoint(*r);
  REQUIRE(w);
  CHECK(*w == bytes);
}

TEST_CASE("pickle: Python loads what the writer writes", "[pickle][python]") {
  if (!python_with_numpy()) {
    WARN("skipped: /usr/bin/python3 with numpy is not available");
    return;
  }
  fs::path dir = temp_dir();
  auto syn = write_pickle_checkpoint(synthetic());
  REQUIRE(syn);
  write_file(dir / "syn.pkl", *syn);
  auto tiny = write_pickle_checkpoint(load(data_path("tiny_np2_f32_p5.pkl")));
  REQUIRE(tiny);
  write_file(dir / "tiny.pkl", *tiny);
  std::ofstream(dir / "check.py") << R"PY(
import pickle, sys
import numpy as np
d, ref_path, out = sys.argv[1], sys.argv[2], sys.argv[3]
s = pickle.load(open(d + "/syn.pkl", "rb"))
assert set(s) == {"params", "config", "pretrain_step"}, list(s)
w = s["params"]["enc"]["w"]
assert w.dtype == np.float16 and w.shape == (2, 3, 4, 5) and w.flags.c_contiguous
assert (w.astype(np.float32).ravel() == np.arange(120, dtype=np.float32) / 8 - 7).all()
b = s["params"]["enc"]["b"]
assert b.dtype == np.float16 and b.shape == (70000,)
assert (b.astype(np.float32) == (np.arange(70000) % 2048).astype(np.float32) / 1024 - 1).all()
lt = s["params"]["log_temp"]
assert lt.shape == () and lt.dtype == np.float16 and float(lt) == 0.5
assert s["config"] == {"vocab": 8192, "big": 2**40, "neg": -5, "theta": 10000.0, "name": "na\u00efve",
                       "flag": True, "none": None, "min": -2**63, "max": 2**63 - 1, "m40": -2**40,
                       "m31": -2**31 - 1, "p31": 2**31}, s["config"]
assert list(s["config"]) == ["vocab", "big", "neg", "theta", "name", "flag", "none", "min", "max", "m40", "m31", "p31"]
assert s["pretrain_step"] == 1234
t = pickle.load(open(d + "/tiny.pkl", "rb"))
r = pickle.load(open(ref_path, "rb"))
def walk(a, b, p=""):
    assert list(a) == list(b), p
    for k in a:
        if isinstance(a[k], dict):
            walk(a[k], b[k], p + k + "/")
        else:
            assert a[k].dtype == np.float16 and a[k].shape == b[k].shape, p + k
            assert (a[k].astype(np.float32) == b[k].astype(np.float32)).all(), p + k
walk(t["params"], r["params"])
assert list(t) == ["params", "config"] and t["config"] == r["config"]
open(out, "w").write("ok")
)PY";
  std::string cmd = "/usr/bin/python3 " + (dir / "check.py").string() + " " + dir.string() + " " +
                    data_path("tiny_np1_f16.pkl") + " " + (dir / "ok").string();
  int rc = std::system(cmd.c_str());
  CHECK(rc == 0);
  CHECK(fs::exists(dir / "ok"));
  fs::remove_all(dir);
}

TEST_CASE("pickle: hostile samples made by Python are rejected", "[pickle]") {
  struct Case {
    const char* file;
    const char* text;
  };
  for (auto c : {Case{"bad_os_system.pkl", "global 'posix.system' is not allowed"},
                 Case{"bad_eval_p2.pkl", "global '__builtin__.eval' is not allowed"},
                 Case{"bad_subprocess.pkl", "global 'subprocess.Popen' is not allowed"},
                 Case{"bad_object_array.pkl", "object arrays are not supported"},
                 Case{"bad_int_array.pkl", "dtype int32"},
                 Case{"bad_no_params.pkl", "no 'params'"},
                 Case{"bad_set.pkl", "sets are not supported"},
                 Case{"bad_config_list.pkl", "config 'bad' is a list"}}) {
    INFO(c.file);
    require_error(slurp(data_path(std::string("bad_pickles/") + c.file)), c.text);
  }
}

TEST_CASE("pickle: globals outside the allow-list are rejected by name", "[pickle]") {
  auto r = read_bytes(Asm().op('c').raw("os\nsystem\n").str("ls").op(0x85).op('R').done());
  REQUIRE(!r);
  CHECK(r.message() == "pickle: global 'os.system' is not allowed (offset 2)");
  require_error(Asm().global("builtins", "eval").done(), "global 'builtins.eval' is not allowed");
  require_error(Asm().global("posix", "system").done(), "global 'posix.system'");
  require_error(Asm().global("subprocess", "check_output").done(), "global 'subprocess.check_output'");
  require_error(Asm().global("numpy", "load").done(), "global 'numpy.load'");
  require_error(Asm().global("numpy.core.multiarray", "_reconstruct\n").done(), "_reconstruct\\x0a' is not allowed");
  // An allowed global used the wrong way.
  require_error(Asm().global("numpy", "ndarray").op(')').op('R').done(), "ndarray cannot be called");
  require_error(Asm().global("numpy.core.multiarray", "_reconstruct").global("collections", "OrderedDict")
                    .op(')').op('C').le(1, 1).raw("b").op(0x87).op('R').done(),
                "_reconstruct of something other than numpy.ndarray");
  // Opcodes that would build arbitrary objects or reach outside the pickle.
  require_error(Asm().op(')').op(0x81).done(), "builds arbitrary objects");
  require_error(Asm().op('i').raw("os\nsystem\n").done(), "builds arbitrary objects");
  require_error(Asm().op(0x82).le(1, 1).done(), "extension registry");
  require_error(Asm().str("x").op('Q').done(), "persistent IDs");
  require_error(Asm().op(0x97).done(), "out-of-band");
  require_error(Asm().op('I').raw("1\n").done(), "protocol 0/1 opcode 'I'");
  require_error(Asm().op(0xff).done(), "unknown opcode 0xff");
  std::vector<uint8_t> p6 = {0x80, 6, '}', '.'};
  require_error(p6, "unsupported pickle protocol 6");
}

TEST_CASE("pickle: empty, truncated and structurally broken input errors cleanly", "[pickle]") {
  require_error({}, "empty input");
  require_error(Asm().b, "input ends before STOP");
  require_error(Asm().op('.').b, "stack underflow");
  require_error(Asm().op('R').done(), "stack underflow");
  require_error(Asm().op('}').op('s').done(), "stack underflow");
  require_error(Asm().op('(').op('}').op('s').done(), "stack underflow");  // cannot pop across a MARK
  require_error(Asm().op('t').done(), "TUPLE without a MARK");
  require_error(Asm().op('}').op('N').op('a').done(), "APPEND to a dict");
  require_error(Asm().op('}').op(')').op('b').done(), "BUILD on a dict");
  require_error(Asm().op(']').done(), "checkpoint is a list");
  require_error(Asm().op('}').str("params").op(']').op('s').done(), "'params' is a list");
  require_error(Asm().op('}').str("params").op('}').str("w").op('N').op('s').op('s').done(),
                "params entry 'w' is a None");
  require_error(Asm().op('}').str("params").op('}').op(']').op('N').op('s').op('s').done(),
                "dict key of type list");
  require_error(Asm().op(0x8c).le(3, 1).raw("\xff\xfe\xfd").done(), "not valid UTF-8");
  // An array whose data does not match its shape, and one that never got data.
  require_error(Asm().op('}').str("params").op('}').str("w").ndarray({2, 3}, "f2", std::vector<uint8_t>(10))
                    .op('s').op('s').done(),
                "needs 12 bytes, has 10");
  require_error(Asm().op('}').str("params").op('}').str("w").global("numpy.core.multiarray", "_reconstruct")
                    .global("numpy", "ndarray").op(')').op('C').le(1, 1).raw("b").op(0x87).op('R')
                    .op('s').op('s').done(),
                "never given its data");
  // A dtype we do not convert.
  require_error(Asm().op('}').str("params").op('}').str("w").ndarray({2}, "i4", std::vector<uint8_t>(8))
                    .op('s').op('s').done(),
                "dtype int32");

  // Every proper prefix of real pickles fails with a one-line error; none crashes.
  auto small = write_pickle_checkpoint([] {
    PickleCheckpoint c;
    c.params.emplace_back("a/b", HostTensor::from_f32({2, 2}, {1, 2, 3, 4}));
    c.params.emplace_back("t", HostTensor::from_f32({}, {0.5f}));
    c.config = {{"n", int64_t{1} << 40}, {"f", 0.5}, {"s", std::string("x")}, {"b", true}};
    return c;
  }());
  REQUIRE(small);
  std::vector<std::vector<uint8_t>> samples = {*small};
  for (const char* f : {"good_p2_f16.pkl", "good_p5_f32_fortran.pkl", "good_p4_f64_ordered.pkl"})
    samples.push_back(slurp(data_path(std::string("bad_pickles/") + f)));
  for (const auto& s : samples) {
    REQUIRE(read_bytes(s));
    for (size_t n = 0; n < s.size(); ++n) {
      auto r = read_pickle_checkpoint(std::span<const uint8_t>(s.data(), n));
      INFO("prefix " << n << ": " << r.message());
      require_clean_error(r);
    }
  }
  auto tiny = slurp(data_path("tiny_np2_f32_p5.pkl"));
  for (size_t n = 0; n < tiny.size(); n += n < 4096 ? 1 : 4099) {
    auto r = read_pickle_checkpoint(std::span<const uint8_t>(tiny.data(), n));
    INFO("prefix " << n);
    require_clean_error(r);
  }
}

TEST_CASE("pickle: random corruption never crashes", "[pickle]") {
  std::vector<std::vector<uint8_t>> samples;
  auto syn = write_pickle_checkpoint(synthetic());
  REQUIRE(syn);
  syn->resize(std::min<size_t>(syn->size(), 4096));  // keep it fast: the head is what matters
  syn->push_back('.');
  samples.push_back(*syn);
  for (const char* f : {"good_p2_f16.pkl", "good_p3_f16.pkl", "good_p5_f32_fortran.pkl",
                        "good_p4_bigendian_fortran.pkl", "good_p4_f64_ordered.pkl"})
    samples.push_back(slurp(data_path(std::string("bad_pickles/") + f)));
  // NEEDLE_PICKLE_FUZZ_ITERS raises the count for a longer run under the sanitizers.
  const char* env = std::getenv("NEEDLE_PICKLE_FUZZ_ITERS");
  const long iters = env ? std::atol(env) : 6000;
  std::mt19937 rng(20240611);
  size_t ok = 0, failed = 0;
  for (long iter = 0; iter < iters; ++iter) {
    std::vector<uint8_t> s = samples[static_cast<size_t>(iter) % samples.size()];
    int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      size_t at = rng() % s.size();
      switch (rng() % 4) {
        case 0:
        case 1: s[at] ^= static_cast<uint8_t>(1u << (rng() % 8)); break;  // bit flip
        case 2: s[at] = static_cast<uint8_t>(rng()); break;                // random byte
        case 3: s.erase(s.begin() + static_cast<std::ptrdiff_t>(at)); break;  // deletion
      }
      if (s.empty()) s.push_back('.');
    }
    auto r = read_pickle_checkpoint(s);
    if (r) {
      ++ok;
    } else {
      ++failed;
      INFO(r.message());
      REQUIRE(r.message().find('\n') == std::string::npos);
      REQUIRE(r.message().find("offset") != std::string::npos);
    }
  }
  CHECK(failed > 0);
  INFO(ok << " corrupted inputs still parsed");
  SUCCEED();
}

TEST_CASE("pickle: nesting, sizes and memo abuse are bounded", "[pickle]") {
  // Deep MARK nesting.
  Asm marks;
  for (int i = 0; i < 100000; ++i) marks.op('(');
  require_error(marks.done(), "more than 256 nested MARKs");
  // A 3000-deep chain of tuples: nothing recurses, so it is just a wrong top-level type.
  Asm chain;
  chain.op(']');
  for (int i = 0; i < 3000; ++i) chain.op(0x85);
  require_error(chain.done(), "checkpoint is a tuple");
  // Deeply nested dicts under params.
  Asm deep;
  deep.op('}').str("params");
  for (int i = 0; i < 200; ++i) deep.op('}').str("k");
  deep.op('}');
  for (int i = 0; i < 201; ++i) deep.op('s');
  require_error(deep.done(), "nested deeper than 64");
  // A params dict that contains itself.
  require_error(Asm().op('}').str("params").op('}').op(0x94).str("self").op('h').le(0, 1).op('s').op('s').done(),
                "nested deeper than 64");
  // A DAG of dicts that would expand to 2^60 entries.
  Asm dag;
  dag.op('}').str("params").op('}').op(0x94).op('0');  // D0 = {} as memo 0
  for (int i = 1; i <= 60; ++i) {  // Di = {"a": Di-1, "b": Di-1} as memo i
    dag.op('}').op('(').str("a").op('h').le(static_cast<uint64_t>(i - 1), 1).str("b").op('h')
        .le(static_cast<uint64_t>(i - 1), 1).op('u').op(0x94);
    if (i < 60) dag.op('0');
  }
  dag.op('s');
  require_error(dag.done(), "expands beyond its input size");
  // One 64 KiB array referenced by 2000 parameters.
  Asm shared;
  shared.op('}').str("params").op('}');
  shared.op('(').str("p0").ndarray({32768}, "f2", std::vector<uint8_t>(65536)).op(0x94);
  for (int i = 1; i < 2000; ++i) shared.str(fmt::format("p{}", i)).op('j').le(0, 4);
  shared.op('u').op('s');
  require_error(shared.done(), "expands beyond its input size");

  // Lengths far beyond the input.
  require_error(Asm().op(0x8e).le(1000000000000000000ull, 8).done(), "needs 1000000000000000000 bytes");
  require_error(Asm().op(0x8d).le(~0ull, 8).done(), "needs 18446744073709551615 bytes");
  require_error(Asm().op('B').le(0xffffffffu, 4).raw("abc").done(), "needs 4294967295 bytes");
  require_error(Asm().op(0x96).le(1ull << 40, 8).done(), "needs 1099511627776 bytes");
  require_error(Asm().op(0x8b).le(0x7fffffff, 4).done(), "needs 2147483647 bytes");
  require_error(Asm().op(0x95).le(1ull << 60, 8).op('}').done(), "FRAME of 1152921504606846976 bytes");
  require_error(Asm().op(0x8a).le(9, 1).le(0, 8).le(1, 1).done(), "does not fit in 64 bits");
  // Declared shapes far beyond the data.
  require_error(Asm().op('}').str("params").op('}').str("w")
                    .ndarray({1000000000, 1000000000}, "f2", std::vector<uint8_t>(2)).op('s').op('s').done(),
                "needs 2000000000000000000 bytes, has 2");
  require_error(Asm().ndarray({int64_t{1} << 40, int64_t{1} << 40}, "f4", {}).done(), "more than 2^62 elements");
  require_error(Asm().ndarray({int64_t{1} << 61}, "f8", {}).done(), "needs too many bytes");
  require_error(Asm().ndarray({-1}, "f2", {}).done(), "shape holds a non-count");

  // Memo abuse.
  require_error(Asm().op('h').le(5, 1).done(), "memo index 5 was never stored");
  require_error(Asm().op('j').le(0xffffffffu, 4).done(), "memo index 4294967295 was never stored");
  require_error(Asm().op('N').op('r').le(0xffffffffu, 4).done(), "skips ahead");
  require_error(Asm().op(0x94).done(), "stack underflow");
  // Many objects from few bytes: bounded by the memory budget, not by luck.
  Asm objs;
  objs.op('(');
  for (int i = 0; i < 300000; ++i) objs.op('}');
  require_error(objs.done(), "more memory than");
}

TEST_CASE("pickle: bytes after STOP are ignored, as Python does", "[pickle]") {
  auto w = write_pickle_checkpoint(synthetic());
  REQUIRE(w);
  w->push_back(0xff);
  CHECK(read_bytes(*w));
}
