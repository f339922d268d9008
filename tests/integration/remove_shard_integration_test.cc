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
//     counter equals its acknowledged increments; the TTL keys keep their
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
#include "tests/support/etcd_process.h"
#include "tests/support/process.h"
#include "tests/support/router_process.h"

namespace kvstore {
namespace {

using ::kvstore::testing::EtcdProcess;
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

// What the writers saw acknowledged, per key, and any version that went down.
class Ledger {
 public:
  // Latencies are kept per period (0 before the migration, 1 during, 2 after).
  void SetPeriod(int period) {
    absl::MutexLock l(&mu_);
    period_ = period;
  }
  double Percentile(int period, double q) const {
    absl::MutexLock l(&mu_);
    std::vector<double> v = latencies_ms_[period];
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    return v[std::min(v.size() - 1, static_cast<size_t>(q * v.size()))];
  }
  size_t Count(int period) const {
    absl::MutexLock l(&mu_);
    return latencies_ms_[period].size();
  }
  void Acked(const std::string& key, const std::string& value, uint64_t version,
             absl::Duration took) {
    absl::MutexLock l(&mu_);
    latencies_ms_[period_].push_back(absl::ToDoubleMilliseconds(took));
    Entry& e = keys_[key];
    if (version <= e.version) {
      ++versions_down_;
      ADD_FAILURE() << key << ": acknowledged version " << version << " after " << e.version;
    }
    e.version = version;
    e.value = value;
    e.pending.clear();
    ++acks_;
    longest_ = std::max(longest_, took);
  }
  void Failed(const std::string& key, const std::string& value, const grpc::Status& status) {
    absl::MutexLock l(&mu_);
    keys_[key].pending.push_back(value);
    if (++failures_ <= 5) {
      std::printf("write of %s failed: %d %s\n", key.c_str(), status.error_code(),
                  status.error_message().c_str());
    }
  }
  struct Entry {
    std::string value;
    uint64_t version = 0;
    std::vector<std::string> pending;
  };
  std::map<std::string, Entry> Snapshot() const {
    absl::MutexLock l(&mu_);
    return keys_;
  }
  size_t acks() const {
    absl::MutexLock l(&mu_);
    return acks_;
  }
  size_t failures() const {
    absl::MutexLock l(&mu_);
    return failures_;
  }
  absl::Duration longest() const {
    absl::MutexLock l(&mu_);
    return longest_;
  }

 private:
  mutable absl::Mutex mu_;
  std::map<std::string, Entry> keys_ ABSL_GUARDED_BY(mu_);
  size_t acks_ ABSL_GUARDED_BY(mu_) = 0;
  size_t failures_ ABSL_GUARDED_BY(mu_) = 0;
  size_t versions_down_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Duration longest_ ABSL_GUARDED_BY(mu_);
  int period_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<double> latencies_ms_[3] ABSL_GUARDED_BY(mu_);
};

class RemoveShardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(etcd_.Start().ok()) << etcd_.LogTail();
    coord::EtcdClientOptions options;
    options.endpoints = etcd_.endpoint();
    absl::StatusOr<std::unique_ptr<coord::EtcdClient>> client = coord::EtcdClient::Create(options);
    ASSERT_TRUE(client.ok()) << client.status();
    etcd_client_ = *std::move(client);
  }

  std::vector<std::string> NodeFlags(const std::string& shard, const std::string& id) const {
    return {absl::StrCat("--shard=", shard),
            absl::StrCat("--node-id=", id),
            absl::StrCat("--etcd-endpoints=", etcd_.endpoint()),
            absl::StrCat("--etcd-prefix=", kPrefix),
            "--lease-ttl=2s",
            "--ack=sync",
            "--sync-acks=1",
            "--fsync=everysec",
            "--sync-timeout-ms=2000"};
  }

