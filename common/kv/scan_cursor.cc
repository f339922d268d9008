#include "common/kv/scan_cursor.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace kvstore {
namespace {

constexpr size_t kNodeHeaderBytes = 1 + 8;
constexpr size_t kRouterHeaderBytes = 1 + 4 + 1;
constexpr size_t kMaxCursorShardNameBytes = 255;

void PutBigEndian(uint64_t v, int bytes, std::string* out) {
  for (int i = bytes - 1; i >= 0; --i) out->push_back(static_cast<char>(v >> (8 * i)));
}

uint64_t GetBigEndian(absl::string_view in, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | static_cast<uint8_t>(in[i]);
  return v;
}

absl::Status BadCursor(absl::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("invalid scan cursor: ", why,
                   " (pass back the next_cursor of the previous page unchanged, or an empty "
                   "cursor to start)"));
}

}  // namespace

std::string EncodeNodeCursor(const NodeScanCursor& cursor) {
  std::string out;
  out.push_back(static_cast<char>(kNodeCursorFormat));
  PutBigEndian(cursor.hash, 8, &out);
  if (cursor.after_key.has_value()) out.append(*cursor.after_key);
  return out;
}

absl::StatusOr<NodeScanCursor> DecodeNodeCursor(absl::string_view bytes) {
  NodeScanCursor cursor;
  if (bytes.empty()) return cursor;
  if (static_cast<uint8_t>(bytes[0]) == kRouterCursorFormat) {
    return BadCursor("it is kv-router's; a shard or replica takes only its own cursors");
  }
  if (static_cast<uint8_t>(bytes[0]) != kNodeCursorFormat) return BadCursor("unknown format");
  if (bytes.size() < kNodeHeaderBytes) return BadCursor("too short");
  cursor.hash = GetBigEndian(bytes.substr(1), 8);
  // Keys are never empty, so a key part is present exactly when there are bytes left.
  if (bytes.size() > kNodeHeaderBytes)
    cursor.after_key = std::string(bytes.substr(kNodeHeaderBytes));
  return cursor;
}

std::string EncodeRouterCursor(const RouterScanCursor& cursor) {
  std::string out;
  out.push_back(static_cast<char>(kRouterCursorFormat));
  PutBigEndian(cursor.position, 4, &out);
  const size_t name_bytes = std::min(cursor.shard.size(), kMaxCursorShardNameBytes);
  out.push_back(static_cast<char>(name_bytes));
  out.append(cursor.shard, 0, name_bytes);
  out.append(cursor.node_cursor);
  return out;
}

absl::StatusOr<RouterScanCursor> DecodeRouterCursor(absl::string_view bytes) {
  RouterScanCursor cursor;
  if (bytes.empty()) return cursor;
  if (static_cast<uint8_t>(bytes[0]) == kNodeCursorFormat) {
    return BadCursor("it is a shard's own cursor; kv-router takes only its own");
  }
  if (static_cast<uint8_t>(bytes[0]) != kRouterCursorFormat) return BadCursor("unknown format");
  if (bytes.size() < kRouterHeaderBytes) return BadCursor("too short");
  cursor.position = static_cast<uint32_t>(GetBigEndian(bytes.substr(1), 4));
  const size_t name_bytes = static_cast<uint8_t>(bytes[5]);
  if (bytes.size() < kRouterHeaderBytes + name_bytes) return BadCursor("too short");
  cursor.shard = std::string(bytes.substr(kRouterHeaderBytes, name_bytes));
  cursor.node_cursor = std::string(bytes.substr(kRouterHeaderBytes + name_bytes));
  return cursor;
}

}  // namespace kvstore
