#include "model/model_io.h"

#include <cstring>
#include <map>

#include "nk/quant.h"

namespace needle {
namespace {

std::vector<uint8_t> as_bytes(const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * 4);
  if (!v.empty()) std::memcpy(b.data(), v.data(), b.size());
  return b;
}

// Encodes f32 values of a tensor with `shape` as `dt` (quantized: rows of the last axis).
Result<std::vector<uint8_t>> encode(const std::vector<float>& v, const std::vector<int64_t>& shape, DType dt) {
  switch (dt) {
    case DType::F32: return as_bytes(v);
    case DType::F16:
    case DType::BF16: {
      std::vector<uint8_t> b(v.size() * 2);
      for (size_t i = 0; i < v.size(); ++i) {
        uint16_t h = dt == DType::F16 ? f32_to_f16(v[i]) : f32_to_bf16(v[i]);
        std::memcpy(b.data() + 2 * i, &h, 2);
      }
      return b;
    }
    case DType::Q4:
    case DType::Q8: {
      const size_t cols = (size_t)shape.back(), rows = cols ? v.size() / cols : 0;
      const size_t nb = nk::blocks_per_row(cols);
      NEEDLE_ASSIGN(uint64_t total, tensor_nbytes(dt, shape));
      std::vector<uint8_t> b(total);
      for (size_t r = 0; r < rows; ++r) {
        if (dt == DType::Q4)
          nk::quantize_row_q4(v.data() + r * cols, reinterpret_cast<nk::BlockQ4*>(b.data()) + r * nb, cols);
        else
          nk::quantize_row_q8(v.data() + r * cols, reinterpret_cast<nk::BlockQ8*>(b.data()) + r * nb, cols);
      }
      return b;
    }
    case DType::I32: break;
  }
  return make_error("cannot store weights as {}", dtype_name(dt));
}

}  // namespace

Result<Params> params_from_pickle(const PickleCheckpoint& ck, const Config& c) {
  std::map<std::string, const HostTensor*> leaves;
  for (auto& [path, t] : ck.params) leaves[path] = &t;
  std::map<std::string, std::vector<float>> cache;  // stacked leaves converted once
  Params p;
  p.resize(c);
  Status st;
  for_each_tensor(p, c, [&](const TensorSpec& s, std::vector<float>& dst) {
    if (!st) return;
    auto it = leaves.find(s.pickle_path);
    if (it == leaves.end()) {
      st = make_error("checkpoint lacks tensor '{}'", s.pickle_path);
      return;
    }
    const HostTensor& t = *it->second;
    std::vector<int64_t> want = s.pickle_shape();
    if (s.layer >= 0)  // stacked leaf: (layers, ...)
      want.insert(want.begin(), s.pickle_path.rfind("encoder/", 0) == 0 ? c.num_encoder_layers : c.num_decoder_layers);
    if (t.shape != want) {
      st = make_error("tensor '{}' has shape {}, expected {} for this config", s.pickle_path, shape_str(t.shape),
                      shape_str(want));
      return;
    }
    auto [pos, fresh] = cache.try_emplace(s.pickle_path);
    if (fresh) {
      auto vals = t.to_f32();
      if (!vals) {
        st = make_error("tensor '{}': {}", s.pickle_path, vals.message());
        return;
      }
      pos->second = std::move(vals).value();
    }
    const std::vector<float>& all = pos->second;
    int64_t per = 1;
    for (auto d : s.shape) per *= d;
    const size_t base = s.layer < 0 ? 0 : (size_t)s.layer * (size_t)per;
    dst.resize((size_t)per);
    if (s.role == Role::Kernel) {  // pickle (in, out) -> [out, in]
      const int64_t out = s.shape[0], in = s.shape[1];
      for (int64_t i = 0; i < in; ++i)
        for (int64_t o = 0; o < out; ++o) dst[(size_t)(o * in + i)] = all[base + (size_t)(i * out + o)];
    } else {
      std::copy(all.begin() + (ptrdiff_t)base, all.begin() + (ptrdiff_t)(base + (size_t)per), dst.begin());
    }
  });
  if (!st) return st.error();
  return p;
}

