// Routers in etcd and what a migration does with them (docs/router.md
// "Registration", docs/resharding.md "cleanup"), with real processes on
// 127.0.0.1: a one-member etcd, shard groups s0..s2 in etcd mode, kv-routers
// following the ring in etcd, a new group s3 and `kvctl reshard add-shard s3`.
//
//   CleanupWaitsUntilEveryRegisteredRouterRoutesByTheNewRing: two real
//     routers and a record "x" the test keeps on a lease of its own at ring
//     version 1. After the switch the migration stays in cleanup, every
//     source's progress (and `kvctl reshard status`) says it waits for x, and
//     the sources still hold every moved key; `kvctl cluster status` marks x
//     BEHIND. Once the test sets x to version 2 the sources delete the moved
//     keys and the migration is done; every key reads back.
//   AStoppedRouterDropsOutOfTheCleanupAndRegistersAgainWhenItContinues: a
//     router SIGSTOPped before the migration loses its lease and its key, so
//     the migration finishes without it; after SIGCONT it registers again,
//     on a new lease, with the new ring. Its id defaults to its HOST:PORT.
//   ATinyMigrationRetentionRestartsTheCopyAndLosesNothing: sources with
//     --migration-retention-bytes=16KiB (and small segments and frequent
//     snapshots) take a burst of writes during the copy; the catch-up finds
//     its log gone, the copy starts again (restarts and the reason in the
//     progress), the migration finishes, and every key reads back.
//   CopyFromReplicaIsServedByTheReplicas: --copy-from=replica; the sources'
//     replicas answer every copy page (their
//     kvstore_migration_copy_pages_served_total), their leaders none, and
//     every key reads back.
//
// Reproduce one: ctest -R 'RouterRegistryTest.<name>' --output-on-failure
// (from build/); the logs are printed when a test fails.
#include <signal.h>

#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/coord/etcd_client.h"
#include "common/coord/lease.h"
#include "common/coord/schema.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "tests/support/etcd_cluster.h"
#include "tests/support/process.h"
#include "tests/support/router_process.h"

namespace kvstore {
namespace {

using ::kvstore::testing::KvClient;
using ::kvstore::testing::RouterProcess;
using ::kvstore::testing::ServerProcess;
using ::kvstore::testing::TempDir;
using ::kvstore::testing::WaitFor;

constexpr char kPrefix[] = "/kvstore/router-registry-test";
const std::vector<std::string> kSources = {"s0", "s1", "s2"};

class RouterRegistryTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(cluster_.Start().ok()) << cluster_.etcd().LogTail(); }

  void TearDown() override {
    if (HasFailure()) std::printf("logs:\n%s\n", Logs().c_str());
  }

  // One kv-shard of `shard` and `replicas` kv-replicas (with metrics), with
  // `extra` flags.
  void StartGroup(const std::string& shard, int replicas,
                  const std::vector<std::string>& extra = {}) {
    testing::ShardGroupOptions options;
    options.replicas = replicas;
    options.metrics = true;
    options.extra_flags = extra;
    const absl::Status s = cluster_.StartShardGroup(shard, options);
    ASSERT_TRUE(s.ok()) << s;
  }

  // s0..s2 with `replicas` each, the cluster and its ring in etcd.
  void StartCluster(int replicas, const std::vector<std::string>& extra = {}) {
    for (const std::string& shard : kSources) {
      ASSERT_NO_FATAL_FAILURE(StartGroup(shard, replicas, extra));
    }
    const absl::Status init = cluster_.Init(kSources);
    ASSERT_TRUE(init.ok()) << init;
  }

  void StartNewGroup(int replicas) {
    ASSERT_NO_FATAL_FAILURE(StartGroup("s3", replicas));
    ASSERT_NO_FATAL_FAILURE(AwaitLeader("s3"));
  }

