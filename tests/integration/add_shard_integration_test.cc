// Online resharding (docs/resharding.md) with real processes on 127.0.0.1: a
// one-member etcd, shards s0..s2 in etcd mode (kv-shard + kv-replica each,
// --ack=sync --sync-acks=1), two kv-routers following the ring in etcd, then
// a new shard group s3 and `kvctl reshard add-shard s3 --yes`.
//
//   AddingAShardUnderLoadMovesAQuarterAndLosesNothing: $KV_RESHARD_KEYS keys
//     (default 200,000, the CI size of issue 14; 1,000,000 is the documented
//     run) preloaded; while writers (one write in flight each, one per
//     router, half of them to new keys, half overwriting a few) and
//     compare-and-set counters run through the routers, the migration
//     copies, catches up and cuts over. Invariants, each counted: every
//     acknowledged write reads back with its last value; no acknowledged
//     version of a key is at or below an earlier one; each counter equals
//     its acknowledged increments; s3 holds at most 27 % of the keys; the
//     shards together hold each key once (key counts add up). While it
//     copies, `kvctl reshard status --json` must show the keys copied going
//     up at least twice and the ETA changing at least twice (and going down
//     at least once: it is in whole seconds and follows the measured rate,
//     so it may also go up); the longest write
//     latency across the cutover is printed.
//   AStaleRouterIsCorrectedByWrongShardOrAnswersUnavailable: the second
//     router reaches etcd through a TcpProxy, cut during the copy (before
//     the cutover), so its watch never delivers the new ring. After the
//     switch, every moved key read or written through it either succeeds
//     with the right value (WRONG_SHARD from the source, a fresh read of the
//     ring) or fails with UNAVAILABLE (the fresh read also goes through the
//     cut relay); never a wrong or missing value. Once the relay is
//     restored, every moved key reads back through it.
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
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/coord/etcd_client.h"
#include "common/coord/schema.h"
#include "common/ring/hash_ring.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/etcd_cluster.h"
#include "tests/support/process.h"
#include "tests/support/router_load.h"
#include "tests/support/router_process.h"
#include "tools/kvfault/tcp_proxy.h"

namespace kvstore {
namespace {

using ::kvstore::testing::KvClient;
using ::kvstore::testing::RouterProcess;
using ::kvstore::testing::TempDir;
using ::kvstore::testing::WaitFor;

constexpr char kPrefix[] = "/kvstore/reshard-test";

// --throttle of the migration ($KV_RESHARD_THROTTLE, default 1MiB/s: with
// the default 200,000 keys about 5 MB move, so the copy overlaps the load
// for several seconds in CI).
std::string Throttle() {
  const char* env = std::getenv("KV_RESHARD_THROTTLE");
  return env != nullptr && *env != '\0' ? env : "1MiB/s";
}

// Preloaded keys: $KV_RESHARD_KEYS, default 200,000 (the CI size of issue
// 14; 1,000,000 is the documented run, docs/resharding.md).
int Keys() {
  int keys = 200000;
  const char* env = std::getenv("KV_RESHARD_KEYS");
  if (env != nullptr && absl::SimpleAtoi(env, &keys) && keys >= 100) return keys;
  return keys;
}

// What `kvctl reshard status --json` showed over successive looks during the
// copy: how often the keys copied (summed over the sources) went up, and how
// often the ETA (the longest of the sources' eta_seconds) changed and went
// down.
struct StatusWatch {
  int looks = 0;
  int keys_advanced = 0;
  int eta_advanced = 0;
  int eta_changed = 0;
  uint64_t last_keys = 0;
  std::optional<double> last_eta;
  std::vector<double> etas;

