#include "common/storage/snapshot.h"

#include <stdlib.h>
#include <xxhash.h>

#include <cstdint>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/storage/file_system.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/fake_file_system.h"

namespace kvstore {
namespace {

using ::kvstore::testing::FakeFileSystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;

#define KV_ASSERT_OK(expr)                      \
  do {                                          \
    const absl::Status kv_status_ = (expr);     \
    ASSERT_TRUE(kv_status_.ok()) << kv_status_; \
  } while (0)

constexpr char kDir[] = "/data";
constexpr uint64_t kEpoch = 7;
constexpr int64_t kCreated = 1700000000123;
// The byte layout from snapshot.h, for tests that damage or hand-build files.
constexpr size_t kHeaderBytes = 40;
constexpr size_t kBlockHeaderBytes = 8;
constexpr size_t kTrailerBytes = 24;

struct Entry {
  std::string key;
  std::string value;
  uint64_t version = 0;
  int64_t expire_unix_ms = 0;

  friend bool operator==(const Entry& a, const Entry& b) {
    return a.key == b.key && a.value == b.value && a.version == b.version &&
           a.expire_unix_ms == b.expire_unix_ms;
  }
  friend std::ostream& operator<<(std::ostream& os, const Entry& e) {
    std::string value = e.value.size() > 40 ? absl::StrCat(e.value.substr(0, 40), "...") : e.value;
    return os << "{\"" << absl::CHexEscape(e.key) << "\" (" << e.value.size() << " bytes) \""
              << absl::CHexEscape(value) << "\" v" << e.version << " exp " << e.expire_unix_ms
              << "}";
  }
};

std::string SnapPath(uint64_t start_index) { return JoinPath(kDir, SnapshotFileName(start_index)); }
std::string TmpPath(uint64_t start_index) { return SnapPath(start_index) + ".tmp"; }

absl::StatusOr<SnapshotMeta> WriteSnapshot(FileSystem* fs, uint64_t start_index,
                                           const std::vector<Entry>& entries, uint64_t end_index,
                                           const std::string& dir = kDir) {
  absl::StatusOr<std::unique_ptr<SnapshotWriter>> writer =
      SnapshotWriter::Create(fs, dir, start_index, kEpoch, kCreated);
  if (!writer.ok()) return writer.status();
  for (const Entry& e : entries) {
    if (absl::Status s = (*writer)->Add(e.key, e.value, e.version, e.expire_unix_ms); !s.ok()) {
      return s;
    }
  }
  return (*writer)->Commit(end_index);
}

absl::StatusOr<std::vector<Entry>> LoadEntries(FileSystem* fs, const std::string& path,
                                               SnapshotMeta* meta = nullptr) {
  std::vector<Entry> entries;
  absl::StatusOr<SnapshotMeta> loaded = LoadSnapshot(
      fs, path,
      [&](absl::string_view key, absl::string_view value, uint64_t version,
          int64_t expire_unix_ms) {
        entries.push_back({std::string(key), std::string(value), version, expire_unix_ms});
        return absl::OkStatus();
      });
  if (!loaded.ok()) return loaded.status();
  if (meta != nullptr) *meta = *loaded;
  return entries;
}

// Entries with sizes that vary, so they do not line up on block boundaries.
std::vector<Entry> ManyEntries(int n) {
  std::vector<Entry> entries;
  for (int i = 0; i < n; ++i) {
    entries.push_back({absl::StrCat("key-", i),
                       std::string(50 + i % 97, static_cast<char>('a' + i % 26)),
                       static_cast<uint64_t>(i + 1), i % 3 == 0 ? 0 : int64_t{1800000000000} + i});
  }
  return entries;
}

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string out(n, '\0');
  for (char& c : out) c = static_cast<char>(rng());
  return out;
}

std::vector<std::string> Names(FakeFileSystem* fs) {
  absl::StatusOr<std::vector<std::string>> names = fs->ListDir(kDir);
  EXPECT_TRUE(names.ok()) << names.status();
  return names.ok() ? *names : std::vector<std::string>{};
}

std::vector<uint64_t> ListedStarts(FileSystem* fs) {
  absl::StatusOr<std::vector<SnapshotMeta>> list = ListSnapshots(fs, kDir);
  EXPECT_TRUE(list.ok()) << list.status();
  std::vector<uint64_t> starts;
  if (list.ok()) {
    for (const SnapshotMeta& m : *list) starts.push_back(m.start_index);
  }
  return starts;
}

// --- Ways to damage a file, named after what they break. ---

void FlipBit(FakeFileSystem* fs, const std::string& path, uint64_t offset, int bit = 0) {
  std::string data = fs->Contents(path);
  ASSERT_LT(offset, data.size());
  data[offset] = static_cast<char>(data[offset] ^ (1 << bit));
  fs->SetContents(path, std::move(data));
}

void TruncateTo(FakeFileSystem* fs, const std::string& path, uint64_t size) {
  std::string data = fs->Contents(path);
  ASSERT_LE(size, data.size());
  data.resize(size);
  fs->SetContents(path, std::move(data));
}

void AppendGarbage(FakeFileSystem* fs, const std::string& path, absl::string_view garbage) {
  fs->SetContents(path, fs->Contents(path) + std::string(garbage));
}

// Cuts out the bytes [from, to).
void DropBytes(FakeFileSystem* fs, const std::string& path, uint64_t from, uint64_t to) {
  std::string data = fs->Contents(path);
  ASSERT_LE(to, data.size());
  data.erase(from, to - from);
  fs->SetContents(path, std::move(data));
}

// --- The format spelled out independently of the writer. ---

uint32_t Check(absl::string_view data) {
  return static_cast<uint32_t>(XXH3_64bits(data.data(), data.size()));
}
std::string U32(uint32_t v) {
  std::string out(4, '\0');
  for (int i = 0; i < 4; ++i) out[i] = static_cast<char>(v >> (8 * i));
  return out;
}
std::string U64(uint64_t v) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(v >> (8 * i));
  return out;
}
std::string Varint(uint32_t v) {
  std::string out;
  while (v >= 0x80) {
    out.push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
  return out;
}
std::string EncodeHeader(uint64_t start_index, uint64_t epoch, int64_t created) {
  const std::string checked = U64(start_index) + U64(epoch) + U64(static_cast<uint64_t>(created));
  return std::string("KVSNAP\0\0", 8) + U32(1) + U32(Check(checked)) + checked;
}
std::string EncodeEntry(const Entry& e) {
  return Varint(static_cast<uint32_t>(e.key.size())) +
         Varint(static_cast<uint32_t>(e.value.size())) + U64(e.version) +
         U64(static_cast<uint64_t>(e.expire_unix_ms)) + e.key + e.value;
}
// A block whose check matches its payload, however wrong the payload is.
std::string EncodeBlock(absl::string_view payload) {
  return U32(static_cast<uint32_t>(payload.size())) + U32(Check(payload)) + std::string(payload);
}
std::string EncodeTrailer(uint64_t entry_count, uint64_t end_index) {
  const std::string checked = U64(entry_count) + U64(end_index);
  return U32(0) + checked + U32(Check(checked));
}

// Where each part of a valid snapshot file starts.
struct Layout {
  uint64_t size = 0;
  std::vector<uint64_t> blocks;
  uint64_t trailer = 0;
};

Layout LayoutOf(const std::string& data) {
  Layout layout;
  layout.size = data.size();
  uint64_t at = kHeaderBytes;
  for (;;) {
    uint32_t len = 0;
    for (int i = 3; i >= 0; --i) len = (len << 8) | static_cast<uint8_t>(data[at + i]);
    if (len == 0) break;
    layout.blocks.push_back(at);
    at += kBlockHeaderBytes + len;
  }
  layout.trailer = at;
  return layout;
}

class SnapshotTest : public ::testing::Test {
 protected:
  void SetUp() override { KV_ASSERT_OK(fs_.CreateDirs(kDir)); }

  FakeFileSystem fs_;
};

// ---------------------------------------------------------------------------
// Round trips.

TEST_F(SnapshotTest, RoundTripsEntriesInOrderWithBinaryEmptyAndLargeValues) {
  std::vector<Entry> entries = ManyEntries(5000);
  entries.push_back({std::string("\0k\0ey\0", 6), std::string("\0va\0lue\0", 8), 1, 0});
  entries.push_back({"empty-value", "", 2, 0});
  entries.push_back({std::string(4096, '\xff'), "max key", 3, 0});
  std::string all_bytes;
  for (int c = 0; c < 256; ++c) all_bytes.push_back(static_cast<char>(c));
  entries.push_back({all_bytes, all_bytes, 4, 0});
  // Larger than a whole block (64 KiB): it must travel in one block of its own size.
  entries.push_back({"large", RandomBytes(300 << 10, /*seed=*/1), 5, 0});
  entries.push_back({"after-large", "x", std::numeric_limits<uint64_t>::max(), 0});

  absl::StatusOr<SnapshotMeta> written = WriteSnapshot(&fs_, 42, entries, 57);
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_EQ(written->path, SnapPath(42));
  EXPECT_EQ(written->start_index, 42u);
  EXPECT_EQ(written->end_index, 57u);
  EXPECT_EQ(written->epoch, kEpoch);
  EXPECT_EQ(written->entries, entries.size());
  EXPECT_EQ(written->created_unix_ms, kCreated);
  EXPECT_EQ(written->bytes, fs_.Contents(SnapPath(42)).size());
  EXPECT_THAT(Names(&fs_), ElementsAre(SnapshotFileName(42)));

  SnapshotMeta loaded;
  absl::StatusOr<std::vector<Entry>> read = LoadEntries(&fs_, SnapPath(42), &loaded);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->size(), entries.size());
  for (size_t i = 0; i < entries.size(); ++i) ASSERT_EQ((*read)[i], entries[i]) << "entry " << i;
  EXPECT_EQ(loaded.path, written->path);
  EXPECT_EQ(loaded.start_index, written->start_index);
  EXPECT_EQ(loaded.end_index, written->end_index);
  EXPECT_EQ(loaded.epoch, written->epoch);
  EXPECT_EQ(loaded.entries, written->entries);
  EXPECT_EQ(loaded.bytes, written->bytes);
  EXPECT_EQ(loaded.created_unix_ms, written->created_unix_ms);
}

