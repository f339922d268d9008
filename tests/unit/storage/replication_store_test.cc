// The storage side of replication: reading a live log with LogCursor, applying
// a leader's records on a follower (AppendReplicated), installing a leader's
// snapshot (InstallSnapshot), and starting epochs. Two stores in two
// directories of one fake file system stand for the leader and the follower.
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/storage/log_cursor.h"
#include "common/storage/log_format.h"
#include "common/storage/op.h"
#include "common/storage/store.h"
#include "common/storage/version.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/fake_clock.h"
#include "tests/support/fake_file_system.h"
#include "tests/support/poll.h"

namespace kvstore {
namespace {

using ::kvstore::testing::FakeClock;
using ::kvstore::testing::FakeFileSystem;
using ::kvstore::testing::PollUntil;
using ::testing::HasSubstr;

constexpr char kLeaderDir[] = "/data/leader";

constexpr char kFollowerDir[] = "/data/follower";

class ReplicationStoreTest : public ::testing::Test {
 protected:
  StoreOptions Options(const std::string& dir) {
    StoreOptions o;
    o.dir = dir;
    o.fsync = FsyncPolicy::kAlways;
    o.fs = &fs_;
    o.clock = &clock_;
    o.background_maintenance = false;
    o.segment_bytes = 4096;  // Many segments.
    o.snapshot_every_writes = 0;
    o.snapshot_every_seconds = 0;
    o.snapshots_to_keep = 1;
    o.retain_log_bytes = 0;
    return o;
  }

  std::unique_ptr<Store> OpenStore(const std::string& dir) {
    absl::StatusOr<std::unique_ptr<Store>> s = Store::Open(Options(dir));
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *std::move(s) : nullptr;
  }

  void SetUp() override {
    leader_ = OpenStore(kLeaderDir);
    follower_ = OpenStore(kFollowerDir);
  }

  static MutationResult Set(Store* store, const std::string& key, const std::string& value,
                            Durability durability = Durability::kDefault) {
    Mutation m;
    m.key = key;
    m.value = value;
    absl::Notification done;
    MutationResult out;
    store->Write({m}, durability, [&](std::vector<MutationResult> r) {
      out = r[0];
      done.Notify();
    });
    done.WaitForNotification();
    return out;
  }

  static MutationResult Del(Store* store, const std::string& key) {
    Mutation m;
    m.kind = Mutation::Kind::kDelete;
    m.key = key;
    absl::Notification done;
    MutationResult out;
    store->Write({m}, Durability::kDefault, [&](std::vector<MutationResult> r) {
      out = r[0];
      done.Notify();
    });
    done.WaitForNotification();
    return out;
  }

  static absl::Status Append(Store* store, const std::string& records) {
    absl::Notification done;
    absl::Status out;
    store->AppendReplicated(records, [&](const absl::Status& s) {
      out = s;
      done.Notify();
    });
    done.WaitForNotification();
    return out;
  }

  // Ships everything the leader has written from `from` on, in batches of
  // about `batch` bytes, as a follower link would.
  absl::Status Ship(uint64_t from, size_t batch = 1000) {
    return ShipFrom(leader_.get(), kLeaderDir, from, batch);
  }

  // The same from any store in `dir` to the follower.
  absl::Status ShipFrom(Store* source, const std::string& dir, uint64_t from, size_t batch = 1000) {
    LogCursor cursor(&fs_, dir);
    cursor.Seek(from);
    for (;;) {
      std::string records;
      uint64_t first = 0;
      uint64_t last = 0;
      if (absl::Status s = cursor.Read(source->written_index(), batch, &records, &first, &last);
          !s.ok()) {
        return s;
      }
      if (first == 0) return absl::OkStatus();
      if (absl::Status s = Append(follower_.get(), records); !s.ok()) return s;
    }
  }

  // Every key of `keys` reads the same (value and version) on both stores.
  void ExpectSameContents(const std::vector<std::string>& keys) {
    EXPECT_EQ(leader_->GetStatus().key_count, follower_->GetStatus().key_count);
    for (const std::string& key : keys) {
      std::string lv, fv;
      uint64_t lver = 0, fver = 0;
      const bool lf = leader_->Get(key, &lv, &lver);
      const bool ff = follower_->Get(key, &fv, &fver);
      EXPECT_EQ(lf, ff) << key;
      EXPECT_EQ(lv, fv) << key;
      EXPECT_EQ(lver, fver) << key;
    }
  }

