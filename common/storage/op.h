// A log record's payload: one mutation with absolute values, so replaying it
// twice, or over a snapshot that already holds it, gives the same state.
//
//   type u8 | version u64 | expire_unix_ms i64 | key_len varint32 | key | value (rest)
#ifndef KVSTORE_COMMON_STORAGE_OP_H_
#define KVSTORE_COMMON_STORAGE_OP_H_

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace kvstore {

enum class OpType : uint8_t {
  kPut = 1,     // key := value, with version and absolute expiry (0 = never).
  kDelete = 2,  // key removed; version is the delete's.
};

// Views into the caller's or the payload's bytes.
struct OpView {
  OpType type = OpType::kPut;
  uint64_t version = 0;
  int64_t expire_unix_ms = 0;
  absl::string_view key;
  absl::string_view value;
};

void EncodeOp(const OpView& op, std::string* out);
// False if the payload is not a well-formed op.
[[nodiscard]] bool DecodeOp(absl::string_view payload, OpView* op);

}  // namespace kvstore

#endif  // KVSTORE_COMMON_STORAGE_OP_H_
