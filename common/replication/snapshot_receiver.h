// The follower's side of a full resync's file transfer (replication.proto):
// SnapshotBegin, then SnapshotChunk messages, then SnapshotEnd. Each chunk
// must start where the previous one ended and match its checksum (XXH3-64 of
// its data); anything else is DATA_LOSS and the transfer must be abandoned.
// The received file is only bytes: Store::InstallSnapshot verifies it as a
// snapshot before it replaces anything. No gRPC; one thread at a time.
#ifndef KVSTORE_COMMON_REPLICATION_SNAPSHOT_RECEIVER_H_
#define KVSTORE_COMMON_REPLICATION_SNAPSHOT_RECEIVER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "common/storage/file_system.h"
#include "kvstore/v1/replication.pb.h"

namespace kvstore {

class SnapshotReceiver {
 public:
  // Receives into `path` on `fs`, which must outlive the receiver.
  SnapshotReceiver(FileSystem* fs, std::string path);
  // Closes a file still being received (what it holds is left for the next Begin).
  ~SnapshotReceiver();
  SnapshotReceiver(const SnapshotReceiver&) = delete;
  SnapshotReceiver& operator=(const SnapshotReceiver&) = delete;

  // Starts a transfer at offset 0, creating (truncating) the file; a transfer
  // under way is dropped.
  [[nodiscard]] absl::Status Begin(const v1::SnapshotBegin& begin);
  // Appends one chunk. DATA_LOSS, appending nothing, when no transfer is under
  // way, the chunk's offset is not the bytes received so far, or its checksum
  // does not match.
  [[nodiscard]] absl::Status Chunk(const v1::SnapshotChunk& chunk);
  // Syncs and closes the file: it is then complete at path(), for
  // Store::InstallSnapshot. INVALID_ARGUMENT when no transfer is under way.
  [[nodiscard]] absl::Status End();

  const std::string& path() const { return path_; }
  uint64_t bytes() const { return bytes_; }

 private:
  FileSystem* const fs_;
  const std::string path_;
  std::unique_ptr<WritableFile> file_;  // Null when no transfer is under way.
  uint64_t bytes_ = 0;                  // Received in this transfer.
};

}  // namespace kvstore

#endif  // KVSTORE_COMMON_REPLICATION_SNAPSHOT_RECEIVER_H_
