// Reads a live log from its segment files, for shipping it to followers: hands
// out whole framed records (the bytes on disk, checks verified) from a chosen
// index on, following the log across segments as it grows. Any number of
// cursors may read while the store's log thread appends: a cursor reads only
// through the index the caller says is written, and never writes.
#ifndef KVSTORE_COMMON_STORAGE_LOG_CURSOR_H_
#define KVSTORE_COMMON_STORAGE_LOG_CURSOR_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "common/storage/file_system.h"

namespace kvstore {

class LogCursor {
 public:
  // Reads the log in `dir`. Not thread-safe; one reader per cursor.
  LogCursor(FileSystem* fs, std::string dir) : fs_(fs), dir_(std::move(dir)) {}

  // Appends to *records whole records with indexes next..N, where next is the
  // index after the previous call's last one (or `from` after Seek), N <=
  // `written` (the highest index the log has handed to the OS), stopping once
  // about `max_bytes` are collected (at least one record when any is due).
  // Sets *first/*last to the range appended, or both to 0 when none was ready.
  // NotFound when the next index is no longer in any segment (removed after a
  // snapshot): the follower needs a full resync. DataLoss on a record that
  // fails its checks or breaks the index sequence.
  absl::Status Read(uint64_t written, size_t max_bytes, std::string* records, uint64_t* first,
                    uint64_t* last);

  // The next Read starts at `index`.
  void Seek(uint64_t index);
  uint64_t next_index() const { return next_; }

  // Epoch of the record at `index` by scanning the segment that holds it; NotFound
  // when no segment holds it. Independent of the read position.
  static absl::StatusOr<uint64_t> EpochAt(FileSystem* fs, const std::string& dir, uint64_t index);

 private:
  // Opens the segment that holds next_, positioned at its start.
  absl::Status OpenSegmentFor(uint64_t index);
  // Appends up to `n` more bytes of the open segment to buffer_; returns how many.
  absl::StatusOr<size_t> Fill(size_t n);

  FileSystem* const fs_;
  const std::string dir_;
  uint64_t next_ = 1;
  std::unique_ptr<SequentialFile> file_;
  uint64_t segment_first_ = 0;  // First index of the open segment.
  bool header_read_ = false;
  std::string buffer_;  // Unparsed bytes read from file_.
  size_t buffer_pos_ = 0;
};

}  // namespace kvstore

#endif  // KVSTORE_COMMON_STORAGE_LOG_CURSOR_H_
