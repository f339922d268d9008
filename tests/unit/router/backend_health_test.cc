// The decisions the router takes from its Admin.Status probes: which nodes
// may serve a READ_MODE_ANY_REPLICA read, and which node leads a shard
// (ChooseLeader), with a fake table of probe results.
#include "services/router/backend_health.h"

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvstore {
namespace {

using ::testing::HasSubstr;

NodeHealth Answered(const std::string& role, uint64_t epoch, uint64_t lag = 0,
                    const std::string& leader = "") {
  NodeHealth h;
  h.probe = NodeHealth::Probe::kOk;
  h.role = role;
  h.epoch = epoch;
  h.lag_entries = lag;
  h.leader = leader;
  return h;
}

NodeHealth Failed(const std::string& error = "connection refused") {
  NodeHealth h;
  h.probe = NodeHealth::Probe::kFailed;
  h.error = error;
  return h;
}

// Probe results by address; an address not in it was never probed.
class FakeProbes {
 public:
  FakeProbes& Set(const std::string& address, NodeHealth health) {
    nodes_[address] = std::move(health);
    return *this;
  }
  HealthLookup Lookup() const {
    return [this](const std::string& address) {
      auto it = nodes_.find(address);
      return it == nodes_.end() ? NodeHealth() : it->second;
    };
  }

 private:
  std::map<std::string, NodeHealth> nodes_;
};

const std::vector<std::string> kNodes = {"l:1", "r:1", "r:2"};

TEST(RouterBackendHealthTest, ReplicaReadsGoToLeadersAndReplicasThatAnsweredOrWereNeverProbed) {
  EXPECT_TRUE(ServesReplicaReads(NodeHealth(), 0));
  EXPECT_TRUE(ServesReplicaReads(Answered("leader", 1), 0));
  EXPECT_TRUE(ServesReplicaReads(Answered("replica", 1, 5), 0));
  std::string why;
  EXPECT_FALSE(ServesReplicaReads(Failed("deadline"), 0, &why));
  EXPECT_THAT(why, HasSubstr("probe failed: deadline"));
  EXPECT_FALSE(ServesReplicaReads(Answered("deposed", 2), 0, &why));
  EXPECT_THAT(why, HasSubstr("'deposed'"));
  EXPECT_FALSE(ServesReplicaReads(Answered("router", 0), 0));
  EXPECT_FALSE(ServesReplicaReads(Answered("", 0), 0));
}

TEST(RouterBackendHealthTest, AReplicaFurtherBehindThanTheLimitIsSkippedAndZeroMeansNoLimit) {
  EXPECT_TRUE(ServesReplicaReads(Answered("replica", 1, 100), 100));
  std::string why;
  EXPECT_FALSE(ServesReplicaReads(Answered("replica", 1, 101), 100, &why));
  EXPECT_THAT(why, HasSubstr("lags 101 entries"));
  EXPECT_TRUE(ServesReplicaReads(Answered("replica", 1, 1'000'000), 0));
  // A leader's lag is not a thing; only replicas are held to the limit.
  EXPECT_TRUE(ServesReplicaReads(Answered("leader", 1, 500), 100));
}

TEST(RouterBackendHealthTest, AHealthyLeaderStays) {
  FakeProbes probes;
  probes.Set("l:1", Answered("leader", 3)).Set("r:1", Answered("replica", 3));
  EXPECT_FALSE(ChooseLeader("l:1", 3, kNodes, probes.Lookup()));
  EXPECT_FALSE(ChooseLeader("l:1", 0, kNodes, probes.Lookup()));
}

TEST(RouterBackendHealthTest, AReplicaPromotedToAHigherEpochTakesOver) {
  FakeProbes probes;
  probes.Set("l:1", Failed()).Set("r:1", Answered("leader", 2)).Set("r:2", Answered("replica", 2));
  std::optional<LeaderChoice> choice = ChooseLeader("l:1", 1, kNodes, probes.Lookup());
  ASSERT_TRUE(choice);
  EXPECT_EQ(choice->address, "r:1");
  EXPECT_EQ(choice->epoch, 2u);
  EXPECT_THAT(choice->reason, HasSubstr("r:1 reports leading epoch 2, above epoch 1 of l:1"));

  // The old leader still believing it leads (it was not told yet) changes
  // nothing: the epoch decides.
  probes.Set("l:1", Answered("leader", 1));
  choice = ChooseLeader("l:1", 1, kNodes, probes.Lookup());
  ASSERT_TRUE(choice);
  EXPECT_EQ(choice->address, "r:1");
}

TEST(RouterBackendHealthTest, ALeaderAtAnEpochNotAboveTheCurrentOnesIsIgnored) {
  FakeProbes probes;
  // The current leader reports epoch 4, a stale node still says it leads 3.
  probes.Set("l:1", Answered("leader", 4)).Set("r:1", Answered("leader", 3));
  EXPECT_FALSE(ChooseLeader("l:1", 0, kNodes, probes.Lookup()));
  // Unreachable now, but seen leading epoch 4 before: still not replaced by 3 or 4.
  probes.Set("l:1", Failed());
  EXPECT_FALSE(ChooseLeader("l:1", 4, kNodes, probes.Lookup()));
  probes.Set("r:1", Answered("leader", 4));
  EXPECT_FALSE(ChooseLeader("l:1", 4, kNodes, probes.Lookup()));
}

TEST(RouterBackendHealthTest, AnUnreachableLeaderIsNotReplacedWithoutANewerOne) {
  FakeProbes probes;
  probes.Set("l:1", Failed()).Set("r:1", Answered("replica", 1)).Set("r:2", Failed());
  EXPECT_FALSE(ChooseLeader("l:1", 1, kNodes, probes.Lookup()));
  EXPECT_FALSE(ChooseLeader("l:1", 0, kNodes, FakeProbes().Lookup()));
}

TEST(RouterBackendHealthTest, TheHighestEpochWinsAndTiesGoToTheFirstNode) {
  FakeProbes probes;
  probes.Set("l:1", Failed()).Set("r:1", Answered("leader", 5)).Set("r:2", Answered("leader", 6));
  EXPECT_EQ(ChooseLeader("l:1", 1, kNodes, probes.Lookup())->address, "r:2");
  probes.Set("r:2", Answered("leader", 5));
  EXPECT_EQ(ChooseLeader("l:1", 1, kNodes, probes.Lookup())->address, "r:1");
}

TEST(RouterBackendHealthTest, ADeposedLeaderIsReplacedByTheNewLeaderOrTheOneItNames) {
  FakeProbes probes;
  probes.Set("l:1", Answered("deposed", 2, 0, "r:2")).Set("r:2", Answered("leader", 2));
  std::optional<LeaderChoice> choice = ChooseLeader("l:1", 1, kNodes, probes.Lookup());
  ASSERT_TRUE(choice);
  EXPECT_EQ(choice->address, "r:2");
  EXPECT_EQ(choice->epoch, 2u);
  EXPECT_THAT(choice->reason, HasSubstr("l:1 reports role deposed"));

  // The node it names is not probed (not in the topology): followed, epoch
  // unknown until probed.
  FakeProbes outside;
  outside.Set("l:1", Answered("deposed", 2, 0, "x:9"));
  choice = ChooseLeader("l:1", 1, kNodes, outside.Lookup());
  ASSERT_TRUE(choice);
  EXPECT_EQ(choice->address, "x:9");
  EXPECT_EQ(choice->epoch, 0u);

  // A node reporting "leader" below the deposed node's epoch is stale; the
  // named one is taken instead.
  outside.Set("r:1", Answered("leader", 1));
  EXPECT_EQ(ChooseLeader("l:1", 1, kNodes, outside.Lookup())->address, "x:9");
}

TEST(RouterBackendHealthTest, ANodeKnownToBeDeposedIsNeverChosen) {
  FakeProbes probes;
  // Deposed, naming a node that is itself deposed, and no leader anywhere.
  probes.Set("l:1", Answered("deposed", 3, 0, "r:1")).Set("r:1", Answered("deposed", 3));
  EXPECT_FALSE(ChooseLeader("l:1", 1, kNodes, probes.Lookup()));
  // Deposed, naming nobody.
  probes.Set("l:1", Answered("deposed", 3));
  EXPECT_FALSE(ChooseLeader("l:1", 1, kNodes, probes.Lookup()));
  // A malformed name is not followed either.
  probes.Set("l:1", Answered("deposed", 3, 0, "not an address"));
  EXPECT_FALSE(ChooseLeader("l:1", 1, kNodes, probes.Lookup()));
}

TEST(RouterBackendHealthTest, ALeaderTurnedReplicaHandsOverToTheLeaderItFollows) {
  FakeProbes probes;
  probes.Set("l:1", Answered("replica", 2, 0, "r:1")).Set("r:1", Answered("leader", 2));
  std::optional<LeaderChoice> choice = ChooseLeader("l:1", 1, kNodes, probes.Lookup());
  ASSERT_TRUE(choice);
  EXPECT_EQ(choice->address, "r:1");
}

TEST(RouterBackendHealthTest, TheBookKeepsTheLatestResultPerAddressAndForgetsDroppedOnes) {
  HealthBook book;
  EXPECT_EQ(book.Get("a:1").probe, NodeHealth::Probe::kUnknown);
  EXPECT_EQ(book.Record("a:1", Answered("leader", 1)).probe, NodeHealth::Probe::kUnknown);
  const NodeHealth before = book.Record("a:1", Failed());
  EXPECT_EQ(before.role, "leader");
  EXPECT_EQ(book.Get("a:1").probe, NodeHealth::Probe::kFailed);
  book.Record("b:1", Answered("replica", 1));
  book.Retain({"b:1"});
  EXPECT_EQ(book.Get("a:1").probe, NodeHealth::Probe::kUnknown);
  EXPECT_EQ(book.Lookup()("b:1").role, "replica");
  EXPECT_TRUE(Answered("deposed", 1).deposed());
  EXPECT_FALSE(Failed().deposed());
}

TEST(RouterBackendHealthTest, DeposedEpochNamesTheEpochOfADeposedNodeOnly) {
  HealthBook book;
  EXPECT_EQ(book.DeposedEpoch("a:1"), std::nullopt);  // Never probed.
  book.Record("a:1", Answered("leader", 3));
  EXPECT_EQ(book.DeposedEpoch("a:1"), std::nullopt);
  book.Record("a:1", Answered("deposed", 4));
  EXPECT_EQ(book.DeposedEpoch("a:1"), std::optional<uint64_t>(4));
  EXPECT_EQ(book.DeposedEpoch("b:1"), std::nullopt);
  book.Record("a:1", Failed());  // What a failed probe knows: not deposed.
  EXPECT_EQ(book.DeposedEpoch("a:1"), std::nullopt);
}

}  // namespace
}  // namespace kvstore