TEST_F(SnapshotTest, EmptySnapshotIsHeaderAndTrailerOnly) {
  absl::StatusOr<SnapshotMeta> written = WriteSnapshot(&fs_, 0, {}, 0);
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_EQ(written->entries, 0u);
  EXPECT_EQ(written->bytes, kHeaderBytes + kTrailerBytes);

  SnapshotMeta loaded;
  absl::StatusOr<std::vector<Entry>> read = LoadEntries(&fs_, SnapPath(0), &loaded);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_THAT(*read, IsEmpty());
  EXPECT_EQ(loaded.entries, 0u);
  EXPECT_EQ(loaded.bytes, kHeaderBytes + kTrailerBytes);
}

TEST_F(SnapshotTest, ExpiryAndVersionArePreservedExactly) {
  const std::vector<Entry> entries = {
      {"no-expiry", "v", 1, 0},
      {"expires", "v", 2, 1700000000999},
      {"negative", "v", 3, -1},
      {"min", "v", 0, std::numeric_limits<int64_t>::min()},
      {"max", "v", std::numeric_limits<uint64_t>::max(), std::numeric_limits<int64_t>::max()},
  };
  ASSERT_TRUE(WriteSnapshot(&fs_, 9, entries, 9).ok());
  absl::StatusOr<std::vector<Entry>> read = LoadEntries(&fs_, SnapPath(9));
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, entries);
}

