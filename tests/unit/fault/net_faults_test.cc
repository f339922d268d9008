// What the nemesis's network steps mean (tools/kvfault/net_faults.h): link
// patterns, a step's faults, and which writes an isolation window counts.
#include "tools/kvfault/net_faults.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvstore::fault {
namespace {

using ::testing::ElementsAre;
using ::testing::UnorderedElementsAre;

const std::vector<std::string> kNodes = {"n0", "n1", "n2"};

TEST(ResolveLinksTest, LeaderToFollowersNamesEveryLinkOfTheCurrentLeader) {
  EXPECT_THAT(*ResolveLinks("leader->followers", "n1", kNodes),
              UnorderedElementsAre("n1->n0", "n1->n2"));
}

TEST(ResolveLinksTest, BothWaysToEveryNodeIsolatesOneNodeAndSkipsItself) {
  EXPECT_THAT(*ResolveLinks("leader<->*", "n0", kNodes),
              UnorderedElementsAre("n0->n1", "n0->n2", "n1->n0", "n2->n0"));
  EXPECT_EQ(ResolveLinks("*<->*", "n0", kNodes)->size(), 6u);
}

TEST(ResolveLinksTest, ClientsSendOnly) {
  EXPECT_THAT(*ResolveLinks("client->leader", "n2", kNodes), ElementsAre("client->n2"));
  EXPECT_THAT(*ResolveLinks("client->*", "n2", kNodes),
              ElementsAre("client->n0", "client->n1", "client->n2"));
  EXPECT_FALSE(ResolveLinks("n0->client", "n0", kNodes).ok());
  EXPECT_FALSE(ResolveLinks("client<->n0", "n0", kNodes).ok());
}

TEST(ResolveLinksTest, EtcdLinksAreEachNodesOwnWhicheverWayTheArrowPoints) {
  EXPECT_THAT(*ResolveLinks("leader<->etcd", "n1", kNodes), ElementsAre("n1->etcd"));
  EXPECT_THAT(*ResolveLinks("etcd->leader", "n1", kNodes), ElementsAre("n1->etcd"));
  EXPECT_THAT(*ResolveLinks("*<->etcd", "n1", kNodes),
              ElementsAre("n0->etcd", "n1->etcd", "n2->etcd"));
  EXPECT_FALSE(ResolveLinks("client->etcd", "n1", kNodes).ok());
  EXPECT_FALSE(ResolveLinks("etcd<->etcd", "n1", kNodes).ok());
}

TEST(ResolveLinksTest, UnknownNodesAndMalformedPatternsAreRefused) {
  EXPECT_FALSE(ResolveLinks("n0->n7", "n0", kNodes).ok());
  EXPECT_FALSE(ResolveLinks("n0-n1", "n0", kNodes).ok());
  EXPECT_FALSE(ResolveLinks("n0->n0", "n0", kNodes).ok());  // Names no link.
}

TEST(NetStepTest, EachModeSetsItsFaultAndResetAndHealSetNone) {
  NetStep s;
  s.link = "n0->n1";
  s.mode = "rate";
  s.rate_kbps = 2000;
  EXPECT_EQ(FaultsOf(s).rate_bytes_per_s, 250000);
  s.mode = "delay";
  s.delay_ms = 10;
  s.jitter_ms = 5;
  EXPECT_EQ(FaultsOf(s).delay, absl::Milliseconds(10));
  EXPECT_EQ(FaultsOf(s).jitter, absl::Milliseconds(5));
  s.mode = "blackhole";
  EXPECT_TRUE(FaultsOf(s).blackhole);
  s.mode = "refuse";
  EXPECT_TRUE(FaultsOf(s).refuse);
  for (const char* mode : {"reset", "heal"}) {
    s.mode = mode;
    EXPECT_TRUE(FaultsOf(s).healthy()) << mode;
  }
}

TEST(NetStepTest, ABadStepIsRefusedWhenTheScenarioLoads) {
  NetStep s;
  s.link = "n0->n1";
  s.mode = "drop";
  EXPECT_FALSE(CheckNetStep(s).ok());
  s.mode = "delay";  // Without delay_ms.
  EXPECT_FALSE(CheckNetStep(s).ok());
  s.delay_ms = 5;
  s.jitter_ms = 6;  // Could go below zero.
  EXPECT_FALSE(CheckNetStep(s).ok());
  s.jitter_ms = 5;
  EXPECT_TRUE(CheckNetStep(s).ok());
  s.mode = "rate";
  EXPECT_FALSE(CheckNetStep(s).ok());
  s.mode = "heal";
  s.link = "n0";
  EXPECT_FALSE(CheckNetStep(s).ok());
}

constexpr int64_t kMs = 1'000'000;

check::Op Write(int id, int64_t invoke_ms, int64_t complete_ms,
                check::Outcome outcome = check::Outcome::kOk, check::Fn f = check::Fn::kSet) {
  check::Op op;
  op.id = id;
  op.f = f;
  op.key = "k";
  op.outcome = outcome;
  op.invoke_t_ns = invoke_ms * kMs;
  op.complete_t_ns = complete_ms * kMs;
  return op;
}

TEST(IsolationTest, CountsOnlyWritesInvokedAfterTheGraceAndAcknowledgedBeforeTheEnd) {
  check::History h;
  h.ops.push_back(Write(0, 1000, 1010));  // Before the window.
  h.ops.push_back(Write(1, 1030, 1500));  // Invoked within the grace: may have replicated.
  h.ops.push_back(Write(2, 1100, 1200));  // Counted.
  h.ops.push_back(Write(3, 1100, 1300, check::Outcome::kOk, check::Fn::kCas));  // Counted.
  h.ops.push_back(Write(4, 1900, 2100));  // Acknowledged after the heal.
  h.ops.push_back(Write(5, 1100, 1200, check::Outcome::kInfo));
  h.ops.push_back(Write(6, 1100, 1200, check::Outcome::kOk, check::Fn::kGet));
  check::Op no_delete = Write(7, 1100, 1200, check::Outcome::kOk, check::Fn::kDelete);
  no_delete.deleted = false;  // Wrote nothing.
  h.ops.push_back(no_delete);
  check::Op deleted = Write(8, 1100, 1200, check::Outcome::kOk, check::Fn::kDelete);
  deleted.deleted = true;
  h.ops.push_back(deleted);
  check::DurabilityFigures d;
  d.lost_ops = {2, 4};
  const IsolationFigures f =
      ComputeIsolation(h, d, {IsolationWindow{"n0", 1000 * kMs, 2000 * kMs}}, 5000 * kMs);
  EXPECT_EQ(f.windows, 1);
  EXPECT_DOUBLE_EQ(f.seconds, 1.0);
  EXPECT_EQ(f.acked, 3);
  EXPECT_THAT(f.acked_ops, ElementsAre(2, 3, 8));
  EXPECT_EQ(f.lost, 1);  // Op 4 was lost, but acknowledged after the window.
}

TEST(IsolationTest, AnOpenWindowEndsWithTheLoad) {
  check::History h;
  h.ops.push_back(Write(0, 1100, 4000));
  const IsolationFigures f = ComputeIsolation(h, check::DurabilityFigures(),
                                              {IsolationWindow{"n0", 1000 * kMs, -1}}, 5000 * kMs);
  EXPECT_EQ(f.acked, 1);
  EXPECT_DOUBLE_EQ(f.seconds, 4.0);
}

}  // namespace
}  // namespace kvstore::fault
