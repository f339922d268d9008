// Key ownership by the ring in etcd (issue 14; docs/failover.md "Key
// ownership"), with real processes on 127.0.0.1: a one-member etcd
// (tests/support/etcd_process.h), shard groups s0 and s1 of one kv-shard each
// in etcd mode, and a kv-router following etcd. The cluster's keys, the ring
// included, are written straight to etcd (<P>/ring version 1: s0, s1).
//
//   AShardGroupOutsideTheRingTakesNoKeysAndANewRingMovesThemAtOnce:
//     data written through the router lands on its ring owner, and the other
//     shard refuses it with WRONG_SHARD; then
//     (a) a third shard group, s2, starts and registers in etcd but is not in
//         the ring: once the router has seen its registration (its
//         topology_revision metric), every key still reads back its value
//         through the router, and s2 refuses every key;
//     (b) <P>/ring version 2 (s0, s1, s2) gives s2 about a third of the keys:
//         their old owners refuse them with WRONG_SHARD naming s2 and version 2
//         (ErrorInfo), the others are still served, and writes through the
//         router go to s2. (Nothing moves the data yet: that is the migration.)
//
// Every process is started here and stopped by its pid (the harness's
// destructors).
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
#include "common/coord/schema.h"
#include "common/ring/hash_ring.h"
#include "common/server/grpc_status.h"
#include "gtest/gtest.h"
#include "httplib.h"
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

constexpr char kPrefix[] = "/kvstore/ownership-test";
constexpr int kVnodes = 64;
constexpr int kKeys = 200;

std::string KeyName(int i) { return absl::StrCat("key-", i); }

class OwnershipTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(etcd_.Start().ok()) << etcd_.LogTail();
    coord::EtcdClientOptions options;
    options.endpoints = etcd_.endpoint();
    absl::StatusOr<std::unique_ptr<coord::EtcdClient>> client = coord::EtcdClient::Create(options);
    ASSERT_TRUE(client.ok()) << client.status();
    etcd_client_ = *std::move(client);
  }

  // What `kvctl cluster init` and a first ring would write.
  void InitCluster(const std::vector<std::string>& shards) {
    coord::ClusterRecord cluster;
    cluster.epoch_base = coord::kDefaultEpochBase;
    cluster.vnodes = kVnodes;
    ASSERT_TRUE(etcd_client_->Put(coord::ClusterKey(kPrefix), coord::ClusterValue(cluster)).ok());
    for (const std::string& shard : shards) {
      ASSERT_TRUE(etcd_client_->Put(coord::ShardSpecKey(kPrefix, shard), R"({"format":1})").ok());
    }
    PutRing(1, shards);
  }

  void PutRing(int64_t version, const std::vector<std::string>& shards) {
    coord::RingRecord ring;
    ring.version = version;
    ring.vnodes = kVnodes;
    ring.shards = shards;
    ASSERT_TRUE(etcd_client_->Put(coord::RingKey(kPrefix), coord::RingValue(ring)).ok());
  }

  static HashRing Ring(const std::vector<std::string>& shards) {
    absl::StatusOr<HashRing> ring = HashRing::Build(shards, kVnodes);
    EXPECT_TRUE(ring.ok()) << ring.status();
    return *std::move(ring);
  }

  // A shard group of one kv-shard in etcd mode; returns once it leads.
  void StartShard(const std::string& shard) {
    const std::string id = absl::StrCat("n-", shard);
    auto node = std::make_unique<ServerProcess>(dir_.Join(id), KV_SHARD_BIN, id);
    ASSERT_TRUE(node->Start({absl::StrCat("--shard=", shard), absl::StrCat("--node-id=", id),
                             absl::StrCat("--etcd-endpoints=", etcd_.endpoint()),
                             absl::StrCat("--etcd-prefix=", kPrefix), "--lease-ttl=2s"})
                    .ok())
        << node->LogTail();
    const std::string address = node->address();
    nodes_[shard] = std::move(node);
    ASSERT_TRUE(WaitFor(
        [&] {
          absl::StatusOr<coord::RangeResult> range =
              etcd_client_->Range(coord::ShardLeaderKey(kPrefix, shard));
          if (!range.ok() || range->kvs.empty()) return false;
          absl::StatusOr<coord::LeaderValueRecord> leader =
              coord::ParseLeaderJson(range->kvs[0].value());
          if (!leader.ok() || leader->epoch == 0 || leader->addr != address) return false;
          absl::StatusOr<v1::StatusResponse> status =
              testing::FetchStatus(address, absl::Seconds(1));
          return status.ok() && status->role() == "leader" && status->ready();
        },
        absl::Now() + absl::Seconds(20), absl::Milliseconds(20)))
        << shard << " did not lead\n"
        << Logs();
  }

  void StartRouter() {
    ASSERT_TRUE(
        router_
            .Start("", {absl::StrCat("--etcd-endpoints=", etcd_.endpoint()),
                        absl::StrCat("--etcd-prefix=", kPrefix), "--metrics-listen=127.0.0.1:0",
                        absl::StrCat("--metrics-port-file=", MetricsPortFile())})
            .ok())
        << router_.LogTail();
  }
  std::string MetricsPortFile() const { return dir_.Join("router-metrics.port"); }

  // kvstore_router_topology_revision from the router's /metrics (-1 when
  // it cannot be read).
  int64_t RouterRevision() {
    const std::string address(
        absl::StripTrailingAsciiWhitespace(testing::ReadFileOrEmpty(MetricsPortFile())));
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
      if (!absl::ConsumePrefix(&line, "kvstore_router_topology_revision ")) continue;
      int64_t revision = 0;
      if (absl::SimpleAtoi(line, &revision)) return revision;
    }
    return -1;
  }

  // The ErrorInfo of a direct Get of `key` on `shard`'s node, when refused.
  std::optional<ErrorInfo> DirectRefusal(const std::string& shard, const std::string& key,
                                         grpc::Status* status = nullptr) {
    KvClient client(nodes_.at(shard)->address(), absl::Seconds(5));
    v1::GetResponse response;
    grpc::Status s = client.Get(key, &response);
    if (status != nullptr) *status = s;
    if (s.ok()) return std::nullopt;
    return ErrorInfoOf(s);
  }

  std::string Logs() {
    std::string out;
    for (auto& [shard, n] : nodes_) {
      absl::StrAppend(&out, "--- ", n->log_path(), ":\n", n->LogTail(2500));
    }
    absl::StrAppend(&out, "--- router:\n", router_.LogTail(2500));
    return out;
  }

  TempDir dir_;
  EtcdProcess etcd_;
  std::unique_ptr<coord::EtcdClient> etcd_client_;
  std::map<std::string, std::unique_ptr<ServerProcess>> nodes_;
  RouterProcess router_{dir_.Join("router")};
};