  // Starts `router` in etcd mode; `id` empty leaves --router-id out.
  void StartRouter(RouterProcess& router, const std::string& id,
                   const std::vector<std::string>& extra = {}) {
    std::vector<std::string> flags = cluster_.RouterFlags();
    flags.push_back("--lease-ttl=2s");
    if (!id.empty()) flags.push_back(absl::StrCat("--router-id=", id));
    flags.insert(flags.end(), extra.begin(), extra.end());
    ASSERT_TRUE(router.Start("", flags).ok()) << router.LogTail();
  }

  std::optional<std::string> LeaderOf(const std::string& shard) { return cluster_.LeaderOf(shard); }

  void AwaitLeader(const std::string& shard) {
    const absl::StatusOr<std::string> leader = cluster_.AwaitLeader(shard);
    ASSERT_TRUE(leader.ok()) << leader.status();
  }

  testing::KvctlResult Kvctl(std::vector<std::string> args,
                             absl::Duration timeout = absl::Seconds(20)) {
    return cluster_.Kvctl(std::move(args), timeout);
  }

  // Writes `count` keys "<prefix><i>" of about `value_bytes` through `router`
  // and remembers them for CheckEveryKey.
  void Write(const std::string& router, int count, const std::string& prefix, size_t value_bytes) {
    KvClient client(router, absl::Seconds(20));
    for (int first = 0; first < count; first += 100) {
      v1::MultiSetRequest request;
      for (int i = first; i < std::min(count, first + 100); ++i) {
        v1::SetItem* item = request.add_items();
        item->set_key(absl::StrCat(prefix, i));
        std::string value = absl::StrCat("value-", prefix, i, "-");
        value.resize(std::max(value.size(), value_bytes), 'x');
        item->set_value(value);
      }
      v1::MultiSetResponse response;
      const grpc::Status s = client.MultiSet(request, &response);
      ASSERT_TRUE(s.ok()) << s.error_message();
      ASSERT_EQ(response.results_size(), request.items_size());
      for (int i = 0; i < response.results_size(); ++i) {
        ASSERT_EQ(response.results(i).error().code(), 0) << response.results(i).error().message();
        written_[request.items(i).key()] = request.items(i).value();
      }
    }
  }

  // Every key written reads back through `router` with its value.
  void CheckEveryKey(const std::string& router) {
    KvClient client(router, absl::Seconds(10));
    size_t checked = 0;
    for (const auto& [key, value] : written_) {
      v1::GetResponse got;
      grpc::Status s;
      // A leader may fail over on this loaded machine: retried, with a deadline.
      WaitFor([&] { return (s = client.Get(key, &got)).ok(); }, absl::Now() + absl::Seconds(15),
              absl::Milliseconds(50));
      ASSERT_TRUE(s.ok()) << key << ": " << s.error_message();
      ASSERT_TRUE(got.found()) << key << " is lost";
      ASSERT_EQ(got.value(), value) << key;
      ++checked;
    }
    std::printf("%zu keys read back with their values\n", checked);
  }

  std::string AddShard(const std::vector<std::string>& flags) {
    std::vector<std::string> args = {"reshard", "add-shard", "s3", "--yes"};
    args.insert(args.end(), flags.begin(), flags.end());
    const testing::KvctlResult add = Kvctl(args);
    EXPECT_EQ(add.exit_code, 0) << add.ToString();
    return cluster_.ActiveMigrationId();
  }

  std::string Phase(const std::string& id) {
    std::optional<coord::MigrationRecord> record = cluster_.Migration(id);
    return record ? record->phase : "";
  }

  std::map<std::string, coord::SourceProgress> Progress(const std::string& id) {
    return cluster_.Progress(id);
  }

  std::map<std::string, coord::RouterRecord> Routers() {
    coord::RangeOptions options;
    options.prefix = true;
    const std::string prefix = coord::RoutersPrefix(kPrefix);
    std::map<std::string, coord::RouterRecord> out;
    absl::StatusOr<coord::RangeResult> range = cluster_.client().Range(prefix, options);
    if (!range.ok()) return out;
    for (const mvccpb::KeyValue& kv : range->kvs) {
      const std::string id = kv.key().substr(prefix.size());
      absl::StatusOr<coord::RouterRecord> r = coord::ParseRouterValue(id, kv.value());
      if (r.ok()) out[id] = *r;
    }
    return out;
  }

