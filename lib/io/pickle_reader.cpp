// The checkpoint reader: a pickle opcode interpreter that executes nothing.
//
// Values live in an arena (`objs_`) and refer to each other by index, so shared and even
// cyclic references (legal in a pickle through the memo) cost nothing to build or free,
// and nothing recurses while interpreting. A small allow-list of globals is recognised;
// REDUCE on one of them builds the value by hand (numpy arrays and dtypes, bytes from
// `_codecs.encode`, an empty OrderedDict). Every other global is rejected when named.
//
// Bounds for untrusted input: every length is checked against the bytes left; memory
// held by interpreter objects is charged against 16 x the input size (+1 MiB); the stack,
// the number of open MARKs and the nesting of "params" dicts are capped; the tensors and
// paths produced are charged against the input size (+1 MiB), which stops a pickle from
// multiplying one array through memo references.
#include <algorithm>
#include <cstring>
#include <deque>
#include <limits>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <unordered_map>

#include "io/pickle.h"

namespace needle {
namespace {

constexpr size_t kMaxMarks = 256;               // MARKs open at once
constexpr size_t kMaxStack = size_t{1} << 20;   // values on the stack
constexpr size_t kMaxTreeDepth = 64;            // dict nesting under "params"
constexpr size_t kMaxPath = 4096;               // bytes in one "a/b/c" path
constexpr size_t kMaxGlobalLine = 256;          // GLOBAL module/name line length
constexpr size_t kSlack = size_t{1} << 20;      // fixed allowance on top of the size bounds

enum class Kind : uint8_t { None, Bool, Int, Float, Str, Bytes, Tuple, List, Dict, Global, Array, DType };

std::string_view kind_name(Kind k) {
  switch (k) {
    case Kind::None: return "None";
    case Kind::Bool: return "bool";
    case Kind::Int: return "int";
    case Kind::Float: return "float";
    case Kind::Str: return "str";
    case Kind::Bytes: return "bytes";
    case Kind::Tuple: return "tuple";
    case Kind::List: return "list";
    case Kind::Dict: return "dict";
    case Kind::Global: return "global";
    case Kind::Array: return "numpy array";
    case Kind::DType: return "numpy dtype";
  }
  return "?";
}

// The globals a checkpoint may name. Nothing is ever called: REDUCE builds the value.
enum class Callable : uint8_t {
  Reconstruct,   // numpy.core.multiarray._reconstruct(ndarray, shape, typecode)
  NdArray,       // numpy.ndarray (argument of _reconstruct only)
  DTypeCtor,     // numpy.dtype(code, align, copy)
  FromBuffer,    // numpy.core.numeric._frombuffer(buf, dtype, shape, order)  (protocol 5)
  Scalar,        // numpy.core.multiarray.scalar(dtype, bytes): numpy scalars in config
  BFloat16,      // ml_dtypes.bfloat16 (argument of numpy.dtype only)
  CodecsEncode,  // _codecs.encode(str, 'latin1'): bytes in protocol 2
  BytesCtor,     // bytes(): empty bytes in protocol 2
  ByteArray,     // bytearray(bytes)
  OrderedDict,   // collections.OrderedDict()
};

struct AllowedGlobal {
  std::string_view module, name;
  Callable callable;
};

constexpr AllowedGlobal kAllowed[] = {
    {"numpy.core.multiarray", "_reconstruct", Callable::Reconstruct},
    {"numpy._core.multiarray", "_reconstruct", Callable::Reconstruct},
    {"numpy.core.multiarray", "scalar", Callable::Scalar},
    {"numpy._core.multiarray", "scalar", Callable::Scalar},
    {"numpy", "ndarray", Callable::NdArray},
    {"numpy", "dtype", Callable::DTypeCtor},
    {"numpy.core.numeric", "_frombuffer", Callable::FromBuffer},
    {"numpy._core.numeric", "_frombuffer", Callable::FromBuffer},
    {"ml_dtypes", "bfloat16", Callable::BFloat16},
    {"_codecs", "encode", Callable::CodecsEncode},
    {"codecs", "encode", Callable::CodecsEncode},
    {"builtins", "bytes", Callable::BytesCtor},
    {"__builtin__", "bytes", Callable::BytesCtor},
    {"builtins", "bytearray", Callable::ByteArray},
    {"__builtin__", "bytearray", Callable::ByteArray},
    {"collections", "OrderedDict", Callable::OrderedDict},
};

std::string_view callable_name(Callable c) {
  for (const auto& g : kAllowed)
    if (g.callable == c) return g.name;
  return "?";
}

// Element types of numpy dtypes we can describe. Only the float ones become tensors.
enum class Elem : uint8_t { Unsupported, F16, F32, F64, BF16, Bool, Int, UInt };

struct DTypeInfo {
  Elem elem = Elem::Unsupported;
  uint8_t size = 0;          // bytes per element
  bool big_endian = false;
  std::string name;          // for messages: "float16", "bfloat16", "int32", or numpy's code
};

struct ArrayInfo {
  bool built = false;        // has data (BUILD after _reconstruct, or _frombuffer)
  DTypeInfo dtype;
  std::vector<int64_t> shape;
  bool fortran = false;
  uint32_t data = 0;         // a Bytes object
};

struct Value {
  Kind kind = Kind::None;
  int64_t i = 0;    // Bool, Int; the Callable of a Global
  double f = 0;     // Float
  uint32_t obj = 0; // Str, Bytes, Tuple, List, Dict, Array, DType: index into the arena
};

// Kept small: a hostile pickle makes one per opcode byte, and each is charged.
struct Obj {
  Kind kind = Kind::None;
  uint32_t intern = 0;                              // Str: id shared by equal strings
  uint32_t ext = 0;                                 // Array, DType: index into arrays_/dtypes_
  size_t offset = 0;                                // where the pickle created it
  std::string text;                                 // Str (UTF-8); Bytes that we own
  const uint8_t* view = nullptr;                    // Bytes that alias the input
  size_t view_len = 0;
  std::vector<Value> items;                         // Tuple, List; Dict: k0, v0, k1, v1, ...
  std::unique_ptr<std::unordered_map<uint64_t, uint32_t>> index;  // Dict: key id -> entry

