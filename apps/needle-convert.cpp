// needle-convert: original pickle checkpoints -> .needle, inspection, export back to pickle.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cstring>
#include <map>

#include "common/cli.h"
#include "io/file.h"
#include "io/pickle.h"
#include "model/model_io.h"
#include "text/json.h"
#include "text/tokenizer.h"

using namespace needle;

namespace {

constexpr const char* kTool = "needle-convert";

// Anything that is not a .needle file is read as a pickle (which rejects what it cannot read).
bool is_needle(std::span<const uint8_t> b) {
  return b.size() >= sizeof(kNeedleMagic) && std::memcmp(b.data(), kNeedleMagic, sizeof(kNeedleMagic)) == 0;
}

// Reads IN (.pkl or .needle) into f32 parameters.
Result<std::pair<Params, Config>> read_any(const std::string& in, std::vector<uint8_t>* tokenizer) {
  NEEDLE_ASSIGN(MappedFile f, MappedFile::open(in));
  if (!is_needle(f.bytes())) {
    auto ck = read_pickle_checkpoint(f.bytes());
    if (!ck) return make_error("{}: {}", in, ck.message());
    auto cfg = Config::from_pickle(ck->config);
    if (!cfg) return make_error("{}: {}", in, cfg.message());
    auto p = params_from_pickle(*ck, *cfg);
    if (!p) return make_error("{}: {}", in, p.message());
    return std::pair{std::move(p).value(), *cfg};
  }
  NEEDLE_ASSIGN(Model m, load_model(in, /*verify=*/true));
  if (m.quantization == "int4" || m.quantization == "int8")
    spdlog::warn("{} holds {} weights: converting from it re-quantizes already quantized values", in, m.quantization);
  if (tokenizer && tokenizer->empty()) *tokenizer = m.tokenizer;
  NEEDLE_ASSIGN(Params p, to_params(m));
  return std::pair{std::move(p), m.config};
}

json::Value config_json(const Config& c) {
  auto o = json::Value::make_object();
  for (auto& [k, v] : c.to_pickle()) {
    json::Value x;
    if (auto* i = std::get_if<int64_t>(&v)) x = json::Value::from_int(*i);
    else if (auto* d = std::get_if<double>(&v)) x = json::Value::from_double(*d);
    else if (auto* b = std::get_if<bool>(&v)) x = json::Value::from_bool(*b);
    else if (auto* s = std::get_if<std::string>(&v)) x = json::Value::from_string(*s);
    o.set(k, x);
  }
  return o;
}

int info(const std::string& path, bool as_json) {
  auto m = load_model(path, /*verify=*/true);
  if (!m) return app::fail(kTool, m.message());
  int64_t params = 0;
  std::map<std::string, uint64_t> by_dtype;
  auto tensors = json::Value::make_array();
  for (auto& t : m->file.tensors()) {
    params += t.numel();
    by_dtype[std::string(dtype_name(t.dtype))] += t.nbytes;
    auto o = json::Value::make_object();
    o.set("name", json::Value::from_string(t.name));
    o.set("dtype", json::Value::from_string(std::string(dtype_name(t.dtype))));
    auto shape = json::Value::make_array();
    for (auto s : t.shape) shape.array.push_back(json::Value::from_int(s));
    o.set("shape", shape);
    o.set("bytes", json::Value::from_int((int64_t)t.nbytes));
    tensors.array.push_back(o);
  }
  if (as_json) {
    auto o = json::Value::make_object();
    o.set("file", json::Value::from_string(path));
    o.set("version", json::Value::from_string(fmt::format("{}.{}", m->file.version_major(), m->file.version_minor())));
    o.set("params", json::Value::from_int(params));
    o.set("quantization", json::Value::from_string(m->quantization));
    o.set("tokenizer", json::Value::from_bool(!m->tokenizer.empty()));
    o.set("file_bytes", json::Value::from_int((int64_t)m->file.file_size()));
    o.set("data_crc32", json::Value::from_int((int64_t)m->file.data_crc()));
    auto bd = json::Value::make_object();
    for (auto& [k, v] : by_dtype) bd.set(k, json::Value::from_int((int64_t)v));
    o.set("bytes_by_dtype", bd);
    o.set("config", config_json(m->config));
    o.set("tensors", tensors);
    fmt::print("{}\n", json::dump_compact(o));
    return app::kOk;
  }
  fmt::print("file:         {} ({} bytes, format {}.{})\n", path, m->file.file_size(), m->file.version_major(),
             m->file.version_minor());
  fmt::print("params:       {}\n", params);
  fmt::print("data crc32:   {:08x}\n", m->file.data_crc());
  fmt::print("quantization: {}\n", m->quantization);
  fmt::print("tokenizer:    {}\n", m->tokenizer.empty() ? "none" : fmt::format("{} bytes", m->tokenizer.size()));
  fmt::print("config:       {}\n", json::dump_compact(config_json(m->config)));
  for (auto& [k, v] : by_dtype) fmt::print("bytes {:5}:  {}\n", k, v);
  fmt::print("tensors ({}):\n", m->file.tensors().size());
  for (auto& t : m->file.tensors())
    fmt::print("  {:<55} {:>5} {:>14} {:>10}\n", t.name, dtype_name(t.dtype), shape_str(t.shape), t.nbytes);
  return app::kOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "needle-convert: convert original Needle checkpoints (needle.pkl) to the .needle format, inspect .needle files, "
      "and export them back to the original pickle layout.\n\n"
      "  needle-convert IN.pkl -o OUT.needle [--type int4|int8|f16|f32] [--tokenizer needle.model]\n"
      "  needle-convert --info FILE.needle [--json]\n"
      "  needle-convert FILE.needle --export-pkl OUT.pkl\n"
      "  needle-convert --verify FILE.needle",
      kTool};
  app::CommonOptions common;
  app::add_common_options(app, common, /*with_model=*/false);
  std::string input, output, export_pkl, tokenizer_path, type_name = "int4";
  bool show_info = false, as_json = false, verify = false;
  app.add_option("input", input, "Input checkpoint: .pkl (original) or .needle");
  app.add_option("-o,--output", output, "Output .needle file");
  app.add_option("--type", type_name, "Weight storage: int4 (default), int8, f16 or f32")
      ->check(CLI::IsMember({"int4", "int8", "f16", "f32"}));
  app.add_option("--tokenizer", tokenizer_path, "SentencePiece model to embed (needle.model)");
  app.add_flag("--info", show_info, "Print the config, tensors, parameter count and bytes by dtype");
  app.add_flag("--json", as_json, "With --info: print one JSON object");
  app.add_option("--export-pkl", export_pkl, "Write the original pickle layout (float16 leaves)");
  app.add_flag("--verify", verify, "Check a .needle file's structure and data checksum");
  if (int rc = app::parse(app, argc, argv); rc >= 0) return rc;
  app::init_logging(common);

