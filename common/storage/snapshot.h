// Point-in-time copies of the map, written without fork while writes go on
// ("fuzzy"): a snapshot started at log index S holds every entry with index <= S
// and possibly some later ones; recovery loads it and replays the log from S + 1,
// which is safe because log records are idempotent (absolute values and expiry).
//
// File snap-<S, 20 digits>.snap in the data directory, written as
// snap-<S>.snap.tmp, fsynced, renamed, directory fsynced. Bytes (little-endian):
//
//   header:  magic "KVSNAP\0\0" (8) | version u32 | header_check u32 |
//            start_index u64 | epoch u64 | created_unix_ms i64
//            (header_check: low 32 bits of XXH3-64 over the 24 bytes after it)
//   blocks:  block_len u32 (> 0) | block_check u32 | block_len bytes of entries
//   entry:   key_len varint32 | value_len varint32 | version u64 | expire_unix_ms i64 | key | value
//   trailer: 0 u32 | entry_count u64 | end_index u64 | trailer_check u32
//            (trailer_check covers entry_count and end_index)
//
// docs/storage-format.md describes the same for people.
#ifndef KVSTORE_COMMON_STORAGE_SNAPSHOT_H_
#define KVSTORE_COMMON_STORAGE_SNAPSHOT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/storage/file_system.h"

namespace kvstore {

struct SnapshotMeta {
  std::string path;
  uint64_t start_index = 0;  // Every entry with index <= start_index is included.
  uint64_t end_index = 0;    // Log index when it finished (0 if only listed, not read).
  uint64_t epoch = 0;
  uint64_t entries = 0;
  uint64_t bytes = 0;
  int64_t created_unix_ms = 0;
};

// Writes one snapshot. One thread at a time. Destroying it before Commit()
// removes the temporary file, so a failed snapshot leaves nothing behind.
class SnapshotWriter {
 public:
  static absl::StatusOr<std::unique_ptr<SnapshotWriter>> Create(FileSystem* fs,
                                                                const std::string& dir,
                                                                uint64_t start_index,
                                                                uint64_t epoch,
                                                                int64_t created_unix_ms);
  ~SnapshotWriter();
  SnapshotWriter(const SnapshotWriter&) = delete;
  SnapshotWriter& operator=(const SnapshotWriter&) = delete;

  [[nodiscard]] absl::Status Add(absl::string_view key, absl::string_view value, uint64_t version,
                                 int64_t expire_unix_ms);
  // Writes the trailer, fsyncs, renames into place and fsyncs the directory.
  // The snapshot exists (and survives a power cut) only once this returns OK.
  absl::StatusOr<SnapshotMeta> Commit(uint64_t end_index);

 private:
  SnapshotWriter(FileSystem* fs, std::string dir, std::string tmp_path, std::string final_path,
                 std::unique_ptr<WritableFile> file, SnapshotMeta meta);
  [[nodiscard]] absl::Status FlushBlock();
  // Commit's durable steps: trailer, fsync, close, rename, directory fsync.
  [[nodiscard]] absl::Status Install(uint64_t end_index);

  FileSystem* const fs_;
  const std::string dir_;
  const std::string tmp_path_;
  const std::string final_path_;
  std::unique_ptr<WritableFile> file_;
  SnapshotMeta meta_;
  std::string block_;
  bool committed_ = false;
  // Set once the rename succeeded: the file is then a complete snapshot under
  // its final name (which may have replaced an older one), never removed by us.
  bool renamed_ = false;
  // The first failure. Sticky: a failed fsync is never retried, so nothing
  // written after it can be committed.
  absl::Status failed_;
};

// Reads and checks the whole snapshot at `path`, calling `fn` for each entry in
// file order (the views are valid only during the call). Any damage returns
// DataLoss naming the file and offset; entries already passed to fn must then be
// discarded by the caller. An error from fn stops the load and is returned.
absl::StatusOr<SnapshotMeta> LoadSnapshot(
    FileSystem* fs, const std::string& path,
    const std::function<absl::Status(absl::string_view key, absl::string_view value,
                                     uint64_t version, int64_t expire_unix_ms)>& fn);

// LoadSnapshot without keeping anything: OK (with the meta) only when every
// checksum of the file verifies.
absl::StatusOr<SnapshotMeta> VerifySnapshot(FileSystem* fs, const std::string& path);

// Committed snapshots in `dir`, newest (highest start_index) first, from their
// names and sizes only: end_index, epoch and entries are 0 until loaded.
absl::StatusOr<std::vector<SnapshotMeta>> ListSnapshots(FileSystem* fs, const std::string& dir);

// Removes all but the `keep` newest snapshots, and any leftover .tmp files.
[[nodiscard]] absl::Status PruneSnapshots(FileSystem* fs, const std::string& dir, size_t keep);

// "snap-00000000000000000042.snap" for start index 42, and back.
std::string SnapshotFileName(uint64_t start_index);
bool ParseSnapshotFileName(absl::string_view name, uint64_t* start_index);

}  // namespace kvstore

#endif  // KVSTORE_COMMON_STORAGE_SNAPSHOT_H_
