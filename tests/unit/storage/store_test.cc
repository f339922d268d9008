// Store semantics (CAS, TTL, batches, versions) and crash recovery, on the fake
// file system and clock so every crash point and every second is chosen by the test.
#include "common/storage/store.h"

#include <atomic>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/storage/log_format.h"
#include "common/storage/op.h"
#include "common/storage/version.h"
#include "common/storage/wal.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/fake_clock.h"
#include "tests/support/fake_file_system.h"
#include "tests/support/poll.h"

namespace kvstore {
namespace {

using ::kvstore::testing::FakeClock;
using ::kvstore::testing::FakeFileSystem;
using ::testing::HasSubstr;
using Op = FakeFileSystem::Op;
using ::kvstore::testing::PollUntil;

constexpr char kDir[] = "/data/shard";

class StoreTest : public ::testing::Test {
 protected:
  StoreOptions Options(FsyncPolicy fsync = FsyncPolicy::kAlways) {
    StoreOptions o;
    o.dir = kDir;
    o.fsync = fsync;
    o.fs = &fs_;
    o.clock = &clock_;
    o.background_maintenance = false;
    o.segment_bytes = 4096;  // Many segments, so pruning has something to do.
    o.snapshot_every_writes = 0;
    o.snapshot_every_seconds = 0;
    o.on_fatal_error = [this](const absl::Status&) { ++fatal_errors_; };
    return o;
  }

  void Open(FsyncPolicy fsync = FsyncPolicy::kAlways) {
    store_.reset();
    absl::StatusOr<std::unique_ptr<Store>> s = Store::Open(Options(fsync));
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = *std::move(s);
  }

  // The store's threads die with the simulated process: drop it without the
  // orderly Close a destructor would do, by crashing the file system first.
  void CrashAndReopen(bool power_cut, FsyncPolicy fsync = FsyncPolicy::kAlways) {
    if (power_cut) {
      fs_.CutPower();
    } else {
      fs_.CrashProcess();
    }
    store_.reset();                 // Its final sync fails against dead handles; that is the point.
    if (power_cut) fs_.CutPower();  // Anything the dying store wrote is lost too.
    Open(fsync);
  }

  std::vector<MutationResult> Write(std::vector<Mutation> batch,
                                    Durability durability = Durability::kDefault) {
    absl::Notification done;
    std::vector<MutationResult> out;
    store_->Write(std::move(batch), durability, [&](std::vector<MutationResult> r) {
      out = std::move(r);
      done.Notify();
    });
    done.WaitForNotification();
    return out;
  }

  MutationResult Set(const std::string& key, const std::string& value, uint64_t ttl_ms = 0,
                     std::optional<uint64_t> if_version = std::nullopt,
                     Durability durability = Durability::kDefault) {
    Mutation m;
    m.key = key;
    m.value = value;
    m.ttl_ms = ttl_ms;
    m.if_version = if_version;
    return Write({m}, durability)[0];
  }

  MutationResult Del(const std::string& key, std::optional<uint64_t> if_version = std::nullopt) {
    Mutation m;
    m.kind = Mutation::Kind::kDelete;
    m.key = key;
    m.if_version = if_version;
    return Write({m})[0];
  }

  std::optional<std::string> Get(const std::string& key, uint64_t* version = nullptr) {
    std::string value;
    uint64_t v = 0;
    if (!store_->Get(key, &value, &v)) return std::nullopt;
    if (version != nullptr) *version = v;
    return value;
  }

  FakeFileSystem fs_;
  FakeClock clock_;
  std::unique_ptr<Store> store_;
  int fatal_errors_ = 0;
};

TEST_F(StoreTest, SetThenGetReturnsValueAndVersion) {
  Open();
  MutationResult r = Set("k", "v1");
  ASSERT_TRUE(r.status.ok()) << r.status;
  uint64_t version = 0;
  EXPECT_EQ(Get("k", &version), "v1");
  EXPECT_EQ(version, r.version);
  EXPECT_EQ(Get("missing"), std::nullopt);
}

TEST_F(StoreTest, VersionsStrictlyIncreasePerKeyAcrossDeleteAndRestart) {
  Open();
  uint64_t last = 0;
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 5; ++i) {
      MutationResult r = Set("k", absl::StrCat("v", round, i));
      ASSERT_TRUE(r.status.ok());
      EXPECT_GT(r.version, last);
      last = r.version;
    }
    MutationResult d = Del("k");
    ASSERT_TRUE(d.applied);
    EXPECT_GT(d.version, last);
    last = d.version;
    Open();  // Orderly restart.
  }
}

TEST_F(StoreTest, CompareAndSetZeroCreatesOnlyIfAbsent) {
  Open();
  EXPECT_TRUE(Set("k", "first", 0, 0).status.ok());
  MutationResult again = Set("k", "second", 0, 0);
  EXPECT_EQ(again.status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Get("k"), "first");
}

TEST_F(StoreTest, CompareAndSetMismatchNamesCurrentVersionAndWritesNothing) {
  Open();
  MutationResult a = Set("k", "a");
  const uint64_t before = store_->last_index();
  MutationResult b = Set("k", "b", 0, a.version + 100);
  EXPECT_EQ(b.status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(b.status.message()), HasSubstr(absl::StrCat(a.version)));
  EXPECT_EQ(store_->last_index(), before);
  EXPECT_EQ(Get("k"), "a");
  EXPECT_TRUE(Set("k", "c", 0, a.version).status.ok());
  EXPECT_EQ(Get("k"), "c");
}