TEST_F(SnapshotTest, WriterProducesTheDocumentedBytes) {
  const Entry a{"k", "value", 5, 1234};
  const Entry b{std::string(200, 'K'), "", 6, 0};  // A 2-byte varint.
  ASSERT_TRUE(WriteSnapshot(&fs_, 42, {a, b}, 43).ok());
  const std::string expected = EncodeHeader(42, kEpoch, kCreated) +
                               EncodeBlock(EncodeEntry(a) + EncodeEntry(b)) + EncodeTrailer(2, 43);
  EXPECT_EQ(absl::CHexEscape(fs_.Contents(SnapPath(42))), absl::CHexEscape(expected));
}

TEST_F(SnapshotTest, ReaderAcceptsEntriesSplitAcrossBlocksAnyWay) {
  // The writer's block size is its own choice; the reader takes any split.
  const std::vector<Entry> entries = {{"a", "1", 1, 0}, {"b", "22", 2, 0}, {"c", "", 3, -5}};
  fs_.SetContents(SnapPath(3), EncodeHeader(3, 1, 0) + EncodeBlock(EncodeEntry(entries[0])) +
                                   EncodeBlock(EncodeEntry(entries[1]) + EncodeEntry(entries[2])) +
                                   EncodeTrailer(3, 4));
  SnapshotMeta meta;
  absl::StatusOr<std::vector<Entry>> read = LoadEntries(&fs_, SnapPath(3), &meta);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, entries);
  EXPECT_EQ(meta.end_index, 4u);
  EXPECT_EQ(meta.epoch, 1u);
}

TEST_F(SnapshotTest, BlocksStayNearTheTargetSize) {
  ASSERT_TRUE(WriteSnapshot(&fs_, 1, ManyEntries(20000), 1).ok());
  const std::string data = fs_.Contents(SnapPath(1));
  const Layout layout = LayoutOf(data);
  ASSERT_GT(layout.blocks.size(), 10u);
  for (size_t i = 0; i < layout.blocks.size(); ++i) {
    const uint64_t next = i + 1 < layout.blocks.size() ? layout.blocks[i + 1] : layout.trailer;
    const uint64_t len = next - layout.blocks[i] - kBlockHeaderBytes;
    EXPECT_LE(len, (64u << 10) + 200) << "block " << i;
    if (i + 1 < layout.blocks.size()) {
      EXPECT_GE(len, 64u << 10) << "block " << i;
    }
  }
}

TEST_F(SnapshotTest, CallbackErrorStopsTheLoadAndIsReturned) {
  ASSERT_TRUE(WriteSnapshot(&fs_, 1, ManyEntries(100), 1).ok());
  int calls = 0;
  absl::StatusOr<SnapshotMeta> loaded =
      LoadSnapshot(&fs_, SnapPath(1), [&](absl::string_view, absl::string_view, uint64_t, int64_t) {
        return ++calls == 3 ? absl::CancelledError("enough") : absl::OkStatus();
      });
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(calls, 3);
}

TEST_F(SnapshotTest, MissingFileIsNotFoundRatherThanDataLoss) {
  absl::StatusOr<std::vector<Entry>> read = LoadEntries(&fs_, SnapPath(1));
  EXPECT_EQ(read.status().code(), absl::StatusCode::kNotFound);
}

// The POSIX file system reads in short pieces and sizes buffers differently.
TEST(SnapshotOnDiskTest, RoundTripsThroughPosixFileSystem) {
  std::string templ = JoinPath(::testing::TempDir(), "snapshot_test.XXXXXX");
  ASSERT_NE(::mkdtemp(templ.data()), nullptr);
  const std::string dir = templ;
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  } cleanup{dir};

  FileSystem* fs = PosixFileSystem();
  std::vector<Entry> entries = ManyEntries(20000);
  entries.push_back({"large", RandomBytes(200 << 10, /*seed=*/2), 1, 0});
  absl::StatusOr<SnapshotMeta> written = WriteSnapshot(fs, 8, entries, 9, dir);
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_FALSE(fs->Exists(written->path + ".tmp"));

  absl::StatusOr<std::vector<SnapshotMeta>> list = ListSnapshots(fs, dir);
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].bytes, written->bytes);

  SnapshotMeta loaded;
  absl::StatusOr<std::vector<Entry>> read = LoadEntries(fs, written->path, &loaded);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_TRUE(*read == entries);
  EXPECT_EQ(loaded.bytes, written->bytes);
}

// ---------------------------------------------------------------------------
// Names, listing and pruning.

