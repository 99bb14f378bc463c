#include "io/needle_file.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <limits>

#include "nk/blocks.h"

namespace needle {
namespace {

constexpr size_t kHeaderSize = 72;
constexpr uint32_t kMaxName = 4096;
constexpr uint32_t kMaxDims = 8;

enum MetaType : uint8_t { kI64 = 0, kF64 = 1, kBool = 2, kString = 3, kBytes = 4 };

// Names are echoed in one-line errors: no control bytes (newlines, escapes) allowed.
bool printable_name(std::span<const uint8_t> b) {
  for (uint8_t c : b)
    if (c < 0x20 || c == 0x7F) return false;
  return true;
}

uint32_t crc32_of(uint32_t crc, std::span<const uint8_t> b) {
  // zlib's crc32_z takes size_t lengths. A null buffer would not be a no-op: zlib returns the
  // initial value for it (an empty vector's data() may be null).
  if (b.empty()) return crc;
  return (uint32_t)crc32_z(crc, b.data(), b.size());
}

// Bounds-checked little-endian reader over a byte range.
struct Cursor {
  std::span<const uint8_t> b;
  size_t pos = 0;
  const char* what;

  Status need(size_t n) const {
    if (n > b.size() - pos) return make_error("{} is truncated (needs {} more bytes at offset {})", what, n, pos);
    return Status::ok();
  }
  template <class T>
  Result<T> get() {
    NEEDLE_TRY(need(sizeof(T)));
    T v;
    std::memcpy(&v, b.data() + pos, sizeof(T));
    pos += sizeof(T);
    return v;
  }
  Result<std::span<const uint8_t>> bytes(uint64_t n) {
    if (n > b.size() - pos) return make_error("{} is truncated (field of {} bytes at offset {})", what, n, pos);
    auto s = b.subspan(pos, (size_t)n);
    pos += (size_t)n;
    return s;
  }
};

template <class T>
void put(std::vector<uint8_t>& out, T v) {
  uint8_t tmp[sizeof(T)];
  std::memcpy(tmp, &v, sizeof(T));
  out.insert(out.end(), tmp, tmp + sizeof(T));
}
void put_bytes(std::vector<uint8_t>& out, const void* p, size_t n) {
  auto* c = static_cast<const uint8_t*>(p);
  out.insert(out.end(), c, c + n);
}

uint64_t align_up(uint64_t x) { return (x + kNeedleAlign - 1) / kNeedleAlign * kNeedleAlign; }

}  // namespace

Result<uint64_t> tensor_nbytes(DType dtype, const std::vector<int64_t>& shape) {
  if (shape.size() > kMaxDims) return make_error("tensor has {} dimensions (at most {})", shape.size(), kMaxDims);
  // Counts are bounded far below 2^62 so products cannot overflow.
  constexpr uint64_t kLimit = uint64_t(1) << 40;
  uint64_t outer = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 0) return make_error("negative dimension {} in shape {}", shape[i], shape_str(shape));
    if (shape[i] > 0 && outer > kLimit / (uint64_t)shape[i])
      return make_error("shape {} is implausibly large", shape_str(shape));
    outer *= (uint64_t)shape[i];
  }
  switch (dtype) {
    case DType::F32:
    case DType::I32: return outer * 4;
    case DType::F16:
    case DType::BF16: return outer * 2;
    case DType::Q4:
    case DType::Q8: {
      if (shape.empty()) return make_error("a quantized tensor needs at least one dimension");
      uint64_t cols = (uint64_t)shape.back();
      uint64_t rows = cols ? outer / cols : 0;
      uint64_t bsz = dtype == DType::Q4 ? sizeof(nk::BlockQ4) : sizeof(nk::BlockQ8);
      return rows * nk::blocks_per_row(cols) * bsz;
    }
  }
  return make_error("unknown dtype {}", (uint32_t)dtype);
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (auto s : shape) n *= s;
  return n;
}

Result<NeedleFile> NeedleFile::open(const std::string& path, bool verify_data) {
  NEEDLE_ASSIGN(MappedFile map, MappedFile::open(path));
  auto bytes = map.bytes();
  auto r = parse(bytes, verify_data);
  if (!r) return make_error("{}: {}", path, r.message());
  NeedleFile f = std::move(r).value();
  f.map_ = std::move(map);  // the mapping address does not move with the object
  return f;
}

