// File helpers: read-only memory maps, whole-file reads with limits, and atomic writes
// (unnamed temporary file in the same directory, fsync, rename) so no output is ever
// half-written.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "util/result.h"

namespace needle {

class MappedFile {
 public:
  MappedFile() = default;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& o) noexcept;
  MappedFile& operator=(MappedFile&& o) noexcept;
  ~MappedFile();

  // Maps `path` read-only. Errors for missing files, directories and unreadable files.
  static Result<MappedFile> open(const std::string& path);
  std::span<const uint8_t> bytes() const { return {data_, size_}; }
  const std::string& path() const { return path_; }

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

// Reads a whole regular file (at most max_bytes).
Result<std::vector<uint8_t>> read_file(const std::string& path, size_t max_bytes = size_t(1) << 32);

// Writes `bytes` to `path` atomically: an unnamed file in the same directory (O_TMPFILE),
// fsync, linked as path.tmp.<pid>, then renamed (a named path.tmp.<pid> from the start where
// O_TMPFILE is unavailable). On any error the temporary file is removed and the previous
// `path` (if any) is left untouched; a process killed (SIGKILL) while writing or syncing
// leaves no temporary file.
Status write_file_atomic(const std::string& path, std::span<const uint8_t> bytes);
// The same for a file that is the concatenation of `pieces` (nothing is copied: a large file
// can be written from the buffers that already hold its parts).
Status write_file_atomic(const std::string& path, std::span<const std::span<const uint8_t>> pieces);

}  // namespace needle