TEST_F(StoreTest, DeleteMissingKeyIsNotAnErrorAndWritesNothing) {
  Open();
  const uint64_t before = store_->last_index();
  MutationResult d = Del("nothing");
  EXPECT_TRUE(d.status.ok());
  EXPECT_FALSE(d.applied);
  EXPECT_EQ(d.version, 0u);
  EXPECT_EQ(store_->last_index(), before);
}

TEST_F(StoreTest, CompareAndDeleteChecksVersion) {
  Open();
  MutationResult a = Set("k", "a");
  EXPECT_EQ(Del("k", a.version + 1).status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Get("k"), "a");
  EXPECT_TRUE(Del("k", a.version).applied);
  EXPECT_EQ(Get("k"), std::nullopt);
}

TEST_F(StoreTest, ExpiredKeyIsNeverReturnedAndIsAbsentForCas) {
  Open();
  ASSERT_TRUE(Set("k", "v", /*ttl_ms=*/1000).status.ok());
  clock_.AdvanceMillis(999);
  EXPECT_EQ(Get("k"), "v");
  clock_.AdvanceMillis(1);
  EXPECT_EQ(Get("k"), std::nullopt);
  EXPECT_TRUE(Set("k", "again", 0, /*if_version=*/0).status.ok());
  EXPECT_EQ(Get("k"), "again");
}

TEST_F(StoreTest, ActiveExpiryReclaimsMemoryWithoutReads) {
  Open();
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(Set(absl::StrCat("t", i), "v", 10).status.ok());
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(Set(absl::StrCat("p", i), "v").status.ok());
  EXPECT_EQ(store_->GetStatus().key_count, 110u);
  clock_.AdvanceMillis(11);
  EXPECT_EQ(store_->EvictExpired(1000), 100u);
  EXPECT_EQ(store_->GetStatus().key_count, 10u);
}

TEST_F(StoreTest, ExpiryIsAbsoluteAcrossRestart) {
  Open();
  ASSERT_TRUE(Set("short", "v", 1000).status.ok());
  ASSERT_TRUE(Set("long", "v", 100000).status.ok());
  clock_.AdvanceMillis(2000);
  Open();
  EXPECT_EQ(Get("short"), std::nullopt);
  EXPECT_EQ(Get("long"), "v");
  EXPECT_EQ(store_->GetStatus().key_count, 1u) << "an expired key was loaded into memory";
}

TEST_F(StoreTest, BatchItemsSucceedOrFailIndependently) {
  Open();
  MutationResult a = Set("a", "1");
  std::vector<Mutation> batch(3);
  batch[0].key = "a";
  batch[0].value = "2";
  batch[0].if_version = a.version + 5;  // Fails.
  batch[1].key = "b";
  batch[1].value = "3";
  batch[2].key = "c";
  batch[2].value = "4";
  batch[2].if_version = 0;
  std::vector<MutationResult> r = Write(batch);
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[0].status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(r[1].status.ok());
  EXPECT_TRUE(r[2].status.ok());
  EXPECT_LT(r[1].version, r[2].version);
  EXPECT_EQ(Get("a"), "1");
  EXPECT_EQ(Get("b"), "3");
}

TEST_F(StoreTest, AcknowledgedWritesSurvivePowerCutUnderFsyncAlways) {
  Open(FsyncPolicy::kAlways);
  std::map<std::string, std::string> acked;
  for (int i = 0; i < 300; ++i) {
    std::string key = absl::StrCat("k", i % 120);
    std::string value = absl::StrCat("v", i);
    ASSERT_TRUE(Set(key, value).status.ok());
    acked[key] = value;
  }
  CrashAndReopen(/*power_cut=*/true);
  int checked = 0;
  for (const auto& [key, value] : acked) {
    EXPECT_EQ(Get(key), value) << key;
    ++checked;
  }
  EXPECT_EQ(checked, 120);
}

TEST_F(StoreTest, WrittenWritesSurviveProcessCrashUnderFsyncNo) {
  Open(FsyncPolicy::kNo);
  for (int i = 0; i < 200; ++i) ASSERT_TRUE(Set(absl::StrCat("k", i), "v").status.ok());
  CrashAndReopen(/*power_cut=*/false, FsyncPolicy::kNo);
  EXPECT_EQ(store_->GetStatus().key_count, 200u);
}

TEST_F(StoreTest, FsyncedAckOverridesPolicyNo) {
  Open(FsyncPolicy::kNo);
  ASSERT_TRUE(Set("lazy", "v").status.ok());
  ASSERT_TRUE(Set("durable", "v", 0, std::nullopt, Durability::kFsynced).status.ok());
  CrashAndReopen(/*power_cut=*/true, FsyncPolicy::kNo);
  EXPECT_EQ(Get("durable"), "v");  // And "lazy" with it: one fsync covers the log before it.
  EXPECT_EQ(Get("lazy"), "v");
}

TEST_F(StoreTest, PowerCutUnderFsyncNoLeavesAPrefixOfTheLog) {
  Open(FsyncPolicy::kNo);
  ASSERT_TRUE(Set("synced", "v", 0, std::nullopt, Durability::kFsynced).status.ok());
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(Set("seq", absl::StrCat(i)).status.ok());
  fs_.CutPower(/*keep_unsynced_fraction=*/0.5);
  store_.reset();
  fs_.CutPower(0.5);
  Open(FsyncPolicy::kNo);
  EXPECT_EQ(Get("synced"), "v");
  // Whatever survived is a prefix of the log: "seq" holds one of its values, and
  // the next write gets a newer version than the one that survived.
  uint64_t version = 0;
  std::optional<std::string> seq = Get("seq", &version);
  ASSERT_TRUE(seq.has_value());
  EXPECT_GE(std::stoi(*seq), 0);
  MutationResult next = Set("seq", "after");
  EXPECT_GT(next.version, version);
}

