#include "common/storage/log_format.h"

#include <xxhash.h>

#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "common/storage/coding.h"

namespace kvstore::log {
namespace {

// Byte offsets inside a record header (see the layout in log_format.h).
constexpr size_t kHeaderCheckOffset = 0;
constexpr size_t kPayloadLenOffset = 4;
constexpr size_t kIndexOffset = 8;
constexpr size_t kEpochOffset = 16;
constexpr size_t kTypeOffset = 24;
constexpr size_t kReservedOffset = 25;
constexpr size_t kPayloadCheckOffset = 28;
// header_check covers everything after itself.
constexpr size_t kCheckedFrom = kPayloadLenOffset;

constexpr size_t kSegmentVersionOffset = 8;
constexpr size_t kSegmentFirstIndexOffset = 16;

constexpr absl::string_view kFilePrefix = "wal-";
constexpr absl::string_view kFileSuffix = ".log";
constexpr size_t kFileDigits = 20;

}  // namespace

uint32_t Checksum(absl::string_view data) {
  return static_cast<uint32_t>(XXH3_64bits(data.data(), data.size()));
}

void AppendRecord(uint64_t index, uint64_t epoch, RecordType type, absl::string_view payload,
                  std::string* out) {
  char header[kRecordHeaderSize] = {};
  EncodeFixed32(static_cast<uint32_t>(payload.size()), header + kPayloadLenOffset);
  EncodeFixed64(index, header + kIndexOffset);
  EncodeFixed64(epoch, header + kEpochOffset);
  header[kTypeOffset] = static_cast<char>(type);
  EncodeFixed32(Checksum(payload), header + kPayloadCheckOffset);
  EncodeFixed32(
      Checksum(absl::string_view(header + kCheckedFrom, kRecordHeaderSize - kCheckedFrom)),
      header + kHeaderCheckOffset);
  out->append(header, kRecordHeaderSize);
  out->append(payload.data(), payload.size());
}

void AppendSegmentHeader(uint64_t first_index, std::string* out) {
  char header[kSegmentHeaderSize] = {};
  std::memcpy(header, kSegmentMagic, sizeof(kSegmentMagic));
  EncodeFixed32(kSegmentVersion, header + kSegmentVersionOffset);
  EncodeFixed64(first_index, header + kSegmentFirstIndexOffset);
  out->append(header, kSegmentHeaderSize);
}

bool ParseSegmentHeader(absl::string_view data, uint64_t* first_index) {
  if (data.size() < kSegmentHeaderSize) return false;
  if (std::memcmp(data.data(), kSegmentMagic, sizeof(kSegmentMagic)) != 0) return false;
  if (DecodeFixed32(data.data() + kSegmentVersionOffset) != kSegmentVersion) return false;
  *first_index = DecodeFixed64(data.data() + kSegmentFirstIndexOffset);
  return true;
}

HeaderResult DecodeRecordHeader(absl::string_view data, RecordHeader* header) {
  if (data.size() < kRecordHeaderSize) return HeaderResult::kTooShort;
  const char* p = data.data();
  const uint32_t expected =
      Checksum(absl::string_view(p + kCheckedFrom, kRecordHeaderSize - kCheckedFrom));
  if (DecodeFixed32(p + kHeaderCheckOffset) != expected) return HeaderResult::kBadCheck;
  const uint8_t type = static_cast<uint8_t>(p[kTypeOffset]);
  if (type == static_cast<uint8_t>(RecordType::kZero) ||
      type > static_cast<uint8_t>(RecordType::kMaxType)) {
    return HeaderResult::kBadField;
  }
  if (p[kReservedOffset] != 0 || p[kReservedOffset + 1] != 0 || p[kReservedOffset + 2] != 0) {
    return HeaderResult::kBadField;
  }
  const uint32_t payload_len = DecodeFixed32(p + kPayloadLenOffset);
  if (payload_len > kMaxPayloadSize) return HeaderResult::kBadField;
  header->payload_len = payload_len;
  header->index = DecodeFixed64(p + kIndexOffset);
  header->epoch = DecodeFixed64(p + kEpochOffset);
  header->type = static_cast<RecordType>(type);
  header->payload_check = DecodeFixed32(p + kPayloadCheckOffset);
  return HeaderResult::kOk;
}

bool ParseRecordHeader(absl::string_view data, RecordHeader* header) {
  return DecodeRecordHeader(data, header) == HeaderResult::kOk;
}

std::string SegmentFileName(uint64_t first_index) {
  return absl::StrFormat("%s%020u%s", kFilePrefix, first_index, kFileSuffix);
}

bool ParseSegmentFileName(absl::string_view name, uint64_t* first_index) {
  if (name.size() != kFilePrefix.size() + kFileDigits + kFileSuffix.size()) return false;
  if (!absl::ConsumePrefix(&name, kFilePrefix) || !absl::ConsumeSuffix(&name, kFileSuffix)) {
    return false;
  }
  for (char c : name) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return false;
  }
  // SimpleAtoi refuses values past 2^64-1, which 20 digits can spell.
  return absl::SimpleAtoi(name, first_index);
}

}  // namespace kvstore::log