TEST_F(OwnershipTest, AShardGroupOutsideTheRingTakesNoKeysAndANewRingMovesThemAtOnce) {
  ASSERT_NO_FATAL_FAILURE(InitCluster({"s0", "s1"}));
  ASSERT_NO_FATAL_FAILURE(StartShard("s0"));
  ASSERT_NO_FATAL_FAILURE(StartShard("s1"));
  ASSERT_NO_FATAL_FAILURE(StartRouter());
  const HashRing v1 = Ring({"s0", "s1"});
  const HashRing v2 = Ring({"s0", "s1", "s2"});

  KvClient router(router_.address(), absl::Seconds(5));
  for (int i = 0; i < kKeys; ++i) {
    v1::SetResponse set;
    grpc::Status s;
    ASSERT_TRUE(
        WaitFor([&] { return (s = router.Set(KeyName(i), absl::StrCat("v-", i), &set)).ok(); },
                absl::Now() + absl::Seconds(10), absl::Milliseconds(20)))
        << KeyName(i) << ": " << s.error_message() << "\n"
        << Logs();
  }
  // Each key is on its owner, and the other shard refuses it.
  for (int i = 0; i < kKeys; ++i) {
    const std::string key = KeyName(i);
    const std::string owner = v1.Owner(key);
    KvClient direct(nodes_.at(owner)->address());
    v1::GetResponse got;
    ASSERT_TRUE(direct.Get(key, &got).ok()) << key;
    EXPECT_EQ(got.value(), absl::StrCat("v-", i)) << key << " on " << owner;
    const std::optional<ErrorInfo> other = DirectRefusal(owner == "s0" ? "s1" : "s0", key);
    ASSERT_TRUE(other.has_value()) << key << " was not refused by the shard that does not own it";
    EXPECT_EQ(other->reason, kReasonWrongShard);
    EXPECT_EQ(other->metadata.at(kMetadataOwner), owner);
  }

  // (a) s2 registers (member and leader keys) without being in the ring.
  ASSERT_NO_FATAL_FAILURE(StartShard("s2"));
  absl::StatusOr<coord::RangeResult> registered =
      etcd_client_->Range(coord::ShardLeaderKey(kPrefix, "s2"));
  ASSERT_TRUE(registered.ok() && !registered->kvs.empty());
  const int64_t registered_at = registered->kvs[0].mod_revision();
  ASSERT_TRUE(WaitFor([&] { return RouterRevision() >= registered_at; },
                      absl::Now() + absl::Seconds(20), absl::Milliseconds(20)))
      << "the router did not see revision " << registered_at << " (at " << RouterRevision() << ")\n"
      << Logs();
  int unchanged = 0;
  for (int i = 0; i < kKeys; ++i) {
    v1::GetResponse got;
    const grpc::Status s = router.Get(KeyName(i), &got);
    ASSERT_TRUE(s.ok()) << KeyName(i) << ": " << s.error_message();
    EXPECT_TRUE(got.found()) << KeyName(i) << " no longer reads back through the router";
    EXPECT_EQ(got.value(), absl::StrCat("v-", i));
    unchanged += got.found() ? 1 : 0;
  }
  for (int i = 0; i < 20; ++i) {
    const std::optional<ErrorInfo> refused = DirectRefusal("s2", KeyName(i));
    ASSERT_TRUE(refused.has_value()) << "s2, outside the ring, served " << KeyName(i);
    EXPECT_EQ(refused->reason, kReasonWrongShard);
    EXPECT_EQ(refused->metadata.at(kMetadataOwner), v1.Owner(KeyName(i)));
    EXPECT_EQ(refused->metadata.at(kMetadataRingVersion), "1");
  }
  std::printf("s2 registered outside the ring: %d of %d keys read back through the router\n",
              unchanged, kKeys);

  // (b) Ring version 2 gives s2 its share: the old owners refuse those keys.
  ASSERT_NO_FATAL_FAILURE(PutRing(2, {"s0", "s1", "s2"}));
  std::vector<int> moved, kept;
  for (int i = 0; i < kKeys; ++i) {
    const std::string key = KeyName(i);
    (v1.Owner(key) != v2.Owner(key) ? moved : kept).push_back(i);
    if (v1.Owner(key) != v2.Owner(key)) {
      ASSERT_EQ(v2.Owner(key), "s2") << key;  // Adding a shard moves keys only onto it.
    }
  }
  ASSERT_FALSE(moved.empty());
  ASSERT_FALSE(kept.empty());
  for (int i : moved) {
    const std::string key = KeyName(i);
    const std::string old_owner = v1.Owner(key);
    std::optional<ErrorInfo> refused;
    grpc::Status status;
    ASSERT_TRUE(WaitFor(
        [&] {
          refused = DirectRefusal(old_owner, key, &status);
          return refused.has_value() && refused->metadata.count(kMetadataRingVersion) > 0 &&
                 refused->metadata.at(kMetadataRingVersion) == "2";
        },
        absl::Now() + absl::Seconds(20), absl::Milliseconds(20)))
        << old_owner << " still serves " << key << " (" << status.error_message() << ")\n"
        << Logs();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_EQ(refused->reason, kReasonWrongShard);
    EXPECT_EQ(refused->metadata.at(kMetadataOwner), "s2");
    EXPECT_TRUE(absl::StrContains(status.error_message(), "s2")) << status.error_message();
  }
  for (int i : kept) {
    KvClient direct(nodes_.at(v1.Owner(KeyName(i)))->address());
    v1::GetResponse got;
    ASSERT_TRUE(direct.Get(KeyName(i), &got).ok()) << KeyName(i);
    EXPECT_EQ(got.value(), absl::StrCat("v-", i));
  }

  // The router follows: writes of moved keys land on s2 (at once: a router
  // still routing by version 1 meets WRONG_SHARD, reads the ring and retries).
  KvClient s2(nodes_.at("s2")->address());
  for (int i : moved) {
    v1::SetResponse set;
    const grpc::Status s = router.Set(KeyName(i), absl::StrCat("after-", i), &set);
    ASSERT_TRUE(s.ok()) << KeyName(i) << ": " << s.error_message() << "\n" << Logs();
    v1::GetResponse got;
    ASSERT_TRUE(s2.Get(KeyName(i), &got).ok()) << KeyName(i);
    EXPECT_EQ(got.value(), absl::StrCat("after-", i)) << KeyName(i) << " did not land on s2";
  }
  v1::MultiGetRequest batch;
  for (int i = 0; i < kKeys; ++i) batch.add_keys(KeyName(i));
  v1::MultiGetResponse results;
  ASSERT_TRUE(router.MultiGet(batch, &results).ok());
  ASSERT_EQ(results.results_size(), kKeys);
  for (int i : moved) EXPECT_EQ(results.results(i).value(), absl::StrCat("after-", i));
  for (int i : kept) EXPECT_EQ(results.results(i).value(), absl::StrCat("v-", i));
  for (int i = 0; i < kKeys; ++i) EXPECT_EQ(results.results(i).error().code(), 0) << KeyName(i);
  std::printf(
      "ring version 2: %zu of %d keys moved to s2 and are refused by their old owners; "
      "%zu kept\n",
      moved.size(), kKeys, kept.size());
}

}  // namespace
}  // namespace kvstore