TEST_F(StoreTest, SnapshotPlusLogTailRecoversExactState) {
  Open();
  std::map<std::string, std::string> oracle;
  std::mt19937 rng(42);
  for (int i = 0; i < 400; ++i) {
    std::string key = absl::StrCat("k", rng() % 50);
    if (rng() % 5 == 0) {
      Del(key);
      oracle.erase(key);
    } else {
      std::string value = absl::StrCat("v", i);
      ASSERT_TRUE(Set(key, value).status.ok());
      oracle[key] = value;
    }
    if (i == 150 || i == 300) {
      ASSERT_TRUE(store_->TakeSnapshot().ok());
    }
  }
  CrashAndReopen(/*power_cut=*/true);
  EXPECT_EQ(store_->GetStatus().key_count, oracle.size());
  for (const auto& [key, value] : oracle) EXPECT_EQ(Get(key), value) << key;
  ASSERT_TRUE(store_->GetStatus().last_snapshot.has_value());
}

TEST_F(StoreTest, SnapshotRemovesCoveredLogSegmentsButKeepsTheTail) {
  Open();
  for (int i = 0; i < 500; ++i)
    ASSERT_TRUE(Set(absl::StrCat("k", i), std::string(40, 'x')).status.ok());
  const uint32_t before = store_->GetStatus().log_segments;
  ASSERT_GT(before, 3u);
  ASSERT_TRUE(store_->TakeSnapshot().ok());
  ASSERT_TRUE(Set("after", "1").status.ok());
  ASSERT_TRUE(store_->TakeSnapshot().ok());  // The log is kept back to the older snapshot.
  EXPECT_LT(store_->GetStatus().log_segments, before);
  Open();
  EXPECT_EQ(store_->GetStatus().key_count, 501u);
}

// A crash at each step of a snapshot's install (its fsync, the rename, the
// directory fsync, or just after) recovers the old or the new snapshot, and with
// the log after it, exactly the acknowledged state.
class SnapshotCrashTest : public StoreTest, public ::testing::WithParamInterface<int> {};

TEST_P(SnapshotCrashTest, RecoversAcknowledgedStateWithOldOrNewSnapshot) {
  const int step = GetParam();  // 0..2: fail that step; 3: crash after success.
  Open(FsyncPolicy::kAlways);
  std::map<std::string, std::string> oracle;
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(Set(absl::StrCat("k", i), "old").status.ok());
    oracle[absl::StrCat("k", i)] = "old";
  }
  absl::StatusOr<SnapshotMeta> first = store_->TakeSnapshot();
  ASSERT_TRUE(first.ok()) << first.status();
  for (int i = 0; i < 100; i += 2) {
    ASSERT_TRUE(Set(absl::StrCat("k", i), "new").status.ok());
    oracle[absl::StrCat("k", i)] = "new";
  }
  // Every write is fsynced already, so the next sync or rename is the snapshot's.
  const Op steps[] = {Op::kSync, Op::kRename, Op::kSyncDir};
  if (step < 3) fs_.FailAfter(steps[step], 0);
  absl::StatusOr<SnapshotMeta> second = store_->TakeSnapshot();
  EXPECT_EQ(second.ok(), step == 3) << second.status();
  fs_.ClearFailures();
  CrashAndReopen(/*power_cut=*/true);
  ASSERT_TRUE(store_->GetStatus().last_snapshot.has_value());
  const uint64_t loaded = store_->GetStatus().last_snapshot->start_index;
  EXPECT_EQ(loaded, step == 3 ? second->start_index : first->start_index);
  EXPECT_EQ(store_->GetStatus().key_count, oracle.size());
  for (const auto& [key, value] : oracle) EXPECT_EQ(Get(key), value) << key;
}

INSTANTIATE_TEST_SUITE_P(EachStep, SnapshotCrashTest, ::testing::Values(0, 1, 2, 3));

TEST_F(StoreTest, DamagedNewestSnapshotFallsBackToTheOlderOne) {
  Open();
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(Set(absl::StrCat("k", i), "old").status.ok());
  ASSERT_TRUE(store_->TakeSnapshot().ok());
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(Set(absl::StrCat("k", i), "new").status.ok());
  absl::StatusOr<SnapshotMeta> newest = store_->TakeSnapshot();
  ASSERT_TRUE(newest.ok());
  store_.reset();
  std::string bytes = fs_.Contents(newest->path);
  bytes[bytes.size() / 2] ^= 0x40;
  fs_.SetContents(newest->path, bytes);
  Open();
  for (int i = 0; i < 50; ++i) EXPECT_EQ(Get(absl::StrCat("k", i)), "new");
}

