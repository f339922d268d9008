// The router's topology in etcd mode (services/router/etcd_topology.h): the
// ring comes from <P>/ring, so a shard group that registers in etcd before a
// migration gives it ranges owns nothing, and every key keeps its owner.
#include "services/router/etcd_topology.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/coord/schema.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/router/routing_table.h"

namespace kvstore {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int kClusterVnodes = 64;

// The keys of an initialised cluster (relative to the prefix, as a
// TopologySnapshot holds them) with `shards` each led by "h:<n>".
std::map<std::string, std::string> Cluster(const std::vector<std::string>& shards) {
  std::map<std::string, std::string> entries;
  coord::ClusterRecord cluster;
  cluster.epoch_base = coord::kDefaultEpochBase;
  cluster.vnodes = kClusterVnodes;
  entries["cluster"] = coord::ClusterValue(cluster);
  for (size_t i = 0; i < shards.size(); ++i) {
    entries[absl::StrCat("shards/", shards[i], "/spec")] = R"({"format":1})";
    entries[absl::StrCat("shards/", shards[i], "/leader")] =
        absl::StrCat(R"({"id":"n1","addr":"h:)", i + 1, R"(","epoch":0})");
  }
  return entries;
}

void PutRing(std::map<std::string, std::string>* entries, int64_t version, int vnodes,
             std::vector<std::string> shards) {
  coord::RingRecord ring;
  ring.version = version;
  ring.vnodes = vnodes;
  ring.shards = std::move(shards);
  (*entries)["ring"] = coord::RingValue(ring);
}

// A new shard group registering itself: its member key, then its leader key.
void RegisterShard(std::map<std::string, std::string>* entries, const std::string& shard) {
  coord::MemberRecord member;
  member.addr = "h:99";
  member.state = "replica";
  (*entries)[absl::StrCat("shards/", shard, "/members/n9")] = coord::MemberValue(member);
  (*entries)[absl::StrCat("shards/", shard, "/leader")] = R"({"id":"n9","addr":"h:99","epoch":0})";
}

std::shared_ptr<RoutingTable> TableOf(const std::map<std::string, std::string>& entries) {
  absl::StatusOr<Topology> topology = TopologyFromEtcd(entries, nullptr);
  EXPECT_TRUE(topology.ok()) << topology.status();
  if (!topology.ok()) return nullptr;
  absl::StatusOr<std::shared_ptr<RoutingTable>> table = RoutingTable::Create(*topology);
  EXPECT_TRUE(table.ok()) << table.status();
  return table.ok() ? *table : nullptr;
}

// The owner's name of each of `n` keys.
std::vector<std::string> Owners(const RoutingTable& table, int n) {
  std::vector<std::string> owners;
  for (int i = 0; i < n; ++i) {
    owners.push_back(table.shard_name(table.ShardOf(absl::StrCat("key-", i))));
  }
  return owners;
}

TEST(RouterEtcdTopologyTest, AShardRegisteredInEtcdButAbsentFromTheRingChangesNoOwner) {
  std::map<std::string, std::string> entries = Cluster({"s0", "s1", "s2"});
  PutRing(&entries, 1, kClusterVnodes, {"s0", "s1", "s2"});
  std::shared_ptr<RoutingTable> before = TableOf(entries);
  ASSERT_NE(before, nullptr);

  RegisterShard(&entries, "s3");
  std::shared_ptr<RoutingTable> after = TableOf(entries);
  ASSERT_NE(after, nullptr);
  constexpr int kKeys = 20000;
  const std::vector<std::string> owners = Owners(*before, kKeys);
  EXPECT_EQ(Owners(*after, kKeys), owners);
  for (const std::string& owner : owners) ASSERT_NE(owner, "s3");
  // It is not routed to at all: not in the table, so neither probed nor written to.
  EXPECT_THAT(after->topology().ShardNames(), ElementsAre("s0", "s1", "s2"));
}

TEST(RouterEtcdTopologyTest, TheRingsShardsVnodesAndVersionAreWhatTheRouterRoutesBy) {
  std::map<std::string, std::string> entries = Cluster({"s0", "s1", "s2"});
  PutRing(&entries, 7, 32, {"s0", "s2"});
  absl::StatusOr<Topology> topology = TopologyFromEtcd(entries, nullptr);
  ASSERT_TRUE(topology.ok()) << topology.status();
  EXPECT_EQ(topology->ring_version, 7);
  EXPECT_EQ(topology->vnodes, 32);
  EXPECT_THAT(topology->ShardNames(), ElementsAre("s0", "s2"));
  EXPECT_EQ(topology->shards[1].leader, "h:3");

  std::shared_ptr<RoutingTable> table = TableOf(entries);
  ASSERT_NE(table, nullptr);
  EXPECT_EQ(table->ring_version(), 7);
  absl::StatusOr<HashRing> ring = HashRing::Build({"s0", "s2"}, 32);
  ASSERT_TRUE(ring.ok());
  for (int i = 0; i < 2000; ++i) {
    const std::string key = absl::StrCat("key-", i);
    ASSERT_EQ(table->shard_name(table->ShardOf(key)), ring->Owner(key)) << key;
  }
}

TEST(RouterEtcdTopologyTest, WithoutARingKeyEveryShardInEtcdIsInTheRingAsBefore) {
  std::map<std::string, std::string> entries = Cluster({"s0", "s1"});
  RegisterShard(&entries, "s2");
  absl::StatusOr<Topology> topology = TopologyFromEtcd(entries, nullptr);
  ASSERT_TRUE(topology.ok()) << topology.status();
  EXPECT_EQ(topology->ring_version, 0);
  EXPECT_EQ(topology->vnodes, kClusterVnodes);
  EXPECT_THAT(topology->ShardNames(), ElementsAre("s0", "s1", "s2"));
}

TEST(RouterEtcdTopologyTest, ARingShardWithNoAddressYetKeepsTheCurrentTopology) {
  std::map<std::string, std::string> entries = Cluster({"s0", "s1"});
  PutRing(&entries, 2, kClusterVnodes, {"s0", "s1", "s2"});
  absl::StatusOr<Topology> topology = TopologyFromEtcd(entries, nullptr);
  EXPECT_EQ(topology.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(topology.status().message(), HasSubstr("shard s2 has neither a leader nor a member"));
}

TEST(RouterEtcdTopologyTest, AMalformedRingIsRefusedRatherThanIgnored) {
  std::map<std::string, std::string> entries = Cluster({"s0", "s1"});
  entries["ring"] = R"({"format":1,"version":2})";
  absl::StatusOr<Topology> topology = TopologyFromEtcd(entries, nullptr);
  EXPECT_FALSE(topology.ok());
  EXPECT_THAT(topology.status().message(), HasSubstr("ring"));
  // No vnodes: the shards would build no ring from it, so neither does the router.
  PutRing(&entries, 2, 0, {"s0", "s1"});
  EXPECT_EQ(TopologyFromEtcd(entries, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(RouterEtcdTopologyTest, ANewRingVersionIsAChangeOfTopology) {
  std::map<std::string, std::string> entries = Cluster({"s0", "s1"});
  PutRing(&entries, 1, kClusterVnodes, {"s0", "s1"});
  absl::StatusOr<Topology> v1 = TopologyFromEtcd(entries, nullptr);
  PutRing(&entries, 2, kClusterVnodes, {"s0", "s1"});
  absl::StatusOr<Topology> v2 = TopologyFromEtcd(entries, &*v1);
  ASSERT_TRUE(v1.ok() && v2.ok());
  EXPECT_FALSE(SameTopology(*v1, *v2));
  EXPECT_TRUE(SameTopology(*v2, *v2));
}

}  // namespace
}  // namespace kvstore