  void Look(const testing::KvctlResult& status) {
    if (status.exit_code != 0) return;
    const nlohmann::json json =
        nlohmann::json::parse(status.out, nullptr, /*allow_exceptions=*/false);
    if (json.is_discarded() || !json.contains("sources")) return;
    ++looks;
    uint64_t keys = 0;
    std::optional<double> eta;
    for (const nlohmann::json& s : json["sources"]) {
      keys += s.value("keys_copied", uint64_t{0});
      if (s.contains("eta_seconds") && s["eta_seconds"].is_number()) {
        eta = std::max(eta.value_or(0.0), s["eta_seconds"].get<double>());
      }
    }
    if (keys > last_keys) ++keys_advanced;
    last_keys = keys;
    if (eta.has_value()) {
      if (last_eta.has_value() && *eta < *last_eta) ++eta_advanced;
      if (last_eta.has_value() && *eta != *last_eta) ++eta_changed;
      last_eta = eta;
      etas.push_back(*eta);
    }
  }
  std::string ToString() const {
    std::string out = absl::StrCat(looks, " looks, keys copied went up ", keys_advanced,
                                   " times (to ", last_keys, "), ETA changed ", eta_changed,
                                   " times, went down ", eta_advanced, " times; ETAs (s):");
    for (double e : etas) absl::StrAppend(&out, " ", absl::StrFormat("%.1f", e));
    return out;
  }
};

class ReshardTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(cluster_.Start().ok()) << cluster_.etcd().LogTail(); }

  void StartShardGroup(const std::string& shard) {
    const absl::Status s = cluster_.StartShardGroup(shard);
    ASSERT_TRUE(s.ok()) << s;
  }

  void AwaitLeader(const std::string& shard) {
    const absl::StatusOr<std::string> leader = cluster_.AwaitLeader(shard);
    ASSERT_TRUE(leader.ok()) << leader.status() << "\n" << Logs();
  }

  void StartCluster(bool relay = false) {
    for (const char* shard : {"s0", "s1", "s2"}) {
      ASSERT_NO_FATAL_FAILURE(StartShardGroup(shard));
    }
    const absl::Status init = cluster_.Init({"s0", "s1", "s2"});
    ASSERT_TRUE(init.ok()) << init << "\n" << Logs();
    // Two routers side by side; with `relay`, the second reaches etcd only
    // through a TcpProxy the test can cut.
    std::vector<std::string> second = cluster_.RouterFlags();
    if (relay) {
      relay_ = std::make_unique<fault::TcpProxy>(cluster_.endpoint());
      ASSERT_TRUE(relay_->Start().ok());
      second[0] = absl::StrCat("--etcd-endpoints=", relay_->address());
    }
    for (int i = 0; i < 2; ++i) {
      ASSERT_TRUE(routers_[i]->Start("", i == 0 ? cluster_.RouterFlags() : second).ok())
          << routers_[i]->LogTail();
    }
    absl::StatusOr<coord::RingRecord> record = cluster_.Ring();
    ASSERT_TRUE(record.ok()) << record.status();
    std::vector<std::string> shards = record->shards;
    shards.push_back("s3");
    absl::StatusOr<HashRing> after = HashRing::Build(shards, record->vnodes);
    ASSERT_TRUE(after.ok()) << after.status();
    after_ = std::make_unique<HashRing>(*std::move(after));
  }

  testing::KvctlResult Kvctl(std::vector<std::string> args,
                             absl::Duration timeout = absl::Seconds(20)) {
    return cluster_.Kvctl(std::move(args), timeout);
  }

  void Preload(int keys) {
    absl::StatusOr<std::map<std::string, std::string>> written =
        testing::Preload(routers_[0]->address(), keys, testing::PaddedValue);
    ASSERT_TRUE(written.ok()) << written.status();
    preloaded_ = *std::move(written);
  }

