// The coordination library (common/coord) against a real etcd 3.4 on
// 127.0.0.1, one etcd per test (tests/support/etcd_process.h). Leases use
// etcd's smallest TTL, 2 s, so the whole file runs in well under a minute.
// Waits poll with a deadline; the deadlines are generous because the machine
// is shared, while the bounds asserted are the ones the contracts state.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/coord/etcd_client.h"
#include "common/coord/leader_key.h"
#include "common/coord/lease.h"
#include "common/coord/monotonic_clock.h"
#include "common/coord/topology_view.h"
#include "common/coord/txn.h"
#include "gtest/gtest.h"
#include "tests/support/etcd_process.h"
#include "tests/support/poll.h"

namespace kvstore::coord {
namespace {

using ::kvstore::testing::EtcdProcess;
using ::kvstore::testing::PollUntil;

constexpr absl::Duration kTtl = absl::Seconds(2);
constexpr int64_t kEpochBase = 1000;

#define ASSERT_OK(expr)                          \
  do {                                           \
    const absl::Status _s = (expr);              \
    ASSERT_TRUE(_s.ok()) << #expr << ": " << _s; \
  } while (0)

int64_t ToNanos(absl::Duration d) { return absl::ToInt64Nanoseconds(d); }
std::string Millis(int64_t ns) { return absl::StrFormat("%.0f ms", ns / 1e6); }

// What a lease's on_lost callback saw: how often, why, and when.
class LostRecorder {
 public:
  std::function<void(const absl::Status&)> Callback() {
    return [this](const absl::Status& why) {
      absl::MutexLock lock(&mu_);
      ++count_;
      why_ = why;
      at_ns_ = SteadyNanos();
    };
  }
  int count() const {
    absl::MutexLock lock(&mu_);
    return count_;
  }
  absl::Status why() const {
    absl::MutexLock lock(&mu_);
    return why_;
  }
  int64_t at_ns() const {
    absl::MutexLock lock(&mu_);
    return at_ns_;
  }

 private:
  mutable absl::Mutex mu_;
  int count_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status why_ ABSL_GUARDED_BY(mu_);
  int64_t at_ns_ ABSL_GUARDED_BY(mu_) = 0;
};

// Every snapshot a TopologyView delivered, in delivery order.
class SnapshotLog {
 public:
  std::function<void(std::shared_ptr<const TopologySnapshot>)> Callback() {
    return [this](std::shared_ptr<const TopologySnapshot> s) {
      absl::MutexLock lock(&mu_);
      snapshots_.push_back(std::move(s));
    };
  }
  // "" when the revisions strictly increase, else the first offence.
  std::string RevisionOrderViolation() const {
    absl::MutexLock lock(&mu_);
    for (size_t i = 1; i < snapshots_.size(); ++i) {
      if (snapshots_[i]->revision <= snapshots_[i - 1]->revision) {
        return absl::StrCat("snapshot ", i, " has revision ", snapshots_[i]->revision, " after ",
                            snapshots_[i - 1]->revision);
      }
    }
    return "";
  }
  size_t size() const {
    absl::MutexLock lock(&mu_);
    return snapshots_.size();
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<std::shared_ptr<const TopologySnapshot>> snapshots_ ABSL_GUARDED_BY(mu_);
};

std::string Describe(const std::map<std::string, std::string>& m) {
  std::string out = "{";
  for (const auto& [k, v] : m) absl::StrAppend(&out, k, "=", v, " ");
  return out + "}";
}

class CoordTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Progress notifications every second instead of etcd's 10 minutes.
    ASSERT_OK(etcd_.Start({"--experimental-watch-progress-notify-interval=1s"}));
    client_ = NewClient(etcd_.endpoint());
    ASSERT_NE(client_, nullptr);
  }

  static std::unique_ptr<EtcdClient> NewClient(const std::string& endpoints) {
    EtcdClientOptions options;
    options.endpoints = endpoints;
    absl::StatusOr<std::unique_ptr<EtcdClient>> client = EtcdClient::Create(options);
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? std::move(*client) : nullptr;
  }