// A record whose checks pass but whose op does not parse is a writer bug, not
// a torn tail: recovery must stop. The key_len here overflows 32 bits in its
// fifth byte, which the op reader once truncated to 1 and replayed as a put.
TEST_F(StoreTest, LogRecordWithAnOverflowingKeyLengthStopsRecovery) {
  std::string payload(17, '\0');
  payload[0] = static_cast<char>(OpType::kPut);
  payload.append("\x81\x80\x80\x80\x10", 5);
  payload.append("k");
  std::string record;
  log::AppendRecord(/*index=*/1, /*epoch=*/1, log::RecordType::kOp, payload, &record);
  {
    absl::StatusOr<std::unique_ptr<Wal>> wal =
        Wal::Open(&fs_, kDir, WalOptions(), 1, [](const WalRecord&) { return absl::OkStatus(); });
    ASSERT_TRUE(wal.ok()) << wal.status();
    ASSERT_TRUE((*wal)->Append(record, 1, 1).ok());
    ASSERT_TRUE((*wal)->Sync().ok());
  }
  absl::StatusOr<std::unique_ptr<Store>> s = Store::Open(Options());
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(absl::IsDataLoss(s.status())) << s.status();
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("log record 1"));
}

TEST_F(StoreTest, FailedLogSyncIsNeverAcknowledgedAndIsSticky) {
  Open(FsyncPolicy::kAlways);
  ASSERT_TRUE(Set("before", "v").status.ok());
  fs_.FailAfter(Op::kSync, 0);
  MutationResult failed = Set("k", "v");
  EXPECT_FALSE(failed.status.ok());
  fs_.ClearFailures();
  MutationResult later = Set("k2", "v");
  EXPECT_FALSE(later.status.ok()) << "a write after a failed fsync was acknowledged";
  EXPECT_EQ(fatal_errors_, 1);
}

TEST_F(StoreTest, AWriteNeedingNoFsyncIsInTheLogOnTheWritersOwnThreadWhenAcknowledged) {
  Open(FsyncPolicy::kNo);
  Mutation m;
  m.key = "k";
  m.value = "v";
  std::thread::id ran_on;
  uint64_t written_at_ack = 0;
  uint64_t version = 0;  // The write's log index.
  absl::Notification done;
  store_->Write({m}, Durability::kDefault, [&](std::vector<MutationResult> r) {
    ran_on = std::this_thread::get_id();
    written_at_ack = store_->written_index();
    version = r[0].index;
    done.Notify();
  });
  done.WaitForNotification();
  EXPECT_EQ(ran_on, std::this_thread::get_id()) << "handed to the log thread";
  EXPECT_GE(written_at_ack, version);
}

TEST_F(StoreTest, AFailedLogWriteOnTheWritersThreadIsNeverAcknowledgedAndIsSticky) {
  Open(FsyncPolicy::kNo);
  ASSERT_TRUE(Set("before", "v").status.ok());
  fs_.FailAfter(Op::kAppend, 0);
  EXPECT_FALSE(Set("k", "v").status.ok());
  fs_.ClearFailures();
  EXPECT_FALSE(Set("k2", "v").status.ok()) << "a write after a failed log write was acknowledged";
  EXPECT_EQ(fatal_errors_, 1);
}

TEST_F(StoreTest, ConcurrentWritersWithMixedDurabilityLoseNothingAndKeepTheLogInOrder) {
  Open(FsyncPolicy::kEverySec);
  constexpr int kThreads = 8;
  constexpr int kWrites = 300;
  std::vector<std::vector<uint64_t>> versions(kThreads, std::vector<uint64_t>(kWrites));
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kWrites; ++i) {
        // Every third write asks for an fsync: the log thread and the writers'
        // own threads take turns at the log.
        MutationResult r = Set(absl::StrCat("t", t, "-", i), absl::StrCat("v", i), 0, std::nullopt,
                               i % 3 == 0 ? Durability::kFsynced : Durability::kDefault);
        ASSERT_TRUE(r.status.ok()) << r.status;
        versions[t][i] = r.version;
      }
    });
  }
  for (std::thread& th : threads) th.join();
  ASSERT_TRUE(store_->Close().ok());
  Open(FsyncPolicy::kEverySec);  // Recovery checks that the log's indexes are contiguous.
  EXPECT_EQ(store_->GetStatus().key_count, static_cast<uint64_t>(kThreads * kWrites));
  EXPECT_EQ(store_->last_index(), static_cast<uint64_t>(kThreads * kWrites));
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kWrites; ++i) {
      uint64_t version = 0;
      EXPECT_EQ(Get(absl::StrCat("t", t, "-", i), &version), absl::StrCat("v", i));
      EXPECT_EQ(version, versions[t][i]);
    }
  }
}

TEST_F(StoreTest, ATimedRoundOfTheLogThreadLeavesTheGroupOfAWriterFlushingInlineAlone) {
  // Under everysec the log thread wakes each second, also while a writer is
  // putting its group in the log (here: held there by a slow callback). That
  // round must not touch the log's order; a past bug appended the log
  // thread's previous group again and stopped the store.
  Open(FsyncPolicy::kEverySec);
  ASSERT_TRUE(Set("fsynced", "v", 0, std::nullopt, Durability::kFsynced).status.ok());
  absl::Notification in_callback;
  absl::Notification release;
  std::thread writer([&] {
    Mutation m;
    m.key = "inline";
    m.value = "v";
    store_->Write({m}, Durability::kDefault, [&](std::vector<MutationResult> r) {
      EXPECT_TRUE(r[0].status.ok()) << r[0].status;
      in_callback.Notify();
      release.WaitForNotification();
    });
  });
  in_callback.WaitForNotification();
  // Not synchronisation: the log thread's timed round must come while the
  // writer holds the log, and it comes once a second.
  absl::SleepFor(absl::Milliseconds(1500));
  release.Notify();
  writer.join();
  EXPECT_EQ(fatal_errors_, 0);
  ASSERT_TRUE(Set("after", "v").status.ok());
  ASSERT_TRUE(store_->Close().ok());
  Open(FsyncPolicy::kEverySec);
  EXPECT_EQ(store_->GetStatus().key_count, 3u);
  EXPECT_EQ(store_->last_index(), 3u);
}

