// Model files: original pickle checkpoints <-> f32 parameters <-> .needle files.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "io/needle_file.h"
#include "io/pickle.h"
#include "model/config.h"
#include "model/weights.h"

namespace needle {

constexpr const char* kConverterVersion = "needle-convert " NEEDLE_VERSION;

// Parameters from a pickle checkpoint: every tensor of the spec must be present with the
// right shape (stacked layer axis first); kernels are transposed to [out, in].
Result<Params> params_from_pickle(const PickleCheckpoint& ck, const Config& c);
// The original layout back: stacked layers, kernels (in, out); leaves as f32 here, written
// as float16 by write_pickle_checkpoint.
PickleCheckpoint params_to_pickle(const Params& p, const Config& c);

// How to store a model.
enum class WeightType { Int4, Int8, F16, F32 };
Result<WeightType> weight_type_from_name(const std::string& s);
const char* weight_type_name(WeightType t);

// The dtype each role gets for a weight type (docs/format.md): kernels Q4/Q8/F16/F32; the
// tied embedding Q8 for int4 and int8; norms, gates, biases and scalars always f32.
DType storage_dtype(Role role, WeightType t);

struct WriteOptions {
  WeightType type = WeightType::Int4;
  std::vector<uint8_t> tokenizer;  // SentencePiece model bytes, embedded when non-empty
  std::string source;              // provenance: where the weights came from
};

// Encodes every tensor (quantizing where the type says so) into a writer.
Result<NeedleWriter> build_needle(const Params& p, const Config& c, const WriteOptions& opt);
Status save_needle(const std::string& path, const Params& p, const Config& c, const WriteOptions& opt);

// A mapped, validated model file.
struct Model {
  NeedleFile file;
  Config config;
  ModelT<TensorView> tensors;
  std::vector<uint8_t> tokenizer;  // empty when the file embeds none
  std::string quantization;        // provenance.quantization
};
// Opens a .needle file: checks every tensor of the spec is present with its shape and an
// allowed dtype. `verify` also checks the data checksum.
Result<Model> load_model(const std::string& path, bool verify = false);
Result<Model> model_from_file(NeedleFile file);

// f32 copy of every tensor (dequantizing Q4/Q8: q * d exactly).
Result<Params> to_params(const Model& m);
Result<std::vector<float>> tensor_to_f32(const TensorView& t);

}  // namespace needle