  std::unique_ptr<Lease> Grant(EtcdClient* client, LostRecorder* lost) {
    LeaseOptions options;
    options.ttl = kTtl;
    if (lost != nullptr) options.on_lost = lost->Callback();
    absl::StatusOr<std::unique_ptr<Lease>> lease = Lease::Grant(client, std::move(options));
    EXPECT_TRUE(lease.ok()) << lease.status();
    return lease.ok() ? std::move(*lease) : nullptr;
  }

  // Whether `key` exists, per a linearizable read.
  bool KeyExists(const std::string& key) {
    absl::StatusOr<RangeResult> r = client_->Range(key);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() && !r->kvs.empty();
  }

  // Polls until at least one keepalive has been answered (valid_until moved
  // past what the grant gave).
  static bool AwaitAnsweredKeepAlive(const Lease& lease) {
    const int64_t granted = lease.valid_until();
    return PollUntil([&] { return lease.valid_until() > granted; }, absl::Seconds(10));
  }

  EtcdProcess etcd_;
  std::unique_ptr<EtcdClient> client_;
};

// ------------------------------------------------------------------ client

TEST(EtcdClientOptionsTest, CreateRefusesABadEndpointList) {
  for (const char* endpoints :
       {"", " , ", "localhost", "127.0.0.1:0", "127.0.0.1:x", "https://127.0.0.1:2379"}) {
    EtcdClientOptions options;
    options.endpoints = endpoints;
    absl::StatusOr<std::unique_ptr<EtcdClient>> client = EtcdClient::Create(options);
    EXPECT_EQ(client.status().code(), absl::StatusCode::kInvalidArgument) << endpoints;
  }
}

TEST_F(CoordTest, ClientMovesToTheNextEndpointWhenOneIsDown) {
  const int dead_port = ::kvstore::testing::PickFreePort();
  ASSERT_NE(dead_port, 0);
  std::unique_ptr<EtcdClient> client =
      NewClient(absl::StrCat("127.0.0.1:", dead_port, ",", etcd_.endpoint()));
  ASSERT_NE(client, nullptr);
  absl::StatusOr<int64_t> revision = client->Put("/client/k", "v");
  ASSERT_TRUE(revision.ok()) << revision.status();
  EXPECT_EQ(client->CurrentEndpoint(), etcd_.endpoint());
  absl::StatusOr<RangeResult> read = client->Range("/client/k");
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->kvs.size(), 1u);
  EXPECT_EQ(read->kvs[0].mod_revision(), *revision);
}

// ------------------------------------------------------------------ lease

TEST(LeaseOptionsTest, TtlBelowTwoSecondsIsRefused) {
  EtcdClientOptions client_options;
  client_options.endpoints = "127.0.0.1:1";  // Never called: the TTL is refused first.
  absl::StatusOr<std::unique_ptr<EtcdClient>> client = EtcdClient::Create(client_options);
  ASSERT_TRUE(client.ok()) << client.status();
  for (absl::Duration ttl : {absl::Seconds(1), absl::Milliseconds(1999), absl::ZeroDuration()}) {
    LeaseOptions options;
    options.ttl = ttl;
    absl::StatusOr<std::unique_ptr<Lease>> lease = Lease::Grant(client->get(), options);
    EXPECT_EQ(lease.status().code(), absl::StatusCode::kInvalidArgument)
        << absl::FormatDuration(ttl);
    EXPECT_TRUE(absl::StrContains(lease.status().message(), "minimum of 2s")) << lease.status();
  }
}

TEST_F(CoordTest, LeaseIsKeptAliveForThreeTtls) {
  LostRecorder lost;
  std::unique_ptr<Lease> lease = Grant(client_.get(), &lost);
  ASSERT_NE(lease, nullptr);
  ASSERT_TRUE(client_->Put("/lease/kept", "v", lease->id()).ok());

  // Observed over three TTLs, sampled every 250 ms: the sampling period of a
  // property over a fixed duration, not a synchronisation.
  const int64_t start = SteadyNanos();
  int samples = 0;
  while (SteadyNanos() - start < ToNanos(3 * kTtl)) {
    EXPECT_TRUE(lease->Valid()) << "at " << Millis(SteadyNanos() - start);
    absl::StatusOr<int64_t> left = client_->LeaseTimeToLive(lease->id());
    ASSERT_TRUE(left.ok()) << left.status();
    EXPECT_GT(*left, 0) << "etcd's TTL left at " << Millis(SteadyNanos() - start);
    ++samples;
    absl::SleepFor(absl::Milliseconds(250));
  }
  EXPECT_GE(samples, 12);
  EXPECT_EQ(lost.count(), 0) << lost.why();
  EXPECT_TRUE(KeyExists("/lease/kept"));
  EXPECT_GT(lease->valid_until(), SteadyNanos());
}