  // A leader and one replica of `shard`.
  void StartShardGroup(const std::string& shard) {
    for (int i = 0; i < 2; ++i) {
      const std::string id = absl::StrCat(shard, "-n", i + 1);
      nodes_.push_back(std::make_unique<ServerProcess>(dir_.Join(id),
                                                       i == 0 ? KV_SHARD_BIN : KV_REPLICA_BIN, id));
      ASSERT_TRUE(nodes_.back()->Start(NodeFlags(shard, id)).ok()) << nodes_.back()->LogTail();
    }
  }

  std::optional<std::string> LeaderOf(const std::string& shard) {
    absl::StatusOr<coord::RangeResult> range =
        etcd_client_->Range(coord::ShardLeaderKey(kPrefix, shard));
    if (!range.ok() || range->kvs.empty()) return std::nullopt;
    absl::StatusOr<coord::LeaderValueRecord> value = coord::ParseLeaderJson(range->kvs[0].value());
    if (!value.ok() || value->epoch == 0) return std::nullopt;
    absl::StatusOr<v1::StatusResponse> status = testing::FetchStatus(value->addr, absl::Seconds(1));
    if (!status.ok() || status->role() != "leader" || !status->ready()) return std::nullopt;
    return value->addr;
  }

  void AwaitLeader(const std::string& shard) {
    ASSERT_TRUE(WaitFor([&] { return LeaderOf(shard).has_value(); },
                        absl::Now() + absl::Seconds(20), absl::Milliseconds(50)))
        << "no leader for " << shard << "\n"
        << Logs();
  }

  void StartCluster() {
    for (const char* shard : {"s0", "s1", "s2"}) {
      ASSERT_NO_FATAL_FAILURE(StartShardGroup(shard));
    }
    Topology topology;
    for (int s = 0; s < 3; ++s) {
      topology.shards.push_back(
          {absl::StrCat("s", s), nodes_[2 * s]->address(), {nodes_[2 * s + 1]->address()}});
    }
    const std::string topology_file = dir_.Join("topology.yaml");
    ASSERT_TRUE(testing::WriteTopologyFile(topology_file, topology).ok());
    const testing::KvctlResult init =
        Kvctl({absl::StrCat("--config=", topology_file), "cluster", "init"});
    ASSERT_EQ(init.exit_code, 0) << init.ToString();
    for (const char* shard : {"s0", "s1", "s2"}) ASSERT_NO_FATAL_FAILURE(AwaitLeader(shard));
    ASSERT_TRUE(
        router_
            .Start("", {absl::StrCat("--etcd-endpoints=", etcd_.endpoint()),
                        absl::StrCat("--etcd-prefix=", kPrefix), "--forward-timeout-ms=2000"})
            .ok())
        << router_.LogTail();
  }

  testing::KvctlResult Kvctl(std::vector<std::string> args,
                             absl::Duration timeout = absl::Seconds(20)) {
    args.insert(args.begin(), {absl::StrCat("--etcd=", etcd_.endpoint()),
                               absl::StrCat("--etcd-prefix=", kPrefix)});
    return testing::RunKvctl("", args, timeout);
  }

  void Preload(int keys) {
    KvClient client(router_.address(), absl::Seconds(10));
    for (int first = 0; first < keys; first += 500) {
      v1::MultiSetRequest request;
      for (int i = first; i < std::min(keys, first + 500); ++i) {
        v1::SetItem* item = request.add_items();
        item->set_key(absl::StrCat("pre-", i));
        item->set_value(absl::StrCat("value-", i, "-", std::string(80, 'x')));
      }
      v1::MultiSetResponse response;
      grpc::Status s = client.MultiSet(request, &response);
      ASSERT_TRUE(s.ok()) << s.error_message();
      for (const v1::SetResult& r : response.results()) {
        ASSERT_EQ(r.error().code(), 0) << r.error().message();
      }
    }
  }

  std::optional<coord::MigrationRecord> ActiveOrLast(const std::string& id) {
    absl::StatusOr<coord::RangeResult> range =
        etcd_client_->Range(coord::MigrationKey(kPrefix, id));
    if (!range.ok() || range->kvs.empty()) return std::nullopt;
    absl::StatusOr<coord::MigrationRecord> record =
        coord::ParseMigrationValue(range->kvs[0].value());
    if (!record.ok()) return std::nullopt;
    return *record;
  }

