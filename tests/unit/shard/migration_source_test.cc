// The source side of resharding (services/node/migration_source.h) over a real
// Store on the fake file system: what Copy, CatchUp, Fence and Cleanup hand
// out, and that a batch carries a checksum the caller can verify.
#include "services/node/migration_source.h"

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/ring/hash_ring.h"
#include "common/ring/ring_diff.h"
#include "common/server/grpc_status.h"
#include "gtest/gtest.h"
#include "services/node/moved_keys.h"
#include "tests/support/fake_clock.h"
#include "tests/support/fake_file_system.h"

namespace kvstore {
namespace {

class MigrationSourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StoreOptions o;
    o.dir = "/data/s0";
    o.fs = &fs_;
    o.clock = &clock_;
    o.fsync = FsyncPolicy::kAlways;
    o.background_maintenance = false;
    o.segment_bytes = 4096;  // Many segments, so a snapshot can prune the log.
    o.snapshot_every_writes = 0;
    o.snapshot_every_seconds = 0;
    absl::StatusOr<std::unique_ptr<Store>> s = Store::Open(o);
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = *std::move(s);
    // s0 gives part of its ranges to s3 in the ring that adds it.
    before_ = std::make_unique<HashRing>(*HashRing::Build({"s0", "s1"}, 64));
    after_ = std::make_unique<HashRing>(*HashRing::Build({"s0", "s1", "s3"}, 64));
    for (const RingMove& m : DiffRings(*before_, *after_)) {
      if (m.from == "s0" && m.to == "s3") moving_ = m.ranges;
    }
    ASSERT_FALSE(moving_.empty());
    MigrationSourceHooks hooks;
    hooks.hold_and_run = [this](RangeSet ranges, int64_t until, const std::function<void()>& fn) {
      held_ = std::move(ranges);
      held_until_ = until;
      fn();
    };
    hooks.release = [this] { held_ = RangeSet(); };
    hooks.ring_version = [this] { return ring_version_; };
    hooks.owns = [this](absl::string_view key) {
      return (ring_version_ >= 2 ? *after_ : *before_).Owner(key) == "s0";
    };
    service_ = std::make_unique<MigrationSourceService>("s0", store_.get(), nullptr, hooks);
  }

  void Put(const std::string& key, const std::string& value) {
    Mutation m;
    m.key = key;
    m.value = value;
    Write({m});
  }
  void Del(const std::string& key) {
    Mutation m;
    m.kind = Mutation::Kind::kDelete;
    m.key = key;
    Write({m});
  }
  void Write(std::vector<Mutation> batch) {
    absl::Notification done;
    store_->Write(std::move(batch), Durability::kDefault,
                  [&](std::vector<MutationResult>) { done.Notify(); });
    done.WaitForNotification();
  }

  // Begin of migration "m1" of the moving ranges, which must succeed.
  void Begin(v1::MigrationBeginResponse* started) {
    v1::MigrationBeginRequest begin;
    begin.set_migration_id("m1");
    begin.set_shard("s0");
    RangesToProto(moving_, begin.mutable_ranges());
    ASSERT_TRUE(service_->ServeBegin(begin, started).ok());
  }

  // A CatchUp of migration "m1" of the moving ranges; the caller sets the position.
  v1::MigrationCatchUpRequest CatchUpRequest() const {
    v1::MigrationCatchUpRequest request;
    request.set_migration_id("m1");
    request.set_shard("s0");
    RangesToProto(moving_, request.mutable_ranges());
    return request;
  }

  // Keys of s0 (under the old ring), `n` of them, and which of them move.
  std::vector<std::string> OwnedKeys(int n) {
    std::vector<std::string> keys;
    for (int i = 0; static_cast<int>(keys.size()) < n; ++i) {
      std::string key = absl::StrCat("key-", i);
      if (before_->Owner(key) == "s0") keys.push_back(key);
    }
    return keys;
  }

  std::map<std::string, std::string> CopyAll(uint32_t max_bytes = 0) {
    std::map<std::string, std::string> out;
    std::string cursor;
    for (int calls = 0; calls < 10000; ++calls) {
      v1::MigrationCopyRequest request;
      request.set_migration_id("m1");
      request.set_shard("s0");
      RangesToProto(moving_, request.mutable_ranges());
      request.set_cursor(cursor);
      request.set_max_bytes(max_bytes);
      v1::MigrationCopyResponse response;
      absl::Status s = service_->ServeCopy(request, &response);
      EXPECT_TRUE(s.ok()) << s;
      EXPECT_EQ(response.checksum(), MovedKeysChecksum(response.keys()));
      for (const v1::MovedKey& k : response.keys()) {
        EXPECT_TRUE(out.emplace(k.key(), k.value()).second) << "copied twice: " << k.key();
      }
      if (response.done()) return out;
      cursor = response.next_cursor();
    }
    ADD_FAILURE() << "the copy never finished";
    return out;
  }

