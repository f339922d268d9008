// fuzz_log_reader: the log's reader (common/storage/log_reader.h) and the
// recovery policy built on it (Wal::Open, Wal::Repair in common/storage/wal.h).
// The first input byte picks the mode (its low bit):
//
//  0 "raw": the rest is a segment file. The reader never reads outside it and
//    every record it returns passes both checks, recomputed here; it stops on
//    the first bad record and stays stopped. Wal::Open on the file either
//    succeeds, handing over exactly the reader's records up to the cut, or
//    fails with DATA_LOSS naming the file; after Wal::Repair, Open succeeds.
//
//  1 "mutation": the rest describes a valid segment (records made by our
//    writer, log::AppendRecord) and one byte to change. The reader returns the
//    records before the changed byte, unchanged, and stops: never a different
//    record. Wal::Open either fails with DATA_LOSS or recovers exactly the
//    records before the damaged one, and that only when it was the last record
//    (a torn tail); a damaged record with a sound one behind it is never cut
//    silently.
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/storage/log_format.h"
#include "common/storage/log_reader.h"
#include "common/storage/op.h"
#include "common/storage/wal.h"
#include "glog/logging.h"
#include "tests/fuzz/fuzz_support.h"
#include "tests/support/fake_file_system.h"

namespace kvstore::fuzz {
namespace {

constexpr char kDir[] = "/log";

struct Record {
  uint64_t offset = 0;
  uint64_t index = 0;
  uint64_t epoch = 0;
  log::RecordType type = log::RecordType::kZero;
  std::string payload;

