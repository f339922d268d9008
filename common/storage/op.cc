#include "common/storage/op.h"

#include "common/storage/coding.h"

namespace kvstore {

void EncodeOp(const OpView& op, std::string* out) {
  out->push_back(static_cast<char>(op.type));
  PutFixed64(op.version, out);
  PutFixed64(static_cast<uint64_t>(op.expire_unix_ms), out);
  PutVarint32(static_cast<uint32_t>(op.key.size()), out);
  out->append(op.key.data(), op.key.size());
  if (op.type == OpType::kPut) out->append(op.value.data(), op.value.size());
}

bool DecodeOp(absl::string_view payload, OpView* op) {
  if (payload.size() < 17) return false;
  uint8_t type = static_cast<uint8_t>(payload[0]);
  if (type != static_cast<uint8_t>(OpType::kPut) && type != static_cast<uint8_t>(OpType::kDelete)) {
    return false;
  }
  op->type = static_cast<OpType>(type);
  op->version = DecodeFixed64(payload.data() + 1);
  op->expire_unix_ms = static_cast<int64_t>(DecodeFixed64(payload.data() + 9));
  payload.remove_prefix(17);
  uint32_t key_len = 0;
  if (!GetVarint32(&payload, &key_len) || key_len > payload.size()) return false;
  op->key = payload.substr(0, key_len);
  op->value = payload.substr(key_len);
  return op->type == OpType::kPut || op->value.empty();
}

}  // namespace kvstore
