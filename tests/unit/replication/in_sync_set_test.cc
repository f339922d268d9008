// InSyncSet (common/replication/in_sync_set.h): who is in sync, and that a
// follower stops counting for acks only once a set without it is recorded.
// Pure: time is passed in.
#include "common/replication/in_sync_set.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvstore {
namespace {

using ::testing::ElementsAre;

const absl::Time kStart = absl::FromUnixSeconds(1000);
const absl::Duration kTimeout = absl::Seconds(1);

absl::Time At(absl::Duration d) { return kStart + d; }

// Records whatever is proposed, successfully.
void RecordAll(InSyncSet* set) {
  while (std::optional<InSyncSet::Proposal> p = set->TakeProposal()) set->Recorded(p->generation, true);
}

TEST(InSyncSetTest, NothingIsAcknowledgedBeforeTheLeadershipsFirstSetIsRecorded) {
  InSyncSet set(kTimeout, {"A", "B"}, 10, kStart);
  const InSyncSet::AckedIndexes acked = {{"A", 12}, {"B", 12}};
  EXPECT_EQ(set.CommitIndex(acked, 1), 0u);
  std::optional<InSyncSet::Proposal> first = set.TakeProposal();
  ASSERT_TRUE(first.has_value());
  EXPECT_THAT(first->followers, ElementsAre("A", "B"));
  EXPECT_EQ(set.CommitIndex(acked, 1), 0u) << "acknowledged while the first record is in flight";
  set.Recorded(first->generation, true);
  EXPECT_EQ(set.CommitIndex(acked, 1), 12u);
}

TEST(InSyncSetTest, AFollowerBehindForTheTimeoutCountsUntilTheSetWithoutItIsRecorded) {
  InSyncSet set(kTimeout, {"A", "B"}, 10, kStart);
  RecordAll(&set);
  // The leader writes 11..20 at 100 ms; A keeps up, B stops at 10.
  EXPECT_FALSE(set.Observe({{"A", 20}, {"B", 10}}, 20, At(absl::Milliseconds(100))));
  EXPECT_EQ(set.CommitIndex({{"A", 20}, {"B", 10}}, 1), 10u);
  // Not yet behind for a whole timeout.
  EXPECT_FALSE(set.Observe({{"A", 20}, {"B", 10}}, 20, At(absl::Milliseconds(1050))));
  EXPECT_THAT(set.wanted(), ::testing::UnorderedElementsAre("A", "B"));
  // Behind the index the leader had a timeout ago: B leaves what is wanted...
  EXPECT_TRUE(set.Observe({{"A", 20}, {"B", 10}}, 20, At(absl::Milliseconds(1150))));
  EXPECT_THAT(set.wanted(), ::testing::UnorderedElementsAre("A"));
  // ...but writes past 10 still wait for B until the removal is recorded.
  std::optional<InSyncSet::Proposal> removal = set.TakeProposal();
  ASSERT_TRUE(removal.has_value());
  EXPECT_THAT(removal->followers, ElementsAre("A"));
  EXPECT_EQ(set.CommitIndex({{"A", 20}, {"B", 10}}, 1), 10u);
  set.Recorded(removal->generation, true);
  EXPECT_EQ(set.CommitIndex({{"A", 20}, {"B", 10}}, 1), 20u);
}

TEST(InSyncSetTest, AKeepingUpFollowerUnderSteadyLoadStaysIn) {
  InSyncSet set(kTimeout, {"A"}, 0, kStart);
  RecordAll(&set);
  // Every 100 ms the leader is 5 entries ahead of A's last ack: never caught
  // up exactly, but never behind what the leader had a timeout ago.
  for (int i = 1; i <= 50; ++i) {
    const uint64_t leader = 10u * i;
    EXPECT_FALSE(set.Observe({{"A", leader - 5}}, leader, At(absl::Milliseconds(100 * i))));
  }
  EXPECT_THAT(set.wanted(), ElementsAre("A"));
}

TEST(InSyncSetTest, AFollowerJoinsOnlyOnceItHoldsEverythingThatMayHaveBeenAcknowledged) {
  InSyncSet set(kTimeout, {"A"}, 10, kStart);
  RecordAll(&set);
  EXPECT_EQ(set.CommitIndex({{"A", 30}, {"B", 5}}, 1), 30u);
  EXPECT_FALSE(set.Observe({{"A", 30}, {"B", 29}}, 30, At(absl::Milliseconds(10))));
  EXPECT_TRUE(set.Observe({{"A", 30}, {"B", 30}}, 30, At(absl::Milliseconds(20))));
  EXPECT_THAT(set.wanted(), ::testing::UnorderedElementsAre("A", "B"));
  // Joining counts at once: a write past 30 now waits for B too.
  EXPECT_EQ(set.CommitIndex({{"A", 40}, {"B", 30}}, 1), 30u);
}

TEST(InSyncSetTest, ANewLeadershipsFloorKeepsBehindFollowersOut) {
  // Nothing committed yet in this leadership, but up to 50 may have been
  // acknowledged by the previous leader.
  InSyncSet set(kTimeout, {}, 50, kStart);
  EXPECT_FALSE(set.Observe({{"B", 49}}, 50, At(absl::Milliseconds(10))));
  EXPECT_TRUE(set.Observe({{"B", 50}}, 50, At(absl::Milliseconds(20))));
}

TEST(InSyncSetTest, ARecordWithAnUnknownOutcomeKeepsBothSetsCounting) {
  InSyncSet set(kTimeout, {"A", "B"}, 0, kStart);
  RecordAll(&set);
  set.Observe({{"A", 0}, {"B", 0}}, 10, At(absl::Milliseconds(10)));
  set.Observe({{"A", 10}, {"B", 0}}, 10, At(absl::Milliseconds(1100)));  // B leaves.
  std::optional<InSyncSet::Proposal> removal = set.TakeProposal();
  ASSERT_TRUE(removal.has_value());
  set.Recorded(removal->generation, false);  // etcd may or may not hold it.
  EXPECT_EQ(set.CommitIndex({{"A", 10}, {"B", 0}}, 1), 0u);
  std::optional<InSyncSet::Proposal> retry = set.TakeProposal();
  ASSERT_TRUE(retry.has_value());
  set.Recorded(retry->generation, true);
  EXPECT_EQ(set.CommitIndex({{"A", 10}, {"B", 0}}, 1), 10u);
}

TEST(InSyncSetTest, FewerRecordedFollowersThanSyncAcksAcknowledgeNothing) {
  InSyncSet set(kTimeout, {"A", "B"}, 0, kStart);
  RecordAll(&set);
  EXPECT_TRUE(set.Enough(2));
  set.Observe({{"A", 0}, {"B", 0}}, 10, At(absl::Milliseconds(10)));
  set.Observe({{"A", 10}, {"B", 0}}, 10, At(absl::Milliseconds(1100)));
  EXPECT_FALSE(set.Enough(2)) << "what can be recorded next has 1 follower, not 2";
  RecordAll(&set);
  EXPECT_FALSE(set.Enough(2));
  EXPECT_EQ(set.CommitIndex({{"A", 10}, {"B", 10}}, 2), 0u);
  EXPECT_TRUE(set.Enough(1));
}

TEST(InSyncSetTest, AnUnchangedSetIsNotRecordedAgain) {
  InSyncSet set(kTimeout, {"A"}, 0, kStart);
  RecordAll(&set);
  EXPECT_FALSE(set.HasProposal());
  set.Observe({{"A", 5}}, 5, At(absl::Milliseconds(10)));
  EXPECT_FALSE(set.HasProposal());
}

}  // namespace
}  // namespace kvstore
