// The `.needle` container (docs/format.md): magic + version, typed metadata, a tensor
// directory by name, 64-byte aligned data, CRC-32 checksums. This layer knows nothing of
// the model: it stores named typed tensors and key/value metadata. Reading validates every
// offset and size against the file before anything is used.
#pragma once
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "io/file.h"
#include "util/result.h"
#include "util/tensor.h"

namespace needle {

constexpr char kNeedleMagic[8] = {'N', 'E', 'E', 'D', 'L', 'E', '\r', '\n'};
constexpr uint32_t kNeedleVersionMajor = 1;
constexpr uint32_t kNeedleVersionMinor = 0;
constexpr uint64_t kNeedleAlign = 64;

using MetaBytes = std::vector<uint8_t>;
using MetaValue = std::variant<int64_t, double, bool, std::string, MetaBytes>;

// Bytes a tensor of this dtype and shape occupies (quantized: blocks along the last axis).
Result<uint64_t> tensor_nbytes(DType dtype, const std::vector<int64_t>& shape);

// A tensor inside a mapped file (or any buffer that outlives the view).
struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  uint64_t nbytes = 0;
  int64_t numel() const;
};

class NeedleFile {
 public:
  // Opens and validates: header, version, header/metadata/directory checksum, every
  // tensor's offset/size/alignment/overlap. `verify_data` also checks the data checksum.
  static Result<NeedleFile> open(const std::string& path, bool verify_data = false);
  // The same over bytes already in memory (tests, fuzzing); `bytes` must outlive the result.
  static Result<NeedleFile> parse(std::span<const uint8_t> bytes, bool verify_data = false);

  const std::vector<std::pair<std::string, MetaValue>>& metadata() const { return meta_; }
  const MetaValue* meta(const std::string& key) const;
  const std::vector<TensorView>& tensors() const { return tensors_; }
  const TensorView* tensor(const std::string& name) const;
  uint32_t version_major() const { return major_; }
  uint32_t version_minor() const { return minor_; }
  uint64_t file_size() const { return bytes_.size(); }
  // CRC-32 of the data section as recorded in the header: equal tensors give equal values.
  uint32_t data_crc() const { return data_crc_; }
  // Recomputes the data checksum.
  Status verify_data() const;

 private:
  MappedFile map_;
  std::span<const uint8_t> bytes_;
  uint32_t major_ = 0, minor_ = 0;
  uint32_t data_crc_ = 0;
  std::span<const uint8_t> data_;
  std::vector<std::pair<std::string, MetaValue>> meta_;
  std::vector<TensorView> tensors_;
  std::map<std::string, size_t> by_name_;
};

// Builds a file in memory. Tensors are copied in the order added.
class NeedleWriter {
 public:
  void set_meta(std::string key, MetaValue v);
  Status add_tensor(std::string name, DType dtype, std::vector<int64_t> shape, std::vector<uint8_t> data);
  std::vector<uint8_t> serialize() const;
  // Writes the serialized bytes atomically, streamed from the writer's own buffers (no copy of
  // the file in memory: a training checkpoint is hundreds of MB).
  Status write(const std::string& path) const;

 private:
  // The file as consecutive pieces: small owned buffers (header, field prefixes, directory,
  // padding) and views of the meta values and tensor data. Valid while *this is unchanged.
  struct Layout {
    std::vector<std::vector<uint8_t>> owned;
    std::vector<std::span<const uint8_t>> pieces;
  };
  Layout layout() const;

  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> data;
  };
  std::vector<std::pair<std::string, MetaValue>> meta_;
  std::vector<Entry> tensors_;
};

}  // namespace needle
