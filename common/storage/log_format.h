// The write-ahead log's bytes. docs/storage-format.md describes them for people.
//
// A log is a directory of segment files named wal-<first index, 20 digits>.log.
// Each segment starts with a 24-byte header, then records back to back:
//
//   segment header: magic "KVWAL\0\0\0" (8) | version u32 | reserved u32 | first_index u64
//   record header:  header_check u32 | payload_len u32 | index u64 | epoch u64 |
//                   type u8 | reserved u8[3] (zero) | payload_check u32
//   payload:        payload_len bytes (an encoded Op, see op.h)
//
// All integers little-endian. header_check is the low 32 bits of XXH3-64 over the
// 28 header bytes after it; payload_check the same over the payload. Type 0 is
// never written, so zero-filled space never parses as a record.
#ifndef KVSTORE_COMMON_STORAGE_LOG_FORMAT_H_
#define KVSTORE_COMMON_STORAGE_LOG_FORMAT_H_

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace kvstore::log {

inline constexpr char kSegmentMagic[8] = {'K', 'V', 'W', 'A', 'L', 0, 0, 0};
inline constexpr uint32_t kSegmentVersion = 1;
inline constexpr size_t kSegmentHeaderSize = 24;
inline constexpr size_t kRecordHeaderSize = 32;
// Bounds a length field before anything is allocated: larger than any valid
// record (4 KiB key + the largest allowed value), so a flipped bit cannot ask for gigabytes.
inline constexpr uint32_t kMaxPayloadSize = 256u << 20;

enum class RecordType : uint8_t {
  kZero = 0,  // Reserved: never written.
  kOp = 1,     // Payload is one encoded Op.
  kEpoch = 2,  // A new leader epoch starts here; payload: the leader's address.
  kMaxType = kEpoch,
};

struct RecordHeader {
  uint32_t payload_len = 0;
  uint64_t index = 0;
  uint64_t epoch = 0;
  RecordType type = RecordType::kZero;
  uint32_t payload_check = 0;
};

// Appends one framed record (header + payload) to *out.
void AppendRecord(uint64_t index, uint64_t epoch, RecordType type, absl::string_view payload,
                  std::string* out);

// Appends a segment header to *out.
void AppendSegmentHeader(uint64_t first_index, std::string* out);

// Parses a segment header; false if the magic or version is wrong or it is short.
bool ParseSegmentHeader(absl::string_view data, uint64_t* first_index);

// Parses a record header from the first kRecordHeaderSize bytes of `data`.
// False if it is short, its check fails, or a field is out of range (type,
// reserved bytes, payload_len > kMaxPayloadSize).
bool ParseRecordHeader(absl::string_view data, RecordHeader* header);

// Why a record header was refused, for readers that must say which check failed.
enum class HeaderResult {
  kOk,
  kTooShort,  // Fewer than kRecordHeaderSize bytes.
  kBadCheck,  // header_check does not match the 28 bytes after it.
  kBadField,  // The check passes but a field is out of range.
};

// ParseRecordHeader with the reason. *header is filled only on kOk.
HeaderResult DecodeRecordHeader(absl::string_view data, RecordHeader* header);

// The checksum both checks use: low 32 bits of XXH3-64.
uint32_t Checksum(absl::string_view data);

// "wal-00000000000000000042.log" for first index 42, and back.
std::string SegmentFileName(uint64_t first_index);
bool ParseSegmentFileName(absl::string_view name, uint64_t* first_index);

}  // namespace kvstore::log

#endif  // KVSTORE_COMMON_STORAGE_LOG_FORMAT_H_
