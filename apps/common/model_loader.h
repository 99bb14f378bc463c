// Loading a model and its tokenizer the same way in every tool.
#pragma once
#include <memory>
#include <string>

#include "common/cli.h"
#include "model/engine.h"
#include "text/tokenizer.h"

namespace needle::app {

struct LoadedModel {
  std::string path;
  Model model;  // the mapping the weights point into
  std::shared_ptr<const EngineWeights> weights;
  text::Tokenizer tokenizer;
};

// Resolves -m / NEEDLE_MODEL / the shipped default, maps and validates the file, and loads
// the tokenizer from `tokenizer_path` when given, else from the file's embedded copy.
Result<std::unique_ptr<LoadedModel>> load_model_and_tokenizer(const CommonOptions& opt,
                                                              const std::string& tokenizer_path = "");

}  // namespace needle::app
