// Reads the records of one log segment held in memory, and says exactly why it
// stops. It only classifies: whether a failure is a torn tail or damage is the
// caller's decision (wal.cc), because that depends on which segment this is and
// on what follows.
#ifndef KVSTORE_COMMON_STORAGE_LOG_READER_H_
#define KVSTORE_COMMON_STORAGE_LOG_READER_H_

#include <cstdint>
#include <limits>

#include "absl/strings/string_view.h"
#include "common/storage/log_format.h"

namespace kvstore::log {

// What reading at one position found. Every value but kRecord stops the reader.
enum class ReadStatus {
  kRecord,            // A whole record whose header and payload checks pass.
  kEndOfInput,        // No bytes left: a clean end.
  kTruncatedHeader,   // Some bytes left, fewer than a record header.
  kBadHeaderCheck,    // header_check does not match.
  kBadField,          // The header checks out but a field is out of range.
  kTruncatedPayload,  // The header is sound; payload_len runs past the end of the input.
  kBadPayloadCheck,   // The header is sound; payload_check does not match.
};

// "truncated header", "bad payload check", ... for messages.
const char* ReadStatusName(ReadStatus status);

struct LogRecord {
  RecordHeader header;
  absl::string_view payload;  // Points into the reader's input.
  uint64_t offset = 0;        // Byte offset of the record header in the segment.
};

// `segment` must outlive the reader and the payloads it hands out. Offsets are
// byte offsets in `segment`, so they are file offsets when it is a whole file.
class LogReader {
 public:
  // Starts at byte `offset` of `segment`, normally just past the segment header.
  LogReader(absl::string_view segment, uint64_t offset);
  LogReader(const LogReader&) = delete;
  LogReader& operator=(const LogReader&) = delete;

  // On kRecord fills *record and moves past it. On any other result the reader
  // stays where it is and keeps returning that result; record->offset is the
  // offset of the failure, and for kTruncatedPayload and kBadPayloadCheck
  // record->header holds the (sound) header that was read there.
  ReadStatus Next(LogRecord* record);

  // Offset of the next record, or of the failure once stopped.
  uint64_t offset() const { return offset_; }

 private:
  const absl::string_view segment_;
  uint64_t offset_;
};

inline constexpr uint64_t kNoRecord = std::numeric_limits<uint64_t>::max();

// Offset of the first record at or after byte `from` of `segment` whose header
// and payload checks both pass, or kNoRecord. Tries every byte offset, so it
// finds a valid record behind any amount of damage.
uint64_t FindValidRecord(absl::string_view segment, uint64_t from);

}  // namespace kvstore::log

#endif  // KVSTORE_COMMON_STORAGE_LOG_READER_H_
