// The checkpoint writer: emits what `pickle.dump(obj, f, protocol=4)` writes under numpy 1.x
// for Needle's {"params": nested dicts of float16 arrays, "config": dict, ...extra}.
//
// It follows CPython's C pickler step by step (opcode choice, MEMOIZE after every memoisable
// object, 64 KiB frames committed at object boundaries, payloads of 64 KiB or more written
// outside frames) and numpy's ndarray/dtype __reduce__, so a checkpoint read from the
// training code's own file is written back byte for byte (tests check this).
#include <bit>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "io/pickle.h"

namespace needle {
namespace {

constexpr size_t kFrameTarget = 64 * 1024;  // _pickle.c FRAME_SIZE_TARGET
constexpr size_t kFrameHeader = 9;          // FRAME opcode + 8-byte length
constexpr size_t kFrameMin = 4;             // smaller frames are not marked
constexpr size_t kBatch = 1000;             // SETITEMS batch size
constexpr size_t kMaxDepth = 64;            // "/" components in a path

bool valid_utf8(std::string_view s) {
  size_t i = 0, n = s.size();
  while (i < n) {
    auto c = static_cast<uint8_t>(s[i]);
    if (c < 0x80) { ++i; continue; }
    size_t len;
    uint8_t lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) len = 2;
    else if (c >= 0xe0 && c <= 0xef) { len = 3; if (c == 0xe0) lo = 0xa0; }
    else if (c >= 0xf0 && c <= 0xf4) { len = 4; if (c == 0xf0) lo = 0x90; if (c == 0xf4) hi = 0x8f; }
    else return false;
    if (n - i < len) return false;
    auto c1 = static_cast<uint8_t>(s[i + 1]);
    if (c1 < lo || c1 > hi) return false;
    for (size_t k = 2; k < len; ++k)
      if ((static_cast<uint8_t>(s[i + k]) & 0xc0) != 0x80) return false;
    i += len;
  }
  return true;
}

// The byte stream, with CPython's framing.
class Emitter {
 public:
  std::vector<uint8_t> out;

  void start() {
    out = {0x80, 4};  // PROTO 4, outside any frame
    framing_ = true;
  }
  void finish() {
    op('.');
    commit_frame();
  }
  // Called at the start of every object saved, as _pickle.c's save() does.
  void boundary() {
    if (framing_ && frame_start_ && out.size() - *frame_start_ - kFrameHeader >= kFrameTarget) commit_frame();
  }
  void write(const void* p, size_t n) {
    if (framing_ && !frame_start_) {
      frame_start_ = out.size();
      out.resize(out.size() + kFrameHeader);
    }
    const auto* b = static_cast<const uint8_t*>(p);
    out.insert(out.end(), b, b + n);
  }
  void op(uint8_t c) { write(&c, 1); }
  void op_u(uint8_t c, uint64_t v, size_t width) {
    uint8_t buf[9] = {c};
    for (size_t k = 0; k < width; ++k) buf[1 + k] = static_cast<uint8_t>(v >> (8 * k));
    write(buf, 1 + width);
  }
  // Header plus payload; payloads of 64 KiB or more bypass the frame (_Pickler_write_bytes).
  void write_bytes(const uint8_t* header, size_t hn, const void* payload, size_t n) {
    bool bypass = n >= kFrameTarget;
    if (bypass) {
      commit_frame();
      framing_ = false;
    }
    write(header, hn);
    write(payload, n);
    if (bypass) framing_ = true;
  }

  uint32_t memoize() {
    op(0x94);
    return memo_++;
  }
  uint32_t last_memo() const { return memo_ - 1; }
  void get(uint32_t idx) {
    if (idx < 256) op_u('h', idx, 1);
    else op_u('j', idx, 4);
  }