  if (input.empty()) return app::fail(kTool, "no input file given (see --help)");
  if (show_info) return info(input, as_json);
  if (verify) {
    auto m = load_model(input, /*verify=*/true);
    if (!m) return app::fail(kTool, m.message());
    fmt::print("{}: OK ({} tensors, checksums match)\n", input, m->file.tensors().size());
    return app::kOk;
  }
  if (output.empty() && export_pkl.empty()) return app::fail(kTool, "nothing to do: give -o OUT.needle or --export-pkl OUT.pkl");

  WriteOptions wo;
  if (!tokenizer_path.empty()) {
    auto tok = read_file(tokenizer_path, 64u << 20);
    if (!tok) return app::fail(kTool, tok.message());
    wo.tokenizer = std::move(tok).value();
    if (wo.tokenizer.empty()) return app::fail(kTool, fmt::format("--tokenizer {}: the file is empty", tokenizer_path));
  }
  auto in = read_any(input, &wo.tokenizer);
  if (!in) return app::fail(kTool, in.message());
  auto& [params, cfg] = *in;

  if (!output.empty()) {
    // A tokenizer that would not load, or does not fit the vocabulary, would make the output
    // unusable by every other tool: refuse it now rather than write it.
    if (!wo.tokenizer.empty()) {
      const std::string from = tokenizer_path.empty() ? input + ": embedded tokenizer" : "--tokenizer " + tokenizer_path;
      auto tok = text::Tokenizer::from_bytes(std::span<const uint8_t>(wo.tokenizer));
      if (!tok) return app::fail(kTool, fmt::format("{}: {}", from, tok.message()));
      if (tok->vocab_size() != cfg.vocab_size)
        return app::fail(kTool, fmt::format("{}: tokenizer has {} pieces but the model's vocabulary is {}", from,
                                            tok->vocab_size(), cfg.vocab_size));
    }
    wo.type = *weight_type_from_name(type_name);
    wo.source = input;
    if (auto st = save_needle(output, params, cfg, wo); !st) return app::fail(kTool, st.message(), app::kRuntimeError);
    spdlog::info("wrote {} ({}, {} parameters)", output, type_name, param_count(cfg));
  }
  if (!export_pkl.empty()) {
    auto bytes = write_pickle_checkpoint(params_to_pickle(params, cfg));
    if (!bytes) return app::fail(kTool, bytes.message(), app::kRuntimeError);
    if (auto st = write_file_atomic(export_pkl, *bytes); !st) return app::fail(kTool, st.message(), app::kRuntimeError);
    spdlog::info("wrote {}", export_pkl);
  }
  return app::kOk;
}
