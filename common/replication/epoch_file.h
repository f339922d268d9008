// What a node keeps about leadership in its data directory, written before it
// acts on it:
//
//   EPOCH    the highest epoch the node has seen and who led it, the shard it
//            belongs to, and (when this node led it) the followers it pushed to.
//   NODE_ID  the node's id, made once and kept: the identity a leader gives in
//            its Hello, stable across restarts and address changes.
//
// EPOCH is text. Its first line is "<epoch> <leader address>" (all that older
// builds wrote, and still all that they read); then "key value" lines:
// leader_id, followers (comma-separated), cluster, shard.
#ifndef KVSTORE_COMMON_REPLICATION_EPOCH_FILE_H_
#define KVSTORE_COMMON_REPLICATION_EPOCH_FILE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/storage/file_system.h"

namespace kvstore {

struct EpochRecord {
  uint64_t epoch = 0;
  std::string leader;     // Address.
  std::string leader_id;  // "" when unknown (written by an older build).
  std::vector<std::string> followers;
  std::string cluster;
  std::string shard;
};

// An absent file reads as the zero record. DATA_LOSS when it does not parse.
absl::StatusOr<EpochRecord> ReadEpochFile(FileSystem* fs, const std::string& dir);
// Atomic and durable: temporary file, fsync, rename, fsync of the directory.
absl::Status WriteEpochFile(FileSystem* fs, const std::string& dir, const EpochRecord& record);

// The id in <dir>/NODE_ID, creating it (random, durable) on first use.
absl::StatusOr<std::string> LoadOrCreateNodeId(FileSystem* fs, const std::string& dir);

}  // namespace kvstore

#endif  // KVSTORE_COMMON_REPLICATION_EPOCH_FILE_H_