TEST_F(CoordTest, LeaseExpiryIsDetectedWithinTtlPlusOneSecondOfTheLastKeepAlive) {
  LostRecorder lost;
  std::unique_ptr<Lease> lease = Grant(client_.get(), &lost);
  ASSERT_NE(lease, nullptr);
  ASSERT_TRUE(AwaitAnsweredKeepAlive(*lease));

  const int64_t paused_at = SteadyNanos();
  lease->PauseKeepAlivesForTesting(true);
  ASSERT_TRUE(PollUntil([&] { return lost.count() > 0; }, absl::Seconds(10)));
  const int64_t took = lost.at_ns() - paused_at;
  EXPECT_LE(took, ToNanos(kTtl + absl::Seconds(1))) << Millis(took);
  EXPECT_EQ(lost.why().code(), absl::StatusCode::kUnavailable) << lost.why();
  EXPECT_FALSE(lease->Valid());
  EXPECT_TRUE(lease->lost());
  // Once, even after etcd has expired the lease too.
  ASSERT_TRUE(PollUntil(
      [&] {
        absl::StatusOr<int64_t> left = client_->LeaseTimeToLive(lease->id());
        return left.ok() && *left < 0;
      },
      absl::Seconds(10)));
  EXPECT_EQ(lost.count(), 1);
}

TEST_F(CoordTest, LostFiresBeforeEtcdDeletesTheKey) {
  // The callback reads the key on a client of its own: if it is still there,
  // "lost" came first.
  std::unique_ptr<EtcdClient> reader = NewClient(etcd_.endpoint());
  ASSERT_NE(reader, nullptr);
  absl::Mutex mu;
  std::optional<bool> present_at_lost;
  LeaseOptions options;
  options.ttl = kTtl;
  options.on_lost = [&](const absl::Status&) {
    absl::StatusOr<RangeResult> r = reader->Range("/lease/ordered");
    absl::MutexLock lock(&mu);
    present_at_lost = r.ok() && !r->kvs.empty();
  };
  absl::StatusOr<std::unique_ptr<Lease>> lease = Lease::Grant(client_.get(), options);
  ASSERT_TRUE(lease.ok()) << lease.status();
  ASSERT_TRUE(client_->Put("/lease/ordered", "v", (*lease)->id()).ok());
  ASSERT_TRUE(AwaitAnsweredKeepAlive(**lease));

  (*lease)->PauseKeepAlivesForTesting(true);
  ASSERT_TRUE(PollUntil(
      [&] {
        absl::MutexLock lock(&mu);
        return present_at_lost.has_value();
      },
      absl::Seconds(10)));
  {
    absl::MutexLock lock(&mu);
    EXPECT_TRUE(*present_at_lost) << "etcd deleted the key before the holder learnt it lost it";
  }
  // And etcd does delete it afterwards.
  EXPECT_TRUE(PollUntil([&] { return !KeyExists("/lease/ordered"); }, absl::Seconds(10)));
}

TEST_F(CoordTest, LeaseIsLostWithinTtlPlusOneSecondWhenEtcdStops) {
  LostRecorder lost;
  std::unique_ptr<Lease> lease = Grant(client_.get(), &lost);
  ASSERT_NE(lease, nullptr);
  ASSERT_TRUE(AwaitAnsweredKeepAlive(*lease));

  const int64_t stopping_at = SteadyNanos();
  ASSERT_OK(etcd_.Stop());
  ASSERT_TRUE(PollUntil([&] { return lost.count() > 0; }, absl::Seconds(10)));
  const int64_t took = lost.at_ns() - stopping_at;
  EXPECT_LE(took, ToNanos(kTtl + absl::Seconds(1))) << Millis(took);
  EXPECT_EQ(lost.why().code(), absl::StatusCode::kUnavailable) << lost.why();
  EXPECT_EQ(lost.count(), 1);
}

