// kvctl's backup, backup verify and restore: a cluster backup directory
// (common/backup/manifest.h) made from, checked against, and put back into a
// running cluster through its router. Output to the terminal is the caller's;
// progress goes to `progress` when set (stderr on a terminal).
#ifndef KVSTORE_TOOLS_KVCTL_CLUSTER_BACKUP_H_
#define KVSTORE_TOOLS_KVCTL_CLUSTER_BACKUP_H_

#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/backup/manifest.h"
#include "grpcpp/channel.h"
#include "kvstore/v1/admin.pb.h"

namespace kvstore {

struct ClusterBackupOptions {
  // The router (for ClusterStatus and, when restoring by replay, the writes).
  std::string router;
  // A channel to any address, with the caller's TLS and tokens.
  std::function<std::shared_ptr<grpc::Channel>(const std::string& address)> channel;
  // Deadline of each unary call, and of each whole backup or restore stream.
  int64_t call_timeout_ms = 5000;
  int64_t stream_timeout_ms = 3'600'000;
  // Backup: take a fresh snapshot on each source node first.
  bool fresh_snapshot = false;
  // Progress lines ("\r"-rewritten); null = none.
  FILE* progress = nullptr;
  // Restore by replay: keys per MultiSet.
  size_t replay_batch = 256;
};

// Every shard's nodes as the router sees them now.
absl::StatusOr<v1::ClusterStatusResponse> FetchClusterStatus(const ClusterBackupOptions& options);

// Backs up every shard into `dir` (created; must be empty or absent): from
// a ready replica that has caught up when the shard has one, else from its
// leader. Writes topology.yaml and, last, manifest.json.
absl::StatusOr<BackupManifest> BackupCluster(const std::string& dir,
                                             const ClusterBackupOptions& options);

struct VerifiedShard {
  std::string shard;
  uint64_t keys = 0;  // Live at the image's time.
  uint64_t last_index = 0;
  uint64_t bytes = 0;
};

// Checks every file's size and chunk checksums, that each image reads back
// whole, and that its key count matches the manifest. DataLoss naming the
// file on damage.
absl::StatusOr<std::vector<VerifiedShard>> VerifyBackup(const std::string& dir, FILE* progress);

struct RestoreSummary {
  bool replayed = false;  // Through the router (other shards), not installed.
  uint64_t keys = 0;
  uint64_t expired = 0;   // In the backup but expired by now: not restored.
  size_t shards = 0;      // Shards of the backup.
};

// Verifies `dir`, then puts it into the cluster, which must hold no keys: with
// the same shard names, each shard's leader installs its image (Admin.Restore);
// otherwise every key is written through the router with its absolute expiry
// turned into the time left. Versions restart either way.
absl::StatusOr<RestoreSummary> RestoreCluster(const std::string& dir,
                                              const ClusterBackupOptions& options);

}  // namespace kvstore

#endif  // KVSTORE_TOOLS_KVCTL_CLUSTER_BACKUP_H_