 private:
  void commit_frame() {
    if (!frame_start_) return;
    size_t start = *frame_start_;
    size_t len = out.size() - start - kFrameHeader;
    if (len >= kFrameMin) {
      out[start] = 0x95;
      for (size_t k = 0; k < 8; ++k) out[start + 1 + k] = static_cast<uint8_t>(uint64_t{len} >> (8 * k));
    } else {
      out.erase(out.begin() + static_cast<std::ptrdiff_t>(start),
                out.begin() + static_cast<std::ptrdiff_t>(start + kFrameHeader));
    }
    frame_start_.reset();
  }

  bool framing_ = false;
  std::optional<size_t> frame_start_;
  uint32_t memo_ = 0;
};

// The params tree rebuilt from "a/b/c" paths, children in first-appearance order.
struct Node {
  int leaf = -1;  // index into ckpt.params, or -1 for a dict
  std::vector<std::pair<std::string, size_t>> children;  // name -> index into nodes
  std::unordered_map<std::string, size_t> by_name;
};

class Writer {
 public:
  explicit Writer(const PickleCheckpoint& c) : ck_(c) {}
  Result<std::vector<uint8_t>> run();

 private:
  Status build_tree();
  Status save_node(size_t n);
  Status save_array(const HostTensor& t, const std::string& path);
  void save_int(int64_t v);
  Status save_str(std::string_view s);
  void save_bytes(const uint8_t* p, size_t n);
  Status save_scalar(const ScalarValue& v);
  void save_global(std::optional<uint32_t>& memo, std::string_view module, std::string_view name,
                   std::optional<uint32_t>* module_memo);
  void save_dtype_f16();
  void begin_items(size_t n) {  // before the first key of a dict with n > 0 items
    if (n > 1) e_.op('(');
  }
  // After item i (0-based) of n, as batch_dict_exact() does it: one item is a SETITEM;
  // otherwise MARK ... SETITEMS per batch of 1000, and a full last batch is followed by
  // an empty one.
  void end_item(size_t i, size_t n) {
    if (n == 1) {
      e_.op('s');
      return;
    }
    bool full = (i + 1) % kBatch == 0, last = i + 1 == n;
    if (full || last) e_.op('u');
    if (full) e_.op('(');
    if (full && last) e_.op('u');
  }

