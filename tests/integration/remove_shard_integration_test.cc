// Removing a shard online (docs/resharding.md, "Removing a shard") with real
// processes on 127.0.0.1: a one-member etcd, shard groups s0..s2 in etcd mode
// (kv-shard + kv-replica each, --ack=sync --sync-acks=1), a kv-router
// following the ring in etcd, then `kvctl reshard remove-shard s1 --yes`,
// which moves s1's ranges in one stage per destination (s0, then s2).
//
//   RemovingAShardUnderLoadMovesEverythingAndLosesNothing: $KV_RESHARD_KEYS
//     keys (default 20,000) and 200 keys with a TTL preloaded; while writers
//     and compare-and-set counters on keys s1 owns run through the router,
//     both stages copy, catch up and cut over. Invariants, each counted:
//     every acknowledged write reads back with its last value and version;
//     no acknowledged version of a key is at or below an earlier one; each
//     counter lies between its acknowledged increments and those plus the
//     ones whose outcome is unknown; the TTL keys keep their
//     expiry; s1 holds no key and the ring no longer lists it; the shards
//     together hold each key once; the longest acknowledged write is within
//     --cutover-max-pause + 200 ms.
//   KillingStageTwosDestinationLeaderDuringItsCopyResumes: kill -9 of the
//     leader of stage 2's destination while it copies; its replica takes
//     over as the driver and the removal finishes with every key in place.
//   CancellingStageTwoKeepsStageOneAndRemoveShardAgainFinishes: cancel while
//     stage 2 copies: the ring stays draining s1 into s0, every key reads
//     back, and remove-shard s1 again runs only stage 2.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/coord/etcd_client.h"
#include "common/coord/schema.h"
#include "common/ring/hash_ring.h"
#include "gtest/gtest.h"
#include "tests/support/etcd_cluster.h"
#include "tests/support/process.h"
#include "tests/support/router_load.h"
#include "tests/support/router_process.h"

namespace kvstore {
namespace {

using ::kvstore::testing::KvClient;
using ::kvstore::testing::RouterProcess;
using ::kvstore::testing::ServerProcess;
using ::kvstore::testing::TempDir;
using ::kvstore::testing::WaitFor;

constexpr char kPrefix[] = "/kvstore/remove-shard-test";
constexpr int64_t kCutoverMaxPauseMs = 1000;

int Keys() {
  int keys = 20000;
  const char* env = std::getenv("KV_RESHARD_KEYS");
  if (env != nullptr && absl::SimpleAtoi(env, &keys) && keys >= 100) return keys;
  return 20000;
}

class RemoveShardTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(cluster_.Start().ok()) << cluster_.etcd().LogTail(); }

  std::optional<std::string> LeaderOf(const std::string& shard) { return cluster_.LeaderOf(shard); }

  void StartCluster() {
    for (const char* shard : {"s0", "s1", "s2"}) {
      const absl::Status s = cluster_.StartShardGroup(shard);
      ASSERT_TRUE(s.ok()) << s;
    }
    const absl::Status init = cluster_.Init({"s0", "s1", "s2"});
    ASSERT_TRUE(init.ok()) << init << "\n" << Logs();
    ASSERT_TRUE(router_.Start("", cluster_.RouterFlags()).ok()) << router_.LogTail();
  }

  testing::KvctlResult Kvctl(std::vector<std::string> args,
                             absl::Duration timeout = absl::Seconds(20)) {
    return cluster_.Kvctl(std::move(args), timeout);
  }

  void Preload(int keys) {
    absl::StatusOr<std::map<std::string, std::string>> written =
        testing::Preload(router_.address(), keys, testing::PaddedValue);
    ASSERT_TRUE(written.ok()) << written.status();
    preloaded_ = *std::move(written);
  }

  std::string ActiveId() { return cluster_.ActiveMigrationId(); }

  // A read through the router, retried while it fails (on this loaded
  // machine a leader may lose its lease and fail over meanwhile; a read is
  // then UNAVAILABLE for a few seconds, which is not what this test is about).
  static grpc::Status ReadBack(KvClient& client, const std::string& key,
                               v1::GetResponse* response) {
    grpc::Status s;
    WaitFor([&] { return (s = client.Get(key, response)).ok(); }, absl::Now() + absl::Seconds(15),
            absl::Milliseconds(50));
    return s;
  }

  static uint64_t KeyCount(const std::string& address) {
    return testing::EtcdCluster::KeyCount(address).value_or(0);
  }

  // The record of migration `id`, if it reads.
  std::optional<coord::MigrationRecord> Record(const std::string& id) {
    return cluster_.Migration(id);
  }

  coord::RingRecord RingNow() {
    absl::StatusOr<coord::RingRecord> ring = cluster_.Ring();
    EXPECT_TRUE(ring.ok()) << ring.status();
    return ring.ok() ? *ring : coord::RingRecord();
  }

