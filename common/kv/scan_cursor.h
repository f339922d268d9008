// The bytes of Scan cursors (kvstore.v1.KeyValue/Scan). Clients treat a cursor
// as opaque; these formats are ours to change, behind the leading format byte.
//
// A node's cursor (kv-shard, kv-replica): a position in the order of the
// node's key map (common/storage/kv_map.h, KvMap::ScanPosition), valid on any
// node of the shard, since every node orders keys by the same hash.
//   byte 0      kNodeCursorFormat
//   bytes 1..8  the next key hash to visit, big-endian
//   bytes 9..   when present: the key after which a page ended among keys
//               sharing that hash (KvMap::ScanPosition::after_key)
//
// kv-router's cursor: a shard's place in the router's stable shard order
// (shard names, sorted) and that shard's own node cursor.
//   byte 0      kRouterCursorFormat
//   bytes 1..4  the shard's position in the order, big-endian
//   byte 5      length N of the shard's name (a topology allows 64)
//   bytes 6..   the shard's name (N bytes), then its node cursor (the rest;
//               empty: start of that shard)
//
// An empty cursor starts a scan; decoding anything else that does not follow
// these layouts is INVALID_ARGUMENT, so a cursor of the wrong kind (a router's
// sent to a node) is refused rather than misread.
#ifndef KVSTORE_COMMON_KV_SCAN_CURSOR_H_
#define KVSTORE_COMMON_KV_SCAN_CURSOR_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvstore {

inline constexpr uint8_t kNodeCursorFormat = 0x01;
inline constexpr uint8_t kRouterCursorFormat = 0x52;  // 'R'

struct NodeScanCursor {
  uint64_t hash = 0;
  std::optional<std::string> after_key;
};

std::string EncodeNodeCursor(const NodeScanCursor& cursor);
// An empty `bytes` is the start (hash 0, no key).
absl::StatusOr<NodeScanCursor> DecodeNodeCursor(absl::string_view bytes);

struct RouterScanCursor {
  uint32_t position = 0;    // Index in the router's shard order.
  std::string shard;        // The shard's name, to notice a changed topology.
  std::string node_cursor;  // Empty: the start of that shard.
};

std::string EncodeRouterCursor(const RouterScanCursor& cursor);
// An empty `bytes` is the start (position 0, no name).
absl::StatusOr<RouterScanCursor> DecodeRouterCursor(absl::string_view bytes);

}  // namespace kvstore

#endif  // KVSTORE_COMMON_KV_SCAN_CURSOR_H_