  // Writes n keys k0..k(n-1) (and deletes every 7th) on the leader.
  std::vector<std::string> Fill(int n, int start = 0) {
    std::vector<std::string> keys;
    for (int i = start; i < start + n; ++i) {
      keys.push_back(absl::StrCat("k", i));
      EXPECT_TRUE(Set(leader_.get(), keys.back(), std::string(50, 'a' + i % 26)).status.ok());
      if (i % 7 == 0) {
        EXPECT_TRUE(Del(leader_.get(), keys.back()).status.ok());
      }
    }
    return keys;
  }

  FakeFileSystem fs_;
  FakeClock clock_;
  std::unique_ptr<Store> leader_;
  std::unique_ptr<Store> follower_;
};

TEST_F(ReplicationStoreTest, CursorReadsEveryRecordAcrossSegmentsInOrder) {
  Fill(300);
  ASSERT_GT(leader_->GetStatus().log_segments, 3u);
  LogCursor cursor(&fs_, kLeaderDir);
  cursor.Seek(1);
  uint64_t expected = 1;
  for (;;) {
    std::string records;
    uint64_t first = 0, last = 0;
    ASSERT_TRUE(cursor.Read(leader_->written_index(), 777, &records, &first, &last).ok());
    if (first == 0) break;
    EXPECT_EQ(first, expected);
    size_t offset = 0;
    for (uint64_t i = first; i <= last; ++i) {
      log::RecordHeader header;
      ASSERT_TRUE(log::ParseRecordHeader(absl::string_view(records).substr(offset), &header));
      EXPECT_EQ(header.index, i);
      offset += log::kRecordHeaderSize + header.payload_len;
    }
    EXPECT_EQ(offset, records.size());
    expected = last + 1;
  }
  EXPECT_EQ(expected, leader_->last_index() + 1);
}

TEST_F(ReplicationStoreTest, CursorStopsAtTheWrittenIndexAndResumesAsTheLogGrows) {
  Fill(10);
  LogCursor cursor(&fs_, kLeaderDir);
  cursor.Seek(3);
  std::string records;
  uint64_t first = 0, last = 0;
  ASSERT_TRUE(cursor.Read(5, 1 << 20, &records, &first, &last).ok());
  EXPECT_EQ(first, 3u);
  EXPECT_EQ(last, 5u);
  records.clear();
  ASSERT_TRUE(cursor.Read(leader_->written_index(), 1 << 20, &records, &first, &last).ok());
  EXPECT_EQ(first, 6u);
  EXPECT_EQ(last, leader_->last_index());
  ASSERT_TRUE(cursor.Read(leader_->written_index(), 1 << 20, &records, &first, &last).ok());
  EXPECT_EQ(first, 0u);  // Nothing new.
  Fill(3, 100);
  records.clear();
  ASSERT_TRUE(cursor.Read(leader_->written_index(), 1 << 20, &records, &first, &last).ok());
  EXPECT_EQ(first, leader_->last_index() - 2);  // k100..k102, none deleted.
  EXPECT_EQ(last, leader_->last_index());
}

TEST_F(ReplicationStoreTest, CursorSaysNotFoundOnceTheLogIsPrunedPastIt) {
  Fill(300);
  ASSERT_TRUE(leader_->TakeSnapshot().ok());
  ASSERT_GT(leader_->GetStatus().log_first_index, 1u);
  LogCursor cursor(&fs_, kLeaderDir);
  cursor.Seek(1);
  std::string records;
  uint64_t first = 0, last = 0;
  EXPECT_TRUE(
      absl::IsNotFound(cursor.Read(leader_->written_index(), 100, &records, &first, &last)));
}

TEST_F(ReplicationStoreTest, RetentionFloorKeepsTheLogAFollowerNeeds) {
  StoreOptions o = Options(kLeaderDir);
  leader_.reset();
  o.retain_log_bytes = 1 << 30;
  leader_ = *Store::Open(o);
  Fill(300);
  leader_->SetLogRetentionFloor([] { return uint64_t{1}; });
  ASSERT_TRUE(leader_->TakeSnapshot().ok());
  EXPECT_EQ(leader_->GetStatus().log_first_index, 1u);
  leader_->SetLogRetentionFloor(nullptr);
  ASSERT_TRUE(leader_->TakeSnapshot().ok());
  EXPECT_GT(leader_->GetStatus().log_first_index, 1u);
}

TEST_F(ReplicationStoreTest, FollowerEndsIdenticalAndSurvivesACrash) {
  const std::vector<std::string> keys = Fill(200);
  ASSERT_TRUE(Ship(1).ok());
  EXPECT_EQ(follower_->last_index(), leader_->last_index());
  ExpectSameContents(keys);
  // The follower's log holds the leader's records unchanged: recovery rebuilds it.
  fs_.CutPower();
  follower_.reset();
  fs_.CutPower();
  follower_ = OpenStore(kFollowerDir);
  leader_ = OpenStore(kLeaderDir);
  EXPECT_EQ(follower_->last_index(), leader_->last_index());
  ExpectSameContents(keys);
}

TEST_F(ReplicationStoreTest, ResentRecordsAreSkippedAndAGapIsRefused) {
  const std::vector<std::string> keys = Fill(50);
  ASSERT_TRUE(Ship(1).ok());
  const uint64_t last = follower_->last_index();
  ASSERT_TRUE(Ship(10).ok());  // A resend after a reconnect: nothing changes.
  EXPECT_EQ(follower_->last_index(), last);
  Fill(20, 1000);
  LogCursor cursor(&fs_, kLeaderDir);
  cursor.Seek(last + 5);  // Skips four entries.
  std::string records;
  uint64_t first = 0, l = 0;
  ASSERT_TRUE(cursor.Read(leader_->written_index(), 1 << 20, &records, &first, &l).ok());
  const absl::Status gap = Append(follower_.get(), records);
  EXPECT_THAT(gap.message(), HasSubstr("jump"));
  EXPECT_EQ(follower_->last_index(), last);  // Nothing applied.
  ASSERT_TRUE(Ship(last + 1).ok());
  ExpectSameContents(keys);
}

TEST_F(ReplicationStoreTest, DamagedRecordsAreRefusedAndNothingIsApplied) {
  Fill(20);
  LogCursor cursor(&fs_, kLeaderDir);
  cursor.Seek(1);
  std::string records;
  uint64_t first = 0, last = 0;
  ASSERT_TRUE(cursor.Read(leader_->written_index(), 1 << 20, &records, &first, &last).ok());
  records[records.size() - 3] ^= 0x10;  // In the last record's payload.
  EXPECT_FALSE(Append(follower_.get(), records).ok());
  EXPECT_EQ(follower_->last_index(), 0u);
  EXPECT_EQ(follower_->GetStatus().key_count, 0u);
}

TEST_F(ReplicationStoreTest, InstalledSnapshotPlusTailEqualsTheLeader) {
  std::vector<std::string> keys = Fill(300);
  // The follower has some old, different state that the snapshot replaces.
  ASSERT_TRUE(Set(follower_.get(), "stale", "gone after install").status.ok());
  absl::StatusOr<SnapshotMeta> meta = leader_->TakeSnapshot();
  ASSERT_TRUE(meta.ok()) << meta.status();
  std::vector<std::string> more = Fill(50, 1000);
  keys.insert(keys.end(), more.begin(), more.end());

  const std::string incoming = absl::StrCat(kFollowerDir, "/snapshot-incoming.tmp");
  fs_.SetContents(incoming, *fs_.ReadFile(meta->path));
  absl::StatusOr<SnapshotMeta> installed = follower_->InstallSnapshot(incoming);
  ASSERT_TRUE(installed.ok()) << installed.status();
  EXPECT_EQ(follower_->last_index(), meta->start_index);
  std::string value;
  uint64_t version = 0;
  EXPECT_FALSE(follower_->Get("stale", &value, &version));
  ASSERT_TRUE(Ship(meta->start_index + 1).ok());
  EXPECT_EQ(follower_->last_index(), leader_->last_index());
  ExpectSameContents(keys);

  fs_.CutPower();
  follower_.reset();
  fs_.CutPower();
  follower_ = OpenStore(kFollowerDir);
  leader_ = OpenStore(kLeaderDir);
  EXPECT_EQ(follower_->last_index(), leader_->last_index());
  ExpectSameContents(keys);
}

TEST_F(ReplicationStoreTest, IncompleteAfterInstallRefusesWritesAndEpochsUntilCaughtUp) {
  const std::vector<std::string> keys = Fill(100);
  // A fuzzy snapshot as a leader under load makes one: it holds the state at
  // `end` but only promises everything through `start`.
  const uint64_t end = leader_->last_index();
  const uint64_t start = end - 10;
  ASSERT_TRUE(fs_.CreateDirs("/data/made").ok());
  absl::StatusOr<std::unique_ptr<SnapshotWriter>> writer =
      SnapshotWriter::Create(&fs_, "/data/made", start, 1, 0);
  ASSERT_TRUE(writer.ok()) << writer.status();
  for (const std::string& key : keys) {
    std::string value;
    uint64_t version = 0;
    if (leader_->Get(key, &value, &version)) {
      ASSERT_TRUE((*writer)->Add(key, value, version, 0).ok());
    }
  }
  absl::StatusOr<SnapshotMeta> made = (*writer)->Commit(end);
  ASSERT_TRUE(made.ok()) << made.status();
  const std::string incoming = absl::StrCat(kFollowerDir, "/snapshot-incoming.tmp");
  fs_.SetContents(incoming, *fs_.ReadFile(made->path));

  ASSERT_TRUE(follower_->InstallSnapshot(incoming).ok());
  StoreStatus st = follower_->GetStatus();
  EXPECT_EQ(st.last_index, start);
  EXPECT_EQ(st.complete_index, end);
  EXPECT_EQ(Set(follower_.get(), "x", "y").status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(follower_->StartEpoch(5, "me").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(follower_->TakeSnapshot().status().code(), absl::StatusCode::kFailedPrecondition);

  // Incomplete survives a restart: recovery does not claim the snapshot's end.
  follower_ = OpenStore(kFollowerDir);
  EXPECT_EQ(follower_->last_index(), start);
  ASSERT_TRUE(Ship(start + 1).ok());
  ExpectSameContents(keys);
  EXPECT_TRUE(Set(follower_.get(), "x", "y").status.ok());
}

TEST_F(ReplicationStoreTest, EpochRecordStartsAnEpochThatSurvivesRestart) {
  Fill(10);
  const uint64_t before = leader_->last_index();
  EXPECT_EQ(leader_->StartEpoch(1, "me").code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(leader_->StartEpoch(3, "127.0.0.1:1").ok());
  EXPECT_EQ(leader_->last_index(), before + 1);
  EXPECT_EQ(leader_->epoch(), 3u);
  MutationResult r = Set(leader_.get(), "after", "epoch");
  ASSERT_TRUE(r.status.ok());
  EXPECT_EQ(leader_->last_epoch(), 3u);
  // Shipped, the follower learns the epoch from the record.
  ASSERT_TRUE(Ship(1).ok());
  EXPECT_EQ(follower_->epoch(), 3u);
  EXPECT_EQ(follower_->last_epoch(), 3u);
  leader_ = OpenStore(kLeaderDir);
  EXPECT_EQ(leader_->epoch(), 3u);
  EXPECT_EQ(LogCursor::EpochAt(&fs_, kLeaderDir, before).value(), 1u);
  EXPECT_EQ(LogCursor::EpochAt(&fs_, kLeaderDir, before + 1).value(), 3u);
}

// A version names one write: after a power cut lost a log tail, a new epoch
// must not hand the lost writes' versions to different writes, or a client's
// compare-and-set holding an old version would match a value it never saw.
TEST_F(ReplicationStoreTest, VersionIsNeverReusedAfterALostLogTail) {
  StoreOptions o = Options(kLeaderDir);
  o.fsync = FsyncPolicy::kNo;  // Only what is asked for is fsynced.
  leader_.reset();
  leader_ = *Store::Open(o);
  ASSERT_TRUE(Set(leader_.get(), "k", "durable", Durability::kFsynced).status.ok());
  std::vector<uint64_t> lost;
  for (int i = 0; i < 3; ++i) {
    MutationResult r = Set(leader_.get(), "k", absl::StrCat("lost", i), Durability::kWritten);
    ASSERT_TRUE(r.status.ok());
    lost.push_back(r.version);
  }
  fs_.CutPower();
  leader_.reset();  // Its final sync fails against dead handles: nothing more reaches disk.
  fs_.CutPower();
  leader_ = *Store::Open(o);
  std::string value;
  uint64_t version = 0;
  ASSERT_TRUE(leader_->Get("k", &value, &version));
  ASSERT_EQ(value, "durable");
  // What a restarted leader does: a new epoch, then writes.
  ASSERT_TRUE(leader_->StartEpoch(leader_->epoch() + 1, "me").ok());
  for (int i = 0; i < 3; ++i) {
    MutationResult r = Set(leader_.get(), "k", absl::StrCat("new", i));
    ASSERT_TRUE(r.status.ok());
    for (uint64_t old : lost) {
      EXPECT_GT(r.version, old) << "write " << i << " reused or went below a lost version";
    }
  }
}

TEST_F(ReplicationStoreTest, VersionsCarryTheEpochAndStrictlyIncrease) {
  const uint64_t v1 = Set(leader_.get(), "k", "a").version;
  ASSERT_TRUE(leader_->StartEpoch(5, "me").ok());
  const uint64_t v2 = Set(leader_.get(), "k", "b").version;
  EXPECT_GT(v2, v1);
  EXPECT_EQ(VersionEpoch(v2), 5u);
  EXPECT_EQ(VersionIndex(v2), leader_->last_index());
  // The index of a write stays available for replication acks.
  MutationResult r = Set(leader_.get(), "k", "c");
  EXPECT_EQ(r.index, leader_->last_index());
  EXPECT_EQ(r.version, MakeVersion(5, r.index));
}

// A follower that holds index I from one epoch must not treat the leader's
// record I of another epoch as a resend: its log diverged there.
TEST_F(ReplicationStoreTest, ResentRecordWithADifferentEpochIsRefusedNotSkipped) {
  Fill(3);
  ASSERT_TRUE(Ship(1).ok());
  ASSERT_EQ(follower_->last_index(), leader_->last_index());
  // Another leader whose log agrees up to index 1 and then starts epoch 2.
  const std::string other_dir = "/data/other";
  std::unique_ptr<Store> other = OpenStore(other_dir);
  ASSERT_TRUE(Set(other.get(), "k0", std::string(50, 'a')).status.ok());
  ASSERT_TRUE(other->StartEpoch(2, "other").ok());
  ASSERT_TRUE(Set(other.get(), "x", "y").status.ok());
  absl::Status s = ShipFrom(other.get(), other_dir, 2);
  EXPECT_FALSE(s.ok()) << "records 2.. of epoch 2 were skipped as if the follower had them";
  EXPECT_THAT(std::string(s.message()), HasSubstr("epoch"));
  std::string value;
  uint64_t version = 0;
  EXPECT_FALSE(follower_->Get("x", &value, &version));
}

// No leader writes epoch 0 (a store starts at epoch 1), and a follower that
// took a record of epoch 0 could no longer tell a diverged resend of that
// index from a true one: the epoch it holds there reads as "unknown" and the
// resend was skipped. Found by fuzz_replication_batch
// (tests/fuzz/corpus/fuzz_replication_batch/crash-epoch-zero-resend).
TEST_F(ReplicationStoreTest, RecordOfEpochZeroIsRefusedAndADivergedResendIsNotSkipped) {
  std::string op;
  EncodeOp(OpView{OpType::kPut, 1, 0, "k", "zero"}, &op);
  std::string zero;
  log::AppendRecord(1, 0, log::RecordType::kOp, op, &zero);
  const absl::Status refused = Append(follower_.get(), zero);
  EXPECT_TRUE(absl::IsInvalidArgument(refused)) << refused;
  EXPECT_THAT(std::string(refused.message()), HasSubstr("epoch 0"));
  EXPECT_EQ(follower_->last_index(), 0u);  // Nothing applied.
  EXPECT_EQ(follower_->GetStatus().key_count, 0u);

  // The same index from epoch 1 is then simply the follower's first record.
  std::string one;
  log::AppendRecord(1, 1, log::RecordType::kOp, op, &one);
  ASSERT_TRUE(Append(follower_.get(), one).ok());
  EXPECT_EQ(follower_->last_index(), 1u);
  EXPECT_EQ(follower_->last_epoch(), 1u);
}

// An ack says the follower holds the records durably. A resend of records
// the follower has taken but not yet fsynced is not durable either.
TEST_F(ReplicationStoreTest, ResentRecordsAreConfirmedOnlyOnceDurable) {
  Fill(3);
  LogCursor cursor(&fs_, kLeaderDir);
  cursor.Seek(1);
  std::string records;
  uint64_t first = 0, last = 0;
  ASSERT_TRUE(cursor.Read(leader_->written_index(), 1 << 20, &records, &first, &last).ok());
  fs_.HoldSyncs(true);
  absl::Notification original;
  follower_->AppendReplicated(records, [&](const absl::Status&) { original.Notify(); });
  ASSERT_TRUE(PollUntil([&] { return fs_.syncs_waiting() > 0; }));
  absl::Notification resend;
  absl::Status resend_status;
  follower_->AppendReplicated(records, [&](const absl::Status& s) {
    resend_status = s;
    resend.Notify();
  });
  EXPECT_FALSE(resend.HasBeenNotified()) << "a resend was confirmed before its fsync";
  EXPECT_FALSE(original.HasBeenNotified());
  fs_.HoldSyncs(false);
  original.WaitForNotification();
  resend.WaitForNotification();
  EXPECT_TRUE(resend_status.ok()) << resend_status;
  EXPECT_EQ(follower_->durable_index(), last);
}

// A received snapshot that fails verification changes nothing: the follower
// keeps its state and log, and can go on.
TEST_F(ReplicationStoreTest, DamagedSnapshotIsNotInstalledAndTheOldStateStays) {
  std::vector<std::string> keys = Fill(20);
  ASSERT_TRUE(Ship(1).ok());
  const uint64_t had = follower_->last_index();
  Fill(5, 100);
  absl::StatusOr<SnapshotMeta> snap = leader_->TakeSnapshot();
  ASSERT_TRUE(snap.ok()) << snap.status();
  std::string bytes = fs_.Contents(snap->path);
  bytes[bytes.size() / 2] ^= 0x40;
  const std::string incoming = absl::StrCat(kFollowerDir, "/snapshot-incoming.tmp");
  fs_.SetContents(incoming, bytes);
  absl::StatusOr<SnapshotMeta> installed = follower_->InstallSnapshot(incoming);
  EXPECT_FALSE(installed.ok());
  EXPECT_EQ(follower_->last_index(), had);
  for (const std::string& key : keys) {
    std::string lv, fv;
    uint64_t lver = 0, fver = 0;
    // Compare with what the leader had for it before the later Fill.
    const bool ff = follower_->Get(key, &fv, &fver);
    const bool lf = leader_->Get(key, &lv, &lver);
    EXPECT_EQ(ff, lf) << key;
  }
  // Still healthy: the rest of the log applies on top.
  ASSERT_TRUE(Ship(had + 1).ok());
  EXPECT_EQ(follower_->last_index(), leader_->last_index());
}

// The leader never sends a snapshot it cannot read back: a damaged newest
// snapshot is skipped for an older one that verifies.
TEST_F(ReplicationStoreTest, NewestSnapshotSkipsADamagedOne) {
  StoreOptions o = Options("/data/two");
  o.snapshots_to_keep = 2;
  std::unique_ptr<Store> store = *Store::Open(o);
  ASSERT_TRUE(Set(store.get(), "a", "1").status.ok());
  absl::StatusOr<SnapshotMeta> older = store->TakeSnapshot();
  ASSERT_TRUE(older.ok());
  ASSERT_TRUE(Set(store.get(), "b", "2").status.ok());
  absl::StatusOr<SnapshotMeta> newer = store->TakeSnapshot();
  ASSERT_TRUE(newer.ok());
  std::string bytes = fs_.Contents(newer->path);
  bytes[bytes.size() - 3] ^= 0x01;
  fs_.SetContents(newer->path, bytes);
  absl::StatusOr<SnapshotMeta> sent = store->NewestSnapshot();
  ASSERT_TRUE(sent.ok()) << sent.status();
  EXPECT_EQ(sent->path, older->path);
}

// Admission and step-down are ordered: once the store is fenced (the node
// stepped down and may have told a new leader its position), no write takes
// an index, even one that passed the node's check before.
TEST_F(ReplicationStoreTest, WriteAfterTheStoreIsFencedIsRefused) {
  Fill(2);
  const uint64_t before = leader_->last_index();
  leader_->Fence();
  MutationResult r = Set(leader_.get(), "late", "write");
  EXPECT_EQ(r.status.code(), absl::StatusCode::kUnavailable) << r.status;
  EXPECT_EQ(leader_->last_index(), before);
  std::string value;
  uint64_t version = 0;
  EXPECT_FALSE(leader_->Get("late", &value, &version));
  // A new epoch opens it again.
  ASSERT_TRUE(leader_->StartEpoch(2, "me").ok());
  EXPECT_TRUE(Set(leader_.get(), "late", "write").status.ok());
}

}  // namespace
}  // namespace kvstore