TEST(SnapshotFileNameTest, RoundTripsAndRefusesOtherNames) {
  EXPECT_EQ(SnapshotFileName(42), "snap-00000000000000000042.snap");
  uint64_t start = 0;
  EXPECT_TRUE(ParseSnapshotFileName("snap-00000000000000000042.snap", &start));
  EXPECT_EQ(start, 42u);
  EXPECT_TRUE(
      ParseSnapshotFileName(SnapshotFileName(std::numeric_limits<uint64_t>::max()), &start));
  EXPECT_EQ(start, std::numeric_limits<uint64_t>::max());

  for (const char* bad : {"snap-00000000000000000042.snap.tmp", "snap-0000000000000000042.snap",
                          "snap-000000000000000000042.snap", "snap-0000000000000000004x.snap",
                          "wal-00000000000000000042.log", "snap-99999999999999999999.snap",
                          "snap-+0000000000000000042.snap", ""}) {
    EXPECT_FALSE(ParseSnapshotFileName(bad, &start)) << bad;
  }
}

TEST_F(SnapshotTest, ListSnapshotsIsNewestFirstAndSkipsTmpAndOtherFiles) {
  ASSERT_TRUE(WriteSnapshot(&fs_, 5, ManyEntries(1), 5).ok());
  ASSERT_TRUE(WriteSnapshot(&fs_, 100, ManyEntries(30), 120).ok());
  ASSERT_TRUE(WriteSnapshot(&fs_, 42, ManyEntries(2), 50).ok());
  fs_.SetContents(TmpPath(200), "half-written");
  fs_.SetContents(JoinPath(kDir, "wal-00000000000000000001.log"), "log");
  fs_.SetContents(JoinPath(kDir, "snap-latest.snap"), "not ours");

  absl::StatusOr<std::vector<SnapshotMeta>> list = ListSnapshots(&fs_, kDir);
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->size(), 3u);
  const uint64_t starts[] = {100, 42, 5};
  for (size_t i = 0; i < 3; ++i) {
    const SnapshotMeta& m = (*list)[i];
    EXPECT_EQ(m.start_index, starts[i]);
    EXPECT_EQ(m.path, SnapPath(starts[i]));
    EXPECT_EQ(m.bytes, fs_.Contents(m.path).size());
    // Only loading reads these.
    EXPECT_EQ(m.end_index, 0u);
    EXPECT_EQ(m.epoch, 0u);
    EXPECT_EQ(m.entries, 0u);
  }
}

TEST_F(SnapshotTest, ListSnapshotsOfMissingDirectoryFails) {
  EXPECT_FALSE(ListSnapshots(&fs_, "/nowhere").ok());
}

TEST_F(SnapshotTest, PruneKeepsTheNewestAndRemovesLeftoverTmpFilesDurably) {
  for (uint64_t start : {10, 40, 20, 30}) ASSERT_TRUE(WriteSnapshot(&fs_, start, {}, start).ok());
  fs_.SetContents(TmpPath(50), "leftover");
  fs_.SetContents(JoinPath(kDir, "wal-00000000000000000001.log"), "log");

  KV_ASSERT_OK(PruneSnapshots(&fs_, kDir, 2));
  EXPECT_THAT(Names(&fs_), UnorderedElementsAre(SnapshotFileName(40), SnapshotFileName(30),
                                                "wal-00000000000000000001.log"));
  // The removals were made durable.
  fs_.CutPower();
  EXPECT_THAT(ListedStarts(&fs_), ElementsAre(40, 30));
  EXPECT_FALSE(fs_.Exists(TmpPath(50)));

  KV_ASSERT_OK(PruneSnapshots(&fs_, kDir, 0));
  EXPECT_THAT(ListedStarts(&fs_), IsEmpty());
}

TEST_F(SnapshotTest, PruneWithNothingToRemoveDoesNotSyncTheDirectory) {
  ASSERT_TRUE(WriteSnapshot(&fs_, 1, {}, 1).ok());
  ASSERT_TRUE(WriteSnapshot(&fs_, 2, {}, 2).ok());
  fs_.FailAfter(FakeFileSystem::Op::kSyncDir, 0);
  KV_ASSERT_OK(PruneSnapshots(&fs_, kDir, 2));
  EXPECT_EQ(fs_.injected_failures(), 0);
}

TEST_F(SnapshotTest, PruneReportsAFailedRemoval) {
  ASSERT_TRUE(WriteSnapshot(&fs_, 1, {}, 1).ok());
  ASSERT_TRUE(WriteSnapshot(&fs_, 2, {}, 2).ok());
  fs_.FailAfter(FakeFileSystem::Op::kRemove, 0);
  EXPECT_FALSE(PruneSnapshots(&fs_, kDir, 1).ok());
  EXPECT_THAT(ListedStarts(&fs_), ElementsAre(2, 1));
}

// ---------------------------------------------------------------------------
// Writer life cycle.

TEST_F(SnapshotTest, WriterDestroyedBeforeCommitLeavesNoFile) {
  {
    absl::StatusOr<std::unique_ptr<SnapshotWriter>> writer =
        SnapshotWriter::Create(&fs_, kDir, 7, kEpoch, kCreated);
    ASSERT_TRUE(writer.ok()) << writer.status();
    for (const Entry& e : ManyEntries(5000)) {  // Several blocks reach the file.
      KV_ASSERT_OK((*writer)->Add(e.key, e.value, e.version, e.expire_unix_ms));
    }
    EXPECT_TRUE(fs_.Exists(TmpPath(7)));
  }
  EXPECT_THAT(Names(&fs_), IsEmpty());
}