  bool operator==(const Record& o) const {
    return index == o.index && epoch == o.epoch && type == o.type && payload == o.payload;
  }
};

std::string Describe(const Record& r) {
  return absl::StrCat("record ", r.index, " epoch ", r.epoch, " type ", static_cast<int>(r.type),
                      " payload ", r.payload.size(), " bytes at offset ", r.offset);
}

// Reads `segment` from `from` with LogReader, checking every record it returns.
std::vector<Record> ReadChecked(absl::string_view segment, uint64_t from,
                                log::ReadStatus* stopped) {
  std::vector<Record> records;
  log::LogReader reader(segment, from);
  log::LogRecord r;
  uint64_t expected_offset = from;
  log::ReadStatus status;
  while ((status = reader.Next(&r)) == log::ReadStatus::kRecord) {
    CHECK_EQ(r.offset, expected_offset) << "records are not back to back";
    // The payload lies inside the input, right after its header.
    CHECK(r.payload.data() == segment.data() + r.offset + log::kRecordHeaderSize)
        << "payload is not where its header is";
    CHECK_LE(r.offset + log::kRecordHeaderSize + r.payload.size(), segment.size())
        << "payload runs past the input";
    CHECK_EQ(r.payload.size(), r.header.payload_len);
    // Both checks, recomputed here: the header's from its bytes, the payload's.
    log::RecordHeader again;
    CHECK(log::DecodeRecordHeader(segment.substr(r.offset), &again) == log::HeaderResult::kOk)
        << "a returned record's header does not decode at offset " << r.offset;
    CHECK_EQ(again.index, r.header.index);
    CHECK_EQ(log::Checksum(r.payload), r.header.payload_check)
        << "a returned record fails its payload check at offset " << r.offset;
    CHECK(r.header.type == log::RecordType::kOp || r.header.type == log::RecordType::kEpoch);
    if (r.header.type == log::RecordType::kOp) {
      OpView op;
      if (DecodeOp(r.payload, &op)) {
        CHECK(op.key.data() >= r.payload.data() &&
              op.key.data() + op.key.size() <= r.payload.data() + r.payload.size());
        CHECK(op.value.data() >= r.payload.data() &&
              op.value.data() + op.value.size() <= r.payload.data() + r.payload.size());
      }
    }
    records.push_back(
        Record{r.offset, r.header.index, r.header.epoch, r.header.type, std::string(r.payload)});
    expected_offset = r.offset + log::kRecordHeaderSize + r.payload.size();
    CHECK_EQ(reader.offset(), expected_offset);
  }
  CHECK_EQ(r.offset, expected_offset);
  // Stopped means stopped: the same answer again, at the same place.
  log::LogRecord again;
  CHECK(reader.Next(&again) == status) << "the reader moved after it stopped";
  CHECK_EQ(again.offset, r.offset);
  // A record FindValidRecord names must read as one.
  const uint64_t found = log::FindValidRecord(segment, r.offset);
  if (status == log::ReadStatus::kEndOfInput) CHECK_EQ(found, log::kNoRecord);
  if (found != log::kNoRecord) {
    CHECK_GE(found, r.offset);
    log::LogReader at(segment, found);
    CHECK(at.Next(&again) == log::ReadStatus::kRecord) << "FindValidRecord named " << found;
  }
  *stopped = status;
  return records;
}

struct Recovered {
  absl::Status status;
  std::vector<Record> records;
};

Recovered OpenWal(testing::FakeFileSystem* fs) {
  Recovered out;
  absl::StatusOr<std::unique_ptr<Wal>> wal =
      Wal::Open(fs, kDir, WalOptions{}, 0, [&](const WalRecord& r) {
        out.records.push_back(Record{0, r.index, r.epoch, r.type, std::string(r.payload)});
        return absl::OkStatus();
      });
  out.status = wal.status();
  if (wal.ok()) {
    for (size_t i = 1; i < out.records.size(); ++i) {
      CHECK_EQ(out.records[i].index, out.records[i - 1].index + 1) << "replay skipped an index";
    }
    if (!out.records.empty()) CHECK_EQ((*wal)->last_index(), out.records.back().index);
  }
  return out;
}

// Whether `got` is the first got.size() records of `want`.
void CheckPrefix(const std::vector<Record>& got, const std::vector<Record>& want,
                 absl::string_view who) {
  CHECK_LE(got.size(), want.size()) << who << " returned more records than the log holds";
  for (size_t i = 0; i < got.size(); ++i) {
    CHECK(got[i] == want[i]) << who << " returned a different record at position " << i << ": "
                             << Describe(got[i]) << " where the log holds " << Describe(want[i]);
  }
}

void RawMode(absl::string_view segment) {
  uint64_t first_index = 0;
  const bool header = log::ParseSegmentHeader(segment, &first_index);
  log::ReadStatus stopped;
  const std::vector<Record> read =
      ReadChecked(segment, header ? log::kSegmentHeaderSize : 0, &stopped);
  if (!header) return;

  // The same bytes as the only segment of a log, named as its header says.
  testing::FakeFileSystem fs;
  CHECK(fs.CreateDirs(kDir).ok());
  const std::string path = JoinPath(kDir, log::SegmentFileName(first_index));
  fs.SetContents(path, std::string(segment));
  Recovered opened = OpenWal(&fs);
  if (opened.status.ok()) {
    CheckPrefix(opened.records, read, "Wal::Open");
    return;
  }
  CHECK(absl::IsDataLoss(opened.status)) << opened.status;
  CHECK(absl::StrContains(opened.status.message(), path)) << opened.status;
  absl::StatusOr<std::string> report = Wal::Repair(&fs, kDir);
  CHECK(report.ok()) << report.status();
  Recovered repaired = OpenWal(&fs);
  CHECK(repaired.status.ok()) << "Open fails after Repair: " << repaired.status;
  CheckPrefix(repaired.records, read, "Wal::Open after Repair");
}

void MutationMode(InputReader& in) {
  // A valid segment from our writer.
  const uint64_t first_index = 1 + in.U8() % 16;
  const int count = 1 + in.U8() % 8;
  uint64_t epoch = 1 + in.U8() % 4;
  std::string segment;
  log::AppendSegmentHeader(first_index, &segment);
  std::vector<Record> written;
  for (int i = 0; i < count; ++i) {
    const uint8_t shape = in.U8();
    if (shape & 0x80) ++epoch;
    Record r;
    r.offset = segment.size();
    r.index = first_index + i;
    r.epoch = epoch;
    if (shape & 0x40) {
      r.type = log::RecordType::kEpoch;
      r.payload = std::string(in.ShortBytes());
    } else {
      r.type = log::RecordType::kOp;
      OpView op;
      op.type = (shape & 0x20) ? OpType::kDelete : OpType::kPut;
      op.version = in.U64();
      op.expire_unix_ms = static_cast<int64_t>(in.U64());
      op.key = in.ShortBytes();
      if (op.type == OpType::kPut) op.value = in.ShortBytes();
      EncodeOp(op, &r.payload);
    }
    log::AppendRecord(r.index, r.epoch, r.type, r.payload, &segment);
    written.push_back(std::move(r));
  }
  // One byte changed.
  const size_t at = in.U32() % segment.size();
  uint8_t flip = in.U8();
  if (flip == 0) flip = 0x80;
  std::string damaged = segment;
  damaged[at] = static_cast<char>(damaged[at] ^ flip);

  // The record the change falls in (count when it is in the segment header).
  size_t hit = written.size();
  for (size_t i = 0; i < written.size(); ++i) {
    if (at >= written[i].offset) hit = i;
  }
  const bool in_header = at < log::kSegmentHeaderSize;

  log::ReadStatus stopped;
  const std::vector<Record> read = ReadChecked(damaged, log::kSegmentHeaderSize, &stopped);
  CheckPrefix(read, written, "LogReader");
  if (!in_header) {
    // Every byte of a record is covered by one of its checks.
    CHECK_EQ(read.size(), hit) << "LogReader read past the changed byte at " << at;
    CHECK(stopped != log::ReadStatus::kEndOfInput && stopped != log::ReadStatus::kRecord)
        << "LogReader did not report the changed byte at " << at;
  }

  testing::FakeFileSystem fs;
  CHECK(fs.CreateDirs(kDir).ok());
  const std::string path = JoinPath(kDir, log::SegmentFileName(first_index));
  fs.SetContents(path, damaged);
  Recovered opened = OpenWal(&fs);
  if (!opened.status.ok()) {
    CHECK(absl::IsDataLoss(opened.status)) << opened.status;
    CHECK(absl::StrContains(opened.status.message(), path)) << opened.status;
    return;
  }
  CheckPrefix(opened.records, written, "Wal::Open");
  if (in_header) {
    // Only bytes no reader looks at (the reserved field) may change unnoticed.
    CHECK_EQ(opened.records.size(), written.size())
        << "Wal::Open dropped records after a change in the segment header at " << at;
    return;
  }
  CHECK_EQ(opened.records.size(), hit) << "Wal::Open kept the damaged record at " << at;
  CHECK_EQ(hit + 1, written.size())
      << "Wal::Open cut the log silently at record " << hit << " of " << written.size() << " (byte "
      << at << " changed): only the last record may be a torn tail";
}

}  // namespace
}  // namespace kvstore::fuzz

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  kvstore::fuzz::QuietLogs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kvstore::fuzz::InputReader in(data, size);
  if (in.U8() & 1) {
    kvstore::fuzz::MutationMode(in);
  } else {
    kvstore::fuzz::RawMode(in.Rest());
  }
  return 0;
}