  testing::FakeFileSystem fs_;
  testing::FakeClock clock_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<HashRing> before_;
  std::unique_ptr<HashRing> after_;
  RangeSet moving_;
  RangeSet held_;
  int64_t held_until_ = 0;
  int64_t ring_version_ = 1;
  std::unique_ptr<MigrationSourceService> service_;
};

TEST_F(MigrationSourceTest, CopyHandsOutExactlyTheKeysInTheMovingRanges) {
  const std::vector<std::string> keys = OwnedKeys(2000);
  std::set<std::string> moving;
  for (const std::string& k : keys) {
    Put(k, "v-" + k);
    if (moving_.ContainsKey(k)) moving.insert(k);
  }
  ASSERT_GT(moving.size(), 100u);
  ASSERT_LT(moving.size(), keys.size());
  // Small pages, so the cursor is exercised.
  const std::map<std::string, std::string> copied = CopyAll(/*max_bytes=*/2000);
  std::set<std::string> got;
  for (const auto& [k, v] : copied) {
    got.insert(k);
    EXPECT_EQ(v, "v-" + k);
  }
  EXPECT_EQ(got, moving);
}

TEST_F(MigrationSourceTest, CatchUpReturnsTheMovingRangesWritesAfterTheStartInOrder) {
  const std::vector<std::string> keys = OwnedKeys(300);
  for (const std::string& k : keys) Put(k, "old");
  v1::MigrationBeginResponse started;
  ASSERT_NO_FATAL_FAILURE(Begin(&started));
  EXPECT_EQ(started.start_index(), store_->last_index());
  // After the start: a put and a delete of each key.
  for (const std::string& k : keys) Put(k, "new");
  for (const std::string& k : keys) Del(k);

  std::vector<v1::MovedKey> seen;
  uint64_t from = started.start_index() + 1;
  uint64_t after_epoch = started.start_epoch();
  for (int calls = 0; calls < 1000; ++calls) {
    v1::MigrationCatchUpRequest request = CatchUpRequest();
    request.set_from_index(from);
    request.set_after_epoch(after_epoch);
    request.set_max_bytes(500);
    v1::MigrationCatchUpResponse response;
    absl::Status s = service_->ServeCatchUp(request, &response);
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_EQ(response.checksum(), MovedKeysChecksum(response.keys()));
    for (const v1::MovedKey& k : response.keys()) seen.push_back(k);
    if (response.next_index() == from) break;  // Nothing more.
    from = response.next_index();
    after_epoch = response.last_epoch();
  }
  size_t moving = 0;
  for (const std::string& k : keys) moving += moving_.ContainsKey(k) ? 1 : 0;
  ASSERT_EQ(seen.size(), 2 * moving);
  uint64_t last_index = 0;
  for (size_t i = 0; i < seen.size(); ++i) {
    EXPECT_TRUE(moving_.ContainsKey(seen[i].key()));
    EXPECT_GT(seen[i].index(), last_index);
    last_index = seen[i].index();
    EXPECT_EQ(seen[i].deleted(), i >= moving) << i;
  }
}

TEST_F(MigrationSourceTest, CatchUpFromAnIndexTheLogNoLongerHoldsSaysLogGone) {
  const std::vector<std::string> keys = OwnedKeys(50);
  for (const std::string& k : keys) Put(k, "v");
  // Everything covered by a snapshot and pruned: index 1 is gone.
  ASSERT_TRUE(store_->TakeSnapshot().ok());
  for (int i = 0; i < 3; ++i) {
    for (const std::string& k : keys) Put(k, std::string(2000, 'x'));
    ASSERT_TRUE(store_->TakeSnapshot().ok());
  }
  v1::MigrationCatchUpRequest request = CatchUpRequest();
  request.set_from_index(1);
  v1::MigrationCatchUpResponse response;
  absl::Status s = service_->ServeCatchUp(request, &response);
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  std::optional<ErrorInfo> info = ErrorInfoOf(s);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->reason, kMigrationLogGone);
  request.set_from_index(20);
  request.set_after_epoch(store_->last_epoch());
  EXPECT_TRUE(absl::IsFailedPrecondition(service_->ServeCatchUp(request, &response)));
  // From the end of the log: nothing yet, not an error.
  request.set_from_index(store_->last_index() + 1);
  EXPECT_TRUE(service_->ServeCatchUp(request, &response).ok());
  EXPECT_EQ(response.keys_size(), 0);
}