  std::string ActiveId() {
    absl::StatusOr<coord::RangeResult> range =
        etcd_client_->Range(coord::ActiveMigrationKey(kPrefix));
    if (!range.ok() || range->kvs.empty()) return "";
    absl::StatusOr<std::string> id = coord::ParseActiveMigrationValue(range->kvs[0].value());
    return id.ok() ? *id : "";
  }

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
    coord::RangeOptions options;
    options.prefix = true;
    absl::StatusOr<coord::RangeResult> range =
        etcd_client_->Range(coord::MigrationSourcesPrefix(kPrefix, id), options);
    uint64_t copied = 0;
    if (!range.ok()) return 0;
    for (const mvccpb::KeyValue& kv : range->kvs) {
      absl::StatusOr<coord::SourceProgress> p = coord::ParseSourceProgressValue("", kv.value());
      if (p.ok()) copied += p->keys_copied;
    }
    return copied;
  }

  uint64_t KeyCount(const std::string& address) {
    absl::StatusOr<v1::StatusResponse> status = testing::FetchStatus(address, absl::Seconds(2));
    return status.ok() ? status->key_count() : 0;
  }

  // The record of migration `id`, if it reads.
  std::optional<coord::MigrationRecord> Record(const std::string& id) { return ActiveOrLast(id); }

  // The node process serving `address`, or null.
  ServerProcess* NodeAt(const std::string& address) {
    for (auto& n : nodes_) {
      if (n->address() == address) return n.get();
    }
    return nullptr;
  }

  coord::RingRecord RingNow() {
    absl::StatusOr<coord::RangeResult> range = etcd_client_->Range(coord::RingKey(kPrefix));
    EXPECT_TRUE(range.ok() && !range->kvs.empty());
    if (!range.ok() || range->kvs.empty()) return {};
    absl::StatusOr<coord::RingRecord> ring = coord::ParseRingValue(range->kvs[0].value());
    EXPECT_TRUE(ring.ok()) << ring.status();
    return ring.ok() ? *ring : coord::RingRecord();
  }

  // Preloaded keys read back with their values; TTL keys with their expiry;
  // s1 holds nothing and the ring lists s0 and s2 only; the key counts of
  // s0 and s2 add up to `expected`.
  void CheckRemoved(int keys, const std::map<std::string, uint64_t>& ttl_expiry,
                    uint64_t expected) {
    const coord::RingRecord ring = RingNow();
    EXPECT_EQ(ring.shards, (std::vector<std::string>{"s0", "s2"}));
    EXPECT_TRUE(ring.draining.empty());
    KvClient client(router_.address(), absl::Seconds(5));
    for (int i = 0; i < keys; ++i) {
      v1::GetResponse response;
      const std::string key = absl::StrCat("pre-", i);
      grpc::Status s = ReadBack(client, key, &response);
      ASSERT_TRUE(s.ok()) << key << ": " << s.error_message();
      ASSERT_TRUE(response.found()) << key << " is missing after the removal";
      ASSERT_EQ(response.value(), absl::StrCat("value-", i, "-", std::string(80, 'x')));
    }
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
    std::string out;
    for (auto& n : nodes_) absl::StrAppend(&out, "--- ", n->log_path(), ":\n", n->LogTail(2000));
    absl::StrAppend(&out, "--- router:\n", router_.LogTail(1500));
    return out;
  }

  TempDir dir_;
  EtcdProcess etcd_;
  std::unique_ptr<coord::EtcdClient> etcd_client_;
  std::vector<std::unique_ptr<ServerProcess>> nodes_;
  RouterProcess router_{dir_.Join("router")};
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

  Ledger ledger;
  std::atomic<bool> stop{false};
  std::atomic<int64_t> increments[4] = {0, 0, 0, 0};
  std::vector<std::thread> threads;
  for (int w = 0; w < 2; ++w) {
    threads.emplace_back([&, w] {
      KvClient client(router_.address(), absl::Seconds(5));
      for (uint64_t seq = 0; !stop.load(); ++seq) {
        const std::string key =
            seq % 2 == 0 ? absl::StrCat("w", w, "-u", seq) : absl::StrCat("w", w, "-k", seq % 100);
        const std::string value = absl::StrCat("w", w, "-s", seq);
        const absl::Time sent = absl::Now();
        v1::SetResponse response;
        grpc::Status s = client.Set(key, value, &response);
        if (s.ok()) {
          ledger.Acked(key, value, response.version(), absl::Now() - sent);
        } else {
          ledger.Failed(key, value, s);
          absl::SleepFor(absl::Milliseconds(5));  // Rate limit on 2 cores, not a sync.
        }
      }
    });
  }
  threads.emplace_back([&] {
    KvClient client(router_.address(), absl::Seconds(5));
    for (uint64_t seq = 0; !stop.load(); ++seq) {
      const int c = static_cast<int>(seq % 4);
      v1::GetResponse got;
      if (!client.Get(counters[c], &got).ok()) continue;
      int64_t n = 0;
      if (got.found() && !absl::SimpleAtoi(got.value(), &n)) {
        ADD_FAILURE() << counters[c] << " holds " << got.value();
        return;
      }
      v1::SetRequest set;
      set.set_key(counters[c]);
      set.set_value(absl::StrCat(n + 1));
      set.set_if_version(got.found() ? got.version() : 0);
      v1::SetResponse response;
      if (client.Set(set, &response).ok()) ++increments[c];
    }
  });
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
  stop.store(true);
  for (std::thread& t : threads) t.join();

  KvClient client(router_.address(), absl::Seconds(5));
  size_t checked = 0;
  uint64_t expected = keys + ttl_expiry.size();
  for (const auto& [key, entry] : ledger.Snapshot()) {
    v1::GetResponse response;
    grpc::Status s = ReadBack(client, key, &response);
    ASSERT_TRUE(s.ok()) << key << ": " << s.error_message();
    if (entry.version == 0) {
      if (response.found()) ++expected;  // Only failed writes: applied or not.
      continue;
    }
    ++expected;
    const bool allowed = response.found() && (response.value() == entry.value ||
                                              std::find(entry.pending.begin(), entry.pending.end(),
                                                        response.value()) != entry.pending.end());
    EXPECT_TRUE(allowed) << key << " reads " << (response.found() ? response.value() : "<absent>")
                         << ", last acknowledged " << entry.value;
    if (response.value() == entry.value) EXPECT_EQ(response.version(), entry.version) << key;
    ++checked;
  }
  int64_t counted = 0;
  for (int c = 0; c < 4; ++c) {
    v1::GetResponse response;
    ASSERT_TRUE(ReadBack(client, counters[c], &response).ok());
    int64_t n = 0;
    if (response.found()) {
      ASSERT_TRUE(absl::SimpleAtoi(response.value(), &n));
      ++expected;
    }
    EXPECT_EQ(n, increments[c].load()) << counters[c];
    counted += n;
  }
  ASSERT_NO_FATAL_FAILURE(CheckRemoved(keys, ttl_expiry, expected));
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
            etcd_client_->Range(coord::MigrationProgressKey(kPrefix, *r, "s1"));
        if (!p.ok() || p->kvs.empty()) return false;
        absl::StatusOr<coord::SourceProgress> progress =
            coord::ParseSourceProgressValue("s1", p->kvs[0].value());
        return progress.ok() && progress->phase == "copy" && progress->keys_copied > 0;
      },
      absl::Now() + absl::Seconds(180), absl::Milliseconds(50)))
      << Kvctl({"reshard", "status", id}).out << Logs();
  std::optional<std::string> leader = LeaderOf("s2");
  ASSERT_TRUE(leader.has_value());
  ServerProcess* victim = NodeAt(*leader);
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
  ASSERT_NO_FATAL_FAILURE(CheckRemoved(keys, ttl_expiry, keys + ttl_expiry.size()));
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
  ASSERT_NO_FATAL_FAILURE(CheckRemoved(keys, ttl_expiry, keys + ttl_expiry.size()));
}

}  // namespace
}  // namespace kvstore
