#include "common/storage/wal.h"

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/storage/file_system.h"
#include "common/storage/log_format.h"
#include "common/storage/log_reader.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/fake_file_system.h"

namespace kvstore {
namespace {

using ::kvstore::testing::FakeFileSystem;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

#define KV_ASSERT_OK(expr)                      \
  do {                                          \
    const absl::Status kv_status_ = (expr);     \
    ASSERT_TRUE(kv_status_.ok()) << kv_status_; \
  } while (0)

constexpr char kDir[] = "/db";
constexpr uint64_t kEpoch = 3;

WalOptions SmallSegments() {
  WalOptions options;
  options.segment_bytes = 300;  // About six records each.
  return options;
}

// Lengths vary so records do not all line up on the same offsets.
std::string Payload(uint64_t index) {
  return absl::StrCat("value-", index, std::string(index % 7, 'x'));
}

std::string Records(uint64_t first, uint64_t last) {
  std::string out;
  for (uint64_t i = first; i <= last; ++i) {
    log::AppendRecord(i, kEpoch, log::RecordType::kOp, Payload(i), &out);
  }
  return out;
}

std::vector<uint64_t> Range(uint64_t first, uint64_t last) {
  std::vector<uint64_t> out;
  for (uint64_t i = first; i <= last; ++i) out.push_back(i);
  return out;
}

struct Opened {
  absl::Status status;
  std::unique_ptr<Wal> wal;
  std::vector<uint64_t> indexes;  // As passed to apply, in order.
  std::vector<std::string> payloads;
};

Opened OpenLog(FileSystem* fs, const WalOptions& options = WalOptions(), uint64_t replay_from = 0) {
  Opened out;
  absl::StatusOr<std::unique_ptr<Wal>> wal =
      Wal::Open(fs, kDir, options, replay_from, [&](const WalRecord& r) {
        out.indexes.push_back(r.index);
        out.payloads.emplace_back(r.payload);
        EXPECT_EQ(r.epoch, kEpoch);
        EXPECT_EQ(r.type, log::RecordType::kOp);
        return absl::OkStatus();
      });
  out.status = wal.status();
  if (wal.ok()) out.wal = *std::move(wal);
  return out;
}

// Appends first..last one record per call.
absl::Status AppendEach(Wal* wal, uint64_t first, uint64_t last) {
  for (uint64_t i = first; i <= last; ++i) {
    if (absl::Status s = wal->Append(Records(i, i), i, i); !s.ok()) return s;
  }
  return absl::OkStatus();
}

// A synced log of records 1..last in segments of `options.segment_bytes`.
void WriteLog(FakeFileSystem* fs, uint64_t last, const WalOptions& options = SmallSegments()) {
  Opened log = OpenLog(fs, options);
  KV_ASSERT_OK(log.status);
  KV_ASSERT_OK(AppendEach(log.wal.get(), 1, last));
  KV_ASSERT_OK(log.wal->Sync());
}

std::vector<std::string> FileNames(FakeFileSystem& fs) {
  absl::StatusOr<std::vector<std::string>> names = fs.ListDir(kDir);
  EXPECT_TRUE(names.ok()) << names.status();
  if (!names.ok()) return {};
  std::sort(names->begin(), names->end());
  return *names;
}

std::vector<std::string> SegmentPaths(FakeFileSystem& fs) {
  std::vector<std::string> out;
  for (const std::string& name : FileNames(fs)) {
    uint64_t first;
    if (log::ParseSegmentFileName(name, &first)) out.push_back(JoinPath(kDir, name));
  }
  return out;
}

std::vector<std::string> NamesContaining(FakeFileSystem& fs, absl::string_view part) {
  std::vector<std::string> out;
  for (const std::string& name : FileNames(fs)) {
    if (absl::StrContains(name, part)) out.push_back(name);
  }
  return out;
}

std::unique_ptr<FakeFileSystem> Clone(FakeFileSystem& fs) {
  auto copy = std::make_unique<FakeFileSystem>();
  EXPECT_TRUE(copy->CreateDirs(kDir).ok());
  for (const std::string& name : FileNames(fs)) {
    const std::string path = JoinPath(kDir, name);
    copy->SetContents(path, fs.Contents(path));
  }
  return copy;
}

struct Span {
  uint64_t index;
  uint64_t offset;
  uint64_t size;
  uint64_t end() const { return offset + size; }
};

// Where each record of an intact segment lies.
std::vector<Span> RecordsIn(FakeFileSystem& fs, const std::string& path) {
  const std::string data = fs.Contents(path);
  log::LogReader reader(data, log::kSegmentHeaderSize);
  log::LogRecord record;
  std::vector<Span> out;
  while (reader.Next(&record) == log::ReadStatus::kRecord) {
    out.push_back({record.header.index, record.offset, reader.offset() - record.offset});
  }
  return out;
}

// Damage, named for what it breaks. Each is durable, as if it were on disk.
void FlipBit(FakeFileSystem* fs, const std::string& path, uint64_t offset, int bit = 0) {
  std::string data = fs->Contents(path);
  data[offset] ^= static_cast<char>(1 << bit);
  fs->SetContents(path, data);
}
void TruncateTo(FakeFileSystem* fs, const std::string& path, uint64_t size) {
  std::string data = fs->Contents(path);
  data.resize(size);
  fs->SetContents(path, data);
}
// Zeroes [from, to), growing the file if `to` is past its end.
void ZeroFill(FakeFileSystem* fs, const std::string& path, uint64_t from, uint64_t to) {
  std::string data = fs->Contents(path);
  if (data.size() < to) data.resize(to);
  std::fill(data.begin() + from, data.begin() + to, '\0');
  fs->SetContents(path, data);
}
void EraseBytes(FakeFileSystem* fs, const std::string& path, uint64_t from, uint64_t n) {
  std::string data = fs->Contents(path);
  data.erase(from, n);
  fs->SetContents(path, data);
}

void ExpectRefusedAt(const absl::Status& status, const std::string& path, uint64_t offset) {
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  const std::string message(status.message());
  EXPECT_THAT(message, HasSubstr(path));
  EXPECT_THAT(message, HasSubstr(absl::StrCat("byte offset ", offset, ":")));
  EXPECT_THAT(message, HasSubstr("kv-shard --repair --data-dir=/db"));
}

TEST(WalTest, EmptyDirectoryOpensAsEmptyLog) {
  FakeFileSystem fs;
  Opened log = OpenLog(&fs);
  KV_ASSERT_OK(log.status);
  EXPECT_THAT(log.indexes, IsEmpty());
  EXPECT_EQ(log.wal->first_index(), 0u);
  EXPECT_EQ(log.wal->last_index(), 0u);
  EXPECT_EQ(log.wal->durable_index(), 0u);
  EXPECT_EQ(log.wal->segment_count(), 0u);
  EXPECT_EQ(log.wal->bytes(), 0u);
}

TEST(WalTest, RoundTripsAcrossSeveralSegments) {
  FakeFileSystem fs;
  {
    Opened log = OpenLog(&fs, SmallSegments());
    KV_ASSERT_OK(log.status);
    // Batches of several records, as group commit appends them.
    KV_ASSERT_OK(log.wal->Append(Records(1, 1), 1, 1));
    KV_ASSERT_OK(log.wal->Append(Records(2, 4), 2, 4));
    KV_ASSERT_OK(AppendEach(log.wal.get(), 5, 30));
    KV_ASSERT_OK(log.wal->Append(Records(31, 40), 31, 40));
    KV_ASSERT_OK(log.wal->Sync());
    EXPECT_EQ(log.wal->first_index(), 1u);
    EXPECT_EQ(log.wal->last_index(), 40u);
    EXPECT_EQ(log.wal->durable_index(), 40u);
    EXPECT_GE(log.wal->segment_count(), 4u);
    uint64_t bytes = 0;
    for (const std::string& path : SegmentPaths(fs)) bytes += fs.Contents(path).size();
    EXPECT_EQ(log.wal->bytes(), bytes);
    EXPECT_EQ(log.wal->segment_count(), SegmentPaths(fs).size());
  }
  // Each segment is named for its first record.
  for (const std::string& path : SegmentPaths(fs)) {
    uint64_t first;
    ASSERT_TRUE(log::ParseSegmentFileName(path.substr(strlen(kDir) + 1), &first));
    ASSERT_FALSE(RecordsIn(fs, path).empty()) << path;
    EXPECT_EQ(RecordsIn(fs, path).front().index, first);
  }
  Opened log = OpenLog(&fs, SmallSegments());
  KV_ASSERT_OK(log.status);
  EXPECT_EQ(log.indexes, Range(1, 40));
  for (size_t i = 0; i < log.payloads.size(); ++i) EXPECT_EQ(log.payloads[i], Payload(i + 1));
  EXPECT_EQ(log.wal->first_index(), 1u);
  EXPECT_EQ(log.wal->last_index(), 40u);
  EXPECT_EQ(log.wal->durable_index(), 40u);
}

TEST(WalTest, ReopenAppendReopenContinuesInTheLastSegment) {
  FakeFileSystem fs;
  WriteLog(&fs, 5, WalOptions());
  {
    Opened log = OpenLog(&fs);
    KV_ASSERT_OK(log.status);
    EXPECT_EQ(log.indexes, Range(1, 5));
    KV_ASSERT_OK(AppendEach(log.wal.get(), 6, 10));
    KV_ASSERT_OK(log.wal->Sync());
    EXPECT_EQ(log.wal->segment_count(), 1u);
  }
  Opened log = OpenLog(&fs);
  KV_ASSERT_OK(log.status);
  EXPECT_EQ(log.indexes, Range(1, 10));
  EXPECT_EQ(SegmentPaths(fs), std::vector<std::string>{"/db/wal-00000000000000000001.log"});
}

TEST(WalTest, AppendAfterReopenStartsANewSegmentWhenTheLastIsFull) {
  FakeFileSystem fs;
  WalOptions options;
  options.segment_bytes = 100;
  WriteLog(&fs, 3, WalOptions());  // One segment, well past 100 bytes.
  ASSERT_EQ(SegmentPaths(fs).size(), 1u);
  {
    Opened log = OpenLog(&fs, options);
    KV_ASSERT_OK(log.status);
    KV_ASSERT_OK(log.wal->Append(Records(4, 4), 4, 4));
    KV_ASSERT_OK(log.wal->Sync());
  }
  EXPECT_EQ(SegmentPaths(fs).back(), "/db/wal-00000000000000000004.log");
  Opened log = OpenLog(&fs, options);
  KV_ASSERT_OK(log.status);
  EXPECT_EQ(log.indexes, Range(1, 4));
}

TEST(WalTest, ReplayFromSkipsEarlierRecords) {
  FakeFileSystem fs;
  WriteLog(&fs, 40);
  Opened log = OpenLog(&fs, SmallSegments(), /*replay_from=*/25);
  KV_ASSERT_OK(log.status);
  EXPECT_EQ(log.indexes, Range(25, 40));
  // Positions still describe the whole log.
  EXPECT_EQ(log.wal->first_index(), 1u);
  EXPECT_EQ(log.wal->last_index(), 40u);
  EXPECT_EQ(log.wal->segment_count(), SegmentPaths(fs).size());
}

TEST(WalTest, SegmentsWhollyBeforeReplayFromAreNotRead) {
  FakeFileSystem fs;
  WriteLog(&fs, 40);
  const std::vector<std::string> segments = SegmentPaths(fs);
  ASSERT_GE(segments.size(), 3u);
  const uint64_t damaged_at = RecordsIn(fs, segments[0])[1].offset;
  FlipBit(&fs, segments[0], damaged_at + 33);  // In the payload.
  const uint64_t third_first = RecordsIn(fs, segments[2]).front().index;

  // The damage is out of reach of a replay from the third segment on...
  Opened log = OpenLog(&fs, SmallSegments(), third_first);
  KV_ASSERT_OK(log.status);
  EXPECT_EQ(log.indexes, Range(third_first, 40));
  log.wal.reset();
  // ...but not of one that needs the first segment.
  ExpectRefusedAt(OpenLog(&fs, SmallSegments(), 1).status, segments[0], damaged_at);
}

TEST(WalTest, TornTailAtEveryOffsetOfTheLastTwoRecordsKeepsTheWholeRecordsBeforeIt) {
  FakeFileSystem base;
  WriteLog(&base, 14);
  const std::string last = SegmentPaths(base).back();
  const std::string original = base.Contents(last);
  const std::vector<Span> spans = RecordsIn(base, last);
  ASSERT_GE(spans.size(), 2u);
  const uint64_t before_last_segment = spans.front().index - 1;
  int torn_cases = 0;
  for (uint64_t cut = spans[spans.size() - 2].offset; cut < original.size(); ++cut) {
    SCOPED_TRACE(absl::StrCat("cut at ", cut));
    std::unique_ptr<FakeFileSystem> fs = Clone(base);
    TruncateTo(fs.get(), last, cut);
    uint64_t kept = before_last_segment;
    uint64_t good_end = log::kSegmentHeaderSize;
    for (const Span& s : spans) {
      if (s.end() <= cut) {
        kept = s.index;
        good_end = s.end();
      }
    }
    {
      Opened log = OpenLog(fs.get(), SmallSegments());
      KV_ASSERT_OK(log.status);
      EXPECT_EQ(log.indexes, Range(1, kept));
      EXPECT_EQ(log.wal->last_index(), kept);
      EXPECT_EQ(fs->Contents(last), original.substr(0, good_end));
      if (cut == good_end) {
        EXPECT_THAT(NamesContaining(*fs, ".torn-"), IsEmpty());
      } else {
        ++torn_cases;
        const std::string torn = absl::StrCat(last, ".torn-", good_end);
        EXPECT_EQ(fs->Contents(torn), original.substr(good_end, cut - good_end));
      }
      // After the tear the log goes on, and counts right when read again.
      KV_ASSERT_OK(log.wal->Append(Records(kept + 1, kept + 2), kept + 1, kept + 2));
      KV_ASSERT_OK(AppendEach(log.wal.get(), kept + 3, kept + 4));
      KV_ASSERT_OK(log.wal->Sync());
    }
    Opened log = OpenLog(fs.get(), SmallSegments());
    KV_ASSERT_OK(log.status);
    EXPECT_EQ(log.indexes, Range(1, kept + 4));
  }
  EXPECT_GT(torn_cases, 60);
}

// How a zero fill hits the end of the last segment.
struct ZeroFillCase {
  const char* name;
  uint64_t (*from)(const Span& last_record);  // Where the zeros start.
  uint64_t extra;                             // Zero bytes past the old end.
  bool last_record_survives;
};

TEST(WalTest, ZeroFilledTailIsTreatedAsTorn) {
  const std::vector<ZeroFillCase> cases = {
      {"preallocated zeros after the last record", [](const Span& r) { return r.end(); }, 4096,
       true},
      {"last record's payload zeroed", [](const Span& r) { return r.offset + 32; }, 0, false},
      {"last record zeroed from mid-header on", [](const Span& r) { return r.offset + 9; }, 512,
       false},
      {"last record wholly zeroed", [](const Span& r) { return r.offset; }, 0, false},
  };
  for (const ZeroFillCase& c : cases) {
    SCOPED_TRACE(c.name);
    FakeFileSystem fs;
    WriteLog(&fs, 14);
    const std::string last = SegmentPaths(fs).back();
    const Span record = RecordsIn(fs, last).back();
    ZeroFill(&fs, last, c.from(record), record.end() + c.extra);
    const uint64_t kept = c.last_record_survives ? 14 : 13;
    {
      Opened log = OpenLog(&fs, SmallSegments());
      KV_ASSERT_OK(log.status);
      EXPECT_EQ(log.indexes, Range(1, kept));
      EXPECT_THAT(NamesContaining(fs, ".torn-"), ::testing::SizeIs(1));
      KV_ASSERT_OK(AppendEach(log.wal.get(), kept + 1, kept + 2));
      KV_ASSERT_OK(log.wal->Sync());
    }
    Opened log = OpenLog(&fs, SmallSegments());
    KV_ASSERT_OK(log.status);
    EXPECT_EQ(log.indexes, Range(1, kept + 2));
  }
}

TEST(WalTest, TornRecordWhosePayloadHoldsRecordBytesIsStillTorn) {
  // A value that happens to be a framed log record (say, a backup of a log
  // stored in the map). Torn inside it, the tail must still count as torn:
  // bytes inside a payload its sound header declares are data, not records.
  FakeFileSystem fs;
  WriteLog(&fs, 3, WalOptions());
  std::string inner;
  log::AppendRecord(77, kEpoch, log::RecordType::kOp, "inner", &inner);
  std::string outer;
  log::AppendRecord(4, kEpoch, log::RecordType::kOp, "prefix" + inner + "suffix", &outer);
  const std::string path = SegmentPaths(fs).back();
  const std::string before = fs.Contents(path);
  fs.SetContents(path, before + outer.substr(0, outer.size() - 3));

  Opened log = OpenLog(&fs);
  KV_ASSERT_OK(log.status);
  EXPECT_EQ(log.indexes, Range(1, 3));
  EXPECT_EQ(fs.Contents(path), before);
}

// How a record is broken. The record is followed by valid ones, or sits in a
// segment that is not the last, so none of these is a torn write.
struct Corruption {
  const char* name;
  void (*apply)(FakeFileSystem* fs, const std::string& path, const Span& record);
};

const std::vector<Corruption>& Corruptions() {
  static const auto* cases = new std::vector<Corruption>{
      {"bit in the header check",
       [](FakeFileSystem* fs, const std::string& p, const Span& r) { FlipBit(fs, p, r.offset); }},
      {"bit in the length field", [](FakeFileSystem* fs, const std::string& p,
                                     const Span& r) { FlipBit(fs, p, r.offset + 4, 1); }},
      {"high bit in the length field", [](FakeFileSystem* fs, const std::string& p,
                                          const Span& r) { FlipBit(fs, p, r.offset + 7, 7); }},
      {"bit in the index field", [](FakeFileSystem* fs, const std::string& p,
                                    const Span& r) { FlipBit(fs, p, r.offset + 8); }},
      {"bit in the type", [](FakeFileSystem* fs, const std::string& p,
                             const Span& r) { FlipBit(fs, p, r.offset + 24, 2); }},
      {"bit in the payload check", [](FakeFileSystem* fs, const std::string& p,
                                      const Span& r) { FlipBit(fs, p, r.offset + 29, 5); }},
      {"bit in the payload", [](FakeFileSystem* fs, const std::string& p,
                                const Span& r) { FlipBit(fs, p, r.offset + 32, 3); }},
      {"record zero-filled", [](FakeFileSystem* fs, const std::string& p,
                                const Span& r) { ZeroFill(fs, p, r.offset, r.end()); }},
      {"bytes missing from the record", [](FakeFileSystem* fs, const std::string& p,
                                           const Span& r) { EraseBytes(fs, p, r.offset + 10, 3); }},
  };
  return *cases;
}

void ExpectEveryCorruptionRefused(const std::string& where,
                                  std::string (*pick_segment)(FakeFileSystem&),
                                  size_t (*pick_record)(const std::vector<Span>&)) {
  for (const Corruption& c : Corruptions()) {
    SCOPED_TRACE(absl::StrCat(c.name, " in ", where));
    FakeFileSystem fs;
    WriteLog(&fs, 20);
    const std::string path = pick_segment(fs);
    const std::vector<Span> spans = RecordsIn(fs, path);
    const Span record = spans[pick_record(spans)];
    c.apply(&fs, path, record);
    const std::vector<std::string> files_before = FileNames(fs);
    const std::string damaged = fs.Contents(path);

    Opened log = OpenLog(&fs, SmallSegments());
    ExpectRefusedAt(log.status, path, record.offset);
    EXPECT_THAT(log.indexes, ::testing::Each(::testing::Lt(record.index)));
    // Refusing touches nothing: what to cut is the operator's call.
    EXPECT_EQ(fs.Contents(path), damaged);
    EXPECT_EQ(FileNames(fs), files_before);
  }
}

TEST(WalTest, DamagedRecordFollowedByValidOnesInTheLastSegmentIsRefused) {
  ExpectEveryCorruptionRefused(
      "the last segment", [](FakeFileSystem& fs) { return SegmentPaths(fs).back(); },
      [](const std::vector<Span>& spans) { return spans.size() - 2; });
}

TEST(WalTest, DamagedRecordInAnEarlierSegmentIsRefused) {
  ExpectEveryCorruptionRefused(
      "the first segment", [](FakeFileSystem& fs) { return SegmentPaths(fs).front(); },
      [](const std::vector<Span>&) { return size_t{1}; });
}

TEST(WalTest, DamagedLastRecordOfAnEarlierSegmentIsRefused) {
  // Nothing valid follows it in its own segment, but a segment is synced before
  // the log moves on, so its end was never a torn write.
  ExpectEveryCorruptionRefused(
      "the end of the first segment", [](FakeFileSystem& fs) { return SegmentPaths(fs).front(); },
      [](const std::vector<Span>& spans) { return spans.size() - 1; });
}

TEST(WalTest, TruncatedEarlierSegmentIsRefused) {
  FakeFileSystem fs;
  WriteLog(&fs, 20);
  const std::string first = SegmentPaths(fs).front();
  const Span last_record = RecordsIn(fs, first).back();
  TruncateTo(&fs, first, last_record.offset + 10);
  ExpectRefusedAt(OpenLog(&fs, SmallSegments()).status, first, last_record.offset);
}

TEST(WalTest, MissingMiddleSegmentIsRefusedAsAnIndexGap) {
  FakeFileSystem fs;
  WriteLog(&fs, 20);
  const std::vector<std::string> segments = SegmentPaths(fs);
  ASSERT_GE(segments.size(), 3u);
  KV_ASSERT_OK(fs.Remove(segments[1]));
  Opened log = OpenLog(&fs, SmallSegments());
  ExpectRefusedAt(log.status, segments[2], 0);
  EXPECT_THAT(std::string(log.status.message()), HasSubstr("segment starts at index"));
}

// A segment whose records are all sound but whose indexes do not run on.
struct IndexCase {
  const char* name;
  std::vector<uint64_t> indexes;
  size_t bad;  // Position of the first wrong one.
};

TEST(WalTest, IndexGapOrRepeatInsideASegmentIsRefused) {
  const std::vector<IndexCase> cases = {
      {"gap", {1, 2, 4, 5}, 2},
      {"repeat", {1, 2, 2, 3}, 2},
      {"gap in the very last record", {1, 2, 3, 9}, 3},
      {"first record not the segment's first index", {2, 3}, 0},
  };
  for (const IndexCase& c : cases) {
    SCOPED_TRACE(c.name);
    FakeFileSystem fs;
    KV_ASSERT_OK(fs.CreateDirs(kDir));
    std::string data;
    log::AppendSegmentHeader(1, &data);
    uint64_t bad_offset = 0;
    for (size_t i = 0; i < c.indexes.size(); ++i) {
      if (i == c.bad) bad_offset = data.size();
      data += Records(c.indexes[i], c.indexes[i]);
    }
    const std::string path = JoinPath(kDir, log::SegmentFileName(1));
    fs.SetContents(path, data);
    ExpectRefusedAt(OpenLog(&fs).status, path, bad_offset);
  }
}

TEST(WalTest, BadSegmentHeaderIsRefused) {
  struct Case {
    const char* name;
    bool last_segment;
    void (*apply)(FakeFileSystem* fs, const std::string& path);
  };
  const std::vector<Case> cases = {
      {"bad magic in the last segment", true,
       [](FakeFileSystem* fs, const std::string& p) { FlipBit(fs, p, 0); }},
      {"bad version in the last segment", true,
       [](FakeFileSystem* fs, const std::string& p) { FlipBit(fs, p, 9); }},
      {"first index unlike the name", true,
       [](FakeFileSystem* fs, const std::string& p) { FlipBit(fs, p, 16); }},
      {"bad magic in an earlier segment", false,
       [](FakeFileSystem* fs, const std::string& p) { FlipBit(fs, p, 3); }},
      {"zero-filled earlier segment", false,
       [](FakeFileSystem* fs, const std::string& p) {
         ZeroFill(fs, p, 0, fs->Contents(p).size());
       }},
      {"earlier segment cut inside its header", false,
       [](FakeFileSystem* fs, const std::string& p) { TruncateTo(fs, p, 10); }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    FakeFileSystem fs;
    WriteLog(&fs, 20);
    const std::vector<std::string> segments = SegmentPaths(fs);
    const std::string path = c.last_segment ? segments.back() : segments[1];
    c.apply(&fs, path);
    ExpectRefusedAt(OpenLog(&fs, SmallSegments()).status, path, 0);
  }
}

TEST(WalTest, TornHeaderOfTheLastSegmentIsRemoved) {
  // A crash between creating a segment and writing its header.
  struct Case {
    const char* name;
    std::string contents;
  };
  std::string header;
  log::AppendSegmentHeader(21, &header);
  const std::vector<Case> cases = {
      {"empty file", ""},
      {"header cut short", header.substr(0, 10)},
      {"zero-filled block", std::string(4096, '\0')},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    FakeFileSystem fs;
    WriteLog(&fs, 20);
    const std::string torn = JoinPath(kDir, log::SegmentFileName(21));
    fs.SetContents(torn, c.contents);
    {
      Opened log = OpenLog(&fs, SmallSegments());
      KV_ASSERT_OK(log.status);
      EXPECT_EQ(log.indexes, Range(1, 20));
      EXPECT_FALSE(fs.Exists(torn));
      EXPECT_EQ(NamesContaining(fs, ".torn-").size(), c.contents.empty() ? 0u : 1u);
      KV_ASSERT_OK(AppendEach(log.wal.get(), 21, 22));
      KV_ASSERT_OK(log.wal->Sync());
    }
    Opened log = OpenLog(&fs, SmallSegments());
    KV_ASSERT_OK(log.status);
    EXPECT_EQ(log.indexes, Range(1, 22));
  }
}

TEST(WalTest, TornHeaderOfTheOnlySegmentLeavesAnEmptyLog) {
  FakeFileSystem fs;
  KV_ASSERT_OK(fs.CreateDirs(kDir));
  fs.SetContents(JoinPath(kDir, log::SegmentFileName(1)), std::string(7, '\0'));
  {
    Opened log = OpenLog(&fs);
    KV_ASSERT_OK(log.status);
    EXPECT_EQ(log.wal->last_index(), 0u);
    EXPECT_EQ(log.wal->segment_count(), 0u);
    KV_ASSERT_OK(AppendEach(log.wal.get(), 1, 2));
    KV_ASSERT_OK(log.wal->Sync());
  }
  EXPECT_EQ(OpenLog(&fs).indexes, Range(1, 2));
}

TEST(WalTest, HeaderOnlyLastSegmentContinuesTheLog) {
  // A crash right after a rotation wrote the new segment's header.
  FakeFileSystem fs;
  WriteLog(&fs, 20);
  std::string header;
  log::AppendSegmentHeader(21, &header);
  fs.SetContents(JoinPath(kDir, log::SegmentFileName(21)), header);
  {
    Opened log = OpenLog(&fs, SmallSegments());
    KV_ASSERT_OK(log.status);
    EXPECT_EQ(log.indexes, Range(1, 20));
    EXPECT_EQ(log.wal->last_index(), 20u);
    KV_ASSERT_OK(log.wal->Append(Records(21, 21), 21, 21));
    KV_ASSERT_OK(log.wal->Sync());
  }
  EXPECT_EQ(RecordsIn(fs, JoinPath(kDir, log::SegmentFileName(21))).size(), 1u);
  EXPECT_EQ(OpenLog(&fs, SmallSegments()).indexes, Range(1, 21));
}

TEST(WalTest, EmptyLogWithAHeaderOnlySegmentAcceptsAnyFirstIndex) {
  FakeFileSystem fs;
  KV_ASSERT_OK(fs.CreateDirs(kDir));
  std::string header;
  log::AppendSegmentHeader(50, &header);
  fs.SetContents(JoinPath(kDir, log::SegmentFileName(50)), header);
  {
    Opened log = OpenLog(&fs);
    KV_ASSERT_OK(log.status);
    EXPECT_EQ(log.wal->last_index(), 0u);
    KV_ASSERT_OK(AppendEach(log.wal.get(), 1, 3));
    KV_ASSERT_OK(log.wal->Sync());
  }
  EXPECT_EQ(SegmentPaths(fs), std::vector<std::string>{JoinPath(kDir, log::SegmentFileName(1))});
  EXPECT_EQ(OpenLog(&fs).indexes, Range(1, 3));
}

TEST(WalTest, PowerCutKeepsAConsistentPrefix) {
  for (double keep : {0.0, 0.2, 0.45, 0.7, 0.99, 1.0}) {
    SCOPED_TRACE(absl::StrCat("keeping ", keep, " of unsynced bytes"));
    FakeFileSystem fs;
    {
      Opened log = OpenLog(&fs, SmallSegments());
      KV_ASSERT_OK(log.status);
      KV_ASSERT_OK(log.wal->Append(Records(1, 10), 1, 10));
      KV_ASSERT_OK(log.wal->Sync());
      KV_ASSERT_OK(AppendEach(log.wal.get(), 11, 30));  // Rotates; never synced.
      fs.CutPower(keep);
    }
    uint64_t kept;
    {
      Opened log = OpenLog(&fs, SmallSegments());
      KV_ASSERT_OK(log.status);
      kept = log.wal->last_index();
      EXPECT_GE(kept, 10u);  // Everything synced survives.
      EXPECT_EQ(log.indexes, Range(1, kept));
      KV_ASSERT_OK(AppendEach(log.wal.get(), kept + 1, kept + 3));
      KV_ASSERT_OK(log.wal->Sync());
    }
    EXPECT_EQ(OpenLog(&fs, SmallSegments()).indexes, Range(1, kept + 3));
  }
}

TEST(WalTest, ProcessCrashKeepsEveryAppendedRecord) {
  FakeFileSystem fs;
  {
    Opened log = OpenLog(&fs, SmallSegments());
    KV_ASSERT_OK(log.status);
    KV_ASSERT_OK(AppendEach(log.wal.get(), 1, 25));  // Handed to the OS, never synced.
    fs.CrashProcess();
  }
  EXPECT_EQ(OpenLog(&fs, SmallSegments()).indexes, Range(1, 25));
}

TEST(WalTest, OpenMakesWhatItReplayedDurable) {
  // Replayed records are applied and may be served, so a power cut soon after
  // a restart must not take them back.
  FakeFileSystem fs;
  {
    Opened log = OpenLog(&fs, SmallSegments());
    KV_ASSERT_OK(log.status);
    KV_ASSERT_OK(AppendEach(log.wal.get(), 1, 25));
    fs.CrashProcess();
  }
  {
    Opened log = OpenLog(&fs, SmallSegments());
    KV_ASSERT_OK(log.status);
    EXPECT_EQ(log.wal->durable_index(), 25u);
    fs.CutPower();
  }
  EXPECT_EQ(OpenLog(&fs, SmallSegments()).indexes, Range(1, 25));
}

TEST(WalTest, RotationSyncsTheSegmentItLeaves) {
  FakeFileSystem fs;
  uint64_t second_first;
  {
    Opened log = OpenLog(&fs, SmallSegments());
    KV_ASSERT_OK(log.status);
    KV_ASSERT_OK(log.wal->Append(Records(1, 1), 1, 1));
    KV_ASSERT_OK(log.wal->Sync());  // The first segment's directory entry is durable.
    uint64_t i = 2;
    for (; log.wal->segment_count() < 2; ++i) {
      KV_ASSERT_OK(log.wal->Append(Records(i, i), i, i));
    }
    second_first = i - 1;
    EXPECT_EQ(log.wal->durable_index(), 1u);
    fs.CutPower();
  }
  // The second segment was never synced and is gone; the first is whole.
  EXPECT_EQ(OpenLog(&fs, SmallSegments()).indexes, Range(1, second_first - 1));
}

TEST(WalTest, DurableIndexFollowsSync) {
  FakeFileSystem fs;
  Opened log = OpenLog(&fs, SmallSegments());
  KV_ASSERT_OK(log.status);
  KV_ASSERT_OK(AppendEach(log.wal.get(), 1, 3));
  EXPECT_EQ(log.wal->last_index(), 3u);
  EXPECT_EQ(log.wal->durable_index(), 0u);
  KV_ASSERT_OK(log.wal->Sync());
  EXPECT_EQ(log.wal->durable_index(), 3u);
  KV_ASSERT_OK(AppendEach(log.wal.get(), 4, 20));
  EXPECT_EQ(log.wal->durable_index(), 3u);
  KV_ASSERT_OK(log.wal->Sync());
  EXPECT_EQ(log.wal->durable_index(), 20u);
}

TEST(WalTest, AppendMustContinueTheLog) {
  FakeFileSystem fs;
  Opened log = OpenLog(&fs);
  KV_ASSERT_OK(log.status);
  KV_ASSERT_OK(log.wal->Append(Records(5, 6), 5, 6));  // An empty log may start anywhere.
  EXPECT_EQ(log.wal->Append(Records(8, 8), 8, 8).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(log.wal->Append(Records(6, 6), 6, 6).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(log.wal->Append(Records(7, 7), 7, 6).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(log.wal->Append("", 7, 7).code(), absl::StatusCode::kInvalidArgument);
  // A refused call is the caller's mistake and leaves the log usable.
  KV_ASSERT_OK(log.wal->Append(Records(7, 7), 7, 7));
  EXPECT_EQ(log.wal->first_index(), 5u);
  EXPECT_EQ(log.wal->last_index(), 7u);
}

TEST(WalTest, ResetDropsEverySegmentAndRestartsAtTheGivenIndex) {
  FakeFileSystem fs;
  WriteLog(&fs, 20);
  {
    Opened log = OpenLog(&fs, SmallSegments());
    KV_ASSERT_OK(log.status);
    KV_ASSERT_OK(log.wal->Reset(100));
    EXPECT_THAT(SegmentPaths(fs), IsEmpty());
    EXPECT_EQ(log.wal->first_index(), 0u);
    EXPECT_EQ(log.wal->last_index(), 0u);
    EXPECT_EQ(log.wal->durable_index(), 0u);
    EXPECT_EQ(log.wal->segment_count(), 0u);
    EXPECT_EQ(log.wal->bytes(), 0u);
    EXPECT_EQ(log.wal->Append(Records(21, 21), 21, 21).code(),
              absl::StatusCode::kFailedPrecondition);
    KV_ASSERT_OK(AppendEach(log.wal.get(), 100, 102));
    KV_ASSERT_OK(log.wal->Sync());
  }
  Opened log = OpenLog(&fs, SmallSegments());
  KV_ASSERT_OK(log.status);
  EXPECT_EQ(log.indexes, Range(100, 102));
  EXPECT_EQ(log.wal->first_index(), 100u);
}

TEST(WalTest, ResetIsDurableWithoutASync) {
  // Old segments coming back after a power cut would not continue the snapshot
  // that replaced them.
  FakeFileSystem fs;
  WriteLog(&fs, 20);
  {
    Opened log = OpenLog(&fs, SmallSegments());
    KV_ASSERT_OK(log.status);
    KV_ASSERT_OK(log.wal->Reset(100));
    fs.CutPower();
  }
  Opened log = OpenLog(&fs, SmallSegments());
  KV_ASSERT_OK(log.status);
  EXPECT_EQ(log.wal->last_index(), 0u);
}

TEST(WalTest, RemoveSegmentsThroughKeepsTheLastSegmentAndAnyNotWhollyCovered) {
  FakeFileSystem fs;
  WriteLog(&fs, 40);
  const std::vector<std::string> segments = SegmentPaths(fs);
  ASSERT_GE(segments.size(), 4u);
  const uint64_t third_first = RecordsIn(fs, segments[2]).front().index;
  Opened log = OpenLog(&fs, SmallSegments());
  KV_ASSERT_OK(log.status);

  // third_first is in the third segment: only the first two are wholly covered.
  KV_ASSERT_OK(log.wal->RemoveSegmentsThrough(third_first));
  EXPECT_EQ(log.wal->first_index(), third_first);
  EXPECT_EQ(SegmentPaths(fs).front(), segments[2]);
  EXPECT_EQ(log.wal->segment_count(), segments.size() - 2);

  KV_ASSERT_OK(log.wal->RemoveSegmentsThrough(1000));
  EXPECT_EQ(SegmentPaths(fs), std::vector<std::string>{segments.back()});
  EXPECT_EQ(log.wal->last_index(), 40u);
  EXPECT_EQ(log.wal->bytes(), fs.Contents(segments.back()).size());
  KV_ASSERT_OK(AppendEach(log.wal.get(), 41, 42));
  KV_ASSERT_OK(log.wal->Sync());
  log.wal.reset();

  const uint64_t last_first = RecordsIn(fs, segments.back()).front().index;
  Opened reopened = OpenLog(&fs, SmallSegments(), last_first);
  KV_ASSERT_OK(reopened.status);
  EXPECT_EQ(reopened.indexes, Range(last_first, 42));
}

TEST(WalTest, IgnoresFilesThatAreNotSegments) {
  FakeFileSystem fs;
  WriteLog(&fs, 10);
  const std::string segment = SegmentPaths(fs).front();
  fs.SetContents(segment + ".torn-100", "garbage");
  fs.SetContents(segment + ".broken", "garbage");
  fs.SetContents("/db/snap-00000000000000000005.snap", "snapshot");
  fs.SetContents("/db/wal-5.log", "not ours");
  Opened log = OpenLog(&fs, SmallSegments());
  KV_ASSERT_OK(log.status);
  EXPECT_EQ(log.indexes, Range(1, 10));
}

TEST(WalTest, ErrorFromApplyStopsOpen) {
  FakeFileSystem fs;
  WriteLog(&fs, 10);
  std::vector<uint64_t> seen;
  absl::StatusOr<std::unique_ptr<Wal>> wal =
      Wal::Open(&fs, kDir, SmallSegments(), 0, [&](const WalRecord& r) {
        seen.push_back(r.index);
        return r.index == 4 ? absl::DataLossError("bad op") : absl::OkStatus();
      });
  EXPECT_EQ(wal.status(), absl::DataLossError("bad op"));
  EXPECT_EQ(seen, Range(1, 4));
}

// Which operation fails -> which call reports it.
struct IoFailure {
  const char* name;
  FakeFileSystem::Op op;
  bool during_sync;  // Else during Append.
};

TEST(WalTest, FailedWriteOrSyncIsReportedAndSticky) {
  const std::vector<IoFailure> cases = {
      {"create", FakeFileSystem::Op::kCreate, false},
      {"append", FakeFileSystem::Op::kAppend, false},
      {"flush", FakeFileSystem::Op::kFlush, false},
      {"sync", FakeFileSystem::Op::kSync, true},
      {"directory sync", FakeFileSystem::Op::kSyncDir, true},
  };
  for (const IoFailure& c : cases) {
    SCOPED_TRACE(c.name);
    FakeFileSystem fs;
    Opened log = OpenLog(&fs, SmallSegments());
    KV_ASSERT_OK(log.status);
    fs.FailAfter(c.op, 0);
    absl::Status failed = log.wal->Append(Records(1, 1), 1, 1);
    if (c.during_sync) {
      KV_ASSERT_OK(failed);
      failed = log.wal->Sync();
    }
    ASSERT_FALSE(failed.ok());
    EXPECT_GT(fs.injected_failures(), 0);
    EXPECT_THAT(std::string(failed.message()), HasSubstr(kDir));
    EXPECT_EQ(log.wal->durable_index(), 0u);
    // Never retried, never acknowledged: the disk may have dropped what it had.
    fs.ClearFailures();
    EXPECT_EQ(log.wal->Sync(), failed);
    EXPECT_EQ(log.wal->Append(Records(2, 2), 2, 2), failed);
    EXPECT_EQ(log.wal->durable_index(), 0u);
  }
}

TEST(WalTest, FailedSyncWhileRotatingIsReported) {
  FakeFileSystem fs;
  Opened log = OpenLog(&fs, SmallSegments());
  KV_ASSERT_OK(log.status);
  uint64_t i = 1;
  for (; log.wal->bytes() < SmallSegments().segment_bytes; ++i) {
    KV_ASSERT_OK(log.wal->Append(Records(i, i), i, i));
  }
  fs.FailAfter(FakeFileSystem::Op::kSync, 0);
  const absl::Status failed = log.wal->Append(Records(i, i), i, i);
  EXPECT_FALSE(failed.ok());
  EXPECT_THAT(std::string(failed.message()), HasSubstr(log::SegmentFileName(1)));
  EXPECT_EQ(log.wal->segment_count(), 1u);
}

TEST(WalTest, FailedReadFailsOpenNamingTheFile) {
  FakeFileSystem fs;
  WriteLog(&fs, 3);
  fs.FailAfter(FakeFileSystem::Op::kRead, 0);
  Opened log = OpenLog(&fs, SmallSegments());
  EXPECT_FALSE(log.status.ok());
  EXPECT_THAT(std::string(log.status.message()), HasSubstr(log::SegmentFileName(1)));
}

// How the log is broken -> where Repair must cut and what it keeps.
struct RepairCase {
  const char* name;
  // Breaks the log in `fs`, whose segments are `segments`; sets *cut_path and
  // *cut_offset to where the damage starts and returns the last index to keep.
  uint64_t (*damage)(FakeFileSystem* fs, const std::vector<std::string>& segments,
                     std::string* cut_path, uint64_t* cut_offset);
};

TEST(WalRepairTest, CutsAtTheFirstDamageAndKeepsCopiesOfWhatItCuts) {
  const std::vector<RepairCase> cases = {
      {"flipped payload bit mid last segment",
       [](FakeFileSystem* fs, const std::vector<std::string>& segs, std::string* path,
          uint64_t* offset) {
         *path = segs.back();
         const Span r = RecordsIn(*fs, *path)[1];
         FlipBit(fs, *path, r.offset + 33);
         *offset = r.offset;
         return r.index - 1;
       }},
      {"flipped header bit in the first segment",
       [](FakeFileSystem* fs, const std::vector<std::string>& segs, std::string* path,
          uint64_t* offset) {
         *path = segs.front();
         const Span r = RecordsIn(*fs, *path)[2];
         FlipBit(fs, *path, r.offset + 8, 4);
         *offset = r.offset;
         return r.index - 1;
       }},
      {"torn tail",
       [](FakeFileSystem* fs, const std::vector<std::string>& segs, std::string* path,
          uint64_t* offset) {
         *path = segs.back();
         const Span r = RecordsIn(*fs, *path).back();
         TruncateTo(fs, *path, r.offset + 20);
         *offset = r.offset;
         return r.index - 1;
       }},
      {"bad header on a middle segment",
       [](FakeFileSystem* fs, const std::vector<std::string>& segs, std::string* path,
          uint64_t* offset) {
         *path = segs[1];
         const uint64_t first = RecordsIn(*fs, *path).front().index;
         FlipBit(fs, *path, 2);
         *offset = 0;
         return first - 1;
       }},
      {"missing middle segment",
       [](FakeFileSystem* fs, const std::vector<std::string>& segs, std::string* path,
          uint64_t* offset) {
         const uint64_t first = RecordsIn(*fs, segs[1]).front().index;
         EXPECT_TRUE(fs->Remove(segs[1]).ok());
         *path = segs[2];
         *offset = 0;
         return first - 1;
       }},
  };
  for (const RepairCase& c : cases) {
    SCOPED_TRACE(c.name);
    FakeFileSystem fs;
    WriteLog(&fs, 30);
    const std::vector<std::string> segments = SegmentPaths(fs);
    ASSERT_GE(segments.size(), 4u);
    std::string cut_path;
    uint64_t cut_offset = 0;
    const uint64_t kept = c.damage(&fs, segments, &cut_path, &cut_offset);
    const std::vector<std::string> damaged = SegmentPaths(fs);
    std::vector<std::string> before;
    for (const std::string& path : damaged) before.push_back(fs.Contents(path));

    absl::StatusOr<std::string> report = Wal::Repair(&fs, kDir);
    ASSERT_TRUE(report.ok()) << report.status();
    EXPECT_THAT(*report, HasSubstr(cut_path));
    EXPECT_THAT(*report, HasSubstr(absl::StrCat("byte offset ", cut_offset)));
    EXPECT_THAT(*report, HasSubstr(absl::StrCat("Kept ", kept, " records, indexes 1..", kept)));

    // Every byte cut is kept beside the log.
    bool after_cut = false;
    for (size_t i = 0; i < damaged.size(); ++i) {
      const std::string& path = damaged[i];
      if (path == cut_path) {
        after_cut = true;
        if (cut_offset == 0) {
          EXPECT_FALSE(fs.Exists(path));
          EXPECT_EQ(fs.Contents(path + ".broken"), before[i]);
        } else {
          EXPECT_EQ(fs.Contents(path), before[i].substr(0, cut_offset));
          EXPECT_EQ(fs.Contents(path + ".broken"), before[i].substr(cut_offset));
        }
      } else if (after_cut) {
        EXPECT_FALSE(fs.Exists(path)) << path;
        EXPECT_EQ(fs.Contents(path + ".broken"), before[i]) << path;
      } else {
        EXPECT_EQ(fs.Contents(path), before[i]) << path;
      }
    }
    ASSERT_TRUE(after_cut);

    {
      Opened log = OpenLog(&fs, SmallSegments());
      KV_ASSERT_OK(log.status);
      EXPECT_EQ(log.indexes, Range(1, kept));
      KV_ASSERT_OK(AppendEach(log.wal.get(), kept + 1, kept + 2));
      KV_ASSERT_OK(log.wal->Sync());
    }
    EXPECT_EQ(OpenLog(&fs, SmallSegments()).indexes, Range(1, kept + 2));
    absl::StatusOr<std::string> again = Wal::Repair(&fs, kDir);
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_THAT(*again, HasSubstr("nothing to repair"));
  }
}

TEST(WalRepairTest, SoundLogHasNothingToRepair) {
  FakeFileSystem fs;
  WriteLog(&fs, 20);
  const std::vector<std::string> names = FileNames(fs);
  absl::StatusOr<std::string> report = Wal::Repair(&fs, kDir);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_THAT(*report, HasSubstr("nothing to repair"));
  EXPECT_THAT(*report, HasSubstr("20 records"));
  EXPECT_EQ(FileNames(fs), names);
}

TEST(WalRepairTest, SecondRepairKeepsTheFirstCopy) {
  FakeFileSystem fs;
  WriteLog(&fs, 20);
  const std::string last = SegmentPaths(fs).back();
  const std::vector<Span> spans = RecordsIn(fs, last);
  ASSERT_GE(spans.size(), 3u);
  FlipBit(&fs, last, spans.back().offset + 40);
  ASSERT_TRUE(Wal::Repair(&fs, kDir).ok());
  const std::string first_copy = fs.Contents(last + ".broken");
  FlipBit(&fs, last, spans[spans.size() - 2].offset + 1);
  ASSERT_TRUE(Wal::Repair(&fs, kDir).ok());
  EXPECT_EQ(fs.Contents(last + ".broken"), first_copy);
  EXPECT_FALSE(fs.Contents(last + ".broken.1").empty());
}

// The same on a real disk, to keep the POSIX file system honest too.
class WalPosixTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = absl::StrCat(::testing::TempDir(), "wal_posix_test_", ::getpid());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  absl::StatusOr<std::unique_ptr<Wal>> Open(std::vector<uint64_t>* indexes) {
    return Wal::Open(PosixFileSystem(), dir_, SmallSegments(), 0, [&](const WalRecord& r) {
      indexes->push_back(r.index);
      return absl::OkStatus();
    });
  }

  std::string dir_;
};

TEST_F(WalPosixTest, RoundTripsAndCutsATornTail) {
  {
    std::vector<uint64_t> indexes;
    absl::StatusOr<std::unique_ptr<Wal>> wal = Open(&indexes);
    ASSERT_TRUE(wal.ok()) << wal.status();
    KV_ASSERT_OK(AppendEach(wal->get(), 1, 30));
    KV_ASSERT_OK((*wal)->Sync());
    EXPECT_GE((*wal)->segment_count(), 3u);
  }
  // Half a record at the end of the last segment, as a crash mid-write leaves it.
  std::string segment_name;
  for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
    const std::string name = entry.path().filename();
    if (name > segment_name) segment_name = name;
  }
  const std::string path = JoinPath(dir_, segment_name);
  {
    absl::StatusOr<std::unique_ptr<WritableFile>> file = PosixFileSystem()->OpenAppendable(path);
    ASSERT_TRUE(file.ok()) << file.status();
    KV_ASSERT_OK((*file)->Append(Records(31, 31).substr(0, 40)));
    KV_ASSERT_OK((*file)->Close());
  }
  std::vector<uint64_t> indexes;
  absl::StatusOr<std::unique_ptr<Wal>> wal = Open(&indexes);
  ASSERT_TRUE(wal.ok()) << wal.status();
  EXPECT_EQ(indexes, Range(1, 30));
  bool torn_kept = false;
  for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
    torn_kept |= absl::StrContains(entry.path().filename().string(), ".torn-");
  }
  EXPECT_TRUE(torn_kept);
  KV_ASSERT_OK((*wal)->Append(Records(31, 31), 31, 31));
  KV_ASSERT_OK((*wal)->Sync());
}

}  // namespace
}  // namespace kvstore
