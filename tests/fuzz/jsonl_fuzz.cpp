// JsonlReader and NeedleExampleReader over arbitrary file contents (an in-memory file opened
// by path). The first byte picks max_line_bytes (small limits exercise the over-long-line
// path across the reader's chunk boundaries). Properties: line numbers of values and errors
// increase strictly and never exceed the number of lines; errors are one line.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "eval/jsonl.h"

using namespace needle;
using namespace needle::eval;

namespace {
void check_one_line(const std::string& m) {
  if (m.empty() || m.find('\n') != std::string::npos) {
    std::fprintf(stderr, "error message is not one line: '%s'\n", m.c_str());
    std::abort();
  }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  static const size_t kLimits[] = {1, 7, 64, 4096, size_t(16) << 20};
  JsonlOptions opt;
  opt.max_line_bytes = kLimits[data[0] % std::size(kLimits)];
  opt.parse.max_depth = 64;
  const uint8_t* body = data + 1;
  const size_t n = size - 1;
  size_t lines = 0;
  for (size_t i = 0; i < n; ++i) lines += body[i] == '\n';
  if (n > 0 && body[n - 1] != '\n') ++lines;

  const int fd = memfd_create("jsonl_fuzz", 0);
  if (fd < 0) std::abort();
  if (n > 0 && write(fd, body, n) != static_cast<ssize_t>(n)) std::abort();
  const std::string path = "/proc/self/fd/" + std::to_string(fd);

  if (auto r = JsonlReader::open(path, opt)) {
    JsonlLine line;
    size_t last = 0;
    while (r->next(line)) {
      if (line.line_no <= last || line.line_no > lines) std::abort();
      last = line.line_no;
    }
    size_t last_err = 0;
    for (const LineError& e : r->errors()) {
      if (e.line_no == 0 || e.line_no > lines + 1 || e.line_no <= last_err) std::abort();
      last_err = e.line_no;
      check_one_line(e.message);
    }
  } else {
    check_one_line(r.message());
  }

  NeedleReadOptions nopt;
  nopt.require_answers = (data[0] & 0x80) == 0;
  if (auto r = NeedleExampleReader::open(path, nopt, opt)) {
    NeedleExample ex;
    while (r->next(ex)) {
    }
    for (const LineError& e : r->errors()) check_one_line(e.message);
  }
  close(fd);
  return 0;
}