TEST_F(CoordTest, RevokeReportsLostOnceThenDeletesTheKeys) {
  LostRecorder lost;
  std::unique_ptr<Lease> lease = Grant(client_.get(), &lost);
  ASSERT_NE(lease, nullptr);
  ASSERT_TRUE(client_->Put("/lease/revoked", "v", lease->id()).ok());
  ASSERT_OK(lease->Revoke());
  EXPECT_EQ(lost.count(), 1);
  EXPECT_EQ(lost.why().code(), absl::StatusCode::kCancelled) << lost.why();
  EXPECT_FALSE(lease->Valid());
  EXPECT_FALSE(KeyExists("/lease/revoked"));
}

// ------------------------------------------------------------------ leader key

TEST_F(CoordTest, TwoContendersGetExactlyOneLeader) {
  std::unique_ptr<EtcdClient> client_b = NewClient(etcd_.endpoint());
  ASSERT_NE(client_b, nullptr);
  std::unique_ptr<Lease> lease_a = Grant(client_.get(), nullptr);
  std::unique_ptr<Lease> lease_b = Grant(client_b.get(), nullptr);
  ASSERT_NE(lease_a, nullptr);
  ASSERT_NE(lease_b, nullptr);
  LeaderKey key_a(client_.get(), "/cluster/shards/s1/leader", kEpochBase);
  LeaderKey key_b(client_b.get(), "/cluster/shards/s1/leader", kEpochBase);

  absl::Notification go;
  absl::StatusOr<CampaignResult> result_a, result_b;
  std::thread a([&] {
    go.WaitForNotification();
    result_a = key_a.Campaign(lease_a->id(), "node-a", "127.0.0.1:1001");
  });
  std::thread b([&] {
    go.WaitForNotification();
    result_b = key_b.Campaign(lease_b->id(), "node-b", "127.0.0.1:1002");
  });
  go.Notify();
  a.join();
  b.join();
  ASSERT_TRUE(result_a.ok()) << result_a.status();
  ASSERT_TRUE(result_b.ok()) << result_b.status();
  ASSERT_NE(result_a->won, result_b->won) << "exactly one contender must win";

  const CampaignResult& winner = result_a->won ? *result_a : *result_b;
  const CampaignResult& loser = result_a->won ? *result_b : *result_a;
  EXPECT_EQ(winner.leadership.epoch, kEpochBase + winner.leadership.create_revision);
  EXPECT_GT(winner.leadership.epoch, kEpochBase);
  ASSERT_TRUE(loser.holder.has_value());
  EXPECT_EQ(loser.holder->id, winner.leadership.id);
  EXPECT_EQ(loser.holder->epoch, winner.leadership.epoch);

  absl::StatusOr<std::optional<LeaderRecord>> holder = key_a.Holder();
  ASSERT_TRUE(holder.ok()) << holder.status();
  ASSERT_TRUE(holder->has_value());
  EXPECT_EQ((*holder)->id, winner.leadership.id);
  EXPECT_EQ((*holder)->epoch, winner.leadership.epoch);
  EXPECT_EQ((*holder)->lease_id, winner.leadership.lease_id);
  // The value carries the epoch too, for people reading etcd.
  absl::StatusOr<RangeResult> raw = client_->Range("/cluster/shards/s1/leader");
  ASSERT_TRUE(raw.ok() && raw->kvs.size() == 1);
  EXPECT_EQ(raw->kvs[0].value(),
            LeaderValue(winner.leadership.id, winner.leadership.addr, winner.leadership.epoch));
}

