// A backup image of one shard node, as Admin.Backup sends it and kvctl keeps
// it on disk: the node's snapshot file (its bytes unchanged) and optionally one
// log segment file (the storage format of log_format.h) holding the records
// right after the snapshot's start index up to the image's last index.
// Reading an image applies the log to the snapshot, as recovery does, and
// yields the state at that last index. Storage only: no gRPC.
//
// Integrity: every file is cut into chunks of a fixed size, each with the log
// and snapshot files' own checksum (log::Checksum). The chunk checksums travel
// with the chunks and are kept in the manifest (manifest.h); the snapshot and
// log formats carry their own checks on top, which ReadImage verifies.
#ifndef KVSTORE_COMMON_BACKUP_BACKUP_IMAGE_H_
#define KVSTORE_COMMON_BACKUP_BACKUP_IMAGE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/storage/file_system.h"

namespace kvstore {

inline constexpr uint32_t kDefaultBackupChunkBytes = 1u << 20;

// The checksum of one chunk of a backup file: the storage formats' checksum.
uint32_t BackupChunkChecksum(absl::string_view data);

struct ImageEntry {
  std::string value;
  uint64_t version = 0;
  int64_t expire_unix_ms = 0;  // 0 = never.
};

struct Image {
  // Every live key at last_index, expired ones included (the reader decides
  // what "expired" means: at the image's time, or now).
  absl::flat_hash_map<std::string, ImageEntry> keys;
  uint64_t snapshot_start_index = 0;
  uint64_t last_index = 0;  // The log's last record, or the snapshot's start.
  uint64_t last_epoch = 0;  // Epoch of that record (the snapshot's epoch without log).
};

// Reads the snapshot at `snapshot_path`, then the log segment at `log_path`
// ("" = none), which must start at the snapshot's start index + 1 and run
// without gaps. Fails with DataLoss naming the file (and offset) on any damage,
// and with FailedPrecondition when the log ends before the snapshot's end
// index (the image would miss writes).
absl::StatusOr<Image> ReadImage(FileSystem* fs, const std::string& snapshot_path,
                                const std::string& log_path);

// Keys of `image` live at `now_unix_ms` (expiry 0 or later than it).
uint64_t LiveKeys(const Image& image, int64_t now_unix_ms);

// Checks that the file at `path` has `bytes` bytes and that each of its
// `chunk_bytes` chunks has the matching checksum in `checksums`. DataLoss
// naming the file and the chunk's offset otherwise; NotFound when it is missing.
absl::Status VerifyFileChunks(FileSystem* fs, const std::string& path, uint64_t bytes,
                              uint32_t chunk_bytes, const std::vector<uint32_t>& checksums);

}  // namespace kvstore

#endif  // KVSTORE_COMMON_BACKUP_BACKUP_IMAGE_H_
