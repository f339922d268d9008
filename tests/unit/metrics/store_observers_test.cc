// The store's observers that feed kvstore_wal_fsync_seconds and
// kvstore_snapshot_duration_seconds: one call per fsync of the log and per
// snapshot, with the duration measured on the store's clock.
#include <atomic>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/metrics/status_metrics.h"
#include "common/storage/store.h"
#include "gtest/gtest.h"
#include "tests/support/fake_clock.h"
#include "tests/support/fake_file_system.h"

namespace kvstore {
namespace {

class StoreObserversTest : public ::testing::Test {
 protected:
  std::unique_ptr<Store> Open(FsyncPolicy fsync) {
    StoreOptions o;
    o.dir = "/data/shard";
    o.fsync = fsync;
    o.fs = &fs_;
    o.clock = &clock_;
    o.background_maintenance = false;
    o.snapshot_every_writes = 0;
    o.snapshot_every_seconds = 0;
    o.on_fsync = [this](absl::Duration d) {
      ++fsyncs_;
      metrics_.fsync.ObserveDuration(d);
    };
    o.on_snapshot = [this](absl::Duration d) {
      ++snapshots_;
      metrics_.snapshot.ObserveDuration(d);
    };
    absl::StatusOr<std::unique_ptr<Store>> s = Store::Open(std::move(o));
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *std::move(s) : nullptr;
  }

  void Set(Store* store, const std::string& key) {
    Mutation m;
    m.key = key;
    m.value = "v";
    absl::Notification done;
    store->Write({m}, Durability::kDefault, [&](std::vector<MutationResult> r) {
      EXPECT_TRUE(r[0].status.ok()) << r[0].status;
      done.Notify();
    });
    done.WaitForNotification();
  }

  testing::FakeFileSystem fs_;
  testing::FakeClock clock_;
  StorageMetrics metrics_;
  std::atomic<int> fsyncs_{0};
  std::atomic<int> snapshots_{0};
};

TEST_F(StoreObserversTest, EachAcknowledgedWriteUnderAlwaysIsOneFsync) {
  std::unique_ptr<Store> store = Open(FsyncPolicy::kAlways);
  ASSERT_NE(store, nullptr);
  const int before = fsyncs_.load();  // Opening may sync the new segment.
  for (int i = 0; i < 3; ++i) Set(store.get(), absl::StrCat("k", i));
  // One at a time, each waits for its own fsync.
  EXPECT_EQ(fsyncs_.load() - before, 3);
  uint64_t observed = 0;
  for (uint64_t c : metrics_.fsync.Read().counts) observed += c;
  EXPECT_EQ(observed, static_cast<uint64_t>(fsyncs_.load()));
  EXPECT_TRUE(store->Close().ok());
}

TEST_F(StoreObserversTest, NoFsyncPolicyReportsNoneUntilClose) {
  std::unique_ptr<Store> store = Open(FsyncPolicy::kNo);
  ASSERT_NE(store, nullptr);
  const int before = fsyncs_.load();
  for (int i = 0; i < 3; ++i) Set(store.get(), absl::StrCat("k", i));
  EXPECT_EQ(fsyncs_.load(), before);
  EXPECT_TRUE(store->Close().ok());  // Close syncs what was written.
  EXPECT_EQ(fsyncs_.load(), before + 1);
}

TEST_F(StoreObserversTest, EachSnapshotIsReportedOnce) {
  std::unique_ptr<Store> store = Open(FsyncPolicy::kNo);
  ASSERT_NE(store, nullptr);
  Set(store.get(), "a");
  ASSERT_TRUE(store->TakeSnapshot().ok());
  Set(store.get(), "b");
  ASSERT_TRUE(store->TakeSnapshot().ok());
  EXPECT_EQ(snapshots_.load(), 2);
  EXPECT_EQ(metrics_.snapshot.Read().counts[0], 2u);  // The fake clock stood still: 0 s.
  EXPECT_TRUE(store->Close().ok());
}

}  // namespace
}  // namespace kvstore