TEST_F(SnapshotTest, CreateThatCannotWriteTheHeaderLeavesNoFile) {
  fs_.FailAfter(FakeFileSystem::Op::kAppend, 0);
  EXPECT_FALSE(SnapshotWriter::Create(&fs_, kDir, 7, kEpoch, kCreated).ok());
  EXPECT_THAT(Names(&fs_), IsEmpty());
}

TEST_F(SnapshotTest, CreateInMissingDirectoryFails) {
  EXPECT_FALSE(SnapshotWriter::Create(&fs_, "/nowhere", 7, kEpoch, kCreated).ok());
}

TEST_F(SnapshotTest, FailedBlockWriteBreaksTheWriterAndLeavesNoFile) {
  {
    absl::StatusOr<std::unique_ptr<SnapshotWriter>> writer =
        SnapshotWriter::Create(&fs_, kDir, 7, kEpoch, kCreated);
    ASSERT_TRUE(writer.ok()) << writer.status();
    fs_.FailAfter(FakeFileSystem::Op::kAppend, 0);
    absl::Status added;
    for (const Entry& e : ManyEntries(5000)) {
      added = (*writer)->Add(e.key, e.value, e.version, e.expire_unix_ms);
      if (!added.ok()) break;
    }
    EXPECT_FALSE(added.ok());
    fs_.ClearFailures();
    EXPECT_FALSE((*writer)->Add("k", "v", 1, 0).ok()) << "the error must be sticky";
    EXPECT_FALSE((*writer)->Commit(1).ok());
  }
  EXPECT_THAT(Names(&fs_), IsEmpty());
}

TEST_F(SnapshotTest, FailedSyncIsNeverRetried) {
  absl::StatusOr<std::unique_ptr<SnapshotWriter>> writer =
      SnapshotWriter::Create(&fs_, kDir, 7, kEpoch, kCreated);
  ASSERT_TRUE(writer.ok()) << writer.status();
  KV_ASSERT_OK((*writer)->Add("k", "v", 1, 0));
  fs_.FailAfter(FakeFileSystem::Op::kSync, 0);
  EXPECT_FALSE((*writer)->Commit(7).ok());
  fs_.ClearFailures();
  EXPECT_FALSE((*writer)->Commit(7).ok());
  EXPECT_FALSE(fs_.Exists(SnapPath(7)));
  writer->reset();
  EXPECT_THAT(Names(&fs_), IsEmpty());
}

TEST_F(SnapshotTest, CommitTwiceOrAddAfterCommitIsRefused) {
  absl::StatusOr<std::unique_ptr<SnapshotWriter>> writer =
      SnapshotWriter::Create(&fs_, kDir, 7, kEpoch, kCreated);
  ASSERT_TRUE(writer.ok()) << writer.status();
  ASSERT_TRUE((*writer)->Commit(7).ok());
  EXPECT_EQ((*writer)->Commit(7).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*writer)->Add("k", "v", 1, 0).code(), absl::StatusCode::kFailedPrecondition);
  writer->reset();
  EXPECT_TRUE(LoadEntries(&fs_, SnapPath(7)).ok()) << "the destructor must keep a committed file";
}

TEST_F(SnapshotTest, SnapshotAtTheSameIndexReplacesTheOldOne) {
  ASSERT_TRUE(WriteSnapshot(&fs_, 7, {{"old", "1", 1, 0}}, 7).ok());
  ASSERT_TRUE(WriteSnapshot(&fs_, 7, {{"new", "2", 2, 0}}, 8).ok());
  absl::StatusOr<std::vector<Entry>> read = LoadEntries(&fs_, SnapPath(7));
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_THAT(*read, ElementsAre(Entry{"new", "2", 2, 0}));
}

// A failed directory sync comes after the rename: the file is complete and
// synced under its final name (it may have replaced an older one of the same
// index), so it stays; only its durability is unknown.
TEST_F(SnapshotTest, FailedDirectorySyncLeavesTheCompleteSnapshotInPlace) {
  {
    absl::StatusOr<std::unique_ptr<SnapshotWriter>> writer =
        SnapshotWriter::Create(&fs_, kDir, 7, kEpoch, kCreated);
    ASSERT_TRUE(writer.ok()) << writer.status();
    KV_ASSERT_OK((*writer)->Add("k", "v", 1, 0));
    fs_.FailAfter(FakeFileSystem::Op::kSyncDir, 0);
    EXPECT_FALSE((*writer)->Commit(7).ok());
  }
  fs_.ClearFailures();
  EXPECT_THAT(Names(&fs_), ElementsAre(SnapshotFileName(7)));
  EXPECT_TRUE(LoadEntries(&fs_, SnapPath(7)).ok());
}

// ---------------------------------------------------------------------------
// Power cut at each step of Commit: the new snapshot exists afterwards only if
// Commit got past the directory sync, and the previous snapshot always survives.

struct CommitFailure {
  const char* name;
  std::optional<FakeFileSystem::Op> fail;  // The step that fails; none: Commit succeeds.
  bool new_snapshot_survives;
};

void PrintTo(const CommitFailure& c, std::ostream* os) { *os << c.name; }

class PowerCutDuringCommitTest : public SnapshotTest,
                                 public ::testing::WithParamInterface<CommitFailure> {};