  // The router `id` is registered at `ring_version` or later.
  bool RouterAt(const std::string& id, int64_t ring_version) {
    const std::map<std::string, coord::RouterRecord> routers = Routers();
    auto it = routers.find(id);
    return it != routers.end() && it->second.ring_version >= ring_version;
  }

  // kvstore_migration_copy_pages_served_total of `node`; -1 when its
  // /metrics cannot be read.
  int64_t CopyPagesServed(ServerProcess* node) {
    const std::string file = testing::EtcdCluster::MetricsPortFile(*node);
    const std::string address(absl::StripSuffix(testing::ReadFileOrEmpty(file), "\n"));
    const size_t colon = address.rfind(':');
    int port = 0;
    if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port)) {
      return -1;
    }
    httplib::Client client(address.substr(0, colon), port);
    client.set_connection_timeout(5);
    client.set_read_timeout(5);
    httplib::Result res = client.Get("/metrics");
    if (!res || res->status != 200) return -1;
    for (absl::string_view line : absl::StrSplit(res->body, '\n')) {
      if (absl::ConsumePrefix(&line, "kvstore_migration_copy_pages_served_total ")) {
        int64_t n = 0;
        return absl::SimpleAtoi(line, &n) ? n : -1;
      }
    }
    return -1;
  }

  uint64_t KeyCount(const std::string& shard) {
    std::optional<std::string> leader = LeaderOf(shard);
    return leader ? testing::EtcdCluster::KeyCount(*leader).value_or(0) : 0;
  }
  uint64_t SourceKeys() {
    uint64_t n = 0;
    for (const std::string& shard : kSources) n += KeyCount(shard);
    return n;
  }

  void AwaitPhase(const std::string& id, const std::string& phase, absl::Duration timeout) {
    ASSERT_TRUE(
        WaitFor([&] { return Phase(id) == phase; }, absl::Now() + timeout, absl::Milliseconds(100)))
        << "migration " << id << " is in phase " << Phase(id) << ", not " << phase << "\n"
        << Kvctl({"reshard", "status", id}).out;
  }

  std::string Logs() {
    std::string out = cluster_.Logs(1500);
    absl::StrAppend(&out, "--- router r1:\n", r1_.LogTail(1500));
    absl::StrAppend(&out, "--- router r2:\n", r2_.LogTail(1500));
    return out;
  }

  TempDir dir_;
  testing::EtcdCluster cluster_{dir_.path(), kPrefix};
  std::map<std::string, std::string> written_;
  RouterProcess r1_{dir_.Join("r1")};
  RouterProcess r2_{dir_.Join("r2")};
};

