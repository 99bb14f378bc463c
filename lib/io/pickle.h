// Reading and writing Needle's original checkpoints (`needle.pkl`): a Python pickle of
// {"params": nested dict of numpy arrays, "config": dict, ...}. The reader is an opcode
// interpreter that executes nothing: only an allow-list of globals is accepted (numpy array
// reconstruction for numpy 1 and numpy 2 module paths, dtype, _frombuffer, ml_dtypes.bfloat16,
// plain containers); anything else is rejected with an error naming the global.
//
// Reader details (pickle_reader.cpp):
// - Protocols 2..5 (0/1 text opcodes are rejected). Allowed globals, under both
//   `numpy.core.*` and `numpy._core.*`: multiarray._reconstruct, numeric._frombuffer
//   (protocol 5, in-band buffers only), multiarray.scalar (numpy scalars as config values),
//   numpy.ndarray, numpy.dtype, ml_dtypes.bfloat16; plus _codecs.encode and bytes/bytearray
//   (how protocol 2 spells bytes) and collections.OrderedDict (read as a plain dict).
//   Any other global fails as `pickle: global 'os.system' is not allowed (offset 123)`.
// - Leaves: float16 -> F16, float32 -> F32, bfloat16 -> BF16, float64 -> F32 (rounded to
//   nearest; out-of-range values become inf). Big-endian data is byte-swapped, Fortran-ordered
//   data transposed to C order, 0-d arrays have an empty shape. Other dtypes (ints, bool,
//   object, structured) fail when they appear under "params"; elsewhere they are ignored.
// - Paths are relative to "params" ("embedding/embedding"); keys must be non-empty strings
//   without '/'. A leaf that is not an array is an error.
// - Errors are one line: `pickle: <problem> (offset N)`, N the byte offset of the opcode (or
//   of the object) at fault. Bytes after STOP are ignored, as Python ignores them.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "util/result.h"
#include "util/tensor.h"

namespace needle {

// A scalar value from the config dict (or another top-level key such as pretrain_step).
using ScalarValue = std::variant<std::monostate /*None*/, bool, int64_t, double, std::string>;

struct PickleCheckpoint {
  // Leaves of "params", flattened to "a/b/c" paths, in the order the pickle lists them.
  // dtype is F16, F32 or BF16 (numpy float16/float32, ml_dtypes.bfloat16).
  std::vector<std::pair<std::string, HostTensor>> params;
  // The "config" dict, in pickle order. Non-scalar values are rejected.
  std::vector<std::pair<std::string, ScalarValue>> config;
  // Other top-level string keys with scalar values (e.g. "pretrain_step"), in pickle order;
  // keys with non-scalar values (lists, arrays, dicts) are ignored.
  std::vector<std::pair<std::string, ScalarValue>> extra;
};

// Parses an untrusted pickle. Never executes code; bounds every allocation by the input
// size (interpreter objects by 16x the input + 1 MiB, the tensors and paths returned by 1x +
// 1 MiB, so one array shared through the memo cannot be multiplied); limits MARK nesting
// (256), the stack (2^20 values) and "params" dict nesting (64, which also stops cycles).
// Errors are one line naming the problem and the byte offset. Never throws.
Result<PickleCheckpoint> read_pickle_checkpoint(std::span<const uint8_t> bytes);

// Writes the original layout: protocol 4 (as the training code writes), numpy 1 module
// paths (numpy.core.multiarray._reconstruct, loadable by numpy 1 and 2), nested dicts
// for the "/" paths, every leaf converted to float16 (`np.array(x).astype(np.float16)`).
// Top-level order: "params", "config", then `extra` in order. Dicts keep first-appearance
// order of path components. F32/BF16 leaves are rounded to f16 (RNE, overflow -> inf, as
// numpy's astype); Q8/Q4/I32 leaves are rejected. The bytes equal what CPython's pickler
// (protocol 4, numpy 1.x) writes for the same tree: reading the training code's file and
// writing it back reproduces it exactly. Fails on empty path components, a path that is
// both a leaf and a prefix, duplicate keys, "params"/"config" in `extra`, non-UTF-8 strings.
Result<std::vector<uint8_t>> write_pickle_checkpoint(const PickleCheckpoint& ckpt);

}  // namespace needle