  std::span<const uint8_t> bytes() const {
    if (view) return {view, view_len};
    return {reinterpret_cast<const uint8_t*>(text.data()), text.size()};
  }
};

// UTF-8 as Python's unpickler accepts it (decode with 'surrogatepass').
bool valid_utf8(std::span<const uint8_t> s) {
  size_t i = 0, n = s.size();
  while (i < n) {
    uint8_t c = s[i];
    if (c < 0x80) { ++i; continue; }
    size_t len;
    uint8_t lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) len = 2;
    else if (c >= 0xe0 && c <= 0xef) { len = 3; if (c == 0xe0) lo = 0xa0; }
    else if (c >= 0xf0 && c <= 0xf4) { len = 4; if (c == 0xf0) lo = 0x90; if (c == 0xf4) hi = 0x8f; }
    else return false;
    if (n - i < len) return false;
    if (s[i + 1] < lo || s[i + 1] > hi) return false;
    for (size_t k = 2; k < len; ++k)
      if ((s[i + k] & 0xc0) != 0x80) return false;
    i += len;
  }
  return true;
}

// Python's str(bytes, 'latin1') inverted: code points <= 0xff back to bytes.
bool latin1_from_utf8(std::string_view s, std::string& out) {
  out.clear();
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    auto c = static_cast<uint8_t>(s[i]);
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
    } else if ((c == 0xc2 || c == 0xc3) && i + 1 < s.size()) {
      out.push_back(static_cast<char>(((c & 0x03) << 6) | (static_cast<uint8_t>(s[++i]) & 0x3f)));
    } else {
      return false;
    }
  }
  return true;
}

// A name from the input, made safe for a one-line message.
std::string printable(std::string_view s) {
  std::string out;
  for (char ch : s.substr(0, 120)) {
    auto c = static_cast<unsigned char>(ch);
    if (c >= 0x20 && c < 0x7f) out.push_back(ch);
    else out += fmt::format("\\x{:02x}", c);
  }
  if (s.size() > 120) out += "...";
  return out;
}

DTypeInfo dtype_from_code(std::string_view code) {
  DTypeInfo d;
  d.name = printable(code);
  if (!code.empty() && (code[0] == '<' || code[0] == '>' || code[0] == '|' || code[0] == '=')) {
    d.big_endian = code[0] == '>';
    code.remove_prefix(1);
  }
  if (code.size() != 2 || code[1] < '1' || code[1] > '8') return d;
  int size = code[1] - '0';
  char kind = code[0];
  auto set = [&](Elem e, std::string name) { d.elem = e; d.size = static_cast<uint8_t>(size); d.name = std::move(name); };
  if (kind == 'f' && size == 2) set(Elem::F16, "float16");
  else if (kind == 'f' && size == 4) set(Elem::F32, "float32");
  else if (kind == 'f' && size == 8) set(Elem::F64, "float64");
  else if (kind == 'b' && size == 1) set(Elem::Bool, "bool");
  else if ((kind == 'i' || kind == 'u') && (size == 1 || size == 2 || size == 4 || size == 8))
    set(kind == 'i' ? Elem::Int : Elem::UInt, fmt::format("{}int{}", kind == 'u' ? "u" : "", size * 8));
  return d;
}

class Interpreter {
 public:
  explicit Interpreter(std::span<const uint8_t> in)
      : in_(in), budget_(in.size() * 16 + kSlack) {}

  Result<Value> run();
  const Obj& obj(const Value& v) const { return objs_[v.obj]; }
  const Obj& obj_at(uint32_t i) const { return objs_[i]; }
  const ArrayInfo& array(const Obj& o) const { return arrays_[o.ext]; }

 private:
  template <class... Args>
  Error fail(fmt::format_string<Args...> f, Args&&... args) const {
    return make_error("pickle: {} (offset {})", fmt::format(f, std::forward<Args>(args)...), op_);
  }

  size_t left() const { return in_.size() - pos_; }
  Result<std::span<const uint8_t>> take(uint64_t n, std::string_view what);
  Result<uint64_t> read_uint(size_t width, std::string_view what);
  Status charge(size_t bytes);
  Result<Value> new_obj(Kind kind);

  Status push(Value v);
  Result<Value> pop();
  Result<Value*> top();
  Result<std::vector<Value>> pop_mark(std::string_view op);

  Status step(uint8_t op, bool& stop);
  Status push_str(std::span<const uint8_t> s);
  Status push_bytes(std::span<const uint8_t> s);
  Status push_long(std::span<const uint8_t> s);
  Status push_tuple(std::vector<Value> items);
  Status push_global(std::string_view module, std::string_view name);
  Status set_item(Value dict, Value key, Value value);
  Status append(Value list, Value item);
  Status memo_put(uint64_t idx);
  Status memo_get(uint64_t idx);
  Status reduce();
  Status build();
  Status build_array(Obj& a, const Obj& state);
  Status build_dtype(Obj& d, const Obj& state);
  Status finish_array(ArrayInfo& a, const DTypeInfo& dt, const Obj& shape, bool fortran,
                      const Value& data, std::string_view what);

  std::span<const uint8_t> in_;
  size_t pos_ = 0;     // next byte to read
  size_t op_ = 0;      // offset of the opcode being executed (for messages)
  size_t budget_;
  size_t used_ = 0;
  std::vector<Value> stack_;
  std::vector<size_t> marks_;
  std::vector<Value> memo_;
  std::deque<Obj> objs_;  // a deque: references stay valid as it grows
  std::deque<DTypeInfo> dtypes_;
  std::deque<ArrayInfo> arrays_;
  // Equal strings share one id, so dict keys compare in O(1) however often a long key is
  // reused through the memo. Views point into the Str objects' text, which never changes.
  std::unordered_map<std::string_view, uint32_t> interned_;
};

Result<std::span<const uint8_t>> Interpreter::take(uint64_t n, std::string_view what) {
  if (n > left())
    return fail("{} needs {} bytes but only {} remain", what, n, left());
  auto s = in_.subspan(pos_, static_cast<size_t>(n));
  pos_ += static_cast<size_t>(n);
  return s;
}