TEST_F(RouterRegistryTest, CleanupWaitsUntilEveryRegisteredRouterRoutesByTheNewRing) {
  constexpr int kKeys = 1500;
  ASSERT_NO_FATAL_FAILURE(StartCluster(/*replicas=*/0));
  ASSERT_NO_FATAL_FAILURE(StartRouter(r1_, "r1"));
  ASSERT_NO_FATAL_FAILURE(StartRouter(r2_, "r2"));
  ASSERT_TRUE(WaitFor([&] { return RouterAt("r1", 1) && RouterAt("r2", 1); },
                      absl::Now() + absl::Seconds(10), absl::Milliseconds(50)))
      << "the routers did not register";
  EXPECT_EQ(Routers()["r1"].addr, r1_.address());

  // A router the test plays: registered on a lease the test keeps, at ring 1.
  coord::LeaseOptions lease_options;
  lease_options.ttl = absl::Seconds(2);
  absl::StatusOr<std::unique_ptr<coord::Lease>> lease =
      coord::Lease::Grant(&cluster_.client(), lease_options);
  ASSERT_TRUE(lease.ok()) << lease.status();
  coord::RouterRecord x;
  x.id = "x";
  x.addr = "127.0.0.1:1";
  x.ring_version = 1;
  x.started_unix_ms = absl::ToUnixMillis(absl::Now());
  ASSERT_TRUE(cluster_.client()
                  .Put(coord::RouterKey(kPrefix, "x"), coord::RouterValue(x), (*lease)->id())
                  .ok());

  ASSERT_NO_FATAL_FAILURE(Write(r1_.address(), kKeys, "pre-", 100));
  ASSERT_EQ(SourceKeys(), static_cast<uint64_t>(kKeys));
  ASSERT_NO_FATAL_FAILURE(StartNewGroup(/*replicas=*/0));
  const std::string id = AddShard({});
  ASSERT_FALSE(id.empty());

  // The switch happens; the real routers follow it; x holds the cleanup.
  const std::string waiting = "waiting for router x at ring version 1 (needs 2)";
  ASSERT_TRUE(WaitFor(
      [&] {
        const auto progress = Progress(id);
        if (progress.size() != kSources.size()) return false;
        for (const auto& [source, p] : progress) {
          if (!absl::StrContains(p.error, waiting) || absl::StrContains(p.error, "router r"))
            return false;
        }
        return true;
      },
      absl::Now() + absl::Seconds(60), absl::Milliseconds(100)))
      << "the sources never said they wait for x alone\n"
      << Kvctl({"reshard", "status", id}).out;
  EXPECT_TRUE(RouterAt("r1", 2));
  EXPECT_TRUE(RouterAt("r2", 2));
  EXPECT_EQ(Phase(id), "cleanup");
  const uint64_t on_new_shard = KeyCount("s3");
  EXPECT_GT(on_new_shard, 0u);
  // Held: for a while the sources keep every key, moved or not.
  EXPECT_FALSE(WaitFor(
      [&] {
        for (const auto& [source, p] : Progress(id)) {
          if (p.keys_cleaned > 0) return true;
        }
        return SourceKeys() != static_cast<uint64_t>(kKeys) || Phase(id) != "cleanup";
      },
      absl::Now() + absl::Seconds(2), absl::Milliseconds(100)))
      << "the cleanup went on while x reports ring version 1";
  EXPECT_EQ(SourceKeys(), static_cast<uint64_t>(kKeys));

  const testing::KvctlResult status = Kvctl({"reshard", "status", id});
  EXPECT_TRUE(absl::StrContains(status.out, waiting)) << status.ToString();
  const testing::KvctlResult cluster = Kvctl({"cluster", "status"});
  EXPECT_TRUE(absl::StrContains(cluster.out,
                                "router x at 127.0.0.1:1: ring version 1, topology revision 0 "
                                "BEHIND (the ring in etcd is version 2)"))
      << cluster.ToString();
  EXPECT_TRUE(absl::StrContains(cluster.out,
                                absl::StrCat("router r1 at ", r1_.address(), ": ring version 2")))
      << cluster.ToString();
  const testing::KvctlResult cluster_json = Kvctl({"cluster", "status", "--json"});
  const nlohmann::json parsed = nlohmann::json::parse(cluster_json.out, nullptr, false);
  ASSERT_TRUE(parsed.is_object()) << cluster_json.ToString();
  std::map<std::string, bool> behind;
  for (const auto& r : parsed["routers"]) behind[r["id"].get<std::string>()] = r["behind"];
  EXPECT_EQ(behind, (std::map<std::string, bool>{{"r1", false}, {"r2", false}, {"x", true}}))
      << cluster_json.out;

  // x routes by the new ring now: the cleanup goes on.
  x.ring_version = 2;
  ASSERT_TRUE(cluster_.client()
                  .Put(coord::RouterKey(kPrefix, "x"), coord::RouterValue(x), (*lease)->id())
                  .ok());
  ASSERT_NO_FATAL_FAILURE(AwaitPhase(id, "done", absl::Seconds(60)));
  uint64_t cleaned = 0;
  for (const auto& [source, p] : Progress(id)) cleaned += p.keys_cleaned;
  EXPECT_EQ(cleaned, on_new_shard);
  EXPECT_EQ(SourceKeys() + KeyCount("s3"), static_cast<uint64_t>(kKeys));
  std::printf("held %llu moved keys on the sources until x reported ring 2, then removed %llu\n",
              static_cast<unsigned long long>(on_new_shard),
              static_cast<unsigned long long>(cleaned));
  ASSERT_NO_FATAL_FAILURE(CheckEveryKey(r2_.address()));
}

