// The integer encodings of the log and snapshot files (docs/storage-format.md).
// Every reader and writer of those files uses these, so the bytes and the
// overflow rule are decided once.
//
//   fixed32, fixed64  4 or 8 bytes, little-endian, whatever the host's order.
//   varint32, varint64  7 bits per byte, low group first; the high bit of a
//                       byte says another follows (LEB128, as protobuf).
//
// A varint decoder refuses, and consumes nothing from its input, when the input
// ends inside the varint or the varint overflows its type:
//   varint32: more than 5 bytes, or a 5th byte above 0x0F (bits past 32);
//   varint64: more than 10 bytes, or a 10th byte above 0x01 (bits past 64).
// Padding within those limits (0x80 0x00 for 0) is accepted: PutVarint never
// writes it, but it does not overflow.
#ifndef KVSTORE_COMMON_STORAGE_CODING_H_
#define KVSTORE_COMMON_STORAGE_CODING_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace kvstore {

inline constexpr size_t kMaxVarint32Bytes = 5;
inline constexpr size_t kMaxVarint64Bytes = 10;

// Write 4 or 8 bytes at p.
inline void EncodeFixed32(uint32_t v, char* p) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>(v >> (8 * i));
}
inline void EncodeFixed64(uint64_t v, char* p) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<char>(v >> (8 * i));
}

// Read 4 or 8 bytes at p; the caller has checked they are there.
inline uint32_t DecodeFixed32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}
inline uint64_t DecodeFixed64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

// Append to *out.
void PutFixed32(uint32_t v, std::string* out);
void PutFixed64(uint64_t v, std::string* out);
void PutVarint32(uint32_t v, std::string* out);
void PutVarint64(uint64_t v, std::string* out);

// Write the varint at p, which has room for kMaxVarint{32,64}Bytes; return
// the byte after it.
char* EncodeVarint32(uint32_t v, char* p);
char* EncodeVarint64(uint64_t v, char* p);

// Bytes PutVarint64(v) writes (and PutVarint32, for v below 2^32).
size_t VarintLength(uint64_t v);

// Decode a varint from the front of *in and advance *in past it. False, with
// *in and *v untouched, on truncation or overflow (the rule above).
bool GetVarint32(absl::string_view* in, uint32_t* v);
bool GetVarint64(absl::string_view* in, uint64_t* v);

}  // namespace kvstore

#endif  // KVSTORE_COMMON_STORAGE_CODING_H_