Result<NeedleFile> NeedleFile::parse(std::span<const uint8_t> bytes, bool verify_data) {
  NeedleFile f;
  f.bytes_ = bytes;
  if (bytes.size() < 8 || std::memcmp(bytes.data(), kNeedleMagic, 8) != 0)
    return make_error("not a .needle file (bad magic)");
  if (bytes.size() < kHeaderSize) return make_error("truncated .needle header ({} bytes)", bytes.size());
  Cursor h{bytes.first(kHeaderSize), 8, "header"};
  f.major_ = *h.get<uint32_t>();
  f.minor_ = *h.get<uint32_t>();
  if (f.major_ != kNeedleVersionMajor)
    return make_error("unsupported .needle version {}.{} (this build reads version {}.x)", f.major_, f.minor_,
                      kNeedleVersionMajor);
  uint64_t meta_off = *h.get<uint64_t>(), meta_size = *h.get<uint64_t>();
  uint64_t dir_off = *h.get<uint64_t>(), dir_size = *h.get<uint64_t>();
  uint64_t data_off = *h.get<uint64_t>(), data_size = *h.get<uint64_t>();
  f.data_crc_ = *h.get<uint32_t>();
  uint32_t header_crc = *h.get<uint32_t>();

  const uint64_t n = bytes.size();
  auto section_ok = [&](uint64_t off, uint64_t size) { return off >= kHeaderSize && off <= n && size <= n - off; };
  if (!section_ok(meta_off, meta_size) || !section_ok(dir_off, dir_size) || !section_ok(data_off, data_size))
    return make_error("file is truncated or its header is corrupt: sections exceed the file size ({} bytes)", n);
  if (data_off % kNeedleAlign != 0) return make_error("data section is not {}-byte aligned", kNeedleAlign);

  uint32_t crc = crc32_of(0, bytes.first(68));
  crc = crc32_of(crc, bytes.subspan(meta_off, meta_size));
  crc = crc32_of(crc, bytes.subspan(dir_off, dir_size));
  if (crc != header_crc) return make_error("header checksum mismatch: the file is corrupt");

  // Metadata.
  Cursor m{bytes.subspan(meta_off, meta_size), 0, "metadata"};
  NEEDLE_ASSIGN(uint32_t nmeta, m.get<uint32_t>());
  for (uint32_t i = 0; i < nmeta; ++i) {
    NEEDLE_ASSIGN(uint32_t klen, m.get<uint32_t>());
    if (klen > kMaxName) return make_error("metadata key {} is too long ({} bytes)", i, klen);
    NEEDLE_ASSIGN(auto kb, m.bytes(klen));
    if (!printable_name(kb)) return make_error("metadata key {} contains control characters", i);
    std::string key(kb.begin(), kb.end());
    NEEDLE_ASSIGN(uint8_t type, m.get<uint8_t>());
    MetaValue v;
    switch (type) {
      case kI64: { NEEDLE_ASSIGN(int64_t x, m.get<int64_t>()); v = x; break; }
      case kF64: { NEEDLE_ASSIGN(double x, m.get<double>()); v = x; break; }
      case kBool: { NEEDLE_ASSIGN(uint8_t x, m.get<uint8_t>()); v = x != 0; break; }
      case kString:
      case kBytes: {
        NEEDLE_ASSIGN(uint64_t len, m.get<uint64_t>());
        NEEDLE_ASSIGN(auto vb, m.bytes(len));
        if (type == kString) v = std::string(vb.begin(), vb.end());
        else v = MetaBytes(vb.begin(), vb.end());
        break;
      }
      default: return make_error("metadata key '{}' has unknown type {}", key, type);
    }
    f.meta_.emplace_back(std::move(key), std::move(v));
  }

  // Tensor directory.
  f.data_ = bytes.subspan(data_off, data_size);
  Cursor d{bytes.subspan(dir_off, dir_size), 0, "tensor directory"};
  NEEDLE_ASSIGN(uint32_t ntensors, d.get<uint32_t>());
  if (ntensors > dir_size / 8) return make_error("tensor directory declares {} tensors, more than it can hold", ntensors);
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (uint32_t i = 0; i < ntensors; ++i) {
    TensorView t;
    NEEDLE_ASSIGN(uint32_t nlen, d.get<uint32_t>());
    if (nlen == 0 || nlen > kMaxName) return make_error("tensor {} has an invalid name length {}", i, nlen);
    NEEDLE_ASSIGN(auto nb, d.bytes(nlen));
    if (!printable_name(nb)) return make_error("tensor {} has a name with control characters", i);
    t.name.assign(nb.begin(), nb.end());
    NEEDLE_ASSIGN(uint32_t dt, d.get<uint32_t>());
    if (dt > (uint32_t)DType::I32) return make_error("tensor '{}' has unknown dtype {}", t.name, dt);
    t.dtype = (DType)dt;
    NEEDLE_ASSIGN(uint32_t ndim, d.get<uint32_t>());
    if (ndim > kMaxDims) return make_error("tensor '{}' has {} dimensions (at most {})", t.name, ndim, kMaxDims);
    for (uint32_t k = 0; k < ndim; ++k) {
      NEEDLE_ASSIGN(int64_t dim, d.get<int64_t>());
      t.shape.push_back(dim);
    }
    NEEDLE_ASSIGN(uint64_t off, d.get<uint64_t>());
    NEEDLE_ASSIGN(uint64_t size, d.get<uint64_t>());
    auto expect = tensor_nbytes(t.dtype, t.shape);
    if (!expect) return make_error("tensor '{}': {}", t.name, expect.message());
    if (*expect != size)
      return make_error("tensor '{}' {} {} should take {} bytes, directory says {}", t.name, dtype_name(t.dtype),
                        shape_str(t.shape), *expect, size);
    if (off > data_size || size > data_size - off)
      return make_error("tensor '{}' lies outside the data section (offset {}, size {}, section {})", t.name, off,
                        size, data_size);
    if (off % kNeedleAlign != 0) return make_error("tensor '{}' is not {}-byte aligned", t.name, kNeedleAlign);
    if (f.by_name_.count(t.name)) return make_error("tensor '{}' appears twice", t.name);
    t.data = f.data_.data() + off;
    t.nbytes = size;
    ranges.emplace_back(off, size);
    f.by_name_[t.name] = f.tensors_.size();
    f.tensors_.push_back(std::move(t));
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i - 1].second > 0 && ranges[i].first < ranges[i - 1].first + ranges[i - 1].second)
      return make_error("tensors overlap in the data section (offset {})", ranges[i].first);
  if (verify_data) NEEDLE_TRY(f.verify_data());
  return f;
}