TEST_F(RouterRegistryTest, AStoppedRouterDropsOutOfTheCleanupAndRegistersAgainWhenItContinues) {
  constexpr int kKeys = 1000;
  ASSERT_NO_FATAL_FAILURE(StartCluster(/*replicas=*/0));
  ASSERT_NO_FATAL_FAILURE(StartRouter(r1_, "r1"));
  ASSERT_NO_FATAL_FAILURE(StartRouter(r2_, ""));  // Registers as its HOST:PORT.
  const std::string r2_id = r2_.address();
  ASSERT_TRUE(WaitFor([&] { return RouterAt("r1", 1) && RouterAt(r2_id, 1); },
                      absl::Now() + absl::Seconds(10), absl::Milliseconds(50)))
      << "the routers did not register";
  ASSERT_NO_FATAL_FAILURE(Write(r1_.address(), kKeys, "pre-", 100));

  ASSERT_TRUE(r2_.process().Kill(SIGSTOP).ok());
  const absl::Time stopped = absl::Now();
  ASSERT_NO_FATAL_FAILURE(StartNewGroup(/*replicas=*/0));
  const std::string id = AddShard({});
  ASSERT_FALSE(id.empty());
  // Its lease (2 s) runs out: its key goes, so it holds nothing.
  ASSERT_TRUE(WaitFor([&] { return Routers().count(r2_id) == 0; }, absl::Now() + absl::Seconds(10),
                      absl::Milliseconds(50)))
      << "the stopped router's key is still there";
  std::printf("the stopped router's key went %.1f s after SIGSTOP\n",
              absl::ToDoubleSeconds(absl::Now() - stopped));
  ASSERT_NO_FATAL_FAILURE(AwaitPhase(id, "done", absl::Seconds(60)));
  EXPECT_EQ(SourceKeys() + KeyCount("s3"), static_cast<uint64_t>(kKeys));

  ASSERT_TRUE(r2_.process().Kill(SIGCONT).ok());
  ASSERT_TRUE(WaitFor([&] { return RouterAt(r2_id, 2); }, absl::Now() + absl::Seconds(15),
                      absl::Milliseconds(50)))
      << "the continued router did not register again with ring version 2";
  EXPECT_TRUE(r2_.AwaitLogLine("registering again on a new one").ok());
  ASSERT_NO_FATAL_FAILURE(CheckEveryKey(r2_.address()));
}

