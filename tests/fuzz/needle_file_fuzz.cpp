// NeedleFile::parse over arbitrary bytes (untrusted .needle files), then model_from_file, and
// to_params (dequantization) for small inputs. Errors must be one line. So that mutations get
// past the header checksum, the harness rewrites the two CRC-32 fields (header at 68, data at
// 64) whenever the ranges the header names lie inside the input (the mismatch paths are
// covered by the unit tests).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <vector>

#include <zlib.h>

#include "io/needle_file.h"
#include "model/model_io.h"

using namespace needle;

namespace {
void check_one_line(const std::string& m) {
  if (m.empty() || m.find('\n') != std::string::npos) {
    std::fprintf(stderr, "error message is not one line: '%s'\n", m.c_str());
    std::abort();
  }
}
uint64_t get_u64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = v << 8 | p[i];
  return v;
}
void put_u32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
bool in_bounds(uint64_t off, uint64_t len, size_t size) { return off <= size && len <= size - off; }

void fix_checksums(std::vector<uint8_t>& b) {
  if (b.size() < 72) return;
  const uint64_t mo = get_u64(&b[16]), ms = get_u64(&b[24]), dio = get_u64(&b[32]), dis = get_u64(&b[40]);
  const uint64_t dao = get_u64(&b[48]), das = get_u64(&b[56]);
  if (in_bounds(dao, das, b.size())) put_u32(&b[64], static_cast<uint32_t>(crc32_z(0, &b[0] + dao, das)));
  if (!in_bounds(mo, ms, b.size()) || !in_bounds(dio, dis, b.size())) return;
  uint32_t crc = static_cast<uint32_t>(crc32_z(0, b.data(), 68));
  crc = static_cast<uint32_t>(crc32_z(crc, &b[0] + mo, ms));
  crc = static_cast<uint32_t>(crc32_z(crc, &b[0] + dio, dis));
  put_u32(&b[68], crc);
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> buf(data, data + size);
  fix_checksums(buf);
  data = buf.data();
  const std::span<const uint8_t> bytes(buf);
  auto f = NeedleFile::parse(bytes, /*verify_data=*/false);
  if (!f) {
    check_one_line(f.message());
    return 0;
  }
  // Every tensor the parser accepted lies inside the buffer.
  for (const TensorView& t : f->tensors()) {
    if (t.data < data || t.nbytes > size || t.data + t.nbytes > data + size) std::abort();
    auto n = tensor_nbytes(t.dtype, t.shape);
    if (!n || *n != t.nbytes) std::abort();
  }
  if (auto st = f->verify_data(); !st) check_one_line(st.message());
  auto m = model_from_file(std::move(*f));
  if (!m) {
    check_one_line(m.message());
    return 0;
  }
  if (size <= (256u << 10)) {
    auto p = to_params(*m);
    if (!p) check_one_line(p.message());
  }
  return 0;
}