  // Preloaded keys read back with their values; TTL keys with their expiry;
  // s1 holds nothing and the ring lists s0 and s2 only; the key counts of
  // s0 and s2 add up to `expected`.
  void CheckRemoved(const std::map<std::string, uint64_t>& ttl_expiry, uint64_t expected) {
    const coord::RingRecord ring = RingNow();
    EXPECT_EQ(ring.shards, (std::vector<std::string>{"s0", "s2"}));
    EXPECT_TRUE(ring.draining.empty());
    const testing::ReadBackCounts read =
        testing::CheckReadBack(router_.address(), preloaded_, nullptr);
    ASSERT_EQ(read.preloaded, preloaded_.size()) << "preloaded keys missing after the removal";
    KvClient client(router_.address(), absl::Seconds(5));
    for (const auto& [key, expiry] : ttl_expiry) {
      v1::GetResponse response;
      ASSERT_TRUE(ReadBack(client, key, &response).ok()) << key;
      ASSERT_TRUE(response.found()) << key;
      EXPECT_EQ(response.expires_at_ms(), expiry) << key << ": expiry changed";
    }
    // s1 owns nothing, and holds nothing: its leader's store is empty.
    std::optional<std::string> s1 = LeaderOf("s1");
    ASSERT_TRUE(s1.has_value()) << "s1's group is still running and has a leader";
    EXPECT_EQ(KeyCount(*s1), 0u) << "s1 still holds keys";
    uint64_t total = 0;
    for (const char* shard : {"s0", "s2"}) {
      std::optional<std::string> leader = LeaderOf(shard);
      ASSERT_TRUE(leader.has_value()) << shard;
      total += KeyCount(*leader);
    }
    EXPECT_EQ(total, expected) << "keys held by s0 and s2 together";
  }

  // 200 keys with a 10-minute TTL; their expiry as the router reads it.
  std::map<std::string, uint64_t> PreloadTtlKeys() {
    KvClient client(router_.address(), absl::Seconds(10));
    v1::MultiSetRequest request;
    for (int i = 0; i < 200; ++i) {
      v1::SetItem* item = request.add_items();
      item->set_key(absl::StrCat("ttl-", i));
      item->set_value(absl::StrCat("ttl-value-", i));
      item->set_ttl_ms(600000);
    }
    v1::MultiSetResponse response;
    grpc::Status s = client.MultiSet(request, &response);
    EXPECT_TRUE(s.ok()) << s.error_message();
    std::map<std::string, uint64_t> expiry;
    for (int i = 0; i < 200; ++i) {
      v1::GetResponse got;
      const std::string key = absl::StrCat("ttl-", i);
      EXPECT_TRUE(ReadBack(client, key, &got).ok()) << key;
      EXPECT_NE(got.expires_at_ms(), 0u) << key;
      expiry[key] = got.expires_at_ms();
    }
    return expiry;
  }

  std::string StartRemoval(const std::vector<std::string>& flags) {
    std::vector<std::string> args = {
        "reshard",
        "remove-shard",
        "s1",
        "--yes",
        "--force",  // A third of the ring: over 27 %.
        absl::StrCat("--cutover-max-pause=", kCutoverMaxPauseMs, "ms")};
    args.insert(args.end(), flags.begin(), flags.end());
    const testing::KvctlResult started = Kvctl(args);
    EXPECT_EQ(started.exit_code, 0) << started.ToString();
    std::printf("%s", started.out.c_str());
    return ActiveId();
  }

  std::string Logs() {
    return absl::StrCat(cluster_.Logs(2000), "--- router:\n", router_.LogTail(1500));
  }

  TempDir dir_;
  testing::EtcdCluster cluster_{dir_.path(), kPrefix};
  RouterProcess router_{dir_.Join("router")};
  std::map<std::string, std::string> preloaded_;
};