TEST_P(PowerCutDuringCommitTest, NewSnapshotSurvivesOnlyAfterDirectorySync) {
  const std::vector<Entry> old_entries = ManyEntries(10);
  ASSERT_TRUE(WriteSnapshot(&fs_, 10, old_entries, 10).ok());

  absl::StatusOr<std::unique_ptr<SnapshotWriter>> writer =
      SnapshotWriter::Create(&fs_, kDir, 20, kEpoch, kCreated);
  ASSERT_TRUE(writer.ok()) << writer.status();
  const std::vector<Entry> new_entries = ManyEntries(3000);
  for (const Entry& e : new_entries) {
    KV_ASSERT_OK((*writer)->Add(e.key, e.value, e.version, e.expire_unix_ms));
  }
  if (GetParam().fail.has_value()) fs_.FailAfter(*GetParam().fail, 0);
  absl::StatusOr<SnapshotMeta> committed = (*writer)->Commit(25);
  EXPECT_EQ(committed.ok(), !GetParam().fail.has_value()) << committed.status();

  // The machine dies right there, before the writer can clean up.
  fs_.CutPower();
  fs_.ClearFailures();
  writer->reset();

  if (GetParam().new_snapshot_survives) {
    EXPECT_THAT(ListedStarts(&fs_), ElementsAre(20, 10));
    absl::StatusOr<std::vector<Entry>> read = LoadEntries(&fs_, SnapPath(20));
    ASSERT_TRUE(read.ok()) << read.status();
    EXPECT_TRUE(*read == new_entries);
  } else {
    EXPECT_THAT(ListedStarts(&fs_), ElementsAre(10));
  }
  absl::StatusOr<std::vector<Entry>> old_read = LoadEntries(&fs_, SnapPath(10));
  ASSERT_TRUE(old_read.ok()) << old_read.status();
  EXPECT_EQ(*old_read, old_entries);

  // Whatever is left over, the next prune tidies it up.
  KV_ASSERT_OK(PruneSnapshots(&fs_, kDir, 2));
  EXPECT_FALSE(fs_.Exists(TmpPath(20)));
}

INSTANTIATE_TEST_SUITE_P(
    EachStep, PowerCutDuringCommitTest,
    ::testing::Values(CommitFailure{"SyncFails", FakeFileSystem::Op::kSync, false},
                      CommitFailure{"RenameFails", FakeFileSystem::Op::kRename, false},
                      CommitFailure{"DirectorySyncFails", FakeFileSystem::Op::kSyncDir, false},
                      CommitFailure{"CommitSucceeds", std::nullopt, true}),
    [](const ::testing::TestParamInfo<CommitFailure>& info) { return info.param.name; });

TEST_F(SnapshotTest, PowerCutWhileWritingLeavesOnlyThePreviousSnapshot) {
  ASSERT_TRUE(WriteSnapshot(&fs_, 10, ManyEntries(10), 10).ok());
  absl::StatusOr<std::unique_ptr<SnapshotWriter>> writer =
      SnapshotWriter::Create(&fs_, kDir, 20, kEpoch, kCreated);
  ASSERT_TRUE(writer.ok()) << writer.status();
  for (const Entry& e : ManyEntries(3000)) {
    KV_ASSERT_OK((*writer)->Add(e.key, e.value, e.version, e.expire_unix_ms));
  }
  fs_.CutPower(/*keep_unsynced_fraction=*/0.5);
  writer->reset();
  EXPECT_THAT(ListedStarts(&fs_), ElementsAre(10));
  EXPECT_TRUE(LoadEntries(&fs_, SnapPath(10)).ok());
}

TEST_F(SnapshotTest, ProcessCrashLeavesATmpFileThatListIgnoresAndPruneRemoves) {
  ASSERT_TRUE(WriteSnapshot(&fs_, 10, {}, 10).ok());
  // What a process killed mid-snapshot leaves: a .tmp that never got a trailer.
  fs_.SetContents(TmpPath(20),
                  EncodeHeader(20, kEpoch, kCreated) + EncodeBlock(EncodeEntry({"k", "v", 1, 0})));
  EXPECT_THAT(ListedStarts(&fs_), ElementsAre(10));
  KV_ASSERT_OK(PruneSnapshots(&fs_, kDir, 2));
  EXPECT_THAT(Names(&fs_), ElementsAre(SnapshotFileName(10)));
}

// ---------------------------------------------------------------------------
// Damage: every kind is DataLoss naming the file and the offset where the
// damaged part starts; nothing is silently skipped.

void ExpectDataLossAt(FileSystem* fs, const std::string& path, uint64_t offset) {
  absl::StatusOr<std::vector<Entry>> read = LoadEntries(fs, path);
  ASSERT_FALSE(read.ok()) << "loaded " << read->size() << " entries from a damaged file";
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss) << read.status();
  EXPECT_THAT(std::string(read.status().message()), HasSubstr(path));
  EXPECT_THAT(std::string(read.status().message()),
              HasSubstr(absl::StrCat("at offset ", offset, ":")));
}

struct Corruption {
  const char* name;
  void (*damage)(FakeFileSystem* fs, const std::string& path, const Layout& layout);
  uint64_t (*offset)(const Layout& layout);  // Where the reader must say the damage is.
};

void PrintTo(const Corruption& c, std::ostream* os) { *os << c.name; }

class DamagedSnapshotTest : public SnapshotTest,
                            public ::testing::WithParamInterface<Corruption> {};