TEST_F(StoreTest, UnderEverysecTheLogThreadFsyncsOnTimeAfterAnEarlierWakeup) {
  // The fsync is due a second after the last one. A past bug waited a fresh
  // second after every wakeup, so a wakeup just before the fsync was due put
  // it off by almost a second: a soak lost a write acknowledged 1.7 s before
  // the power cut. The fsync time is read from the injected clock; the log
  // thread must sleep until then, not a second from whenever it woke.
  Open(FsyncPolicy::kEverySec);
  clock_.AdvanceMillis(900);
  // Wakes the log thread 100 ms before the fsync is due (it fsyncs this one
  // at once, as asked, without moving the everysec schedule).
  ASSERT_TRUE(Set("fsynced", "v", 0, std::nullopt, Durability::kFsynced).status.ok());
  fs_.HoldSyncs(true, "wal-");  // Shows the log thread's next fsync as a waiting call.
  ASSERT_TRUE(Set("default", "v").status.ok());  // In the log, not yet fsynced.
  clock_.AdvanceMillis(200);                     // The everysec fsync is now due.
  // Polling with a deadline shorter than the second the old code slept.
  (void)::kvstore::testing::PollUntil([&] { return fs_.syncs_waiting() > 0; },
                                      absl::Milliseconds(600));
  EXPECT_EQ(fs_.syncs_waiting(), 1)
      << "the log thread did not fsync within 600 ms after the fsync was due";
  fs_.HoldSyncs(false);
}

// ---------------------------------------------------------------- visibility
// A read sees a write only once a crash can no longer take it back, and
// nothing that reveals an in-flight write is answered before then. A fault run
// (docs/reliability.md, "Known anomalies") caught a CAS mismatch naming the
// version of a write that was still queued behind a slow fsync, and lost with
// the process a moment later.

// Starts a write and returns at once; the write's results land in *out.
class PendingWrite {
 public:
  PendingWrite(Store* store, Mutation m, Durability durability = Durability::kDefault) {
    store->Write({std::move(m)}, durability, [this](std::vector<MutationResult> r) {
      result_ = r[0];
      done_.Notify();
    });
  }
  bool answered() const { return done_.HasBeenNotified(); }
  MutationResult Wait() {
    done_.WaitForNotification();
    return result_;
  }

 private:
  absl::Notification done_;
  MutationResult result_;
};

Mutation SetOf(const std::string& key, const std::string& value,
               std::optional<uint64_t> if_version = std::nullopt) {
  Mutation m;
  m.key = key;
  m.value = value;
  m.if_version = if_version;
  return m;
}

TEST_F(StoreTest, AReadDoesNotSeeAWriteBeforeItsFsyncUnderFsyncAlways) {
  Open(FsyncPolicy::kAlways);
  fs_.HoldSyncs(true);
  PendingWrite first(store_.get(), SetOf("k", "v1"));
  ASSERT_TRUE(PollUntil([&] { return fs_.syncs_waiting() > 0; }));
  // Queued behind the fsync in progress: not even in the log yet.
  PendingWrite second(store_.get(), SetOf("q", "v2"));
  EXPECT_EQ(Get("k"), std::nullopt) << "a write a power cut can still take back was read";
  EXPECT_EQ(Get("q"), std::nullopt) << "a write a kill -9 can still take back was read";
  fs_.HoldSyncs(false);
  ASSERT_TRUE(first.Wait().status.ok());
  ASSERT_TRUE(second.Wait().status.ok());
  EXPECT_EQ(Get("k"), "v1");
  EXPECT_EQ(Get("q"), "v2");
}

// ----------------------------------------------- group commit under always
// While group N is being fsynced, group N+1 gathers (queued, or appended by a
// pipelined log). Whatever the commit path does meanwhile, an acknowledgement
// means every record up to the write is durable, and a failed fsync fails
// everything after it. (A pipelined variant was measured and dropped, see
// docs/performance.md; these tests hold for both.)

TEST_F(StoreTest, AWriteArrivingDuringAnFsyncIsAcknowledgedOnlyByItsOwnFsync) {
  Open(FsyncPolicy::kAlways);
  fs_.HoldSyncs(true, "wal-");
  PendingWrite a(store_.get(), SetOf("a", "1"));
  ASSERT_TRUE(PollUntil([&] { return fs_.syncs_waiting() == 1; }));
  PendingWrite b(store_.get(), SetOf("b", "2"));
  EXPECT_FALSE(b.answered());
  fs_.ReleaseSyncs(1);  // a's fsync, which started before b arrived.
  ASSERT_TRUE(a.Wait().status.ok());
  ASSERT_TRUE(PollUntil([&] { return fs_.syncs_waiting() == 1; }));  // b's own.
  EXPECT_FALSE(b.answered()) << "b was acknowledged by the fsync of the group before it";
  EXPECT_EQ(Get("a"), "1");
  EXPECT_EQ(Get("b"), std::nullopt) << "b was published before its fsync";
  // The power goes now: every write acknowledged so far must come back.
  const bool b_acknowledged = b.answered() && b.Wait().status.ok();
  fs_.CutPower();
  fs_.HoldSyncs(false);
  EXPECT_FALSE(b.Wait().status.ok()) << "b's fsync ran on a dead disk";
  CrashAndReopen(/*power_cut=*/true);
  EXPECT_EQ(Get("a"), "1");
  if (b_acknowledged) {
    EXPECT_EQ(Get("b"), "2") << "an acknowledged write was lost";
  }
}

