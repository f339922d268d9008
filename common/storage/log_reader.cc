#include "common/storage/log_reader.h"

namespace kvstore::log {
namespace {

constexpr size_t kTypeOffset = 24;

}  // namespace

const char* ReadStatusName(ReadStatus status) {
  switch (status) {
    case ReadStatus::kRecord:
      return "record";
    case ReadStatus::kEndOfInput:
      return "end of input";
    case ReadStatus::kTruncatedHeader:
      return "truncated header";
    case ReadStatus::kBadHeaderCheck:
      return "bad header check";
    case ReadStatus::kBadField:
      return "bad header field";
    case ReadStatus::kTruncatedPayload:
      return "truncated payload";
    case ReadStatus::kBadPayloadCheck:
      return "bad payload check";
  }
  return "unknown";
}

LogReader::LogReader(absl::string_view segment, uint64_t offset)
    : segment_(segment), offset_(offset) {}

ReadStatus LogReader::Next(LogRecord* record) {
  record->offset = offset_;
  if (offset_ >= segment_.size()) return ReadStatus::kEndOfInput;
  const absl::string_view rest = segment_.substr(offset_);
  switch (DecodeRecordHeader(rest, &record->header)) {
    case HeaderResult::kOk:
      break;
    case HeaderResult::kTooShort:
      return ReadStatus::kTruncatedHeader;
    case HeaderResult::kBadCheck:
      return ReadStatus::kBadHeaderCheck;
    case HeaderResult::kBadField:
      return ReadStatus::kBadField;
  }
  // The length is bounded by the bytes left before anything looks at the payload.
  if (record->header.payload_len > rest.size() - kRecordHeaderSize) {
    return ReadStatus::kTruncatedPayload;
  }
  const absl::string_view payload = rest.substr(kRecordHeaderSize, record->header.payload_len);
  if (Checksum(payload) != record->header.payload_check) return ReadStatus::kBadPayloadCheck;
  record->payload = payload;
  offset_ += kRecordHeaderSize + payload.size();
  return ReadStatus::kRecord;
}

uint64_t FindValidRecord(absl::string_view segment, uint64_t from) {
  if (segment.size() < kRecordHeaderSize) return kNoRecord;
  for (uint64_t at = from; at <= segment.size() - kRecordHeaderSize; ++at) {
    // Cheap filter first: most offsets cannot hold a record type, and this
    // scan may try every byte of a 64 MiB segment.
    const uint8_t type = static_cast<uint8_t>(segment[at + kTypeOffset]);
    if (type == 0 || type > static_cast<uint8_t>(RecordType::kMaxType)) continue;
    LogReader reader(segment, at);
    LogRecord record;
    if (reader.Next(&record) == ReadStatus::kRecord) return at;
  }
  return kNoRecord;
}

}  // namespace kvstore::log
