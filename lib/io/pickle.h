// Reading and writing Needle's original checkpoints (`needle.pkl`): a Python pickle of
// {"params": nested dict of numpy arrays, "config": dict, ...}. The reader is an opcode
// interpreter that executes nothing: only an allow-list of globals is accepted (numpy array
// reconstruction for numpy 1 and numpy 2 module paths, dtype, _frombuffer, ml_dtypes.bfloat16,
// plain containers); anything else is rejected with an error naming the global.
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
  // Other top-level keys with scalar values (e.g. "pretrain_step"); others are ignored.
  std::vector<std::pair<std::string, ScalarValue>> extra;
};

// Parses an untrusted pickle. Never executes code; bounds every allocation by the input
// size; limits nesting depth. Errors are one line naming the problem and the byte offset.
Result<PickleCheckpoint> read_pickle_checkpoint(std::span<const uint8_t> bytes);

// Writes the original layout: protocol 4 (as the training code writes), numpy 1 module
// paths (numpy.core.multiarray._reconstruct, loadable by numpy 1 and 2), nested dicts
// for the "/" paths, every leaf converted to float16 (`np.array(x).astype(np.float16)`).
Result<std::vector<uint8_t>> write_pickle_checkpoint(const PickleCheckpoint& ckpt);

}  // namespace needle
