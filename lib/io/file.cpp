#include "io/file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace needle {

MappedFile::MappedFile(MappedFile&& o) noexcept
    : data_(o.data_), size_(o.size_), path_(std::move(o.path_)) {
  o.data_ = nullptr;
  o.size_ = 0;
}

MappedFile& MappedFile::operator=(MappedFile&& o) noexcept {
  if (this != &o) {
    this->~MappedFile();
    new (this) MappedFile(std::move(o));
  }
  return *this;
}

MappedFile::~MappedFile() {
  if (data_ && size_) munmap(const_cast<uint8_t*>(data_), size_);
}

static Result<int> open_regular(const std::string& path, struct stat& st) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return make_error("cannot open '{}': {}", path, std::strerror(errno));
  if (fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    return make_error("cannot stat '{}': {}", path, std::strerror(e));
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    return make_error("'{}' is a directory, not a file", path);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return make_error("'{}' is not a regular file", path);
  }
  return fd;
}

Result<MappedFile> MappedFile::open(const std::string& path) {
  struct stat st {};
  NEEDLE_ASSIGN(int fd, open_regular(path, st));
  MappedFile m;
  m.path_ = path;
  m.size_ = (size_t)st.st_size;
  if (m.size_ > 0) {
    void* p = mmap(nullptr, m.size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      return make_error("cannot map '{}': {}", path, std::strerror(e));
    }
    m.data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
  return m;
}

Result<std::vector<uint8_t>> read_file(const std::string& path, size_t max_bytes) {
  struct stat st {};
  NEEDLE_ASSIGN(int fd, open_regular(path, st));
  if ((uint64_t)st.st_size > max_bytes) {
    ::close(fd);
    return make_error("'{}' is too large ({} bytes, limit {})", path, (uint64_t)st.st_size, max_bytes);
  }
  std::vector<uint8_t> buf((size_t)st.st_size);
  size_t got = 0;
  while (got < buf.size()) {
    ssize_t r = ::read(fd, buf.data() + got, buf.size() - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      int e = errno;
      ::close(fd);
      return make_error("cannot read '{}': {}", path, r == 0 ? "unexpected end of file" : std::strerror(e));
    }
    got += (size_t)r;
  }
  ::close(fd);
  return buf;
}

namespace {

// Writes all of every piece to fd and fsyncs it. 0 or an errno; fd stays open.
int write_and_sync(int fd, std::span<const std::span<const uint8_t>> pieces) {
  for (std::span<const uint8_t> bytes : pieces) {
    size_t done = 0;
    while (done < bytes.size()) {
      ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return w < 0 ? errno : ENOSPC;
      done += (size_t)w;
    }
  }
  return ::fsync(fd) != 0 ? errno : 0;
}

}  // namespace

Status write_file_atomic(const std::string& path, std::span<const uint8_t> bytes) {
  const std::span<const uint8_t> one[] = {bytes};
  return write_file_atomic(path, one);
}

Status write_file_atomic(const std::string& path, std::span<const std::span<const uint8_t>> bytes) {
  const std::string tmp = path + ".tmp." + std::to_string(getpid());
  // The bytes first go to an unnamed file in the target's directory (O_TMPFILE), so that a
  // process killed while writing or syncing leaves nothing behind; only the complete, synced
  // file is linked under the temporary name, just before the rename. Where that is not
  // possible (no O_TMPFILE in the file system, no /proc), a named temporary file is written.
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  bool named = false;
  if (int fd = ::open(dir.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0644); fd >= 0) {
    if (int e = write_and_sync(fd, bytes); e != 0) {
      ::close(fd);
      return make_error("cannot write '{}': {}", path, std::strerror(e));
    }
    ::unlink(tmp.c_str());  // a leftover of an earlier process that had our pid
    const std::string self = "/proc/self/fd/" + std::to_string(fd);
    named = ::linkat(AT_FDCWD, self.c_str(), AT_FDCWD, tmp.c_str(), AT_SYMLINK_FOLLOW) == 0;
    ::close(fd);
  }
  if (!named) {
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return make_error("cannot create '{}': {}", tmp, std::strerror(errno));
    int e = write_and_sync(fd, bytes);
    if (::close(fd) != 0 && e == 0) e = errno;
    if (e != 0) {
      ::unlink(tmp.c_str());
      return make_error("cannot write '{}': {}", path, std::strerror(e));
    }
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    return make_error("cannot rename '{}' to '{}': {}", tmp, path, std::strerror(e));
  }
  return Status::ok();
}

}  // namespace needle