TEST_F(StoreTest, AFailedFsyncFailsTheWritesThatArrivedDuringItAndEveryWriteAfter) {
  Open(FsyncPolicy::kAlways);
  ASSERT_TRUE(Set("before", "v").status.ok());
  fs_.HoldSyncs(true, "wal-");
  PendingWrite a(store_.get(), SetOf("a", "1"));
  ASSERT_TRUE(PollUntil([&] { return fs_.syncs_waiting() == 1; }));
  PendingWrite b(store_.get(), SetOf("b", "2"));
  fs_.FailAfter(Op::kSync, 0);
  fs_.ReleaseSyncs(1);
  EXPECT_FALSE(a.Wait().status.ok());
  // The disk works again: a retried fsync would now succeed, and would
  // acknowledge b although the kernel may have dropped a's pages.
  fs_.ClearFailures();
  fs_.HoldSyncs(false);
  EXPECT_FALSE(b.Wait().status.ok()) << "a write after a failed fsync was acknowledged";
  EXPECT_FALSE(Set("c", "3").status.ok()) << "a write after a failed fsync was acknowledged";
  EXPECT_EQ(Get("a"), std::nullopt);
  EXPECT_EQ(Get("b"), std::nullopt);
  EXPECT_EQ(fatal_errors_, 1);
}

TEST_F(StoreTest, EveryAcknowledgedWriteSurvivesAPowerCutAmidConcurrentGroupCommits) {
  // Oracle: a write is settled once answered OK; after the cut every settled
  // key holds its value. The cut lands wherever the writers are.
  constexpr int kThreads = 8;
  constexpr int kRounds = 5;
  int checked = 0;
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE(absl::StrCat("round ", round));
    Open(FsyncPolicy::kAlways);
    absl::Mutex mu;
    std::map<std::string, std::string> settled;
    std::atomic<int> acks{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < 2000; ++i) {
          const std::string key = absl::StrCat("r", round, "-t", t, "-", i);
          const std::string value = absl::StrCat("v", i);
          if (!Set(key, value).status.ok()) return;  // The power is gone.
          absl::MutexLock l(&mu);
          settled[key] = value;
          ++acks;
        }
      });
    }
    ASSERT_TRUE(PollUntil([&] { return acks.load() >= 100 * (round + 1); }));
    fs_.CutPower();
    for (std::thread& th : threads) th.join();
    CrashAndReopen(/*power_cut=*/true);
    absl::MutexLock l(&mu);
    for (const auto& [key, value] : settled) {
      EXPECT_EQ(Get(key), value) << "acknowledged, then lost in the power cut";
      ++checked;
    }
  }
  EXPECT_GE(checked, 100 * kRounds);
}

