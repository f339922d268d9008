#include "common/storage/coding.h"

namespace kvstore {
namespace {

// The one decoder: at most max_bytes bytes, and the last of those may carry
// only last_byte_max (its top bits would shift past the type's width).
bool GetVarint(absl::string_view* in, size_t max_bytes, uint8_t last_byte_max, uint64_t* v) {
  uint64_t result = 0;
  for (size_t i = 0; i < max_bytes && i < in->size(); ++i) {
    const uint8_t byte = static_cast<uint8_t>((*in)[i]);
    if (i == max_bytes - 1 && byte > last_byte_max) return false;
    result |= static_cast<uint64_t>(byte & 0x7F) << (7 * i);
    if ((byte & 0x80) == 0) {
      in->remove_prefix(i + 1);
      *v = result;
      return true;
    }
  }
  return false;  // Cut short, or the last byte allowed says another follows.
}

}  // namespace

void PutFixed32(uint32_t v, std::string* out) {
  char buf[4];
  EncodeFixed32(v, buf);
  out->append(buf, sizeof(buf));
}

void PutFixed64(uint64_t v, std::string* out) {
  char buf[8];
  EncodeFixed64(v, buf);
  out->append(buf, sizeof(buf));
}

char* EncodeVarint64(uint64_t v, char* p) {
  while (v >= 0x80) {
    *p++ = static_cast<char>(v | 0x80);
    v >>= 7;
  }
  *p++ = static_cast<char>(v);
  return p;
}

char* EncodeVarint32(uint32_t v, char* p) { return EncodeVarint64(v, p); }

void PutVarint32(uint32_t v, std::string* out) {
  char buf[kMaxVarint32Bytes];
  out->append(buf, static_cast<size_t>(EncodeVarint32(v, buf) - buf));
}

void PutVarint64(uint64_t v, std::string* out) {
  char buf[kMaxVarint64Bytes];
  out->append(buf, static_cast<size_t>(EncodeVarint64(v, buf) - buf));
}

size_t VarintLength(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

bool GetVarint32(absl::string_view* in, uint32_t* v) {
  uint64_t result = 0;
  // 4 * 7 = 28 bits before the 5th byte; it may add 4 more.
  if (!GetVarint(in, kMaxVarint32Bytes, 0x0F, &result)) return false;
  *v = static_cast<uint32_t>(result);
  return true;
}

bool GetVarint64(absl::string_view* in, uint64_t* v) {
  // 9 * 7 = 63 bits before the 10th byte; it may add 1 more.
  return GetVarint(in, kMaxVarint64Bytes, 0x01, v);
}

}  // namespace kvstore