Result<uint64_t> Interpreter::read_uint(size_t width, std::string_view what) {
  NEEDLE_ASSIGN(auto s, take(width, what));
  uint64_t v = 0;
  for (size_t k = 0; k < width; ++k) v |= static_cast<uint64_t>(s[k]) << (8 * k);
  return v;
}

Status Interpreter::charge(size_t bytes) {
  if (bytes > budget_ - used_)
    return fail("the pickle needs more memory than {} bytes of input justify", in_.size());
  used_ += bytes;
  return Status::ok();
}

Result<Value> Interpreter::new_obj(Kind kind) {
  NEEDLE_TRY(charge(sizeof(Obj)));
  if (objs_.size() >= std::numeric_limits<uint32_t>::max()) return fail("too many objects");
  objs_.emplace_back();
  Obj& o = objs_.back();
  o.kind = kind;
  o.offset = op_;
  if (kind == Kind::Dict) {
    NEEDLE_TRY(charge(64));
    o.index = std::make_unique<std::unordered_map<uint64_t, uint32_t>>();
  } else if (kind == Kind::Array) {
    NEEDLE_TRY(charge(sizeof(ArrayInfo)));
    o.ext = static_cast<uint32_t>(arrays_.size());
    arrays_.emplace_back();
  } else if (kind == Kind::DType) {
    NEEDLE_TRY(charge(sizeof(DTypeInfo)));
    o.ext = static_cast<uint32_t>(dtypes_.size());
    dtypes_.emplace_back();
  }
  Value v;
  v.kind = kind;
  v.obj = static_cast<uint32_t>(objs_.size() - 1);
  return v;
}

Status Interpreter::push(Value v) {
  if (stack_.size() >= kMaxStack) return fail("stack holds more than {} values", kMaxStack);
  stack_.push_back(v);
  return Status::ok();
}

Result<Value> Interpreter::pop() {
  if (stack_.empty() || (!marks_.empty() && marks_.back() == stack_.size()))
    return fail("stack underflow");
  Value v = stack_.back();
  stack_.pop_back();
  return v;
}

Result<Value*> Interpreter::top() {
  if (stack_.empty() || (!marks_.empty() && marks_.back() == stack_.size()))
    return fail("stack underflow");
  return &stack_.back();
}