TEST_F(RemoveShardTest, RemovingAShardUnderLoadMovesEverythingAndLosesNothing) {
  ASSERT_NO_FATAL_FAILURE(StartCluster());
  const int keys = Keys();
  ASSERT_NO_FATAL_FAILURE(Preload(keys));
  const std::map<std::string, uint64_t> ttl_expiry = PreloadTtlKeys();

  // Counters on keys s1 owns: each moves, in one stage or the other.
  absl::StatusOr<HashRing> ring = coord::BuildRing(RingNow());
  ASSERT_TRUE(ring.ok()) << ring.status();
  std::vector<std::string> counters;
  for (int i = 0; counters.size() < 4; ++i) {
    const std::string key = absl::StrCat("counter-", i);
    if (ring->Owner(key) == "s1") counters.push_back(key);
  }

  // The load: two writers through the router, one write in flight each, as
  // fast as they go (their latencies are the figure), and compare-and-set
  // counters on keys s1 owns.
  testing::RouterWriteLoad load([this](int) { return router_.address(); }, absl::ZeroDuration(),
                                counters);
  testing::WriteLedger& ledger = load.ledger();
  load.Start();
  ASSERT_TRUE(WaitFor([&] { return ledger.acks() >= 1000; }, absl::Now() + absl::Seconds(20)))
      << Logs();

  const testing::KvctlResult plan = Kvctl({"reshard", "remove-shard", "s1", "--plan", "--force"});
  EXPECT_EQ(plan.exit_code, 0) << plan.ToString();
  EXPECT_NE(plan.out.find("stage 1/2: s1 -> s0"), std::string::npos) << plan.out;
  EXPECT_NE(plan.out.find("stage 2/2: s1 -> s2"), std::string::npos) << plan.out;
  ledger.SetPeriod(1);
  const absl::Time started = absl::Now();
  const std::string id = StartRemoval({"--throttle=256KiB/s"});
  ASSERT_FALSE(id.empty());

  std::set<int> stages_seen;
  std::set<std::string> phases;
  const bool done = WaitFor(
      [&] {
        std::optional<coord::MigrationRecord> record = Record(id);
        if (record) {
          stages_seen.insert(record->stage);
          phases.insert(record->phase);
        }
        return record && record->phase == "done";
      },
      absl::Now() + absl::Seconds(240), absl::Milliseconds(100));
  const testing::KvctlResult status = Kvctl({"reshard", "status", id});
  std::printf("%s", status.out.c_str());
  ASSERT_TRUE(done) << status.ToString() << "\n" << Logs();
  const absl::Duration took = absl::Now() - started;
  ledger.SetPeriod(2);
  EXPECT_TRUE(ActiveId().empty()) << "the migration is over but still active";
  EXPECT_EQ(stages_seen, (std::set<int>{0, 1}));
  EXPECT_NE(status.out.find("stage 1/2: source s1 -> s0: done"), std::string::npos);
  EXPECT_NE(status.out.find("stage 2/2: source s1 -> s2: done"), std::string::npos);
  const size_t after = ledger.acks();
  EXPECT_TRUE(
      WaitFor([&] { return ledger.acks() >= after + 500; }, absl::Now() + absl::Seconds(20)))
      << "no write acknowledged after the removal\n"
      << Logs();
  load.Stop();

  // Every acknowledged write reads back, each counter within its bounds.
  const testing::ReadBackCounts c = testing::CheckReadBack(router_.address(), {}, &load);
  const size_t checked = c.acknowledged;
  const int64_t counted = c.increments;
  ASSERT_NO_FATAL_FAILURE(CheckRemoved(ttl_expiry, keys + ttl_expiry.size() + c.keys));
  EXPECT_LE(ledger.longest(), absl::Milliseconds(kCutoverMaxPauseMs + 200))
      << "an acknowledged write took longer than --cutover-max-pause + 200 ms";
  std::printf(
      "removal of s1 (%d preloaded keys) took %.1f s; write p50/p99 (ms) before %.1f/%.1f (%zu), "
      "during %.1f/%.1f (%zu), after %.1f/%.1f (%zu); checked %zu written keys, %d preloaded, "
      "%zu with a TTL, %lld counter increments; %zu writes acknowledged, %zu failed; longest "
      "acknowledged write %.0f ms\n",
      keys, absl::ToDoubleSeconds(took), ledger.Percentile(0, 0.5), ledger.Percentile(0, 0.99),
      ledger.Count(0), ledger.Percentile(1, 0.5), ledger.Percentile(1, 0.99), ledger.Count(1),
      ledger.Percentile(2, 0.5), ledger.Percentile(2, 0.99), ledger.Count(2), checked, keys,
      ttl_expiry.size(), static_cast<long long>(counted), ledger.acks(), ledger.failures(),
      absl::ToDoubleMilliseconds(ledger.longest()));
}

