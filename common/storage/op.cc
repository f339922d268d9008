#include "common/storage/op.h"

namespace kvstore {
namespace {

void PutFixed64(uint64_t v, std::string* out) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}

uint64_t GetFixed64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return v;
}

void PutVarint32(uint32_t v, std::string* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

bool GetVarint32(absl::string_view* in, uint32_t* v) {
  uint32_t result = 0;
  for (int shift = 0; shift <= 28 && !in->empty(); shift += 7) {
    uint8_t byte = static_cast<uint8_t>(in->front());
    in->remove_prefix(1);
    result |= static_cast<uint32_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) {
      *v = result;
      return true;
    }
  }
  return false;
}

}  // namespace

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
  op->version = GetFixed64(payload.data() + 1);
  op->expire_unix_ms = static_cast<int64_t>(GetFixed64(payload.data() + 9));
  payload.remove_prefix(17);
  uint32_t key_len = 0;
  if (!GetVarint32(&payload, &key_len) || key_len > payload.size()) return false;
  op->key = payload.substr(0, key_len);
  op->value = payload.substr(key_len);
  return op->type == OpType::kPut || op->value.empty();
}

}  // namespace kvstore