Result<std::vector<Value>> Interpreter::pop_mark(std::string_view op) {
  if (marks_.empty()) return fail("{} without a MARK", op);
  size_t m = marks_.back();
  marks_.pop_back();
  std::vector<Value> items(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
  stack_.resize(m);
  return items;
}

Status Interpreter::push_str(std::span<const uint8_t> s) {
  if (!valid_utf8(s)) return fail("string is not valid UTF-8");
  NEEDLE_TRY(charge(2 * s.size() + 64));
  NEEDLE_ASSIGN(Value v, new_obj(Kind::Str));
  Obj& o = objs_[v.obj];
  o.text.assign(reinterpret_cast<const char*>(s.data()), s.size());
  o.intern = interned_.emplace(o.text, static_cast<uint32_t>(interned_.size())).first->second;
  return push(v);
}

Status Interpreter::push_bytes(std::span<const uint8_t> s) {
  NEEDLE_ASSIGN(Value v, new_obj(Kind::Bytes));
  objs_[v.obj].view = s.data();
  objs_[v.obj].view_len = s.size();
  return push(v);
}

// LONG1/LONG4: little-endian two's complement of any length; we keep what fits int64.
Status Interpreter::push_long(std::span<const uint8_t> s) {
  Value v;
  v.kind = Kind::Int;
  if (s.empty()) return push(v);
  bool neg = (s.back() & 0x80) != 0;
  size_t n = s.size();
  // Drop redundant sign bytes.
  while (n > 1 && s[n - 1] == (neg ? 0xff : 0x00) && ((s[n - 2] & 0x80) != 0) == neg) --n;
  if (n > 8) return fail("integer of {} bytes does not fit in 64 bits", s.size());
  uint64_t u = neg ? ~uint64_t{0} : 0;
  for (size_t k = 0; k < n; ++k) {
    u &= ~(uint64_t{0xff} << (8 * k));
    u |= static_cast<uint64_t>(s[k]) << (8 * k);
  }
  v.i = static_cast<int64_t>(u);
  return push(v);
}

Status Interpreter::push_tuple(std::vector<Value> items) {
  NEEDLE_TRY(charge(items.size() * sizeof(Value)));
  NEEDLE_ASSIGN(Value v, new_obj(Kind::Tuple));
  objs_[v.obj].items = std::move(items);
  return push(v);
}

Status Interpreter::push_global(std::string_view module, std::string_view name) {
  for (const auto& g : kAllowed) {
    if (g.module == module && g.name == name) {
      Value v;
      v.kind = Kind::Global;
      v.i = static_cast<int64_t>(g.callable);
      return push(v);
    }
  }
  return fail("global '{}.{}' is not allowed", printable(module), printable(name));
}

// Python dict semantics: a repeated key keeps its first position and takes the last value.
Status Interpreter::set_item(Value dict, Value key, Value value) {
  if (dict.kind != Kind::Dict) return fail("SETITEM on a {}, expected a dict", kind_name(dict.kind));
  // One 64-bit id per key: strings by intern id, small ints (and bools: True == 1 as in
  // Python) by value, None by a tag. Other keys never occur in checkpoints.
  constexpr uint64_t kStrTag = uint64_t{1} << 63, kNoneTag = uint64_t{1} << 62;
  constexpr int64_t kIntLimit = int64_t{1} << 61;
  uint64_t id;
  if (key.kind == Kind::Str) id = kStrTag | objs_[key.obj].intern;
  else if (key.kind == Kind::None) id = kNoneTag;
  else if ((key.kind == Kind::Int || key.kind == Kind::Bool) && key.i >= 0 && key.i < kIntLimit)
    id = static_cast<uint64_t>(key.i);
  else return fail("dict key of type {} is not supported", kind_name(key.kind));
  Obj& d = objs_[dict.obj];
  auto it = d.index->find(id);
  if (it != d.index->end()) {
    d.items[2 * size_t{it->second} + 1] = value;
    return Status::ok();
  }
  NEEDLE_TRY(charge(2 * sizeof(Value) + 64));
  d.index->emplace(id, static_cast<uint32_t>(d.items.size() / 2));
  d.items.push_back(key);
  d.items.push_back(value);
  return Status::ok();
}

Status Interpreter::append(Value list, Value item) {
  if (list.kind != Kind::List) return fail("APPEND to a {}, expected a list", kind_name(list.kind));
  NEEDLE_TRY(charge(sizeof(Value)));
  objs_[list.obj].items.push_back(item);
  return Status::ok();
}

// Python's pickler numbers memo entries 0, 1, 2, ... in order; we accept overwrites and
// the next free index, which bounds the memo by the number of opcodes.
Status Interpreter::memo_put(uint64_t idx) {
  NEEDLE_ASSIGN(Value * t, top());
  if (idx < memo_.size()) {
    memo_[idx] = *t;
    return Status::ok();
  }
  if (idx != memo_.size())
    return fail("memo index {} skips ahead of the {} entries stored", idx, memo_.size());
  NEEDLE_TRY(charge(2 * sizeof(Value)));
  memo_.push_back(*t);
  return Status::ok();
}

Status Interpreter::memo_get(uint64_t idx) {
  if (idx >= memo_.size()) return fail("memo index {} was never stored", idx);
  return push(memo_[idx]);
}

Result<Value> Interpreter::run() {
  if (in_.empty()) return make_error("pickle: empty input (offset 0)");
  bool stop = false;
  while (!stop) {
    op_ = pos_;
    if (pos_ >= in_.size()) return fail("input ends before STOP");
    uint8_t op = in_[pos_++];
    NEEDLE_TRY(step(op, stop));
  }
  return pop();
}

Status Interpreter::step(uint8_t op, bool& stop) {
  Value v;
  switch (op) {
    case 0x80: {  // PROTO
      NEEDLE_ASSIGN(uint64_t p, read_uint(1, "PROTO"));
      if (p > 5) return fail("unsupported pickle protocol {}", p);
      return Status::ok();
    }
    case 0x95: {  // FRAME: framing only groups opcodes; check the length and read on
      NEEDLE_ASSIGN(uint64_t n, read_uint(8, "FRAME"));
      if (n > left()) return fail("FRAME of {} bytes but only {} remain", n, left());
      return Status::ok();
    }
    case '.':  // STOP
      stop = true;
      return Status::ok();
    case '(':  // MARK
      if (marks_.size() >= kMaxMarks) return fail("more than {} nested MARKs", kMaxMarks);
      marks_.push_back(stack_.size());
      return Status::ok();
    case '0':  // POP (pops a MARK when the current segment is empty, as Python does)
      if (!stack_.empty() && (marks_.empty() || marks_.back() < stack_.size())) {
        stack_.pop_back();
      } else if (!marks_.empty()) {
        marks_.pop_back();
      } else {
        return fail("stack underflow");
      }
      return Status::ok();
    case '1': {  // POP_MARK
      NEEDLE_ASSIGN(auto items, pop_mark("POP_MARK"));
      return Status::ok();
    }
    case '2': {  // DUP
      NEEDLE_ASSIGN(Value * t, top());
      return push(*t);
    }
    case 'N':
      return push(v);
    case 0x88:
    case 0x89:
      v.kind = Kind::Bool;
      v.i = op == 0x88;
      return push(v);
    case 'J': {  // BININT
      NEEDLE_ASSIGN(uint64_t u, read_uint(4, "BININT"));
      v.kind = Kind::Int;
      v.i = static_cast<int32_t>(static_cast<uint32_t>(u));
      return push(v);
    }
    case 'K':
    case 'M': {  // BININT1, BININT2
      NEEDLE_ASSIGN(uint64_t u, read_uint(op == 'K' ? 1 : 2, "BININT"));
      v.kind = Kind::Int;
      v.i = static_cast<int64_t>(u);
      return push(v);
    }
    case 0x8a:
    case 0x8b: {  // LONG1, LONG4
      NEEDLE_ASSIGN(uint64_t n, read_uint(op == 0x8a ? 1 : 4, "LONG"));
      if (op == 0x8b && n > 0x7fffffff) return fail("LONG4 with negative length");
      NEEDLE_ASSIGN(auto s, take(n, "LONG"));
      return push_long(s);
    }
    case 'G': {  // BINFLOAT, big-endian
      NEEDLE_ASSIGN(auto s, take(8, "BINFLOAT"));
      uint64_t bits = 0;
      for (size_t k = 0; k < 8; ++k) bits = (bits << 8) | s[k];
      v.kind = Kind::Float;
      std::memcpy(&v.f, &bits, 8);
      return push(v);
    }
    case 0x8c:
    case 'X':
    case 0x8d: {  // SHORT_BINUNICODE, BINUNICODE, BINUNICODE8
      size_t w = op == 0x8c ? 1 : op == 'X' ? 4 : 8;
      NEEDLE_ASSIGN(uint64_t n, read_uint(w, "string length"));
      NEEDLE_ASSIGN(auto s, take(n, "string"));
      return push_str(s);
    }
    case 'C':
    case 'B':
    case 0x8e:
    case 0x96: {  // SHORT_BINBYTES, BINBYTES, BINBYTES8, BYTEARRAY8
      size_t w = op == 'C' ? 1 : op == 'B' ? 4 : 8;
      NEEDLE_ASSIGN(uint64_t n, read_uint(w, "bytes length"));
      NEEDLE_ASSIGN(auto s, take(n, "bytes"));
      return push_bytes(s);
    }
    case 0x98: {  // READONLY_BUFFER: no-op for an in-band buffer
      NEEDLE_ASSIGN(Value * t, top());
      if (t->kind != Kind::Bytes) return fail("READONLY_BUFFER on a {}", kind_name(t->kind));
      return Status::ok();
    }
    case ')':
      return push_tuple({});
    case 0x85:
    case 0x86:
    case 0x87: {  // TUPLE1..3
      size_t n = op - 0x84u;
      std::vector<Value> items(n);
      for (size_t k = n; k-- > 0;) {
        NEEDLE_ASSIGN(items[k], pop());
      }
      return push_tuple(std::move(items));
    }
    case 't': {
      NEEDLE_ASSIGN(auto items, pop_mark("TUPLE"));
      return push_tuple(std::move(items));
    }
    case ']':
    case 'l': {  // EMPTY_LIST, LIST
      std::vector<Value> items;
      if (op == 'l') {
        NEEDLE_ASSIGN(items, pop_mark("LIST"));
      }
      NEEDLE_TRY(charge(items.size() * sizeof(Value)));
      NEEDLE_ASSIGN(v, new_obj(Kind::List));
      objs_[v.obj].items = std::move(items);
      return push(v);
    }
    case 'a': {  // APPEND
      NEEDLE_ASSIGN(Value item, pop());
      NEEDLE_ASSIGN(Value * list, top());
      return append(*list, item);
    }
    case 'e': {  // APPENDS
      NEEDLE_ASSIGN(auto items, pop_mark("APPENDS"));
      NEEDLE_ASSIGN(Value * list, top());
      Value l = *list;
      for (const Value& item : items) NEEDLE_TRY(append(l, item));
      return Status::ok();
    }
    case '}':
    case 'd': {  // EMPTY_DICT, DICT
      std::vector<Value> items;
      if (op == 'd') {
        NEEDLE_ASSIGN(items, pop_mark("DICT"));
        if (items.size() % 2) return fail("DICT with an odd number of items");
      }
      NEEDLE_ASSIGN(v, new_obj(Kind::Dict));
      for (size_t k = 0; k < items.size(); k += 2) NEEDLE_TRY(set_item(v, items[k], items[k + 1]));
      return push(v);
    }
    case 's': {  // SETITEM
      NEEDLE_ASSIGN(Value value, pop());
      NEEDLE_ASSIGN(Value key, pop());
      NEEDLE_ASSIGN(Value * dict, top());
      return set_item(*dict, key, value);
    }
    case 'u': {  // SETITEMS
      NEEDLE_ASSIGN(auto items, pop_mark("SETITEMS"));
      if (items.size() % 2) return fail("SETITEMS with an odd number of items");
      NEEDLE_ASSIGN(Value * dict, top());
      Value d = *dict;
      for (size_t k = 0; k < items.size(); k += 2) NEEDLE_TRY(set_item(d, items[k], items[k + 1]));
      return Status::ok();
    }
    case 'c': {  // GLOBAL "module\nname\n"
      std::string_view lines[2];
      for (auto& line : lines) {
        size_t end = pos_;
        while (end < in_.size() && in_[end] != '\n' && end - pos_ < kMaxGlobalLine) ++end;
        if (end >= in_.size() || in_[end] != '\n') return fail("GLOBAL name is unterminated or too long");
        line = std::string_view(reinterpret_cast<const char*>(in_.data() + pos_), end - pos_);
        pos_ = end + 1;
      }
      return push_global(lines[0], lines[1]);
    }
    case 0x93: {  // STACK_GLOBAL
      NEEDLE_ASSIGN(Value name, pop());
      NEEDLE_ASSIGN(Value module, pop());
      if (name.kind != Kind::Str || module.kind != Kind::Str)
        return fail("STACK_GLOBAL needs two strings, got {} and {}", kind_name(module.kind),
                    kind_name(name.kind));
      return push_global(objs_[module.obj].text, objs_[name.obj].text);
    }
    case 'R':
      return reduce();
    case 'b':
      return build();
    case 0x94: {  // MEMOIZE
      return memo_put(memo_.size());
    }
    case 'q':
    case 'r': {  // BINPUT, LONG_BINPUT
      NEEDLE_ASSIGN(uint64_t idx, read_uint(op == 'q' ? 1 : 4, "PUT"));
      return memo_put(idx);
    }
    case 'h':
    case 'j': {  // BINGET, LONG_BINGET
      NEEDLE_ASSIGN(uint64_t idx, read_uint(op == 'h' ? 1 : 4, "GET"));
      return memo_get(idx);
    }
    case 'P':
    case 'Q':
      return fail("persistent IDs are not supported");
    case 'i':
    case 'o':
    case 0x81:
    case 0x92:
      return fail("opcode 0x{:02x} builds arbitrary objects and is not allowed", op);
    case 0x82:
    case 0x83:
    case 0x84:
      return fail("extension registry opcodes are not allowed");
    case 0x97:
      return fail("out-of-band buffers (NEXT_BUFFER) are not supported");
    case 0x8f:
    case 0x90:
    case 0x91:
      return fail("sets are not supported");
    case 'I':
    case 'L':
    case 'F':
    case 'S':
    case 'T':
    case 'U':
    case 'V':
    case 'g':
    case 'p':
      return fail("protocol 0/1 opcode '{}' is not supported", static_cast<char>(op));
    default:
      return fail("unknown opcode 0x{:02x}", op);
  }
}

Status Interpreter::reduce() {
  NEEDLE_ASSIGN(Value args_v, pop());
  NEEDLE_ASSIGN(Value fn, pop());
  if (fn.kind != Kind::Global) return fail("REDUCE on a {}, expected an allowed global", kind_name(fn.kind));
  if (args_v.kind != Kind::Tuple) return fail("REDUCE arguments are a {}, expected a tuple", kind_name(args_v.kind));
  const std::vector<Value>& args = objs_[args_v.obj].items;  // stable: the deque never moves it
  auto c = static_cast<Callable>(fn.i);
  auto arity = [&](size_t lo, size_t hi) -> Status {
    if (args.size() < lo || args.size() > hi)
      return fail("{} called with {} arguments", callable_name(c), args.size());
    return Status::ok();
  };
  switch (c) {
    case Callable::Reconstruct: {
      NEEDLE_TRY(arity(3, 3));
      if (args[0].kind != Kind::Global || static_cast<Callable>(args[0].i) != Callable::NdArray)
        return fail("_reconstruct of something other than numpy.ndarray");
      NEEDLE_ASSIGN(Value a, new_obj(Kind::Array));
      return push(a);
    }
    case Callable::DTypeCtor: {
      NEEDLE_TRY(arity(1, 3));
      DTypeInfo info;
      if (args[0].kind == Kind::Str) {
        info = dtype_from_code(objs_[args[0].obj].text);
      } else if (args[0].kind == Kind::Global && static_cast<Callable>(args[0].i) == Callable::BFloat16) {
        info.elem = Elem::BF16;
        info.size = 2;
        info.name = "bfloat16";
      } else {
        return fail("numpy.dtype of a {} is not supported", kind_name(args[0].kind));
      }
      NEEDLE_ASSIGN(Value d, new_obj(Kind::DType));
      dtypes_[objs_[d.obj].ext] = std::move(info);
      return push(d);
    }
    case Callable::FromBuffer: {
      NEEDLE_TRY(arity(4, 4));
      if (args[1].kind != Kind::DType) return fail("_frombuffer dtype is a {}", kind_name(args[1].kind));
      if (args[2].kind != Kind::Tuple) return fail("_frombuffer shape is a {}", kind_name(args[2].kind));
      if (args[3].kind != Kind::Str) return fail("_frombuffer order is a {}", kind_name(args[3].kind));
      const std::string& order = objs_[args[3].obj].text;
      if (order != "C" && order != "F") return fail("_frombuffer order '{}' is not C or F", printable(order));
      NEEDLE_ASSIGN(Value a, new_obj(Kind::Array));
      // Copy the inputs first: finish_array takes references into the arena.
      DTypeInfo dt = dtypes_[objs_[args[1].obj].ext];
      const Obj& shape = objs_[args[2].obj];
      NEEDLE_TRY(finish_array(arrays_[objs_[a.obj].ext], dt, shape, order == "F", args[0], "_frombuffer"));
      return push(a);
    }
    case Callable::Scalar: {
      NEEDLE_TRY(arity(2, 2));
      if (args[0].kind != Kind::DType || args[1].kind != Kind::Bytes)
        return fail("numpy scalar needs a dtype and bytes");
      const DTypeInfo& dt = dtypes_[objs_[args[0].obj].ext];
      auto b = objs_[args[1].obj].bytes();
      if (dt.elem == Elem::Unsupported) return fail("numpy scalar of dtype {} is not supported", dt.name);
      if (b.size() != dt.size) return fail("numpy scalar has {} bytes, dtype {} needs {}", b.size(), dt.name, dt.size);
      uint64_t u = 0;
      for (size_t k = 0; k < b.size(); ++k) {
        size_t src = dt.big_endian ? b.size() - 1 - k : k;
        u |= static_cast<uint64_t>(b[src]) << (8 * k);
      }
      Value s;
      switch (dt.elem) {
        case Elem::F16: s.kind = Kind::Float; s.f = f16_to_f32(static_cast<uint16_t>(u)); break;
        case Elem::BF16: s.kind = Kind::Float; s.f = bf16_to_f32(static_cast<uint16_t>(u)); break;
        case Elem::F32: {
          float f;
          auto w = static_cast<uint32_t>(u);
          std::memcpy(&f, &w, 4);
          s.kind = Kind::Float;
          s.f = f;
          break;
        }
        case Elem::F64: s.kind = Kind::Float; std::memcpy(&s.f, &u, 8); break;
        case Elem::Bool: s.kind = Kind::Bool; s.i = u != 0; break;
        case Elem::Int: {
          int shift = 64 - 8 * dt.size;
          s.kind = Kind::Int;
          s.i = static_cast<int64_t>(u << shift) >> shift;
          break;
        }
        case Elem::UInt:
          if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
            return fail("numpy uint64 scalar {} does not fit in int64", u);
          s.kind = Kind::Int;
          s.i = static_cast<int64_t>(u);
          break;
        case Elem::Unsupported: break;
      }
      return push(s);
    }
    case Callable::CodecsEncode: {
      NEEDLE_TRY(arity(2, 2));
      if (args[0].kind != Kind::Str || args[1].kind != Kind::Str) return fail("_codecs.encode needs two strings");
      const std::string& enc = objs_[args[1].obj].text;
      if (enc != "latin1" && enc != "latin-1") return fail("_codecs.encode with encoding '{}'", printable(enc));
      NEEDLE_TRY(charge(objs_[args[0].obj].text.size()));
      std::string out;
      if (!latin1_from_utf8(objs_[args[0].obj].text, out)) return fail("_codecs.encode text is not latin-1");
      NEEDLE_ASSIGN(Value b, new_obj(Kind::Bytes));
      objs_[b.obj].text = std::move(out);
      return push(b);
    }
    case Callable::BytesCtor:
    case Callable::ByteArray: {
      NEEDLE_TRY(arity(0, 1));
      if (args.empty()) return push_bytes({});
      if (args[0].kind != Kind::Bytes) return fail("{} of a {} is not supported", callable_name(c), kind_name(args[0].kind));
      return push(args[0]);
    }
    case Callable::OrderedDict: {
      NEEDLE_TRY(arity(0, 0));
      NEEDLE_ASSIGN(Value d, new_obj(Kind::Dict));
      return push(d);
    }
    case Callable::NdArray:
    case Callable::BFloat16:
      return fail("{} cannot be called", callable_name(c));
  }
  return fail("unhandled global");
}

Status Interpreter::build() {
  NEEDLE_ASSIGN(Value state, pop());
  NEEDLE_ASSIGN(Value * t, top());
  if (state.kind != Kind::Tuple) return fail("BUILD state is a {}, expected a tuple", kind_name(state.kind));
  if (t->kind == Kind::Array) return build_array(objs_[t->obj], objs_[state.obj]);
  if (t->kind == Kind::DType) return build_dtype(objs_[t->obj], objs_[state.obj]);
  return fail("BUILD on a {} is not supported", kind_name(t->kind));
}

// ndarray.__setstate__((version, shape, dtype, is_fortran, rawdata)); version is optional.
Status Interpreter::build_array(Obj& a, const Obj& state) {
  const auto& it = state.items;
  if (it.size() != 4 && it.size() != 5) return fail("ndarray state has {} items, expected 5", it.size());
  size_t b = it.size() - 4;
  if (b && (it[0].kind != Kind::Int || it[0].i < 0 || it[0].i > 1))
    return fail("ndarray state version is not 0 or 1");
  if (it[b].kind != Kind::Tuple) return fail("ndarray shape is a {}", kind_name(it[b].kind));
  if (it[b + 1].kind != Kind::DType) return fail("ndarray dtype is a {}", kind_name(it[b + 1].kind));
  if (it[b + 2].kind != Kind::Bool && it[b + 2].kind != Kind::Int) return fail("ndarray fortran flag is a {}", kind_name(it[b + 2].kind));
  if (it[b + 3].kind == Kind::List) return fail("object arrays are not supported");
  DTypeInfo dt = dtypes_[objs_[it[b + 1].obj].ext];
  return finish_array(arrays_[a.ext], dt, objs_[it[b].obj], it[b + 2].i != 0, it[b + 3], "ndarray");
}

Status Interpreter::finish_array(ArrayInfo& a, const DTypeInfo& dt, const Obj& shape, bool fortran,
                                 const Value& data, std::string_view what) {
  if (data.kind != Kind::Bytes) return fail("{} data is a {}, expected bytes", what, kind_name(data.kind));
  if (shape.items.size() > 32) return fail("{} has {} dimensions", what, shape.items.size());
  std::vector<int64_t> dims;
  uint64_t numel = 1;
  constexpr uint64_t kLimit = uint64_t{1} << 62;
  for (const Value& d : shape.items) {
    if (d.kind != Kind::Int || d.i < 0) return fail("{} shape holds a non-count", what);
    auto u = static_cast<uint64_t>(d.i);
    if (u != 0 && numel > kLimit / u) return fail("{} shape has more than 2^62 elements", what);
    numel *= u;
    dims.push_back(d.i);
  }
  size_t have = objs_[data.obj].bytes().size();
  if (dt.elem != Elem::Unsupported) {
    if (numel > kLimit / dt.size || numel * dt.size != have)
      return fail("{} of shape {} and dtype {} needs {} bytes, has {}", what, shape_str(dims), dt.name,
                  numel > kLimit / dt.size ? std::string("too many") : std::to_string(numel * dt.size), have);
  }
  a.built = true;
  a.dtype = dt;
  a.shape = std::move(dims);
  a.fortran = fortran;
  a.data = data.obj;
  return Status::ok();
}

// dtype.__setstate__((version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata])).
// Shapes we cannot represent become an Unsupported dtype, so that an array we never use
// (e.g. under an ignored top-level key) does not fail the whole file.
Status Interpreter::build_dtype(Obj& d, const Obj& state) {
  const auto& it = state.items;
  if (it.size() < 5 || it[1].kind != Kind::Str) return fail("dtype state has an unknown layout");
  DTypeInfo& dt = dtypes_[d.ext];
  const std::string& order = objs_[it[1].obj].text;
  if (order == "<") dt.big_endian = false;
  else if (order == ">") dt.big_endian = true;
  else if (order == "|" && dt.size <= 1) dt.big_endian = false;
  else {
    dt.elem = Elem::Unsupported;
    dt.name += fmt::format(" with byte order '{}'", printable(order));
  }
  if (it[2].kind != Kind::None || it[3].kind != Kind::None || it[4].kind != Kind::None) {
    dt.elem = Elem::Unsupported;
    dt.name = "structured/sub-array dtype";
  }
  if (it.size() > 5 && it[5].kind == Kind::Int && it[5].i > 0 && dt.elem != Elem::Unsupported &&
      it[5].i != dt.size) {
    dt.name += fmt::format(" with itemsize {}", it[5].i);
    dt.elem = Elem::Unsupported;
  }
  return Status::ok();
}

// ---- turning the unpickled object into a PickleCheckpoint ----

class Extractor {
 public:
  Extractor(const Interpreter& it, size_t input_size) : it_(it), budget_(input_size + kSlack) {}
  Result<PickleCheckpoint> run(const Value& root);

 private:
  Status charge(size_t n, size_t offset) {
    if (n > budget_ - used_)
      return make_error(
          "pickle: the checkpoint expands beyond its input size; arrays or dicts are shared through the memo (offset {})",
          offset);
    used_ += n;
    return Status::ok();
  }
  Status flatten_params(const Value& root);
  Result<HostTensor> to_tensor(const Obj& a, const std::string& path);
  bool to_scalar(const Value& v, ScalarValue& out) const;

  const Interpreter& it_;
  size_t budget_, used_ = 0;
  PickleCheckpoint out_;
};

size_t scalar_size(const ScalarValue& s) {
  const auto* str = std::get_if<std::string>(&s);
  return str ? str->size() : 0;
}

// An out-parameter rather than Result<ScalarValue>: GCC 12 misreports the variant inside
// an optional as maybe-uninitialized under -O1 sanitizer builds.
bool Extractor::to_scalar(const Value& v, ScalarValue& out) const {
  switch (v.kind) {
    case Kind::None: out = std::monostate{}; return true;
    case Kind::Bool: out = v.i != 0; return true;
    case Kind::Int: out = v.i; return true;
    case Kind::Float: out = v.f; return true;
    case Kind::Str: out = it_.obj(v).text; return true;
    default: return false;
  }
}

Result<PickleCheckpoint> Extractor::run(const Value& root) {
  if (root.kind != Kind::Dict)
    return make_error("pickle: the checkpoint is a {}, expected a dict (offset 0)", kind_name(root.kind));
  const Obj& top = it_.obj(root);
  bool have_params = false;
  for (size_t k = 0; k < top.items.size(); k += 2) {
    const Value& key = top.items[k];
    const Value& val = top.items[k + 1];
    if (key.kind != Kind::Str) continue;  // not ours to interpret
    const std::string& name = it_.obj(key).text;
    if (name == "params") {
      if (val.kind != Kind::Dict)
        return make_error("pickle: 'params' is a {}, expected a dict (offset {})", kind_name(val.kind), top.offset);
      NEEDLE_TRY(flatten_params(val));
      have_params = true;
    } else if (name == "config") {
      if (val.kind != Kind::Dict)
        return make_error("pickle: 'config' is a {}, expected a dict (offset {})", kind_name(val.kind), top.offset);
      const Obj& cfg = it_.obj(val);
      for (size_t c = 0; c < cfg.items.size(); c += 2) {
        const Value& ck = cfg.items[c];
        if (ck.kind != Kind::Str)
          return make_error("pickle: config key is a {}, expected a str (offset {})", kind_name(ck.kind), cfg.offset);
        ScalarValue s;
        if (!to_scalar(cfg.items[c + 1], s))
          return make_error("pickle: config '{}' is a {}; only None, bool, int, float and str are supported (offset {})",
                            printable(it_.obj(ck).text), kind_name(cfg.items[c + 1].kind), cfg.offset);
        NEEDLE_TRY(charge(it_.obj(ck).text.size() + scalar_size(s) + 64, cfg.offset));
        out_.config.emplace_back(it_.obj(ck).text, std::move(s));
      }
    } else {
      ScalarValue s;
      if (!to_scalar(val, s)) continue;  // non-scalar extras are not ours to interpret
      NEEDLE_TRY(charge(name.size() + scalar_size(s) + 64, top.offset));
      out_.extra.emplace_back(name, std::move(s));
    }
  }
  if (!have_params) return make_error("pickle: the checkpoint has no 'params' dict (offset {})", top.offset);
  return std::move(out_);
}

// Walks the nested dicts with an explicit stack (depth-capped, so a cyclic dict errors).
Status Extractor::flatten_params(const Value& root) {
  struct Frame {
    uint32_t dict;
    size_t next;
    std::string prefix;
  };
  std::vector<Frame> frames{{root.obj, 0, "params"}};
  while (!frames.empty()) {
    Frame& f = frames.back();
    const Obj& d = it_.obj_at(f.dict);
    if (2 * f.next >= d.items.size()) {
      frames.pop_back();
      continue;
    }
    const Value key = d.items[2 * f.next];
    const Value val = d.items[2 * f.next + 1];
    ++f.next;
    NEEDLE_TRY(charge(64, d.offset));
    if (key.kind != Kind::Str)
      return make_error("pickle: key in '{}' is a {}, expected a str (offset {})", f.prefix, kind_name(key.kind), d.offset);
    const std::string& name = it_.obj(key).text;
    if (name.empty() || name.find('/') != std::string::npos)
      return make_error("pickle: key '{}' in '{}' is empty or contains '/' (offset {})", printable(name), f.prefix, d.offset);
    // Paths are reported without the leading "params/".
    std::string path = frames.size() == 1 ? name : f.prefix + "/" + name;
    if (path.size() > kMaxPath)
      return make_error("pickle: parameter path longer than {} bytes (offset {})", kMaxPath, d.offset);
    if (val.kind == Kind::Dict) {
      if (frames.size() >= kMaxTreeDepth)
        return make_error("pickle: params nested deeper than {} dicts (offset {})", kMaxTreeDepth, d.offset);
      frames.push_back({val.obj, 0, std::move(path)});  // invalidates f
    } else if (val.kind == Kind::Array) {
      NEEDLE_ASSIGN(HostTensor t, to_tensor(it_.obj(val), path));
      out_.params.emplace_back(std::move(path), std::move(t));
    } else {
      return make_error("pickle: params entry '{}' is a {}, expected an array or a dict (offset {})",
                        printable(path), kind_name(val.kind), d.offset);
    }
  }
  return Status::ok();
}

// float16/float32/bfloat16 keep their dtype; float64 becomes float32 (round to nearest).
// Big-endian data is byte-swapped and Fortran-ordered data transposed to C order.
Result<HostTensor> Extractor::to_tensor(const Obj& obj, const std::string& path) {
  const ArrayInfo& a = it_.array(obj);
  if (!a.built)
    return make_error("pickle: array '{}' was never given its data (offset {})", printable(path), obj.offset);
  const DTypeInfo& dt = a.dtype;
  HostTensor t;
  switch (dt.elem) {
    case Elem::F16: t.dtype = DType::F16; break;
    case Elem::BF16: t.dtype = DType::BF16; break;
    case Elem::F32:
    case Elem::F64: t.dtype = DType::F32; break;
    default:
      return make_error("pickle: array '{}' has dtype {}; only float16, float32, bfloat16 and float64 are supported (offset {})",
                        printable(path), dt.name, obj.offset);
  }
  t.shape = a.shape;
  auto src = it_.obj_at(a.data).bytes();
  NEEDLE_TRY(charge(src.size() + path.size() + 128, obj.offset));  // what this leaf will hold
  std::vector<uint8_t> data(src.begin(), src.end());
  const size_t es = dt.size;
  if (dt.big_endian && es > 1)
    for (size_t i = 0; i < data.size(); i += es) std::reverse(data.begin() + i, data.begin() + i + es);
  if (a.fortran && a.shape.size() > 1) {
    // Element at C index (i0..id-1) sits at Fortran offset sum(ik * prod(shape[0..k-1])).
    const size_t nd = a.shape.size();
    std::vector<size_t> fstride(nd), idx(nd, 0);
    size_t s = 1;
    for (size_t k = 0; k < nd; ++k) { fstride[k] = s; s *= static_cast<size_t>(a.shape[k]); }
    const size_t n = data.size() / es;
    std::vector<uint8_t> c(data.size());
    size_t off = 0;  // Fortran element offset of idx
    for (size_t i = 0; i < n; ++i) {
      std::memcpy(c.data() + i * es, data.data() + off * es, es);
      for (size_t k = nd; k-- > 0;) {  // odometer over the C index, last axis fastest
        ++idx[k];
        off += fstride[k];
        if (idx[k] < static_cast<size_t>(a.shape[k])) break;
        off -= fstride[k] * idx[k];
        idx[k] = 0;
      }
    }
    data = std::move(c);
  }
  if (dt.elem == Elem::F64) {
    const size_t n = data.size() / 8;
    std::vector<uint8_t> f32(n * 4);
    for (size_t i = 0; i < n; ++i) {
      double d;
      std::memcpy(&d, data.data() + 8 * i, 8);
      auto f = static_cast<float>(d);
      std::memcpy(f32.data() + 4 * i, &f, 4);
    }
    data = std::move(f32);
  }
  t.data = std::move(data);
  return t;
}

}  // namespace

Result<PickleCheckpoint> read_pickle_checkpoint(std::span<const uint8_t> bytes) {
  try {
    Interpreter it(bytes);
    NEEDLE_ASSIGN(Value root, it.run());
    Extractor ex(it, bytes.size());
    return ex.run(root);
  } catch (const std::bad_alloc&) {
    return make_error("pickle: out of memory while reading {} bytes", bytes.size());
  } catch (const std::exception& e) {
    return make_error("pickle: internal error: {}", e.what());
  }
}

}  // namespace needle