TEST_F(MigrationSourceTest, BeginKeepsTheLogACatchUpNeedsAcrossSnapshots) {
  const std::vector<std::string> keys = OwnedKeys(50);
  for (const std::string& k : keys) Put(k, "v");
  v1::MigrationBeginResponse started;
  ASSERT_NO_FATAL_FAILURE(Begin(&started));
  for (int i = 0; i < 3; ++i) {
    for (const std::string& k : keys) Put(k, std::string(2000, 'x'));
    ASSERT_TRUE(store_->TakeSnapshot().ok());
  }
  v1::MigrationCatchUpRequest request = CatchUpRequest();
  request.set_from_index(started.start_index() + 1);
  request.set_after_epoch(started.start_epoch());
  v1::MigrationCatchUpResponse response;
  absl::Status s = service_->ServeCatchUp(request, &response);
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_GT(response.keys_size(), 0);
}

TEST_F(MigrationSourceTest, CatchUpAfterARecordOfAnotherEpochSaysLogGone) {
  const std::vector<std::string> keys = OwnedKeys(20);
  for (const std::string& k : keys) Put(k, "v");
  v1::MigrationBeginResponse started;
  ASSERT_NO_FATAL_FAILURE(Begin(&started));
  ASSERT_GT(started.start_epoch(), 0u);
  v1::MigrationCatchUpRequest request = CatchUpRequest();
  request.set_from_index(started.start_index() + 1);
  request.set_after_epoch(started.start_epoch());
  v1::MigrationCatchUpResponse response;
  EXPECT_TRUE(service_->ServeCatchUp(request, &response).ok());
  // What a caller that applied a record this log does not hold would send
  // (its source failed over and lost that record).
  request.set_migration_id("m2");
  request.set_after_epoch(started.start_epoch() + 7);
  absl::Status s = service_->ServeCatchUp(request, &response);
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  std::optional<ErrorInfo> info = ErrorInfoOf(s);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->reason, kMigrationLogGone);
  // Past the end of this log: the same.
  request.set_from_index(store_->last_index() + 5);
  request.set_after_epoch(started.start_epoch());
  s = service_->ServeCatchUp(request, &response);
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
}

TEST_F(MigrationSourceTest, FenceHoldsTheRangesAndReturnsTheLastAdmittedIndex) {
  for (const std::string& k : OwnedKeys(20)) Put(k, "v");
  v1::MigrationFenceRequest request;
  request.set_migration_id("m1");
  request.set_shard("s0");
  RangesToProto(moving_, request.mutable_ranges());
  request.set_to_ring_version(2);
  v1::MigrationFenceResponse response;
  ASSERT_TRUE(service_->ServeFence(request, &response).ok());
  EXPECT_EQ(response.fence_index(), store_->last_index());
  EXPECT_EQ(held_.ranges(), moving_.ranges());
  EXPECT_EQ(held_until_, 2);
}

TEST_F(MigrationSourceTest, CleanupWaitsForTheNewRingThenDeletesOnlyWhatMoved) {
  const std::vector<std::string> keys = OwnedKeys(500);
  for (const std::string& k : keys) Put(k, "v");
  v1::MigrationCleanupRequest request;
  request.set_migration_id("m1");
  request.set_shard("s0");
  request.set_ring_version(2);
  absl::Status first;
  v1::MigrationCleanupResponse response;
  service_->ServeCleanup(request, &response, [&](absl::Status s) { first = s; });
  EXPECT_TRUE(absl::IsUnavailable(first)) << "cleaned up before the ring moved: " << first;

  ring_version_ = 2;
  uint64_t deleted = 0;
  std::string cursor;
  for (int calls = 0; calls < 1000; ++calls) {
    request.set_cursor(cursor);
    request.set_limit(100);
    v1::MigrationCleanupResponse page;
    absl::Notification done;
    absl::Status s;
    service_->ServeCleanup(request, &page, [&](absl::Status r) {
      s = r;
      done.Notify();
    });
    done.WaitForNotification();
    ASSERT_TRUE(s.ok()) << s;
    deleted += page.deleted();
    if (page.done()) break;
    cursor = page.next_cursor();
  }
  size_t moving = 0;
  for (const std::string& k : keys) {
    std::string value;
    uint64_t version = 0;
    const bool present = store_->Get(k, &value, &version);
    EXPECT_EQ(present, !moving_.ContainsKey(k)) << k;
    moving += moving_.ContainsKey(k) ? 1 : 0;
  }
  EXPECT_EQ(deleted, moving);
}