PickleCheckpoint params_to_pickle(const Params& p, const Config& c) {
  PickleCheckpoint ck;
  ck.config = c.to_pickle();
  std::map<std::string, size_t> index;
  Params& mp = const_cast<Params&>(p);  // for_each_tensor takes a mutable model; nothing is written
  for_each_tensor(mp, c, [&](const TensorSpec& s, std::vector<float>& src) {
    std::vector<int64_t> pshape = s.pickle_shape();
    int64_t per = 1;
    for (auto d : pshape) per *= d;
    std::vector<float> vals((size_t)per);
    if (s.role == Role::Kernel) {
      const int64_t out = s.shape[0], in = s.shape[1];
      for (int64_t i = 0; i < in; ++i)
        for (int64_t o = 0; o < out; ++o) vals[(size_t)(i * out + o)] = src[(size_t)(o * in + i)];
    } else {
      vals = src;
    }
    auto it = index.find(s.pickle_path);
    if (it == index.end()) {
      std::vector<int64_t> shape = pshape;
      if (s.layer >= 0) shape.insert(shape.begin(), 1);
      index[s.pickle_path] = ck.params.size();
      ck.params.emplace_back(s.pickle_path, HostTensor::from_f32(shape, vals));
    } else {  // next layer of a stacked leaf
      HostTensor& t = ck.params[it->second].second;
      t.shape[0] += 1;
      const size_t old = t.data.size();
      t.data.resize(old + vals.size() * 4);
      std::memcpy(t.data.data() + old, vals.data(), vals.size() * 4);
    }
  });
  return ck;
}

Result<WeightType> weight_type_from_name(const std::string& s) {
  if (s == "int4") return WeightType::Int4;
  if (s == "int8") return WeightType::Int8;
  if (s == "f16") return WeightType::F16;
  if (s == "f32") return WeightType::F32;
  return make_error("unknown weight type '{}' (expected int4, int8, f16 or f32)", s);
}

const char* weight_type_name(WeightType t) {
  switch (t) {
    case WeightType::Int4: return "int4";
    case WeightType::Int8: return "int8";
    case WeightType::F16: return "f16";
    case WeightType::F32: return "f32";
  }
  return "?";
}

DType storage_dtype(Role role, WeightType t) {
  if (role == Role::Kernel) {
    switch (t) {
      case WeightType::Int4: return DType::Q4;
      case WeightType::Int8: return DType::Q8;
      case WeightType::F16: return DType::F16;
      case WeightType::F32: return DType::F32;
    }
  }
  if (role == Role::Embedding) {
    switch (t) {
      case WeightType::Int4:
      case WeightType::Int8: return DType::Q8;
      case WeightType::F16: return DType::F16;
      case WeightType::F32: return DType::F32;
    }
  }
  return DType::F32;
}

Result<NeedleWriter> build_needle(const Params& p, const Config& c, const WriteOptions& opt) {
  NEEDLE_TRY(c.validate());
  NeedleWriter w;
  c.to_meta(w);
  if (!opt.tokenizer.empty()) w.set_meta("tokenizer.model", MetaBytes(opt.tokenizer));
  w.set_meta("provenance.converter", std::string(kConverterVersion));
  w.set_meta("provenance.source", opt.source);
  w.set_meta("provenance.quantization", std::string(weight_type_name(opt.type)));
  Status st;
  Params& mp = const_cast<Params&>(p);  // visited read-only
  for_each_tensor(mp, c, [&](const TensorSpec& s, std::vector<float>& v) {
    if (!st) return;
    int64_t per = 1;
    for (auto d : s.shape) per *= d;
    if ((int64_t)v.size() != per) {
      st = make_error("tensor '{}' has {} values, expected {}", s.name, v.size(), per);
      return;
    }
    DType dt = storage_dtype(s.role, opt.type);
    auto bytes = encode(v, s.shape, dt);
    if (!bytes) {
      st = bytes.error();
      return;
    }
    st = w.add_tensor(s.name, dt, s.shape, std::move(bytes).value());
  });
  if (!st) return st.error();
  return w;
}

Status save_needle(const std::string& path, const Params& p, const Config& c, const WriteOptions& opt) {
  NEEDLE_ASSIGN(NeedleWriter w, build_needle(p, c, opt));
  return w.write(path);
}

