// read_pickle_checkpoint over arbitrary bytes (untrusted checkpoints). Beyond "no crash": errors
// are one line, and an accepted checkpoint with a runnable small config goes through
// params_from_pickle (shape checks, transposes) and back through the writer.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>

#include "io/pickle.h"
#include "model/model_io.h"

using namespace needle;

namespace {
void check_one_line(const std::string& m) {
  if (m.empty() || m.find('\n') != std::string::npos) {
    std::fprintf(stderr, "error message is not one line: '%s'\n", m.c_str());
    std::abort();
  }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto ck = read_pickle_checkpoint(std::span<const uint8_t>(data, size));
  if (!ck) {
    check_one_line(ck.message());
    return 0;
  }
  auto c = Config::from_pickle(ck->config);
  if (!c) {
    check_one_line(c.message());
    return 0;
  }
  if (!c->validate()) return 0;
  // Only configs whose parameters are small (the spec allocates before it compares shapes).
  const int64_t d = c->d_model, v = c->vocab_size, layers = c->num_encoder_layers + c->num_decoder_layers;
  if (d > 256 || v > 4096 || layers > 8 || c->contrastive_dim > 256 || v * d > (1 << 16)) return 0;
  auto p = params_from_pickle(*ck, *c);
  if (!p) {
    check_one_line(p.message());
    return 0;
  }
  auto back = write_pickle_checkpoint(params_to_pickle(*p, *c));
  if (!back) std::abort();  // a model we accepted must be writable
  return 0;
}