  std::optional<coord::MigrationRecord> ActiveOrLast(const std::string& id) {
    return cluster_.Migration(id);
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

  uint64_t KeysCopied(const std::string& id) {
    return testing::Sum(cluster_.Progress(id)).keys_copied;
  }

  std::string Logs() {
    std::string out = cluster_.Logs(2000);
    for (auto& r : routers_) absl::StrAppend(&out, "--- router:\n", r->LogTail(1500));
    return out;
  }

  TempDir dir_;
  testing::EtcdCluster cluster_{dir_.path(), kPrefix};
  std::unique_ptr<RouterProcess> routers_[2] = {
      std::make_unique<RouterProcess>(dir_.Join("router-0")),
      std::make_unique<RouterProcess>(dir_.Join("router-1"))};
  std::unique_ptr<fault::TcpProxy> relay_;  // Between the second router and etcd, if asked.
  std::unique_ptr<HashRing> after_;         // The ring once s3 is added.
  std::map<std::string, std::string> preloaded_;
};

TEST_F(ReshardTest, AddingAShardUnderLoadMovesAQuarterAndLosesNothing) {
  ASSERT_NO_FATAL_FAILURE(StartCluster());
  const int keys = Keys();
  ASSERT_NO_FATAL_FAILURE(Preload(keys));
  ASSERT_NO_FATAL_FAILURE(StartShardGroup("s3"));
  ASSERT_NO_FATAL_FAILURE(AwaitLeader("s3"));

  // The load: a writer through each router (one write in flight each, as
  // fast as it goes: its latencies are the figure), and compare-and-set
  // counters.
  testing::RouterWriteLoad load([this](int w) { return routers_[w]->address(); },
                                absl::ZeroDuration());
  testing::WriteLedger& ledger = load.ledger();
  load.Start();
  ASSERT_TRUE(WaitFor([&] { return ledger.acks() >= 1000; }, absl::Now() + absl::Seconds(20)))
      << Logs();

  const testing::KvctlResult remove = Kvctl({"reshard", "remove-shard", "s2", "--plan", "--force"});
  EXPECT_EQ(remove.exit_code, 0) << remove.ToString();
  const testing::KvctlResult plan = Kvctl({"reshard", "add-shard", "s3", "--plan"});
  EXPECT_EQ(plan.exit_code, 0) << plan.ToString();
  std::printf("%s", plan.out.c_str());
  ledger.SetPeriod(1);
  const absl::Time started = absl::Now();
  const testing::KvctlResult add =
      Kvctl({"reshard", "add-shard", "s3", "--yes", absl::StrCat("--throttle=", Throttle())});
  ASSERT_EQ(add.exit_code, 0) << add.ToString();
  const std::string id = ActiveId();
  ASSERT_FALSE(id.empty()) << add.ToString();

  // The progress the driver reports while it copies: keys copied so far,
  // summed over the sources, each time it is looked at; and what an operator
  // sees, `kvctl reshard status --json`: keys copied and an ETA (the
  // longest of the sources') that must advance while the copy runs.
  std::set<std::string> phases;
  std::set<uint64_t> copied_seen;
  StatusWatch watch;
  const bool done = WaitFor(
      [&] {
        std::optional<coord::MigrationRecord> record = ActiveOrLast(id);
        if (record) phases.insert(record->phase);
        if (record && record->phase == "copy") {
          copied_seen.insert(KeysCopied(id));
          watch.Look(Kvctl({"reshard", "status", "--json", id}));
        }
        return record && record->phase == "done";
      },
      absl::Now() + absl::Seconds(180), absl::Milliseconds(100));
  const testing::KvctlResult status = Kvctl({"reshard", "status", id});
  std::printf("%s", status.out.c_str());
  ASSERT_TRUE(done) << status.ToString() << "\n" << Logs();
  const absl::Duration took = absl::Now() - started;
  ledger.SetPeriod(2);
  EXPECT_TRUE(ActiveId().empty()) << "the migration is over but still active";
  EXPECT_GE(copied_seen.size(), 3u) << "the copy's progress did not advance while it was watched";
  std::printf("kvctl reshard status --json during the copy: %s\n", watch.ToString().c_str());
  EXPECT_GE(watch.keys_advanced, 2) << "keys copied did not advance twice in the status";
  // The ETA is in whole seconds and follows the measured rate, so it may
  // also go up; it must change at least twice, and go down at least once.
  EXPECT_GE(watch.eta_changed, 2) << "the ETA did not change twice in the status";
  EXPECT_GE(watch.eta_advanced, 1) << "the ETA never went down in the status";
  for (const char* phase : {"copy", "done"}) {
    EXPECT_TRUE(phases.count(phase) > 0) << "never saw phase " << phase;
  }
  // A little more load on the new ring, then stop.
  const size_t after = ledger.acks();
  EXPECT_TRUE(
      WaitFor([&] { return ledger.acks() >= after + 1000; }, absl::Now() + absl::Seconds(20)))
      << "no write acknowledged after the migration\n"
      << Logs();
  load.Stop();

  // Every acknowledged write and preloaded key reads back (through the
  // router, on the new ring), and each counter is within its bounds.
  const testing::ReadBackCounts c =
      testing::CheckReadBack(routers_[0]->address(), preloaded_, &load);
  const size_t checked = c.preloaded + c.acknowledged;

  // Each key on exactly one shard, and s3 holds its share.
  uint64_t total = 0;
  uint64_t on_s3 = 0;
  for (const char* shard : {"s0", "s1", "s2", "s3"}) {
    std::optional<std::string> leader = cluster_.LeaderOf(shard);
    ASSERT_TRUE(leader.has_value()) << shard;
    const uint64_t n = testing::EtcdCluster::KeyCount(*leader).value_or(0);
    total += n;
    if (std::string(shard) == "s3") on_s3 = n;
  }
  EXPECT_EQ(total, c.keys) << "keys held by the shards together, against the keys the router finds";
  EXPECT_LE(on_s3, c.keys * 27 / 100);
  EXPECT_GE(on_s3, c.keys * 15 / 100);
  const int64_t counted = c.increments;
  std::printf(
      "migration of %d preloaded keys at --throttle=%s took %.1f s; write p50/p99 (ms) before "
      "%.1f/%.1f (%zu), during %.1f/%.1f (%zu), after %.1f/%.1f (%zu)\n",
      keys, Throttle().c_str(), absl::ToDoubleSeconds(took), ledger.Percentile(0, 0.5),
      ledger.Percentile(0, 0.99), ledger.Count(0), ledger.Percentile(1, 0.5),
      ledger.Percentile(1, 0.99), ledger.Count(1), ledger.Percentile(2, 0.5),
      ledger.Percentile(2, 0.99), ledger.Count(2));
  std::printf(
      "moved %llu of %llu keys (%.1f %%) to s3; checked %zu keys, %lld counter increments; %zu "
      "writes acknowledged, %zu failed; longest acknowledged write %.0f ms\n",
      static_cast<unsigned long long>(on_s3), static_cast<unsigned long long>(total),
      100.0 * on_s3 / std::max<uint64_t>(total, 1), checked, static_cast<long long>(counted),
      ledger.acks(), ledger.failures(), absl::ToDoubleMilliseconds(ledger.longest()));
}

TEST_F(ReshardTest, AStaleRouterIsCorrectedByWrongShardOrAnswersUnavailable) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(/*relay=*/true));
  constexpr int kKeys = 5000;
  ASSERT_NO_FATAL_FAILURE(Preload(kKeys));
  ASSERT_NO_FATAL_FAILURE(StartShardGroup("s3"));
  ASSERT_NO_FATAL_FAILURE(AwaitLeader("s3"));
  std::vector<std::string> moved;
  for (int i = 0; i < kKeys; ++i) {
    const std::string key = absl::StrCat("pre-", i);
    if (after_->Owner(key) == "s3") moved.push_back(key);
  }
  ASSERT_FALSE(moved.empty());
  KvClient stale(routers_[1]->address(), absl::Seconds(5));
  // Through the second router before anything moves: it works.
  for (size_t i = 0; i < 20; ++i) {
    v1::GetResponse got;
    ASSERT_TRUE(stale.Get(moved[i], &got).ok());
    ASSERT_EQ(got.value(), preloaded_.at(moved[i]));
  }

  const testing::KvctlResult add =
      Kvctl({"reshard", "add-shard", "s3", "--yes", "--throttle=256KiB/s"});
  ASSERT_EQ(add.exit_code, 0) << add.ToString();
  const std::string id = ActiveId();
  ASSERT_FALSE(id.empty());
  // Cut while the copy runs: before the cutover.
  ASSERT_TRUE(WaitFor(
      [&] {
        std::optional<coord::MigrationRecord> r = ActiveOrLast(id);
        return r.has_value() && r->phase == "copy";
      },
      absl::Now() + absl::Seconds(20), absl::Milliseconds(5)));
  relay_->Cut();
  std::string phase;
  ASSERT_TRUE(WaitFor(
      [&] {
        std::optional<coord::MigrationRecord> r = ActiveOrLast(id);
        phase = r.has_value() ? r->phase : "";
        return phase == "done" || phase == "cancelled" || phase == "failed";
      },
      absl::Now() + absl::Seconds(90), absl::Milliseconds(100)))
      << Logs();
  ASSERT_EQ(phase, "done");

  // After the switch: reads of moved keys through the cut-off router (a few:
  // each that fails waits for the router's fresh read of the ring to fail).
  const absl::Time cut_reads = absl::Now();
  size_t right = 0;
  size_t unavailable = 0;
  for (size_t i = 0; i < std::min<size_t>(moved.size(), 10); ++i) {
    v1::GetResponse got;
    const grpc::Status s = stale.Get(moved[i], &got);
    if (s.ok()) {
      EXPECT_TRUE(got.found()) << moved[i] << " missing through the stale router";
      EXPECT_EQ(got.value(), preloaded_.at(moved[i])) << moved[i];
      ++right;
    } else {
      EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE)
          << moved[i] << ": " << s.error_code() << " " << s.error_message();
      ++unavailable;
    }
  }
  // And writes: acknowledged ones are on s3 (read through the first router).
  KvClient fresh(routers_[0]->address(), absl::Seconds(5));
  size_t written = 0;
  size_t write_unavailable = 0;
  std::string last_error;
  for (size_t i = 0; i < std::min<size_t>(moved.size(), 5); ++i) {
    v1::SetResponse set;
    const std::string value = absl::StrCat("stale-", i);
    const grpc::Status s = stale.Set(moved[i], value, &set);
    v1::GetResponse got;
    ASSERT_TRUE(ReadBack(fresh, moved[i], &got).ok());
    if (s.ok()) {
      EXPECT_EQ(got.value(), value) << moved[i] << ": an acknowledged write is not on s3";
      EXPECT_EQ(got.version(), set.version());
      ++written;
    } else {
      EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE)
          << moved[i] << ": " << s.error_code() << " " << s.error_message();
      last_error = s.error_message();
      ++write_unavailable;
    }
  }
  std::printf(
      "through the router cut off from etcd (%llu connections refused), after the switch: %zu "
      "reads right, %zu UNAVAILABLE; %zu writes acknowledged (and on s3), %zu UNAVAILABLE, in "
      "%.1f s%s%s\n",
      static_cast<unsigned long long>(relay_->refused()), right, unavailable, written,
      write_unavailable, absl::ToDoubleSeconds(absl::Now() - cut_reads),
      last_error.empty() ? "" : ": ", last_error.c_str());

  // Restored: the router catches up and every moved key reads right.
  relay_->Restore();
  size_t settled = 0;
  for (size_t i = 0; i < std::min<size_t>(moved.size(), 200); ++i) {
    v1::GetResponse got;
    grpc::Status s;
    ASSERT_TRUE(WaitFor([&] { return (s = stale.Get(moved[i], &got)).ok(); },
                        absl::Now() + absl::Seconds(20), absl::Milliseconds(50)))
        << moved[i] << ": " << s.error_message();
    if (i >= 5) {
      EXPECT_EQ(got.value(), preloaded_.at(moved[i])) << moved[i];
    }
    ++settled;
  }
  std::printf("after the relay was restored: %zu moved keys read through that router\n", settled);
}

}  // namespace
}  // namespace kvstore
