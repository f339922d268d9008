// RoutingTable: the leader a write goes to, learned leaders, and the nodes a
// read may try.
#include "services/router/routing_table.h"

#include <map>
#include <memory>
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