TEST_F(RouterRegistryTest, ATinyMigrationRetentionRestartsTheCopyAndLosesNothing) {
  // Small segments and a snapshot every 50 writes, so the log of a source
  // past 16 KiB is removed at its next snapshot, however far the copy is.
  ASSERT_NO_FATAL_FAILURE(StartCluster(
      /*replicas=*/0, {"--migration-retention-bytes=16KiB", "--segment-bytes=4096",
                       "--snapshot-every-writes=50", "--snapshots-to-keep=1"}));
  ASSERT_NO_FATAL_FAILURE(StartRouter(r1_, "r1"));
  ASSERT_NO_FATAL_FAILURE(Write(r1_.address(), 1500, "pre-", 100));
  ASSERT_NO_FATAL_FAILURE(StartNewGroup(/*replicas=*/0));
  // A slow copy (each page waits for the throttle), so the burst below lands
  // between each source's Begin and its catch-up.
  const std::string id = AddShard({"--throttle=16KiB/s"});
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(WaitFor(
      [&] {
        const auto progress = Progress(id);
        if (progress.size() != kSources.size()) return false;
        for (const auto& [source, p] : progress) {
          if (p.phase != "copy") return false;
        }
        return true;
      },
      absl::Now() + absl::Seconds(30), absl::Milliseconds(20)))
      << "the sources did not all begin their copy";
  // About 100 KiB of log on each source, well past its 16 KiB.
  ASSERT_NO_FATAL_FAILURE(Write(r1_.address(), 300, "burst-", 1000));

  std::string reason;
  ASSERT_TRUE(WaitFor(
      [&] {
        for (const auto& [source, p] : Progress(id)) {
          if (absl::StrContains(p.error, "copy restarted")) reason = p.error;
        }
        return Phase(id) == "done";
      },
      absl::Now() + absl::Seconds(90), absl::Milliseconds(50)))
      << "migration " << id << " did not finish: " << Kvctl({"reshard", "status", id}).out;
  int64_t restarts = 0;
  for (const auto& [source, p] : Progress(id)) restarts += p.restarts;
  EXPECT_GE(restarts, 1) << "no copy started again";
  EXPECT_TRUE(absl::StrContains(reason, "copy restarted")) << "reason seen: " << reason;
  std::printf("copies restarted: %lld; a reason: %s\n", static_cast<long long>(restarts),
              reason.c_str());
  const testing::KvctlResult status = Kvctl({"reshard", "status", id});
  bool shown = false;
  for (int n = 1; n <= 9; ++n)
    shown = shown || absl::StrContains(status.out, absl::StrCat("restarts ", n));
  EXPECT_TRUE(shown) << "kvctl reshard status shows no restart:\n" << status.out;
  EXPECT_EQ(SourceKeys() + KeyCount("s3"), written_.size());
  ASSERT_NO_FATAL_FAILURE(CheckEveryKey(r1_.address()));
}

TEST_F(RouterRegistryTest, CopyFromReplicaIsServedByTheReplicas) {
  constexpr int kKeys = 1500;
  ASSERT_NO_FATAL_FAILURE(StartCluster(/*replicas=*/1));
  ASSERT_NO_FATAL_FAILURE(StartRouter(r1_, "r1"));
  ASSERT_NO_FATAL_FAILURE(Write(r1_.address(), kKeys, "pre-", 100));
  std::map<std::string, std::string> leaders;
  for (const std::string& shard : kSources) {
    std::optional<std::string> leader = LeaderOf(shard);
    ASSERT_TRUE(leader.has_value()) << shard;
    leaders[shard] = *leader;
  }
  ASSERT_NO_FATAL_FAILURE(StartNewGroup(/*replicas=*/0));
  const std::string id = AddShard({"--copy-from=replica"});
  ASSERT_FALSE(id.empty());
  ASSERT_NO_FATAL_FAILURE(AwaitPhase(id, "done", absl::Seconds(90)));

  for (const std::string& shard : kSources) {
    ASSERT_EQ(LeaderOf(shard).value_or(""), leaders[shard])
        << shard << "'s leader changed during the migration: which node should serve is moot";
    int64_t by_leader = -1;
    int64_t by_replicas = 0;
    for (ServerProcess* node : cluster_.Group(shard)) {
      const int64_t served = CopyPagesServed(node);
      ASSERT_GE(served, 0) << node->address() << " has no copy page counter";
      if (node->address() == leaders[shard]) {
        by_leader = served;
      } else {
        by_replicas += served;
      }
    }
    std::printf("%s: copy pages served by its leader %lld, by its replica %lld\n", shard.c_str(),
                static_cast<long long>(by_leader), static_cast<long long>(by_replicas));
    EXPECT_EQ(by_leader, 0) << shard;
    EXPECT_GE(by_replicas, 1) << shard;
  }
  EXPECT_EQ(SourceKeys() + KeyCount("s3"), static_cast<uint64_t>(kKeys));
  ASSERT_NO_FATAL_FAILURE(CheckEveryKey(r1_.address()));
}

}  // namespace
}  // namespace kvstore
