#include "common/model_loader.h"

#include <spdlog/spdlog.h>

namespace needle::app {

Result<std::unique_ptr<LoadedModel>> load_model_and_tokenizer(const CommonOptions& opt,
                                                              const std::string& tokenizer_path) {
  NEEDLE_ASSIGN(std::string path, resolve_model(opt));
  auto lm = std::make_unique<LoadedModel>();
  lm->path = path;
  NEEDLE_ASSIGN(lm->model, load_model(path));
  NEEDLE_ASSIGN(lm->weights, prepare_weights(lm->model));
  if (!tokenizer_path.empty()) {
    NEEDLE_ASSIGN(lm->tokenizer, text::Tokenizer::from_file(tokenizer_path));
  } else if (!lm->model.tokenizer.empty()) {
    auto t = text::Tokenizer::from_bytes(std::span<const uint8_t>(lm->model.tokenizer));
    if (!t) return make_error("{}: embedded tokenizer: {}", path, t.message());
    lm->tokenizer = std::move(t).value();
  } else {
    return make_error("{} embeds no tokenizer: pass --tokenizer needle.model (or convert with --tokenizer)", path);
  }
  if (lm->tokenizer.vocab_size() != lm->model.config.vocab_size)
    return make_error("tokenizer has {} pieces but {} has a vocabulary of {}", lm->tokenizer.vocab_size(), path,
                      lm->model.config.vocab_size);
  spdlog::debug("loaded {} ({} params config d={} enc={} dec={}, {})", path, param_count(lm->model.config),
                lm->model.config.d_model, lm->model.config.num_encoder_layers, lm->model.config.num_decoder_layers,
                lm->model.quantization);
  return lm;
}

}  // namespace needle::app