TEST_F(CoordTest, TwentyElectionsGiveStrictlyIncreasingEpochs) {
  std::unique_ptr<EtcdClient> client_b = NewClient(etcd_.endpoint());
  ASSERT_NE(client_b, nullptr);
  std::unique_ptr<Lease> leases[2] = {Grant(client_.get(), nullptr),
                                      Grant(client_b.get(), nullptr)};
  ASSERT_NE(leases[0], nullptr);
  ASSERT_NE(leases[1], nullptr);
  LeaderKey keys[2] = {LeaderKey(client_.get(), "/cluster/shards/s1/leader", kEpochBase),
                       LeaderKey(client_b.get(), "/cluster/shards/s1/leader", kEpochBase)};
  // Another shard's key on the same etcd: epochs are cluster-wide.
  LeaderKey other_shard(client_.get(), "/cluster/shards/s2/leader", kEpochBase);

  int64_t last_epoch = 0;
  for (int i = 0; i < 20; ++i) {
    const int me = i % 2;
    const std::string id = absl::StrCat("node-", me);
    absl::StatusOr<CampaignResult> won = keys[me].Campaign(leases[me]->id(), id, "127.0.0.1:1");
    ASSERT_TRUE(won.ok()) << won.status();
    ASSERT_TRUE(won->won) << "election " << i;
    EXPECT_GT(won->leadership.epoch, last_epoch) << "election " << i;
    last_epoch = won->leadership.epoch;

    absl::StatusOr<CampaignResult> rival =
        keys[1 - me].Campaign(leases[1 - me]->id(), "rival", "127.0.0.1:2");
    ASSERT_TRUE(rival.ok()) << rival.status();
    EXPECT_FALSE(rival->won);
    ASSERT_TRUE(rival->holder.has_value());
    EXPECT_EQ(rival->holder->epoch, last_epoch);

    if (i % 5 == 0) {  // Now and then the other shard elects in between.
      absl::StatusOr<CampaignResult> s2 = other_shard.Campaign(leases[0]->id(), "x", "y");
      ASSERT_TRUE(s2.ok() && s2->won);
      EXPECT_GT(s2->leadership.epoch, last_epoch);
      last_epoch = s2->leadership.epoch;
      ASSERT_OK(other_shard.Resign(s2->leadership));
    }
    ASSERT_OK(keys[me].Resign(won->leadership));
    absl::StatusOr<std::optional<LeaderRecord>> holder = keys[me].Holder();
    ASSERT_TRUE(holder.ok()) << holder.status();
    EXPECT_FALSE(holder->has_value()) << "after resigning election " << i;
  }
}

TEST_F(CoordTest, ADeposedHoldersGuardedTxnFails) {
  std::unique_ptr<EtcdClient> client_b = NewClient(etcd_.endpoint());
  ASSERT_NE(client_b, nullptr);
  LostRecorder lost_a;
  std::unique_ptr<Lease> lease_a = Grant(client_.get(), &lost_a);
  std::unique_ptr<Lease> lease_b = Grant(client_b.get(), nullptr);
  ASSERT_NE(lease_a, nullptr);
  ASSERT_NE(lease_b, nullptr);
  const std::string kKey = "/cluster/shards/s1/leader";
  LeaderKey key_a(client_.get(), kKey, kEpochBase);
  LeaderKey key_b(client_b.get(), kKey, kEpochBase);

  absl::StatusOr<CampaignResult> a = key_a.Campaign(lease_a->id(), "node-a", "127.0.0.1:1001");
  ASSERT_TRUE(a.ok() && a->won) << a.status();
  absl::StatusOr<etcdserverpb::TxnResponse> write =
      key_a.GuardedTxn(a->leadership, {}, {PutOp("/cluster/shards/s1/isr", "a1")});
  ASSERT_TRUE(write.ok()) << write.status();
  EXPECT_TRUE(write->succeeded());

  // A stops renewing (as if paused or cut off); etcd expires its lease and B
  // takes over.
  lease_a->PauseKeepAlivesForTesting(true);
  ASSERT_TRUE(PollUntil([&] { return lost_a.count() > 0; }, absl::Seconds(10)));
  absl::StatusOr<CampaignResult> b;
  ASSERT_TRUE(PollUntil(
      [&] {
        b = key_b.Campaign(lease_b->id(), "node-b", "127.0.0.1:1002");
        if (!b.ok() || !b->won) absl::SleepFor(absl::Milliseconds(50));
        return b.ok() && b->won;
      },
      absl::Seconds(10)));
  EXPECT_GT(b->leadership.epoch, a->leadership.epoch);

  // A, not yet knowing (or ignoring that) it was deposed, writes: refused.
  write = key_a.GuardedTxn(a->leadership, {}, {PutOp("/cluster/shards/s1/isr", "a2")});
  EXPECT_EQ(write.status().code(), absl::StatusCode::kFailedPrecondition) << write.status();
  EXPECT_TRUE(absl::StrContains(write.status().message(), "node-b")) << write.status();
  absl::StatusOr<RangeResult> isr = client_->Range("/cluster/shards/s1/isr");
  ASSERT_TRUE(isr.ok() && isr->kvs.size() == 1);
  EXPECT_EQ(isr->kvs[0].value(), "a1");

  // Its resignation does not remove the new holder.
  ASSERT_OK(key_a.Resign(a->leadership));
  absl::StatusOr<std::optional<LeaderRecord>> holder = key_b.Holder();
  ASSERT_TRUE(holder.ok() && holder->has_value());
  EXPECT_EQ((*holder)->id, "node-b");
}

