#include "common/storage/log_format.h"

#include <cstdint>
#include <string>
#include <vector>

#include "common/storage/log_reader.h"
#include "gtest/gtest.h"

namespace kvstore::log {
namespace {

// Byte offsets of the record header fields, as log_format.h documents them.
constexpr size_t kPayloadLenAt = 4;
constexpr size_t kIndexAt = 8;
constexpr size_t kEpochAt = 16;
constexpr size_t kTypeAt = 24;
constexpr size_t kReservedAt = 25;
constexpr size_t kPayloadCheckAt = 28;

std::string Record(uint64_t index, absl::string_view payload, uint64_t epoch = 7) {
  std::string out;
  AppendRecord(index, epoch, RecordType::kOp, payload, &out);
  return out;
}

uint64_t ReadLittleEndian(absl::string_view bytes, size_t at, size_t width) {
  uint64_t v = 0;
  for (size_t i = width; i-- > 0;) v = (v << 8) | static_cast<uint8_t>(bytes[at + i]);
  return v;
}

void FlipBit(std::string* bytes, size_t bit) {
  (*bytes)[bit / 8] ^= static_cast<char>(1 << (bit % 8));
}

// Recomputes header_check after a test edits a field, so only the field is wrong.
void FixHeaderCheck(std::string* record) {
  const uint32_t check = Checksum(absl::string_view(*record).substr(4, kRecordHeaderSize - 4));
  for (int i = 0; i < 4; ++i) (*record)[i] = static_cast<char>(check >> (8 * i));
}

// A segment holding the given records after its header.
std::string Segment(const std::vector<std::string>& records, uint64_t first_index = 1) {
  std::string out;
  AppendSegmentHeader(first_index, &out);
  for (const std::string& r : records) out += r;
  return out;
}

TEST(ChecksumTest, IsLow32BitsOfXxh3) {
  // XXH3_64bits("abc") == 0x78af5f94892f3950 (reference value from libxxhash).
  EXPECT_EQ(Checksum("abc"), 0x892f3950u);
}

TEST(SegmentHeaderTest, RoundTripsWithDocumentedBytes) {
  std::string header;
  AppendSegmentHeader(0x0102030405060708ull, &header);
  ASSERT_EQ(header.size(), kSegmentHeaderSize);
  EXPECT_EQ(header.substr(0, 8), std::string("KVWAL\0\0\0", 8));
  EXPECT_EQ(ReadLittleEndian(header, 8, 4), kSegmentVersion);
  EXPECT_EQ(ReadLittleEndian(header, 12, 4), 0u);
  EXPECT_EQ(header[16], 0x08);  // Little-endian: low byte first.
  uint64_t first_index = 0;
  ASSERT_TRUE(ParseSegmentHeader(header, &first_index));
  EXPECT_EQ(first_index, 0x0102030405060708ull);
}

TEST(SegmentHeaderTest, RejectsBadMagicWrongVersionAndShortInput) {
  std::string good;
  AppendSegmentHeader(5, &good);
  uint64_t first_index;

  std::string bad_magic = good;
  bad_magic[0] = 'X';
  EXPECT_FALSE(ParseSegmentHeader(bad_magic, &first_index));

  std::string wrong_version = good;
  wrong_version[8] = 2;
  EXPECT_FALSE(ParseSegmentHeader(wrong_version, &first_index));

  EXPECT_FALSE(ParseSegmentHeader(good.substr(0, kSegmentHeaderSize - 1), &first_index));
  EXPECT_FALSE(ParseSegmentHeader(std::string(kSegmentHeaderSize, '\0'), &first_index));
}

TEST(RecordTest, RoundTripsFieldsAtDocumentedOffsets) {
  const std::string payload("p\0ayload", 8);
  const std::string record =
      Record(0x1122334455667788ull, payload, /*epoch=*/0xA1A2A3A4A5A6A7A8ull);
  ASSERT_EQ(record.size(), kRecordHeaderSize + payload.size());
  EXPECT_EQ(ReadLittleEndian(record, kPayloadLenAt, 4), payload.size());
  EXPECT_EQ(ReadLittleEndian(record, kIndexAt, 8), 0x1122334455667788ull);
  EXPECT_EQ(ReadLittleEndian(record, kEpochAt, 8), 0xA1A2A3A4A5A6A7A8ull);
  EXPECT_EQ(record[kTypeAt], 1);
  EXPECT_EQ(record.substr(kReservedAt, 3), std::string(3, '\0'));
  EXPECT_EQ(ReadLittleEndian(record, kPayloadCheckAt, 4), Checksum(payload));
  EXPECT_EQ(ReadLittleEndian(record, 0, 4), Checksum(record.substr(4, 28)));
  EXPECT_EQ(record.substr(kRecordHeaderSize), payload);

  RecordHeader header;
  ASSERT_TRUE(ParseRecordHeader(record, &header));
  EXPECT_EQ(header.payload_len, payload.size());
  EXPECT_EQ(header.index, 0x1122334455667788ull);
  EXPECT_EQ(header.epoch, 0xA1A2A3A4A5A6A7A8ull);
  EXPECT_EQ(header.type, RecordType::kOp);
  EXPECT_EQ(header.payload_check, Checksum(payload));
}

TEST(RecordTest, EmptyPayloadRoundTrips) {
  const std::string record = Record(3, "");
  RecordHeader header;
  ASSERT_TRUE(ParseRecordHeader(record, &header));
  EXPECT_EQ(header.payload_len, 0u);
  EXPECT_EQ(header.payload_check, Checksum(""));
}

TEST(RecordTest, AnyFlippedHeaderBitFailsTheHeaderCheck) {
  const std::string record = Record(42, "value");
  for (size_t bit = 0; bit < kRecordHeaderSize * 8; ++bit) {
    std::string damaged = record;
    FlipBit(&damaged, bit);
    RecordHeader header;
    EXPECT_EQ(DecodeRecordHeader(damaged, &header), HeaderResult::kBadCheck) << "bit " << bit;
  }
}

TEST(RecordTest, ShortHeaderIsRefused) {
  const std::string record = Record(1, "");
  RecordHeader header;
  EXPECT_EQ(DecodeRecordHeader(record.substr(0, kRecordHeaderSize - 1), &header),
            HeaderResult::kTooShort);
  EXPECT_FALSE(ParseRecordHeader("", &header));
}

TEST(RecordTest, ZeroFillNeverParses) {
  RecordHeader header;
  EXPECT_FALSE(ParseRecordHeader(std::string(kRecordHeaderSize, '\0'), &header));
}

// A field out of range is refused even when header_check vouches for it.
struct BadField {
  const char* name;
  size_t at;
  std::string bytes;
};

TEST(RecordTest, OutOfRangeFieldsAreRefusedEvenWithAValidCheck) {
  auto u32 = [](uint32_t v) {
    std::string s(4, '\0');
    for (int i = 0; i < 4; ++i) s[i] = static_cast<char>(v >> (8 * i));
    return s;
  };
  const std::vector<BadField> cases = {
      {"type zero", kTypeAt, std::string(1, '\0')},
      {"unknown type", kTypeAt, std::string(1, '\3')},
      {"reserved byte set", kReservedAt + 1, std::string(1, '\1')},
      {"payload longer than the maximum", kPayloadLenAt, u32(kMaxPayloadSize + 1)},
      {"payload length all ones", kPayloadLenAt, u32(0xFFFFFFFFu)},
  };
  for (const BadField& c : cases) {
    std::string record = Record(9, "x");
    record.replace(c.at, c.bytes.size(), c.bytes);
    FixHeaderCheck(&record);
    RecordHeader header;
    EXPECT_EQ(DecodeRecordHeader(record, &header), HeaderResult::kBadField) << c.name;
  }
}

TEST(SegmentFileNameTest, RoundTripsAndIsZeroPadded) {
  EXPECT_EQ(SegmentFileName(42), "wal-00000000000000000042.log");
  uint64_t index = 0;
  ASSERT_TRUE(ParseSegmentFileName(SegmentFileName(18446744073709551615ull), &index));
  EXPECT_EQ(index, 18446744073709551615ull);
  ASSERT_TRUE(ParseSegmentFileName("wal-00000000000000000042.log", &index));
  EXPECT_EQ(index, 42u);
}

TEST(SegmentFileNameTest, RejectsEverythingElseInTheDirectory) {
  uint64_t index;
  for (const char* name : {
           "wal-00000000000000000042.log.torn-100",
           "wal-00000000000000000042.log.broken",
           "wal-42.log",
           "wal-000000000000000000042.log",
           "wal-0000000000000000004x.log",
           "wal-+0000000000000000042.log",
           "wal-99999999999999999999.log",  // Past 2^64-1.
           "snap-00000000000000000042.snap",
           "WAL-00000000000000000042.log",
           "",
       }) {
    EXPECT_FALSE(ParseSegmentFileName(name, &index)) << name;
  }
}

TEST(LogReaderTest, ReadsRecordsThenEndOfInput) {
  const std::string segment = Segment({Record(1, "one"), Record(2, ""), Record(3, "three")});
  LogReader reader(segment, kSegmentHeaderSize);
  LogRecord record;
  std::vector<uint64_t> offsets;
  for (uint64_t want = 1; want <= 3; ++want) {
    ASSERT_EQ(reader.Next(&record), ReadStatus::kRecord);
    EXPECT_EQ(record.header.index, want);
    offsets.push_back(record.offset);
  }
  EXPECT_EQ(record.payload, "three");
  EXPECT_EQ(offsets, (std::vector<uint64_t>{24, 24 + 35, 24 + 35 + 32}));
  EXPECT_EQ(reader.Next(&record), ReadStatus::kEndOfInput);
  EXPECT_EQ(reader.offset(), segment.size());
}

// How the second of two records is broken -> what the reader reports there.
struct ReaderCase {
  const char* name;
  void (*damage)(std::string* segment, size_t second);  // `second`: offset of record 2.
  ReadStatus want;
};

TEST(LogReaderTest, ClassifiesEveryFailureAtItsOffset) {
  const std::vector<ReaderCase> cases = {
      {"cut inside the header", [](std::string* s, size_t at) { s->resize(at + 10); },
       ReadStatus::kTruncatedHeader},
      {"cut inside the payload", [](std::string* s, size_t at) { s->resize(at + 33); },
       ReadStatus::kTruncatedPayload},
      {"flipped index bit", [](std::string* s, size_t at) { FlipBit(s, (at + kIndexAt) * 8); },
       ReadStatus::kBadHeaderCheck},
      {"flipped length bit",
       [](std::string* s, size_t at) { FlipBit(s, (at + kPayloadLenAt) * 8 + 30); },
       ReadStatus::kBadHeaderCheck},
      {"flipped payload bit", [](std::string* s, size_t at) { FlipBit(s, (at + 32) * 8 + 3); },
       ReadStatus::kBadPayloadCheck},
      {"zero-filled record",
       [](std::string* s, size_t at) { s->replace(at, s->size() - at, s->size() - at, '\0'); },
       ReadStatus::kBadHeaderCheck},
      {"bad type with a valid check",
       [](std::string* s, size_t at) {
         std::string record = s->substr(at);
         record[kTypeAt] = 9;
         FixHeaderCheck(&record);
         s->replace(at, record.size(), record);
       },
       ReadStatus::kBadField},
  };
  for (const ReaderCase& c : cases) {
    std::string segment = Segment({Record(1, "first"), Record(2, "second record")});
    const size_t second = kSegmentHeaderSize + kRecordHeaderSize + 5;
    c.damage(&segment, second);
    LogReader reader(segment, kSegmentHeaderSize);
    LogRecord record;
    ASSERT_EQ(reader.Next(&record), ReadStatus::kRecord) << c.name;
    EXPECT_EQ(reader.Next(&record), c.want) << c.name;
    EXPECT_EQ(record.offset, second) << c.name;
    // A stopped reader stays stopped where it failed.
    EXPECT_EQ(reader.Next(&record), c.want) << c.name;
    EXPECT_EQ(reader.offset(), second) << c.name;
  }
}

TEST(LogReaderTest, HugeLengthIsTruncatedPayloadNotAnAllocation) {
  std::string record = Record(1, "x");
  const uint32_t len = kMaxPayloadSize;
  for (int i = 0; i < 4; ++i) record[kPayloadLenAt + i] = static_cast<char>(len >> (8 * i));
  FixHeaderCheck(&record);
  const std::string segment = Segment({record});
  LogReader reader(segment, kSegmentHeaderSize);
  LogRecord out;
  EXPECT_EQ(reader.Next(&out), ReadStatus::kTruncatedPayload);
  EXPECT_EQ(out.header.payload_len, kMaxPayloadSize);
}

TEST(FindValidRecordTest, FindsARecordBehindGarbageAtAnyAlignment) {
  for (size_t garbage = 0; garbage < 9; ++garbage) {
    std::string segment = Segment({});
    segment += std::string(garbage, '\x5a');
    segment += Record(4, "found");
    EXPECT_EQ(FindValidRecord(segment, kSegmentHeaderSize), kSegmentHeaderSize + garbage);
    EXPECT_EQ(FindValidRecord(segment, kSegmentHeaderSize + garbage + 1), kNoRecord);
  }
}

TEST(FindValidRecordTest, ZeroFillAndTornRecordsHoldNone) {
  std::string segment = Segment({}) + std::string(4096, '\0');
  EXPECT_EQ(FindValidRecord(segment, kSegmentHeaderSize), kNoRecord);
  const std::string record = Record(1, "payload");
  for (size_t cut = 0; cut < record.size(); ++cut) {
    EXPECT_EQ(FindValidRecord(Segment({}) + record.substr(0, cut), 0), kNoRecord) << cut;
  }
  EXPECT_EQ(FindValidRecord("", 0), kNoRecord);
}

}  // namespace
}  // namespace kvstore::log