Result<Model> model_from_file(NeedleFile file) {
  Model m;
  NEEDLE_ASSIGN(m.config, Config::from_meta(file));
  m.file = std::move(file);
  if (auto* tok = m.file.meta("tokenizer.model"))
    if (auto* b = std::get_if<MetaBytes>(tok)) m.tokenizer = *b;
  if (auto* q = m.file.meta("provenance.quantization"))
    if (auto* s = std::get_if<std::string>(q)) m.quantization = *s;
  m.tensors.resize(m.config);
  Status st;
  for_each_tensor(m.tensors, m.config, [&](const TensorSpec& s, TensorView& t) {
    if (!st) return;
    const TensorView* f = m.file.tensor(s.name);
    if (!f) {
      st = make_error("model file lacks tensor '{}'", s.name);
      return;
    }
    if (f->shape != s.shape) {
      st = make_error("tensor '{}' has shape {}, expected {}", s.name, shape_str(f->shape), shape_str(s.shape));
      return;
    }
    const bool small = s.role != Role::Kernel && s.role != Role::Embedding;
    if (small && f->dtype != DType::F32) {
      st = make_error("tensor '{}' is {}, expected f32", s.name, dtype_name(f->dtype));
      return;
    }
    if (f->dtype == DType::I32) {
      st = make_error("tensor '{}' has integer dtype", s.name);
      return;
    }
    t = *f;
  });
  if (!st) return st.error();
  return m;
}

Result<Model> load_model(const std::string& path, bool verify) {
  NEEDLE_ASSIGN(NeedleFile f, NeedleFile::open(path, verify));
  auto m = model_from_file(std::move(f));
  if (!m) return make_error("{}: {}", path, m.message());
  return m;
}

Result<std::vector<float>> tensor_to_f32(const TensorView& t) {
  const size_t n = (size_t)t.numel();
  std::vector<float> out(n);
  switch (t.dtype) {
    case DType::F32: std::memcpy(out.data(), t.data, n * 4); return out;
    case DType::F16:
    case DType::BF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, t.data + 2 * i, 2);
        out[i] = t.dtype == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
      }
      return out;
    case DType::Q4:
    case DType::Q8: {
      const size_t cols = (size_t)t.shape.back(), rows = cols ? n / cols : 0, nb = nk::blocks_per_row(cols);
      for (size_t r = 0; r < rows; ++r) {
        if (t.dtype == DType::Q4) {
          std::vector<nk::BlockQ4> blk(nb);  // copy: file data need not be aligned for the struct
          std::memcpy(blk.data(), t.data + r * nb * sizeof(nk::BlockQ4), nb * sizeof(nk::BlockQ4));
          nk::dequantize_row_q4(blk.data(), out.data() + r * cols, cols);
        } else {
          std::vector<nk::BlockQ8> blk(nb);
          std::memcpy(blk.data(), t.data + r * nb * sizeof(nk::BlockQ8), nb * sizeof(nk::BlockQ8));
          nk::dequantize_row_q8(blk.data(), out.data() + r * cols, cols);
        }
      }
      return out;
    }
    case DType::I32: break;
  }
  return make_error("tensor '{}' cannot be read as f32", t.name);
}

Result<Params> to_params(const Model& m) {
  Params p;
  p.resize(m.config);
  Status st;
  ModelT<TensorView>& views = const_cast<ModelT<TensorView>&>(m.tensors);
  size_t idx = 0;
  std::vector<const TensorView*> flat;
  for_each_tensor(views, m.config, [&](const TensorSpec&, TensorView& t) { flat.push_back(&t); });
  for_each_tensor(p, m.config, [&](const TensorSpec&, std::vector<float>& dst) {
    if (!st) return;
    auto v = tensor_to_f32(*flat[idx++]);
    if (!v) st = v.error();
    else dst = std::move(v).value();
  });
  if (!st) return st.error();
  return p;
}

std::vector<TensorSpec> model_specs(const Config& c) {
  Params p;
  p.resize(c);
  std::vector<TensorSpec> out;
  for_each_tensor(p, c, [&](const TensorSpec& s, std::vector<float>&) { out.push_back(s); });
  return out;
}

Params zero_params(const Config& c) {
  Params p;
  p.resize(c);
  for_each_tensor(p, c, [&](const TensorSpec& s, std::vector<float>& v) {
    int64_t n = 1;
    for (auto d : s.shape) n *= d;
    v.assign((size_t)n, 0.0f);
  });
  return p;
}

int64_t param_count(const Config& c) {
  int64_t total = 0;
  for (auto& s : model_specs(c)) {
    int64_t n = 1;
    for (auto d : s.shape) n *= d;
    total += n;
  }
  return total;
}

}  // namespace needle