TEST_F(CoordTest, GuardedTxnOfTheHolderReportsItsOwnFailedCompare) {
  std::unique_ptr<Lease> lease = Grant(client_.get(), nullptr);
  ASSERT_NE(lease, nullptr);
  LeaderKey key(client_.get(), "/cluster/shards/s1/leader", kEpochBase);
  absl::StatusOr<CampaignResult> won = key.Campaign(lease->id(), "node-a", "a");
  ASSERT_TRUE(won.ok() && won->won);
  absl::StatusOr<etcdserverpb::TxnResponse> txn =
      key.GuardedTxn(won->leadership, {ValueIs("/cluster/x", "nope")}, {PutOp("/cluster/x", "1")});
  ASSERT_TRUE(txn.ok()) << txn.status();
  EXPECT_FALSE(txn->succeeded());
  EXPECT_EQ(txn->responses_size(), 0);
  EXPECT_FALSE(KeyExists("/cluster/x"));
}

TEST_F(CoordTest, CampaignAgainWithTheSameLeaseKeepsTheSameEpoch) {
  std::unique_ptr<Lease> lease = Grant(client_.get(), nullptr);
  ASSERT_NE(lease, nullptr);
  LeaderKey key(client_.get(), "/cluster/shards/s1/leader", kEpochBase);
  absl::StatusOr<CampaignResult> first = key.Campaign(lease->id(), "node-a", "a");
  ASSERT_TRUE(first.ok() && first->won);
  absl::StatusOr<CampaignResult> again = key.Campaign(lease->id(), "node-a", "a");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->won);
  EXPECT_EQ(again->leadership.epoch, first->leadership.epoch);
  EXPECT_EQ(again->leadership.create_revision, first->leadership.create_revision);
}

// ------------------------------------------------------------------ topology view

class TopologyViewTest : public CoordTest {
 protected:
  static constexpr char kPrefix[] = "/kvstore/test/";

  void StartView() {
    TopologyViewOptions options;
    options.prefix = kPrefix;
    options.on_snapshot = log_.Callback();
    options.retry_delay = absl::Milliseconds(100);
    view_ = std::make_unique<TopologyView>(client_.get(), options);
    view_->Start();
    ASSERT_TRUE(PollUntil([&] { return view_->watching(); }, absl::Seconds(10)));
  }

  // Writes under the prefix and keeps `expected_` up to date.
  void Put(const std::string& key, const std::string& value) {
    absl::StatusOr<int64_t> r = client_->Put(absl::StrCat(kPrefix, key), value);
    ASSERT_TRUE(r.ok()) << r.status();
    expected_[key] = value;
    last_revision_ = *r;
  }
  void Delete(const std::string& key) {
    absl::StatusOr<int64_t> r = client_->DeleteRange(absl::StrCat(kPrefix, key));
    ASSERT_TRUE(r.ok()) << r.status();
    expected_.erase(key);
  }

  // Polls until the view's snapshot is exactly `expected_`.
  void ExpectViewConverges() {
    std::shared_ptr<const TopologySnapshot> seen;
    const bool same = PollUntil(
        [&] {
          seen = view_->Current();
          return seen != nullptr && *seen->entries == expected_;
        },
        absl::Seconds(15));
    EXPECT_TRUE(same) << "view " << (seen ? Describe(*seen->entries) : "none") << "\nexpected "
                      << Describe(expected_);
    EXPECT_EQ(log_.RevisionOrderViolation(), "");
  }

  // Stops the view before the fixture's client and etcd go.
  void TearDown() override {
    if (view_ != nullptr) view_->Stop();
  }

  SnapshotLog log_;
  std::unique_ptr<TopologyView> view_;
  std::map<std::string, std::string> expected_;
  int64_t last_revision_ = 0;
};

