// RoutingTable: the leader a write goes to, learned leaders, and the nodes a
// read may try.
#include "services/router/routing_table.h"

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvstore {
namespace {

using ::testing::ElementsAre;
using ::testing::UnorderedElementsAre;

std::shared_ptr<RoutingTable> MakeTable() {
  Topology t;
  t.shards = {{"s0", "h:1", {"h:2", "h:3"}}, {"s1", "h:4", {}}};
  absl::StatusOr<std::shared_ptr<RoutingTable>> table = RoutingTable::Create(t);
  EXPECT_TRUE(table.ok()) << table.status();
  return *table;
}

TEST(RouterRoutingTableTest, WritesGoToTheTopologysLeaderUntilAnotherIsLearned) {
  std::shared_ptr<RoutingTable> table = MakeTable();
  EXPECT_EQ(table->Leader(0), "h:1");
  table->SetLeader(0, "h:9");
  EXPECT_EQ(table->Leader(0), "h:9");
  EXPECT_EQ(table->Leader(1), "h:4");
  // A new table (a reload) starts from the topology again.
  EXPECT_EQ(MakeTable()->Leader(0), "h:1");
}

TEST(RouterRoutingTableTest, LeaderReadsTryOnlyTheLeader) {
  std::shared_ptr<RoutingTable> table = MakeTable();
  EXPECT_THAT(table->ReadNodes(0, v1::READ_MODE_LEADER), ElementsAre("h:1"));
  EXPECT_THAT(table->ReadNodes(1, v1::READ_MODE_ANY_REPLICA), ElementsAre("h:4"));
}

TEST(RouterRoutingTableTest, ReplicaReadsRotateAndOfferTheNextNodeForARetry) {
  std::shared_ptr<RoutingTable> table = MakeTable();
  std::map<std::string, int> first;
  for (int i = 0; i < 6; ++i) {
    std::vector<std::string> nodes = table->ReadNodes(0, v1::READ_MODE_ANY_REPLICA);
    ASSERT_EQ(nodes.size(), 2u);
    EXPECT_NE(nodes[0], nodes[1]);
    ++first[nodes[0]];
  }
  EXPECT_EQ(first, (std::map<std::string, int>{{"h:1", 2}, {"h:2", 2}, {"h:3", 2}}));
}

TEST(RouterRoutingTableTest, APromotedReplicaAsLearnedLeaderIsListedOnce) {
  std::shared_ptr<RoutingTable> table = MakeTable();
  table->SetLeader(0, "h:2");
  std::map<std::string, int> first;
  for (int i = 0; i < 4; ++i) ++first[table->ReadNodes(0, v1::READ_MODE_ANY_REPLICA)[0]];
  EXPECT_EQ(first, (std::map<std::string, int>{{"h:2", 2}, {"h:3", 2}}));
}

TEST(RouterRoutingTableTest, SetLeaderSaysWhetherTheLeaderChangedAndForgetsItsEpoch) {
  std::shared_ptr<RoutingTable> table = MakeTable();
  EXPECT_FALSE(table->SetLeader(0, "h:1"));  // Already the leader.
  EXPECT_TRUE(table->SetLeader(0, "h:2"));
  EXPECT_FALSE(table->SetLeader(0, "h:2"));  // Many requests with one hint: one change.
  EXPECT_EQ(table->LeaderEpoch(0), 0u);
}

TEST(RouterRoutingTableTest, ReplicaReadsSkipNodesTheFilterRefuses) {
  std::shared_ptr<RoutingTable> table = MakeTable();
  auto all_but = [](std::set<std::string> refused) {
    return [refused](const std::string& address) { return refused.count(address) == 0; };
  };
  std::map<std::string, int> first;
  for (int i = 0; i < 4; ++i) {
    std::vector<std::string> nodes =
        table->ReadNodes(0, v1::READ_MODE_ANY_REPLICA, all_but({"h:2"}));
    ASSERT_EQ(nodes.size(), 2u);
    EXPECT_NE(nodes[0], nodes[1]);
    ++first[nodes[0]];
    for (const std::string& n : nodes) EXPECT_NE(n, "h:2");
  }
  EXPECT_EQ(first, (std::map<std::string, int>{{"h:1", 2}, {"h:3", 2}}));
  // One node left: it, then the leader for a retry.
  EXPECT_THAT(table->ReadNodes(0, v1::READ_MODE_ANY_REPLICA, all_but({"h:1", "h:2"})),
              ElementsAre("h:3", "h:1"));
  EXPECT_THAT(table->ReadNodes(0, v1::READ_MODE_ANY_REPLICA, all_but({"h:2", "h:3"})),
              ElementsAre("h:1"));
  // None left: the leader.
  EXPECT_THAT(table->ReadNodes(0, v1::READ_MODE_ANY_REPLICA, all_but({"h:1", "h:2", "h:3"})),
              ElementsAre("h:1"));
  // The filter does not apply to leader reads.
  EXPECT_THAT(table->ReadNodes(0, v1::READ_MODE_LEADER, all_but({"h:1"})), ElementsAre("h:1"));
}

NodeHealth Leading(uint64_t epoch) {
  NodeHealth h;
  h.probe = NodeHealth::Probe::kOk;
  h.role = "leader";
  h.epoch = epoch;
  return h;
}

TEST(RouterRoutingTableTest, ProbesNoteTheLeadersEpochAndMoveWritesToANewerLeader) {
  std::shared_ptr<RoutingTable> table = MakeTable();
  std::map<std::string, NodeHealth> probes = {{"h:1", Leading(1)}};
  HealthLookup lookup = [&](const std::string& a) {
    auto it = probes.find(a);
    return it == probes.end() ? NodeHealth() : it->second;
  };
  EXPECT_FALSE(table->ApplyProbes(0, lookup));
  EXPECT_EQ(table->LeaderEpoch(0), 1u);

  probes["h:1"].probe = NodeHealth::Probe::kFailed;  // The leader dies...
  probes["h:3"] = Leading(2);                        // ...and a replica is promoted.
  std::optional<RoutingTable::LeaderChange> change = table->ApplyProbes(0, lookup);
  ASSERT_TRUE(change);
  EXPECT_EQ(change->from, "h:1");
  EXPECT_EQ(change->to, "h:3");
  EXPECT_EQ(change->epoch, 2u);
  EXPECT_EQ(table->Leader(0), "h:3");
  EXPECT_EQ(table->LeaderEpoch(0), 2u);
  EXPECT_FALSE(table->ApplyProbes(0, lookup));  // Announced once.
  // The old leader is probed still (it is in the topology), as is the new one.
  EXPECT_THAT(table->ShardNodes(0), ElementsAre("h:3", "h:1", "h:2"));
  EXPECT_THAT(table->ProbeAddresses(), UnorderedElementsAre("h:1", "h:2", "h:3", "h:4"));

  // A leader learned from a hint outside the topology is probed too.
  EXPECT_TRUE(table->SetLeader(1, "h:9"));
  EXPECT_THAT(table->ProbeAddresses(), UnorderedElementsAre("h:1", "h:2", "h:3", "h:4", "h:9"));
  // A reload starts over from the topology's leaders.
  EXPECT_EQ(MakeTable()->Leader(0), "h:1");
}

TEST(RouterRoutingTableTest, KeysAreRoutedByTheRingOverTheShardNames) {
  std::shared_ptr<RoutingTable> table = MakeTable();
  absl::StatusOr<HashRing> ring = HashRing::Build({"s0", "s1"});
  ASSERT_TRUE(ring.ok());
  for (const char* key : {"a", "b", "greeting", "user:42"}) {
    EXPECT_EQ(table->ShardOf(key), ring->OwnerIndex(key)) << key;
  }
  EXPECT_THAT(table->Addresses(), UnorderedElementsAre("h:1", "h:2", "h:3", "h:4"));
}

TEST(RouterRoutingTableTest, BadVnodesAreRefused) {
  Topology t;
  t.vnodes = 0;
  t.shards = {{"s0", "h:1", {}}};
  EXPECT_FALSE(RoutingTable::Create(t).ok());
}

}  // namespace
}  // namespace kvstore