TEST_F(RemoveShardTest, KillingStageTwosDestinationLeaderDuringItsCopyResumes) {
  ASSERT_NO_FATAL_FAILURE(StartCluster());
  const int keys = Keys();
  ASSERT_NO_FATAL_FAILURE(Preload(keys));
  const std::map<std::string, uint64_t> ttl_expiry = PreloadTtlKeys();
  // Slow enough that stage 2's copy lasts several seconds.
  const std::string id = StartRemoval({"--throttle=64KiB/s"});
  ASSERT_FALSE(id.empty());

  // Stage 2 (to s2) copying, with some keys copied.
  ASSERT_TRUE(WaitFor(
      [&] {
        std::optional<coord::MigrationRecord> r = Record(id);
        if (!r || r->stage != 1 || r->phase != "copy") return false;
        absl::StatusOr<coord::RangeResult> p =
            cluster_.client().Range(coord::MigrationProgressKey(kPrefix, *r, "s1"));
        if (!p.ok() || p->kvs.empty()) return false;
        absl::StatusOr<coord::SourceProgress> progress =
            coord::ParseSourceProgressValue("s1", p->kvs[0].value());
        return progress.ok() && progress->phase == "copy" && progress->keys_copied > 0;
      },
      absl::Now() + absl::Seconds(180), absl::Milliseconds(50)))
      << Kvctl({"reshard", "status", id}).out << Logs();
  std::optional<std::string> leader = LeaderOf("s2");
  ASSERT_TRUE(leader.has_value());
  ServerProcess* victim = cluster_.NodeAt(*leader);
  ASSERT_NE(victim, nullptr);
  ASSERT_TRUE(victim->KillHard().ok());
  // The replica leads s2 and drives the stage from its checkpoint.
  ASSERT_TRUE(WaitFor(
      [&] {
        std::optional<std::string> next = LeaderOf("s2");
        return next.has_value() && *next != *leader;
      },
      absl::Now() + absl::Seconds(20), absl::Milliseconds(50)))
      << Logs();
  ASSERT_TRUE(victim->Restart().ok());
  const bool done = WaitFor(
      [&] {
        std::optional<coord::MigrationRecord> r = Record(id);
        return r && r->phase == "done";
      },
      absl::Now() + absl::Seconds(300), absl::Milliseconds(100));
  const testing::KvctlResult status = Kvctl({"reshard", "status", id});
  std::printf("%s", status.out.c_str());
  ASSERT_TRUE(done) << status.ToString() << "\n" << Logs();
  ASSERT_NO_FATAL_FAILURE(CheckRemoved(ttl_expiry, keys + ttl_expiry.size()));
}

TEST_F(RemoveShardTest, CancellingStageTwoKeepsStageOneAndRemoveShardAgainFinishes) {
  ASSERT_NO_FATAL_FAILURE(StartCluster());
  const int keys = Keys();
  ASSERT_NO_FATAL_FAILURE(Preload(keys));
  const std::map<std::string, uint64_t> ttl_expiry = PreloadTtlKeys();
  const std::string id = StartRemoval({"--throttle=64KiB/s"});
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(WaitFor(
      [&] {
        std::optional<coord::MigrationRecord> r = Record(id);
        return r && r->stage == 1 && r->phase == "copy";
      },
      absl::Now() + absl::Seconds(180), absl::Milliseconds(50)))
      << Kvctl({"reshard", "status", id}).out << Logs();
  const testing::KvctlResult cancel = Kvctl({"reshard", "cancel", id});
  ASSERT_EQ(cancel.exit_code, 0) << cancel.ToString();
  EXPECT_NE(cancel.out.find("stage 2/2 (s1 -> s2) stops"), std::string::npos) << cancel.out;
  ASSERT_TRUE(WaitFor(
      [&] {
        std::optional<coord::MigrationRecord> r = Record(id);
        return r && r->phase == "cancelled" && ActiveId().empty();
      },
      absl::Now() + absl::Seconds(60), absl::Milliseconds(50)))
      << Kvctl({"reshard", "status", id}).out << Logs();
  // Stage 1 stays switched: s1 drains into s0; nothing is lost.
  const coord::RingRecord ring = RingNow();
  EXPECT_EQ(ring.shards, (std::vector<std::string>{"s0", "s1", "s2"}));
  EXPECT_EQ(ring.draining, (RingDrain{"s1", {"s0"}}));
  {
    KvClient client(router_.address(), absl::Seconds(5));
    for (int i = 0; i < keys; i += 7) {
      v1::GetResponse response;
      const std::string key = absl::StrCat("pre-", i);
      ASSERT_TRUE(ReadBack(client, key, &response).ok()) << key;
      ASSERT_TRUE(response.found()) << key << " is missing after the cancel";
    }
  }
  // Running it again plans only stage 2, and finishes.
  const testing::KvctlResult plan = Kvctl({"reshard", "remove-shard", "s1", "--plan", "--force"});
  EXPECT_EQ(plan.exit_code, 0) << plan.ToString();
  EXPECT_NE(plan.out.find("stage 1/1: s1 -> s2"), std::string::npos) << plan.out;
  const std::string again = StartRemoval({});
  ASSERT_FALSE(again.empty());
  ASSERT_NE(again, id);
  const bool done = WaitFor(
      [&] {
        std::optional<coord::MigrationRecord> r = Record(again);
        return r && r->phase == "done";
      },
      absl::Now() + absl::Seconds(180), absl::Milliseconds(100));
  ASSERT_TRUE(done) << Kvctl({"reshard", "status", again}).out << Logs();
  ASSERT_NO_FATAL_FAILURE(CheckRemoved(ttl_expiry, keys + ttl_expiry.size()));
}

}  // namespace
}  // namespace kvstore