  const PickleCheckpoint& ck_;
  Emitter e_;
  std::vector<Node> nodes_;
  // Objects Python shares between arrays: the globals, the module name "numpy" (one
  // interned string for ndarray and dtype), the b'b' typecode and the float16 dtype.
  std::optional<uint32_t> reconstruct_, ndarray_, numpy_str_, dtype_cls_, typecode_, f16_;
};

Status Writer::build_tree() {
  nodes_.assign(1, Node{});
  for (size_t i = 0; i < ck_.params.size(); ++i) {
    const std::string& path = ck_.params[i].first;
    size_t cur = 0, start = 0, depth = 0;
    while (true) {
      size_t end = path.find('/', start);
      std::string name = path.substr(start, end == std::string::npos ? std::string::npos : end - start);
      if (name.empty()) return make_error("pickle writer: parameter path '{}' has an empty component", path);
      if (!valid_utf8(name)) return make_error("pickle writer: parameter path '{}' is not UTF-8", path);
      if (++depth > kMaxDepth) return make_error("pickle writer: parameter path '{}' is deeper than {}", path, kMaxDepth);
      bool last = end == std::string::npos;
      if (nodes_[cur].leaf >= 0)
        return make_error("pickle writer: '{}' is both a tensor and a prefix of '{}'",
                          ck_.params[static_cast<size_t>(nodes_[cur].leaf)].first, path);
      auto it = nodes_[cur].by_name.find(name);
      size_t next;
      if (it == nodes_[cur].by_name.end()) {
        next = nodes_.size();
        nodes_.emplace_back();
        nodes_[cur].by_name.emplace(name, next);
        nodes_[cur].children.emplace_back(name, next);
      } else {
        next = it->second;
        if (last) return make_error("pickle writer: parameter '{}' is given twice or is also a prefix", path);
      }
      cur = next;
      if (last) {
        if (!nodes_[cur].children.empty())
          return make_error("pickle writer: parameter '{}' is also a prefix of another", path);
        nodes_[cur].leaf = static_cast<int>(i);
        break;
      }
      start = end + 1;
    }
  }
  return Status::ok();
}

void Writer::save_int(int64_t v) {
  e_.boundary();
  if (v >= 0 && v <= 0xff) {
    e_.op_u('K', static_cast<uint64_t>(v), 1);
  } else if (v >= 0 && v <= 0xffff) {
    e_.op_u('M', static_cast<uint64_t>(v), 2);
  } else if (v >= INT32_MIN && v <= INT32_MAX) {
    e_.op_u('J', static_cast<uint32_t>(static_cast<int32_t>(v)), 4);
  } else {  // LONG1: minimal little-endian two's complement, as encode_long() makes it
    uint64_t mag = v < 0 ? 0 - static_cast<uint64_t>(v) : static_cast<uint64_t>(v);
    size_t nbytes = (static_cast<size_t>(std::bit_width(mag)) >> 3) + 1;
    uint8_t b[9];
    auto u = static_cast<uint64_t>(v);
    for (size_t k = 0; k < 9; ++k) b[k] = k < 8 ? static_cast<uint8_t>(u >> (8 * k)) : (v < 0 ? 0xff : 0);
    if (nbytes > 9) nbytes = 9;
    if (v < 0 && nbytes > 1 && b[nbytes - 1] == 0xff && (b[nbytes - 2] & 0x80)) --nbytes;
    uint8_t header[2] = {0x8a, static_cast<uint8_t>(nbytes)};
    e_.write(header, 2);
    e_.write(b, nbytes);
  }
}

Status Writer::save_str(std::string_view s) {
  if (!valid_utf8(s)) return make_error("pickle writer: string is not valid UTF-8");
  e_.boundary();
  uint8_t header[9];
  size_t hn;
  if (s.size() <= 0xff) {
    header[0] = 0x8c;
    header[1] = static_cast<uint8_t>(s.size());
    hn = 2;
  } else if (s.size() <= 0xffffffffu) {
    header[0] = 'X';
    for (size_t k = 0; k < 4; ++k) header[1 + k] = static_cast<uint8_t>(uint64_t{s.size()} >> (8 * k));
    hn = 5;
  } else {
    header[0] = 0x8d;
    for (size_t k = 0; k < 8; ++k) header[1 + k] = static_cast<uint8_t>(uint64_t{s.size()} >> (8 * k));
    hn = 9;
  }
  e_.write_bytes(header, hn, s.data(), s.size());
  e_.memoize();
  return Status::ok();
}

void Writer::save_bytes(const uint8_t* p, size_t n) {
  e_.boundary();
  uint8_t header[9];
  size_t hn;
  if (n <= 0xff) {
    header[0] = 'C';
    header[1] = static_cast<uint8_t>(n);
    hn = 2;
  } else if (n <= 0xffffffffu) {
    header[0] = 'B';
    for (size_t k = 0; k < 4; ++k) header[1 + k] = static_cast<uint8_t>(uint64_t{n} >> (8 * k));
    hn = 5;
  } else {
    header[0] = 0x8e;
    for (size_t k = 0; k < 8; ++k) header[1 + k] = static_cast<uint8_t>(uint64_t{n} >> (8 * k));
    hn = 9;
  }
  e_.write_bytes(header, hn, p, n);
  e_.memoize();
}

Status Writer::save_scalar(const ScalarValue& v) {
  if (std::holds_alternative<std::monostate>(v)) {
    e_.boundary();
    e_.op('N');
  } else if (const bool* b = std::get_if<bool>(&v)) {
    e_.boundary();
    e_.op(*b ? 0x88 : 0x89);
  } else if (const int64_t* i = std::get_if<int64_t>(&v)) {
    save_int(*i);
  } else if (const double* d = std::get_if<double>(&v)) {
    e_.boundary();
    uint64_t bits;
    std::memcpy(&bits, d, 8);
    uint8_t buf[9] = {'G'};
    for (size_t k = 0; k < 8; ++k) buf[1 + k] = static_cast<uint8_t>(bits >> (8 * (7 - k)));
    e_.write(buf, 9);
  } else {
    NEEDLE_TRY(save_str(std::get<std::string>(v)));
  }
  return Status::ok();
}

// save_global for protocol 4: module and name strings, STACK_GLOBAL, memoised.
void Writer::save_global(std::optional<uint32_t>& memo, std::string_view module, std::string_view name,
                         std::optional<uint32_t>* module_memo) {
  e_.boundary();
  if (memo) {
    e_.get(*memo);
    return;
  }
  if (module_memo && *module_memo) {
    e_.boundary();
    e_.get(**module_memo);
  } else {
    (void)save_str(module);  // ASCII constants: cannot fail
    if (module_memo) *module_memo = e_.last_memo();
  }
  (void)save_str(name);
  e_.op(0x93);
  memo = e_.memoize();
}

// numpy.dtype('f2', False, True) with state (3, '<', None, None, None, -1, -1, 0).
void Writer::save_dtype_f16() {
  e_.boundary();
  if (f16_) {
    e_.get(*f16_);
    return;
  }
  save_global(dtype_cls_, "numpy", "dtype", &numpy_str_);
  e_.boundary();  // the args tuple
  (void)save_str("f2");
  e_.boundary();
  e_.op(0x89);
  e_.boundary();
  e_.op(0x88);
  e_.op(0x87);
  e_.memoize();
  e_.op('R');
  f16_ = e_.memoize();
  e_.boundary();  // the state tuple
  e_.op('(');
  save_int(3);
  (void)save_str("<");
  for (int k = 0; k < 3; ++k) {
    e_.boundary();
    e_.op('N');
  }
  save_int(-1);
  save_int(-1);
  save_int(0);
  e_.op('t');
  e_.memoize();
  e_.op('b');
}

// ndarray.__reduce__: _reconstruct(ndarray, (0,), b'b'), then BUILD with
// (1, shape, dtype, is_fortran=False, raw bytes).
Status Writer::save_array(const HostTensor& t, const std::string& path) {
  std::vector<uint16_t> h;
  int64_t numel = 1;
  for (int64_t d : t.shape) {
    if (d < 0) return make_error("pickle writer: '{}' has a negative dimension", path);
    if (d != 0 && numel > INT64_MAX / 2 / d) return make_error("pickle writer: '{}' has too many elements", path);
    numel *= d;
  }
  if (t.dtype != DType::F16) {
    auto f = t.to_f32();
    if (!f) return make_error("pickle writer: '{}': {}", path, f.message());
    h.resize(f->size());
    for (size_t i = 0; i < h.size(); ++i) h[i] = f32_to_f16((*f)[i]);
  } else if (t.data.size() != static_cast<size_t>(numel) * 2) {
    return make_error("pickle writer: '{}' has {} bytes of data for shape {} of f16", path, t.data.size(),
                      shape_str(t.shape));
  }
  const uint8_t* raw = t.dtype == DType::F16 ? t.data.data() : reinterpret_cast<const uint8_t*>(h.data());
  size_t raw_n = t.dtype == DType::F16 ? t.data.size() : h.size() * 2;

  e_.boundary();  // the array
  save_global(reconstruct_, "numpy.core.multiarray", "_reconstruct", nullptr);
  e_.boundary();  // args (ndarray, (0,), b'b')
  save_global(ndarray_, "numpy", "ndarray", &numpy_str_);
  e_.boundary();
  save_int(0);
  e_.op(0x85);
  e_.memoize();
  if (typecode_) {
    e_.boundary();
    e_.get(*typecode_);
  } else {
    static constexpr uint8_t kB = 'b';
    save_bytes(&kB, 1);
    typecode_ = e_.last_memo();
  }
  e_.op(0x87);
  e_.memoize();
  e_.op('R');
  e_.memoize();
  e_.boundary();  // state tuple, five items: MARK ... TUPLE
  e_.op('(');
  save_int(1);
  e_.boundary();
  if (t.shape.empty()) {
    e_.op(')');
  } else {
    if (t.shape.size() > 3) e_.op('(');
    for (int64_t d : t.shape) save_int(d);
    e_.op(t.shape.size() > 3 ? 't' : static_cast<uint8_t>(0x84 + t.shape.size()));
    e_.memoize();
  }
  save_dtype_f16();
  e_.boundary();
  e_.op(0x89);
  save_bytes(raw, raw_n);
  e_.op('t');
  e_.memoize();
  e_.op('b');
  return Status::ok();
}

Status Writer::save_node(size_t n) {
  // Recursion depth is bounded by kMaxDepth (checked in build_tree).
  e_.boundary();
  e_.op('}');
  e_.memoize();
  const auto& kids = nodes_[n].children;
  begin_items(kids.size());
  for (size_t i = 0; i < kids.size(); ++i) {
    NEEDLE_TRY(save_str(kids[i].first));
    const Node& child = nodes_[kids[i].second];
    if (child.leaf >= 0) {
      const auto& [path, tensor] = ck_.params[static_cast<size_t>(child.leaf)];
      NEEDLE_TRY(save_array(tensor, path));
    } else {
      NEEDLE_TRY(save_node(kids[i].second));
    }
    end_item(i, kids.size());
  }
  return Status::ok();
}

Result<std::vector<uint8_t>> Writer::run() {
  NEEDLE_TRY(build_tree());
  for (const auto& [k, v] : ck_.extra)
    if (k == "params" || k == "config")
      return make_error("pickle writer: extra key '{}' collides with the checkpoint layout", k);
  for (size_t i = 0; i < ck_.config.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      if (ck_.config[i].first == ck_.config[j].first)
        return make_error("pickle writer: config key '{}' is given twice", ck_.config[i].first);
  for (size_t i = 0; i < ck_.extra.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      if (ck_.extra[i].first == ck_.extra[j].first)
        return make_error("pickle writer: extra key '{}' is given twice", ck_.extra[i].first);

  e_.start();
  e_.boundary();
  e_.op('}');
  e_.memoize();
  const size_t n_top = 2 + ck_.extra.size();
  size_t item = 0;
  begin_items(n_top);
  NEEDLE_TRY(save_str("params"));
  NEEDLE_TRY(save_node(0));
  end_item(item++, n_top);
  NEEDLE_TRY(save_str("config"));
  e_.boundary();
  e_.op('}');
  e_.memoize();
  begin_items(ck_.config.size());
  for (size_t i = 0; i < ck_.config.size(); ++i) {
    NEEDLE_TRY(save_str(ck_.config[i].first));
    NEEDLE_TRY(save_scalar(ck_.config[i].second));
    end_item(i, ck_.config.size());
  }
  end_item(item++, n_top);
  for (const auto& [k, v] : ck_.extra) {
    NEEDLE_TRY(save_str(k));
    NEEDLE_TRY(save_scalar(v));
    end_item(item++, n_top);
  }
  e_.finish();
  return std::move(e_.out);
}

}  // namespace

Result<std::vector<uint8_t>> write_pickle_checkpoint(const PickleCheckpoint& ckpt) {
  try {
    Writer w(ckpt);
    return w.run();
  } catch (const std::bad_alloc&) {
    return make_error("pickle writer: out of memory");
  } catch (const std::exception& e) {
    return make_error("pickle writer: internal error: {}", e.what());
  }
}

}  // namespace needle
