// manifest.json of a cluster backup directory (docs/operations.md):
//
//   DIR/manifest.json      this file, written last: a backup without it is incomplete
//   DIR/topology.yaml      the cluster's shards and ring at backup time
//   DIR/<shard>/snap-*.snap, DIR/<shard>/wal-*.log   each shard's image (backup_image.h)
//
// One entry per shard: where its image came from, the index and epoch it stops
// at, its live key count at the image's time, and per file its size and chunk
// checksums. Each shard's image is a point in time of that shard; the shards'
// points differ (a cluster backup is not one global instant).
#ifndef KVSTORE_COMMON_BACKUP_MANIFEST_H_
#define KVSTORE_COMMON_BACKUP_MANIFEST_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvstore {

inline constexpr int kBackupFormatVersion = 1;
inline constexpr char kManifestFileName[] = "manifest.json";
inline constexpr char kBackupTopologyFileName[] = "topology.yaml";

struct BackupFileInfo {
  std::string name;  // In the shard's directory.
  uint64_t bytes = 0;
  std::vector<uint32_t> chunk_checksums;
};

struct ShardBackupInfo {
  std::string shard;
  std::string source;  // HOST:PORT of the node the image came from.
  std::string role;    // Its role then: "leader" or "replica".
  uint64_t last_index = 0;
  uint64_t last_epoch = 0;
  uint64_t snapshot_start_index = 0;
  int64_t created_unix_ms = 0;  // When the node cut the image.
  uint64_t keys = 0;            // Live at created_unix_ms.
  uint32_t chunk_bytes = 0;
  std::vector<BackupFileInfo> files;  // The snapshot first, then the log (if any).
};

struct BackupManifest {
  int format_version = kBackupFormatVersion;
  std::string kvstore_version;
  int64_t created_unix_ms = 0;
  uint32_t vnodes = 0;
  std::vector<ShardBackupInfo> shards;

  uint64_t TotalKeys() const;
  uint64_t TotalBytes() const;
};

// Pretty-printed JSON.
std::string ManifestToJson(const BackupManifest& manifest);
// InvalidArgument naming `source` when the text is not a manifest of a format
// this build reads.
absl::StatusOr<BackupManifest> ParseManifest(absl::string_view json, const std::string& source);

}  // namespace kvstore

#endif  // KVSTORE_COMMON_BACKUP_MANIFEST_H_