TEST_P(DamagedSnapshotTest, IsDataLossNamingFileAndOffset) {
  // Several blocks of 64 KiB, then one of a single entry.
  std::vector<Entry> entries = ManyEntries(3000);
  absl::StatusOr<SnapshotMeta> written = WriteSnapshot(&fs_, 42, entries, 50);
  ASSERT_TRUE(written.ok()) << written.status();
  const Layout layout = LayoutOf(fs_.Contents(written->path));
  ASSERT_GE(layout.blocks.size(), 3u);
  ASSERT_EQ(layout.trailer + kTrailerBytes, layout.size);

  GetParam().damage(&fs_, written->path, layout);
  ExpectDataLossAt(&fs_, written->path, GetParam().offset(layout));
}

const Corruption kCorruptions[] = {
    // Header.
    {"MagicBitFlipped", [](auto* fs, auto& p, auto&) { FlipBit(fs, p, 0); },
     [](auto&) -> uint64_t { return 0; }},
    {"VersionBitFlipped", [](auto* fs, auto& p, auto&) { FlipBit(fs, p, 8, 1); },
     [](auto&) -> uint64_t { return 0; }},
    {"HeaderCheckBitFlipped", [](auto* fs, auto& p, auto&) { FlipBit(fs, p, 12); },
     [](auto&) -> uint64_t { return 0; }},
    {"StartIndexBitFlipped", [](auto* fs, auto& p, auto&) { FlipBit(fs, p, 16); },
     [](auto&) -> uint64_t { return 0; }},
    {"CreatedTimeBitFlipped", [](auto* fs, auto& p, auto&) { FlipBit(fs, p, 39, 7); },
     [](auto&) -> uint64_t { return 0; }},
    // Blocks.
    {"BlockLengthLowBitFlipped", [](auto* fs, auto& p, auto& l) { FlipBit(fs, p, l.blocks[0]); },
     [](auto& l) { return l.blocks[0]; }},
    {"BlockLengthAsksForGigabytes",
     [](auto* fs, auto& p, auto& l) { FlipBit(fs, p, l.blocks[0] + 3, 6); },
     [](auto& l) { return l.blocks[0]; }},
    {"BlockLengthAsksForMoreThanTheFileHolds",
     [](auto* fs, auto& p, auto& l) { FlipBit(fs, p, l.blocks[1] + 2, 4); },
     [](auto& l) { return l.blocks[1]; }},
    {"BlockCheckBitFlipped", [](auto* fs, auto& p, auto& l) { FlipBit(fs, p, l.blocks[0] + 4); },
     [](auto& l) { return l.blocks[0]; }},
    {"FirstBlockPayloadBitFlipped",
     [](auto* fs, auto& p, auto& l) { FlipBit(fs, p, l.blocks[0] + kBlockHeaderBytes + 100, 3); },
     [](auto& l) { return l.blocks[0]; }},
    {"MiddleBlockPayloadBitFlipped",
     [](auto* fs, auto& p, auto& l) { FlipBit(fs, p, l.blocks[1] + kBlockHeaderBytes); },
     [](auto& l) { return l.blocks[1]; }},
    {"LastBlockLastByteBitFlipped",
     [](auto* fs, auto& p, auto& l) { FlipBit(fs, p, l.trailer - 1, 7); },
     [](auto& l) { return l.blocks.back(); }},
    {"MiddleBlockDropped",
     [](auto* fs, auto& p, auto& l) { DropBytes(fs, p, l.blocks[1], l.blocks[2]); },
     [](auto& l) { return l.trailer - (l.blocks[2] - l.blocks[1]); }},
    // Trailer.
    {"TrailerMarkerBitFlipped", [](auto* fs, auto& p, auto& l) { FlipBit(fs, p, l.trailer); },
     [](auto& l) { return l.trailer; }},
    {"TrailerEntryCountBitFlipped",
     [](auto* fs, auto& p, auto& l) { FlipBit(fs, p, l.trailer + 4); },
     [](auto& l) { return l.trailer; }},
    {"TrailerEndIndexBitFlipped",
     [](auto* fs, auto& p, auto& l) { FlipBit(fs, p, l.trailer + 19, 7); },
     [](auto& l) { return l.trailer; }},
    {"TrailerCheckBitFlipped", [](auto* fs, auto& p, auto& l) { FlipBit(fs, p, l.trailer + 20); },
     [](auto& l) { return l.trailer; }},
    // Truncation.
    {"TruncatedToNothing", [](auto* fs, auto& p, auto&) { TruncateTo(fs, p, 0); },
     [](auto&) -> uint64_t { return 0; }},
    {"TruncatedInsideHeader", [](auto* fs, auto& p, auto&) { TruncateTo(fs, p, 20); },
     [](auto&) -> uint64_t { return 0; }},
    {"TruncatedAfterHeader", [](auto* fs, auto& p, auto&) { TruncateTo(fs, p, kHeaderBytes); },
     [](auto&) -> uint64_t { return kHeaderBytes; }},
    {"TruncatedInsideBlockHeader",
     [](auto* fs, auto& p, auto& l) { TruncateTo(fs, p, l.blocks[0] + 5); },
     [](auto& l) { return l.blocks[0]; }},
    {"TruncatedInsideBlock",
     [](auto* fs, auto& p, auto& l) { TruncateTo(fs, p, l.blocks[0] + 1000); },
     [](auto& l) { return l.blocks[0]; }},
    {"TruncatedBetweenBlocks", [](auto* fs, auto& p, auto& l) { TruncateTo(fs, p, l.blocks[1]); },
     [](auto& l) { return l.blocks[1]; }},
    {"TruncatedBeforeTrailer", [](auto* fs, auto& p, auto& l) { TruncateTo(fs, p, l.trailer); },
     [](auto& l) { return l.trailer; }},
    {"TruncatedInsideTrailerMarker",
     [](auto* fs, auto& p, auto& l) { TruncateTo(fs, p, l.trailer + 2); },
     [](auto& l) { return l.trailer; }},
    {"TruncatedMidTrailer", [](auto* fs, auto& p, auto& l) { TruncateTo(fs, p, l.trailer + 12); },
     [](auto& l) { return l.trailer; }},
    {"TruncatedOneByteShort", [](auto* fs, auto& p, auto& l) { TruncateTo(fs, p, l.size - 1); },
     [](auto& l) { return l.trailer; }},
    // Bytes after the trailer.
    {"GarbageAfterTrailer", [](auto* fs, auto& p, auto&) { AppendGarbage(fs, p, "x"); },
     [](auto& l) { return l.size; }},
    {"ZerosAfterTrailer",
     [](auto* fs, auto& p, auto&) { AppendGarbage(fs, p, std::string(512, '\0')); },
     [](auto& l) { return l.size; }},
    {"SecondTrailerAfterTrailer",
     [](auto* fs, auto& p, auto&) { AppendGarbage(fs, p, EncodeTrailer(3000, 50)); },
     [](auto& l) { return l.size; }},
};

