// The write-ahead log: a directory of segment files (format in log_format.h).
//
// Recovery policy lives here because only the log knows where its damage is:
//  - A record at the end of the LAST segment that fails its checks, with no
//    valid record anywhere after it (a torn write, or zero fill), is cut off with
//    a warning naming file, offset and bytes; the cut bytes are kept beside the
//    segment as <segment>.torn-<offset>. Under --fsync=always such a record was
//    never acknowledged.
//  - Any other damage (a bad record followed by valid ones, a bad record in an
//    earlier segment, a gap or repeat in the indexes, a bad segment header)
//    fails Open with DataLoss naming the file and offset and the repair command.
#ifndef KVSTORE_COMMON_STORAGE_WAL_H_
#define KVSTORE_COMMON_STORAGE_WAL_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/storage/file_system.h"
#include "common/storage/log_format.h"

namespace kvstore {

struct WalOptions {
  // A new segment starts once the current one reaches this size.
  uint64_t segment_bytes = 64ull << 20;
};

// One record as read back. The payload points into the reader's buffer and is
// valid only during the callback it is passed to.
struct WalRecord {
  uint64_t index = 0;
  uint64_t epoch = 0;
  log::RecordType type = log::RecordType::kZero;
  absl::string_view payload;
};

// Not thread-safe: one thread at a time calls the mutating methods (the store's
// log thread). The position accessors may be called from any thread.
class Wal {
 public:
  // Opens the log in `dir` (created if missing). Segments that may hold an index
  // >= replay_from are read once, every record checked, and records with index
  // >= replay_from are passed to `apply` in index order. An error from `apply`
  // stops Open and is returned. Segments wholly below replay_from are listed but
  // not read. Damage is handled as described at the top of this file.
  static absl::StatusOr<std::unique_ptr<Wal>> Open(
      FileSystem* fs, const std::string& dir, const WalOptions& options, uint64_t replay_from,
      const std::function<absl::Status(const WalRecord&)>& apply);

  // Cuts the log at its first damaged record: that segment is truncated there and
  // every later segment removed, each cut piece first copied to <file>.broken.
  // Returns a report for the operator ("nothing to repair" when the log is sound).
  static absl::StatusOr<std::string> Repair(FileSystem* fs, const std::string& dir);

  ~Wal();
  Wal(const Wal&) = delete;
  Wal& operator=(const Wal&) = delete;

  // Appends whole framed records (from log::AppendRecord) holding indexes
  // first..last. first must be last_index() + 1 unless the log is empty. Starts a
  // new segment first when the current one has reached segment_bytes (the old
  // one is synced before it is left). On return the bytes are with the OS: a
  // process crash keeps them, a power cut may not.
  [[nodiscard]] absl::Status Append(absl::string_view records, uint64_t first, uint64_t last);

  // Makes everything appended so far durable, including a new segment's
  // directory entry. On return durable_index() == last_index(). A failed write
  // or sync is sticky: every later Append and Sync returns the same error.
  [[nodiscard]] absl::Status Sync();

  // Deletes segments whose every record has index <= `index`; never the last one.
  [[nodiscard]] absl::Status RemoveSegmentsThrough(uint64_t index);

  // Drops every segment; the next Append must start at `next_index`. Used when a
  // snapshot supersedes the whole log. Durable on return (syncs the directory).
  [[nodiscard]] absl::Status Reset(uint64_t next_index);

  // Positions: 0 when the log holds no record.
  uint64_t first_index() const { return first_index_.load(std::memory_order_acquire); }
  uint64_t last_index() const { return last_index_.load(std::memory_order_acquire); }
  uint64_t durable_index() const { return durable_index_.load(std::memory_order_acquire); }
  uint64_t bytes() const { return bytes_.load(std::memory_order_acquire); }
  uint32_t segment_count() const { return segment_count_.load(std::memory_order_acquire); }

 private:
  struct Segment {
    uint64_t first_index;  // Index its first record has (or will have).
    std::string path;
    uint64_t bytes;
  };
  Wal(FileSystem* fs, std::string dir, WalOptions options);

  [[nodiscard]] absl::Status StartSegment(uint64_t first_index);
  // Records `s` as the log's sticky error (see sticky_error_) and returns it.
  [[nodiscard]] absl::Status FailWrites(absl::Status s);
  // Syncs the active segment (the log's fsync failpoints sit around it).
  [[nodiscard]] absl::Status SyncActive();
  void PublishPositions();

  FileSystem* const fs_;
  const std::string dir_;
  const WalOptions options_;
  std::vector<Segment> segments_;  // Ordered by first_index.
  std::unique_ptr<WritableFile> active_;
  bool dir_dirty_ = false;   // A segment was created or removed since the last SyncDir.
  uint64_t next_index_ = 0;  // Index the next appended record must have (0: any).
  // The first failed write, flush or sync. After it the file may end in a partial
  // batch and the kernel may have dropped dirty pages, so retrying could
  // acknowledge lost data: every later Append and Sync returns this instead.
  absl::Status sticky_error_;

  std::atomic<uint64_t> first_index_{0};
  std::atomic<uint64_t> last_index_{0};
  std::atomic<uint64_t> durable_index_{0};
  std::atomic<uint64_t> bytes_{0};
  std::atomic<uint32_t> segment_count_{0};
};

}  // namespace kvstore

#endif  // KVSTORE_COMMON_STORAGE_WAL_H_