TEST_F(TopologyViewTest, SeesEveryChangeInRevisionOrder) {
  Put("cluster", "{format:1}");
  ASSERT_TRUE(client_->Put("/kvstore/testing-other", "not ours").ok());  // Outside the prefix.
  StartView();
  ExpectViewConverges();
  Put("shards/s1/leader", "a");
  Put("shards/s2/leader", "b");
  Delete("cluster");
  Put("shards/s1/leader", "c");
  ExpectViewConverges();
  EXPECT_EQ(view_->Current()->revision, last_revision_);
  EXPECT_EQ(view_->counters().reads, 1);
}

TEST_F(TopologyViewTest, LosesNoEventAcrossACompaction) {
  Put("shards/s1/members/n5", "old");
  StartView();
  ExpectViewConverges();

  // Behind the view's back: twenty writes and a delete of a key it holds,
  // then the history is compacted away.
  view_->PauseForTesting(true);
  ASSERT_TRUE(PollUntil([&] { return !view_->watching(); }, absl::Seconds(10)));
  for (int i = 0; i < 20; ++i) Put(absl::StrFormat("shards/s1/members/n%02d", i), "up");
  Delete("shards/s1/members/n5");
  absl::StatusOr<RangeResult> now = client_->Range("/");
  ASSERT_TRUE(now.ok());
  ASSERT_OK(client_->Compact(now->revision));
  view_->PauseForTesting(false);

  ExpectViewConverges();
  EXPECT_GE(view_->counters().compactions, 1);
  EXPECT_GE(view_->counters().reads, 2);
  EXPECT_GE(view_->Current()->revision, now->revision);
}

TEST_F(TopologyViewTest, LosesNoEventAcrossAnEtcdRestart) {
  StartView();
  Put("ring", "v1");
  ExpectViewConverges();
  const std::shared_ptr<const TopologySnapshot> before = view_->Current();

  ASSERT_OK(etcd_.Stop());
  ASSERT_TRUE(PollUntil([&] { return !view_->watching(); }, absl::Seconds(20)));
  // The last snapshot is kept while etcd is away.
  EXPECT_EQ(view_->Current(), before);

  ASSERT_OK(etcd_.Restart());
  for (int i = 0; i < 10; ++i) Put(absl::StrCat("routers/r", i), "up");
  Delete("ring");
  ExpectViewConverges();
  EXPECT_GE(view_->counters().reconnects, 1);
  EXPECT_EQ(view_->counters().reads, 1) << "resumed from its revision, no re-read needed";
}

TEST_F(TopologyViewTest, ACompactionDuringAnEtcdOutageIsReadAfresh) {
  Put("shards/s1/isr", "a,b");
  StartView();
  ExpectViewConverges();

  view_->PauseForTesting(true);
  ASSERT_TRUE(PollUntil([&] { return !view_->watching(); }, absl::Seconds(10)));
  Put("shards/s1/isr", "a");
  Put("shards/s1/leader", "a");
  absl::StatusOr<RangeResult> now = client_->Range("/");
  ASSERT_TRUE(now.ok());
  ASSERT_OK(client_->Compact(now->revision));
  ASSERT_OK(etcd_.Stop());
  view_->PauseForTesting(false);  // It now retries against a stopped etcd.
  ASSERT_OK(etcd_.Restart());
  Put("shards/s1/leader", "b");

  ExpectViewConverges();
  EXPECT_GE(view_->counters().compactions, 1);
}

TEST_F(TopologyViewTest, ProgressNotificationsAdvanceTheRevision) {
  Put("cluster", "c");
  StartView();
  ExpectViewConverges();
  const size_t snapshots = log_.size();
  // A write elsewhere moves the store's revision, not the view's content.
  absl::StatusOr<int64_t> elsewhere = client_->Put("/somewhere/else", "x");
  ASSERT_TRUE(elsewhere.ok());
  EXPECT_TRUE(PollUntil([&] { return view_->revision() >= *elsewhere; }, absl::Seconds(10)))
      << "revision " << view_->revision() << ", wanted " << *elsewhere;
  EXPECT_GE(view_->counters().progress, 1);
  EXPECT_EQ(log_.size(), snapshots) << "no new snapshot for a change outside the prefix";
}

}  // namespace
}  // namespace kvstore::coord