INSTANTIATE_TEST_SUITE_P(EachCorruption, DamagedSnapshotTest, ::testing::ValuesIn(kCorruptions),
                         [](const ::testing::TestParamInfo<Corruption>& info) {
                           return info.param.name;
                         });

// Damage behind a valid block check: a writer bug, or a check collision. Each
// entry must still stay inside its block.

class HandBuiltSnapshotTest : public SnapshotTest {
 protected:
  // Header, then one block per payload, then a trailer counting `entry_count`.
  void Build(const std::vector<std::string>& payloads, uint64_t entry_count) {
    std::string data = EncodeHeader(1, kEpoch, kCreated);
    for (const std::string& payload : payloads) data += EncodeBlock(payload);
    data += EncodeTrailer(entry_count, 1);
    fs_.SetContents(path_, data);
  }

  const std::string path_ = SnapPath(1);
  static constexpr uint64_t kFirstEntry = kHeaderBytes + kBlockHeaderBytes;
};

TEST_F(HandBuiltSnapshotTest, EntryKeyLongerThanItsBlockIsDataLoss) {
  const std::string good = EncodeEntry({"k", "v", 1, 0});
  std::string bad = EncodeEntry({"key", "value", 2, 0});
  bad[0] = 100;  // key_len 100 in an entry of a few bytes.
  Build({good + bad}, 2);
  ExpectDataLossAt(&fs_, path_, kFirstEntry + good.size());
}

TEST_F(HandBuiltSnapshotTest, EntryValueLongerThanItsBlockIsDataLoss) {
  std::string bad = EncodeEntry({"key", "value", 2, 0});
  bad[1] = 6;  // One byte more than there is.
  Build({bad}, 1);
  ExpectDataLossAt(&fs_, path_, kFirstEntry);
}

TEST_F(HandBuiltSnapshotTest, EntryCutInsideItsFixedFieldsIsDataLoss) {
  Build({EncodeEntry({"k", "v", 1, 0}).substr(0, 10)}, 1);
  ExpectDataLossAt(&fs_, path_, kFirstEntry);
}

TEST_F(HandBuiltSnapshotTest, EntryCutInsideAVarintIsDataLoss) {
  Build({EncodeEntry({"k", "v", 1, 0}) + "\x80"}, 2);
  ExpectDataLossAt(&fs_, path_, kFirstEntry + EncodeEntry({"k", "v", 1, 0}).size());
}

TEST_F(HandBuiltSnapshotTest, VarintLongerThan32BitsIsDataLoss) {
  Build({std::string("\xff\xff\xff\xff\x7f\x01", 6) + std::string(16, '\0')}, 1);
  ExpectDataLossAt(&fs_, path_, kFirstEntry);
}

TEST_F(HandBuiltSnapshotTest, EntryCountDisagreeingWithBlocksIsDataLoss) {
  Build({EncodeEntry({"k", "v", 1, 0})}, 2);
  ExpectDataLossAt(&fs_, path_, kFirstEntry + EncodeEntry({"k", "v", 1, 0}).size());
}

TEST_F(HandBuiltSnapshotTest, ZeroLengthLookingBlockIsTheTrailerAndNeedsItsCheck) {
  // An empty payload would frame as "0 u32 | check": the trailer's marker. The
  // writer never emits one; here the bytes after it do not form a trailer.
  fs_.SetContents(path_, EncodeHeader(1, kEpoch, kCreated) + EncodeBlock("") + EncodeTrailer(0, 1));
  ExpectDataLossAt(&fs_, path_, kHeaderBytes);
}

TEST_F(HandBuiltSnapshotTest, WellFormedFileLoads) {
  Build({EncodeEntry({"a", "1", 1, 0}), EncodeEntry({"b", "2", 2, 0})}, 2);
  absl::StatusOr<std::vector<Entry>> read = LoadEntries(&fs_, path_);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_THAT(*read, ElementsAre(Entry{"a", "1", 1, 0}, Entry{"b", "2", 2, 0}));
}

}  // namespace
}  // namespace kvstore