TEST_F(StoreTest, ACompareAndSetMismatchOnAWriteInFlightIsAnsweredOnlyOnceThatWriteIsDurable) {
  Open(FsyncPolicy::kAlways);
  fs_.HoldSyncs(true);
  PendingWrite in_flight(store_.get(), SetOf("k", "v1"));
  ASSERT_TRUE(PollUntil([&] { return fs_.syncs_waiting() > 0; }));
  const uint64_t in_flight_version = MakeVersion(store_->epoch(), store_->last_index());
  PendingWrite create_only(store_.get(), SetOf("k", "other", /*if_version=*/0));
  Mutation del;
  del.kind = Mutation::Kind::kDelete;
  del.key = "k";
  del.if_version = 12345;
  PendingWrite cas_delete(store_.get(), del);
  EXPECT_FALSE(create_only.answered())
      << "the mismatch revealed a write that a crash could still take back";
  EXPECT_FALSE(cas_delete.answered());
  fs_.HoldSyncs(false);
  ASSERT_TRUE(in_flight.Wait().status.ok());
  const MutationResult mismatch = create_only.Wait();
  EXPECT_EQ(mismatch.status.code(), absl::StatusCode::kFailedPrecondition) << mismatch.status;
  EXPECT_THAT(std::string(mismatch.status.message()),
              HasSubstr(absl::StrCat("current version is ", in_flight_version)));
  EXPECT_EQ(cas_delete.Wait().status.code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(StoreTest, ADeleteOfAKeyDeletedByAWriteInFlightWaitsForThatWrite) {
  Open(FsyncPolicy::kAlways);
  ASSERT_TRUE(Set("k", "v").status.ok());
  fs_.HoldSyncs(true);
  Mutation del;
  del.kind = Mutation::Kind::kDelete;
  del.key = "k";
  PendingWrite first(store_.get(), del);
  ASSERT_TRUE(PollUntil([&] { return fs_.syncs_waiting() > 0; }));
  PendingWrite second(store_.get(), del);
  EXPECT_FALSE(second.answered()) << "'nothing to delete' revealed a delete still in flight";
  EXPECT_EQ(Get("k"), "v");
  fs_.HoldSyncs(false);
  EXPECT_TRUE(first.Wait().applied);
  const MutationResult r = second.Wait();
  EXPECT_TRUE(r.status.ok());
  EXPECT_FALSE(r.applied);
  EXPECT_EQ(Get("k"), std::nullopt);
}

TEST_F(StoreTest, ACompareAndSetOnAWriteInFlightIsOrderedAfterIt) {
  Open(FsyncPolicy::kAlways);
  fs_.HoldSyncs(true);
  PendingWrite first(store_.get(), SetOf("k", "v1"));
  ASSERT_TRUE(PollUntil([&] { return fs_.syncs_waiting() > 0; }));
  const uint64_t first_version = MakeVersion(store_->epoch(), store_->last_index());
  PendingWrite second(store_.get(), SetOf("k", "v2", first_version));
  fs_.HoldSyncs(false);
  ASSERT_TRUE(first.Wait().status.ok());
  const MutationResult r = second.Wait();
  ASSERT_TRUE(r.status.ok()) << r.status;
  uint64_t version = 0;
  EXPECT_EQ(Get("k", &version), "v2");
  EXPECT_EQ(version, r.version);
  CrashAndReopen(/*power_cut=*/true);
  EXPECT_EQ(Get("k", &version), "v2");
  EXPECT_EQ(version, r.version);
}

TEST_F(StoreTest, UnderACommitGateAWriteIsVisibleOnlyOnceCommitted) {
  Open(FsyncPolicy::kAlways);
  store_->SetCommitGate(true);
  const MutationResult r = Set("k", "v");  // Answered once durable here.
  ASSERT_TRUE(r.status.ok());
  EXPECT_EQ(Get("k"), std::nullopt) << "read before the in-sync followers hold it";
  store_->CommitThrough(r.index - 1);
  EXPECT_EQ(Get("k"), std::nullopt);
  store_->CommitThrough(r.index);
  EXPECT_EQ(Get("k"), "v");
}

TEST_F(StoreTest, UnderACommitGateAnExplicitlyDurableWriteIsVisibleWhenAcknowledged) {
  Open(FsyncPolicy::kAlways);
  store_->SetCommitGate(true);
  ASSERT_TRUE(Set("k", "v", 0, std::nullopt, Durability::kWritten).status.ok());
  EXPECT_EQ(Get("k"), "v") << "an acknowledged write was not visible";
  const MutationResult r = Set("later", "v");
  ASSERT_TRUE(r.status.ok());
  store_->MakeVisible(r.index, r.index);  // Acknowledged on a per-request replica count.
  EXPECT_EQ(Get("later"), "v");
}

TEST_F(StoreTest, AnOlderWritePublishedLateDoesNotOverwriteANewerOne) {
  Open(FsyncPolicy::kAlways);
  store_->SetCommitGate(true);
  const MutationResult older = Set("k", "old");
  ASSERT_TRUE(older.status.ok());
  ASSERT_TRUE(Set("k", "new", 0, std::nullopt, Durability::kFsynced).status.ok());
  EXPECT_EQ(Get("k"), "new");
  store_->CommitThrough(older.index);
  EXPECT_EQ(Get("k"), "new");
}

TEST_F(StoreTest, ASnapshotTakenWhileAWriteAwaitsItsCommitStillRecoversIt) {
  Open(FsyncPolicy::kAlways);
  ASSERT_TRUE(Set("before", "v").status.ok());
  store_->SetCommitGate(true);
  ASSERT_TRUE(Set("k", "v").status.ok());  // In the log, not in the map.
  ASSERT_TRUE(Set("after", "v", 0, std::nullopt, Durability::kFsynced).status.ok());
  ASSERT_TRUE(store_->TakeSnapshot().ok());
  CrashAndReopen(/*power_cut=*/true);
  EXPECT_EQ(Get("k"), "v") << "the snapshot claimed a write it did not hold";
  EXPECT_EQ(Get("before"), "v");
  EXPECT_EQ(Get("after"), "v");
}

// Writes in flight are kept in index order, and one published ahead of older
// ones (an explicit durability, MakeVisible) waits there as a tombstone: the
// older ones still publish in order around it, exactly once, and a snapshot
// still starts below the oldest unpublished one.
TEST_F(StoreTest, AWritePublishedAheadOfOlderOnesLeavesThemToPublishInOrder) {
  Open(FsyncPolicy::kAlways);
  store_->SetCommitGate(true);
  const MutationResult a = Set("a", "1");
  const MutationResult b = Set("b", "1", 0, std::nullopt, Durability::kFsynced);
  const MutationResult c = Set("c", "1");
  const MutationResult d = Set("d", "1");
  ASSERT_TRUE(a.status.ok() && b.status.ok() && c.status.ok() && d.status.ok());
  store_->MakeVisible(d.index, d.index);
  EXPECT_EQ(Get("b"), "1") << "an acknowledged explicit write is visible";
  EXPECT_EQ(Get("d"), "1");
  EXPECT_EQ(Get("a"), std::nullopt);
  EXPECT_EQ(Get("c"), std::nullopt);

  // A newer write to b, in flight behind the tombstone of the older one.
  const MutationResult b2 = Set("b", "2");
  ASSERT_TRUE(b2.status.ok());
  EXPECT_EQ(Set("b", "x", 0, b.version).status.code(), absl::StatusCode::kFailedPrecondition)
      << "a condition sees the write in flight";

  store_->CommitThrough(a.index);
  EXPECT_EQ(Get("a"), "1");
  EXPECT_EQ(Get("c"), std::nullopt) << "published past the commit index";
  store_->MakeVisible(b.index, d.index);  // Again: nothing published twice or out of the range.
  EXPECT_EQ(Get("c"), "1");
  uint64_t version = 0;
  EXPECT_EQ(Get("b", &version), "1");
  EXPECT_EQ(version, b.version);

  ASSERT_TRUE(store_->TakeSnapshot().ok());  // b2 is in the log, not the map.
  store_->CommitThrough(b2.index);
  EXPECT_EQ(Get("b", &version), "2");
  EXPECT_EQ(version, b2.version);
  CrashAndReopen(/*power_cut=*/true);
  EXPECT_EQ(Get("b", &version), "2") << "the snapshot claimed a write it did not hold";
  EXPECT_EQ(version, b2.version);
  EXPECT_EQ(Get("a"), "1");
  EXPECT_EQ(Get("c"), "1");
  EXPECT_EQ(Get("d"), "1");
}

TEST_F(StoreTest, WritesAfterCloseAreRefusedAsUnavailable) {
  Open();
  ASSERT_TRUE(store_->Close().ok());
  EXPECT_EQ(Set("k", "v").status.code(), absl::StatusCode::kUnavailable);
}

// ---- Imports: keys moved from another shard (docs/resharding.md).

class StoreImportTest : public StoreTest {
 protected:
  MutationResult Import(const std::string& key, const std::string& value, uint64_t version,
                        int64_t expire_unix_ms = 0) {
    Mutation m;
    m.kind = Mutation::Kind::kImport;
    m.key = key;
    m.value = value;
    m.version = version;
    m.expire_unix_ms = expire_unix_ms;
    return Write({m})[0];
  }
  MutationResult ImportDelete(const std::string& key, uint64_t version) {
    Mutation m;
    m.kind = Mutation::Kind::kImportDelete;
    m.key = key;
    m.version = version;
    return Write({m})[0];
  }
  // A version another shard issued, from an epoch far above this store's.
  static uint64_t Foreign(uint64_t index) { return MakeVersion(1000, index); }
};

TEST_F(StoreImportTest, AnImportKeepsTheSourceVersionAndSurvivesARestart) {
  Open();
  const MutationResult r = Import("k", "moved", Foreign(7));
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_TRUE(r.applied);
  EXPECT_EQ(r.version, Foreign(7));
  uint64_t version = 0;
  EXPECT_EQ(Get("k", &version), "moved");
  EXPECT_EQ(version, Foreign(7));
  CrashAndReopen(/*power_cut=*/true);
  EXPECT_EQ(Get("k", &version), "moved");
  EXPECT_EQ(version, Foreign(7));
}

TEST_F(StoreImportTest, AnOlderOrEqualImportNeverReplacesANewerVersion) {
  Open();
  ASSERT_TRUE(Import("k", "new", Foreign(9)).applied);
  const MutationResult older = Import("k", "old", Foreign(8));
  EXPECT_TRUE(older.status.ok());
  EXPECT_FALSE(older.applied);
  EXPECT_FALSE(Import("k", "same", Foreign(9)).applied);
  uint64_t version = 0;
  EXPECT_EQ(Get("k", &version), "new");
  EXPECT_EQ(version, Foreign(9));
  EXPECT_TRUE(Import("k", "newer", Foreign(10)).applied);
  EXPECT_EQ(Get("k"), "newer");
}

TEST_F(StoreImportTest, AnOlderImportDoesNotComeBackInPlaceOfANewerOneThatExpired) {
  Open();
  const int64_t soon = clock_.NowUnixMillis() + 1000;
  ASSERT_TRUE(Import("k", "new-with-ttl", Foreign(9), soon).applied);
  clock_.AdvanceMillis(2000);
  EXPECT_EQ(Get("k"), std::nullopt);
  EXPECT_FALSE(Import("k", "old-forever", Foreign(8)).applied);
  EXPECT_EQ(Get("k"), std::nullopt);
}

TEST_F(StoreImportTest, AnAlreadyExpiredImportWritesNothing) {
  Open();
  const uint64_t before = store_->last_index();
  const MutationResult r = Import("k", "gone", Foreign(3), clock_.NowUnixMillis() - 1);
  EXPECT_TRUE(r.status.ok());
  EXPECT_FALSE(r.applied);
  EXPECT_EQ(store_->last_index(), before);
  EXPECT_EQ(Get("k"), std::nullopt);
}

TEST_F(StoreImportTest, AnImportDeleteRemovesOnlyAnOlderVersion) {
  Open();
  ASSERT_TRUE(Import("k", "v", Foreign(5)).applied);
  EXPECT_FALSE(ImportDelete("k", Foreign(4)).applied);
  EXPECT_EQ(Get("k"), "v");
  EXPECT_TRUE(ImportDelete("k", Foreign(6)).applied);
  EXPECT_EQ(Get("k"), std::nullopt);
  EXPECT_FALSE(ImportDelete("absent", Foreign(7)).applied);
}

TEST_F(StoreImportTest, AWriteAfterAnImportGetsAHigherVersionOnceTheEpochIsAbove) {
  Open();
  ASSERT_TRUE(store_->StartEpoch(1001, "target").ok());
  ASSERT_TRUE(Import("k", "moved", Foreign(50)).applied);
  const MutationResult w = Set("k", "written here", 0, Foreign(50));
  ASSERT_TRUE(w.status.ok()) << w.status;
  EXPECT_GT(w.version, Foreign(50));
}

TEST_F(StoreImportTest, PublishedThroughCoversEveryDurableWrite) {
  Open(FsyncPolicy::kAlways);
  Set("a", "1");
  Set("b", "2");
  EXPECT_EQ(store_->published_through(), store_->last_index());
}

}  // namespace
}  // namespace kvstore
