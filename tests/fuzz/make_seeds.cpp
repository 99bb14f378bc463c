// Writes the generated seed inputs for tests/fuzz/corpus: tiny .needle files (one per weight
// type, one with the test tokenizer embedded) and a tiny pickle checkpoint of the same model.
// Usage: fuzz_make_seeds CORPUS_DIR (writes CORPUS_DIR/needle_file/* and CORPUS_DIR/pickle/*).
#include <cstdio>
#include <fstream>
#include <iterator>
#include <random>
#include <string>

#include "model/model_io.h"

using namespace needle;

namespace {

Config tiny_config() {
  Config c;
  c.vocab_size = 8;
  c.d_model = 8;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  c.num_encoder_layers = 1;
  c.num_decoder_layers = 1;
  c.contrastive_dim = 4;
  c.max_seq_len = 16;
  return c;
}

bool write(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  return static_cast<bool>(f);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fuzz_make_seeds CORPUS_DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  const Config c = tiny_config();
  Params p = zero_params(c);
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.0f, 0.5f);
  for_each_tensor(p, c, [&](const TensorSpec&, std::vector<float>& v) {
    for (auto& x : v) x = nd(rng);
  });

  std::ifstream tf(std::string(NEEDLE_TEST_DATA) + "/tiny_tok.model", std::ios::binary);
  std::vector<uint8_t> tok((std::istreambuf_iterator<char>(tf)), std::istreambuf_iterator<char>());

  for (WeightType t : {WeightType::Int4, WeightType::Int8, WeightType::F16, WeightType::F32}) {
    WriteOptions o;
    o.type = t;
    o.source = "fuzz seed";
    if (t == WeightType::Int8) o.tokenizer = tok;
    auto w = build_needle(p, c, o);
    if (!w) {
      std::fprintf(stderr, "fuzz_make_seeds: %s\n", w.message().c_str());
      return 1;
    }
    std::string name = std::string("tiny_") + weight_type_name(t) + (o.tokenizer.empty() ? "" : "_tok") + ".needle";
    if (!write(dir + "/needle_file/" + name, w->serialize())) return 1;
  }

  auto pk = write_pickle_checkpoint(params_to_pickle(p, c));
  if (!pk) {
    std::fprintf(stderr, "fuzz_make_seeds: %s\n", pk.message().c_str());
    return 1;
  }
  if (!write(dir + "/pickle/tiny_p4_f16.pkl", *pk)) return 1;
  return 0;
}