// A replica of s0 as ReplicationHooks: it takes no write, and answers reads
// only when `readable`.
class FakeReplica : public ReplicationHooks {
 public:
  absl::Status CheckWritable(std::string* leader) override {
    *leader = "127.0.0.1:1";
    return absl::FailedPreconditionError("not the leader");
  }
  absl::Status CheckReadable(bool leader_read, std::string* leader) override {
    if (leader_read) return CheckWritable(leader);
    return readable ? absl::OkStatus() : absl::UnavailableError("catching up with its leader");
  }
  int DefaultSyncAcks() override { return 0; }
  int FollowerCount() override { return 0; }
  void AwaitReplicas(uint64_t, int, std::function<void(const absl::Status&)> done) override {
    done(absl::OkStatus());
  }
  void FillStatus(v1::StatusResponse*) override {}
  absl::StatusOr<PromoteResult> Promote(uint64_t, std::vector<std::string>, bool) override {
    return absl::UnimplementedError("fake");
  }
  bool readable = true;
};

TEST_F(MigrationSourceTest, AReplicaServesCopyPagesOnlyWhenItHoldsTheCopysStart) {
  for (const std::string& key : OwnedKeys(50)) Put(key, "v");
  const uint64_t applied = store_->published_through();
  FakeReplica replica;
  MigrationSourceService on_replica("s0", store_.get(), &replica, MigrationSourceHooks());
  const auto copy = [&](const std::string& shard, uint64_t min_index,
                        v1::MigrationCopyResponse* response) {
    v1::MigrationCopyRequest request;
    request.set_migration_id("m1");
    request.set_shard(shard);
    RangesToProto(moving_, request.mutable_ranges());
    request.set_min_index(min_index);
    return on_replica.ServeCopy(request, response);
  };
  v1::MigrationCopyResponse response;
  // Without min_index a copy is the leader's, as before.
  EXPECT_TRUE(absl::IsFailedPrecondition(copy("s0", 0, &response)));
  // Behind the copy's start: the caller asks the leader instead.
  absl::Status behind = copy("s0", applied + 1, &response);
  EXPECT_TRUE(absl::IsFailedPrecondition(behind)) << behind;
  // Not caught up with its leader.
  replica.readable = false;
  EXPECT_TRUE(absl::IsUnavailable(copy("s0", applied, &response)));
  replica.readable = true;
  // Another shard's copy.
  EXPECT_TRUE(absl::IsFailedPrecondition(copy("s1", applied, &response)));
  EXPECT_EQ(on_replica.copy_pages_served(), 0u);

  absl::Status served = copy("s0", applied, &response);
  ASSERT_TRUE(served.ok()) << served;
  EXPECT_TRUE(response.done());
  EXPECT_GT(response.keys_size(), 0);
  EXPECT_EQ(response.checksum(), MovedKeysChecksum(response.keys()));
  EXPECT_EQ(on_replica.copy_pages_served(), 1u);
  // Everything else stays on the leader.
  v1::MigrationBeginRequest begin;
  begin.set_migration_id("m1");
  begin.set_shard("s0");
  RangesToProto(moving_, begin.mutable_ranges());
  v1::MigrationBeginResponse started;
  EXPECT_TRUE(absl::IsFailedPrecondition(on_replica.ServeBegin(begin, &started)));
  v1::MigrationCatchUpRequest catch_up = CatchUpRequest();
  catch_up.set_from_index(applied);
  v1::MigrationCatchUpResponse caught;
  EXPECT_TRUE(absl::IsFailedPrecondition(on_replica.ServeCatchUp(catch_up, &caught)));
}

TEST_F(MigrationSourceTest, ANodeOfAnotherShardRefuses) {
  v1::MigrationCopyRequest request;
  request.set_migration_id("m1");
  request.set_shard("s1");
  v1::MigrationCopyResponse response;
  EXPECT_TRUE(absl::IsFailedPrecondition(service_->ServeCopy(request, &response)));
}

}  // namespace
}  // namespace kvstore