Status NeedleFile::verify_data() const {
  if (crc32_of(0, data_) != data_crc_) return make_error("data checksum mismatch: tensor data is corrupt");
  return Status::ok();
}

const MetaValue* NeedleFile::meta(const std::string& key) const {
  for (auto& [k, v] : meta_)
    if (k == key) return &v;
  return nullptr;
}

const TensorView* NeedleFile::tensor(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

void NeedleWriter::set_meta(std::string key, MetaValue v) {
  for (auto& [k, old] : meta_)
    if (k == key) {
      old = std::move(v);
      return;
    }
  meta_.emplace_back(std::move(key), std::move(v));
}

Status NeedleWriter::add_tensor(std::string name, DType dtype, std::vector<int64_t> shape, std::vector<uint8_t> data) {
  NEEDLE_ASSIGN(uint64_t expect, tensor_nbytes(dtype, shape));
  if (expect != data.size())
    return make_error("tensor '{}' {} {} needs {} bytes, got {}", name, dtype_name(dtype), shape_str(shape), expect,
                      data.size());
  for (auto& e : tensors_)
    if (e.name == name) return make_error("tensor '{}' added twice", name);
  tensors_.push_back({std::move(name), dtype, std::move(shape), std::move(data)});
  return Status::ok();
}

NeedleWriter::Layout NeedleWriter::layout() const {
  Layout L;
  // pieces[0] is the header, added last (it holds the checksums of what follows). An owned
  // buffer's bytes stay where they are when L.owned grows (a moved vector keeps its storage).
  L.pieces.emplace_back();
  auto own = [&](std::vector<uint8_t> b) {
    if (b.empty()) return;
    L.owned.push_back(std::move(b));
    L.pieces.emplace_back(L.owned.back());
  };
  auto view = [&](const void* p, size_t n) {
    if (n) L.pieces.emplace_back(static_cast<const uint8_t*>(p), n);
  };
  auto zeros = [&](size_t n) {
    if (n) own(std::vector<uint8_t>(n, 0));
  };

  // meta: small prefixes owned, string/bytes payloads viewed in place.
  uint64_t meta_size = 0;
  std::vector<uint8_t> cur;
  put<uint32_t>(cur, (uint32_t)meta_.size());
  auto flush = [&] {
    meta_size += cur.size();
    own(std::move(cur));
    cur.clear();
  };
  for (auto& [k, v] : meta_) {
    put<uint32_t>(cur, (uint32_t)k.size());
    put_bytes(cur, k.data(), k.size());
    std::visit(
        [&](auto&& x) {
          using T = std::decay_t<decltype(x)>;
          if constexpr (std::is_same_v<T, int64_t>) { put<uint8_t>(cur, kI64); put<int64_t>(cur, x); }
          else if constexpr (std::is_same_v<T, double>) { put<uint8_t>(cur, kF64); put<double>(cur, x); }
          else if constexpr (std::is_same_v<T, bool>) { put<uint8_t>(cur, kBool); put<uint8_t>(cur, x ? 1 : 0); }
          else {
            put<uint8_t>(cur, std::is_same_v<T, std::string> ? kString : kBytes);
            put<uint64_t>(cur, x.size());
            flush();
            view(x.data(), x.size());
            meta_size += x.size();
          }
        },
        v);
  }
  flush();

  std::vector<uint8_t> dir;
  put<uint32_t>(dir, (uint32_t)tensors_.size());
  uint64_t off = 0;
  for (auto& t : tensors_) {
    put<uint32_t>(dir, (uint32_t)t.name.size());
    put_bytes(dir, t.name.data(), t.name.size());
    put<uint32_t>(dir, (uint32_t)t.dtype);
    put<uint32_t>(dir, (uint32_t)t.shape.size());
    for (auto s : t.shape) put<int64_t>(dir, s);
    put<uint64_t>(dir, off);
    put<uint64_t>(dir, t.data.size());
    off = align_up(off + t.data.size());
  }
  const uint64_t data_size = off;
  const uint64_t meta_off = kHeaderSize, dir_off = meta_off + meta_size;
  const uint64_t data_off = align_up(dir_off + dir.size());
  const uint64_t dir_size = dir.size();
  own(std::move(dir));
  const size_t dir_end = L.pieces.size();  // the header CRC covers meta and directory
  zeros(data_off - (dir_off + dir_size));
  const size_t data_begin = L.pieces.size();
  for (auto& t : tensors_) {
    view(t.data.data(), t.data.size());
    zeros(align_up(t.data.size()) - t.data.size());
  }

  uint32_t data_crc = 0;
  for (size_t i = data_begin; i < L.pieces.size(); ++i) data_crc = crc32_of(data_crc, L.pieces[i]);

  std::vector<uint8_t> hdr;
  put_bytes(hdr, kNeedleMagic, 8);
  put<uint32_t>(hdr, kNeedleVersionMajor);
  put<uint32_t>(hdr, kNeedleVersionMinor);
  for (uint64_t x : {meta_off, meta_size, dir_off, dir_size, data_off, data_size}) put<uint64_t>(hdr, x);
  put<uint32_t>(hdr, data_crc);
  uint32_t crc = crc32_of(0, hdr);
  for (size_t i = 1; i < dir_end; ++i) crc = crc32_of(crc, L.pieces[i]);
  put<uint32_t>(hdr, crc);
  L.owned.push_back(std::move(hdr));
  L.pieces[0] = L.owned.back();
  return L;
}

std::vector<uint8_t> NeedleWriter::serialize() const {
  const Layout L = layout();
  std::vector<uint8_t> out;
  size_t n = 0;
  for (auto p : L.pieces) n += p.size();
  out.reserve(n);
  for (auto p : L.pieces) out.insert(out.end(), p.begin(), p.end());
  return out;
}

Status NeedleWriter::write(const std::string& path) const {
  const Layout L = layout();
  return write_file_atomic(path, L.pieces);
}

}  // namespace needle
