// The election rule (common/coord/eligibility.h) as a table: live members'
// records -> who campaigns, or why nobody may.
#include "common/coord/eligibility.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace kvstore::coord {
namespace {

MemberRecord M(std::string id, std::string state, uint64_t epoch, uint64_t index) {
  MemberRecord m;
  m.id = std::move(id);
  m.addr = m.id + ":1";
  m.state = std::move(state);
  m.last_epoch = epoch;
  m.durable_index = index;
  return m;
}

struct Case {
  const char* name;
  std::vector<MemberRecord> members;
  std::string candidate;  // "" = nobody.
};

TEST(EligibilityTest, TheMostAdvancedWholeMemberAndOnlyItIsChosen) {
  const std::vector<Case> cases = {
      {"highest index wins", {M("a", "replica", 5, 10), M("b", "replica", 5, 12)}, "b"},
      {"a later epoch beats a longer log",
       {M("a", "replica", 6, 3), M("b", "deposed", 5, 99)}, "a"},
      {"ties go to the smallest id", {M("c", "replica", 5, 10), M("b", "replica", 5, 10)}, "b"},
      {"an installing member never runs",
       {M("a", "installing", 5, 10), M("b", "replica", 5, 10)}, "b"},
      {"a more advanced member that cannot run blocks the election",
       {M("a", "installing", 5, 20), M("b", "replica", 5, 10)}, ""},
      {"an empty member never runs while others hold data",
       {M("a", "empty", 0, 0), M("b", "replica", 5, 10)}, "b"},
      {"a new shard: every member empty, the smallest id runs",
       {M("b", "empty", 0, 0), M("a", "empty", 0, 0)}, "a"},
      {"nobody alive", {}, ""},
  };
  for (const Case& c : cases) {
    const Election e = ChooseCandidate(c.members);
    EXPECT_EQ(e.candidate, c.candidate) << c.name;
    EXPECT_EQ(e.verdicts.size(), c.members.size()) << c.name;
    if (c.candidate.empty()) EXPECT_FALSE(e.why_none.empty()) << c.name;
  }
}

TEST(EligibilityTest, EachVerdictSaysWhyNot) {
  const Election e =
      ChooseCandidate({M("a", "replica", 5, 10), M("b", "replica", 5, 12), M("c", "empty", 0, 0)});
  ASSERT_EQ(e.verdicts.size(), 3u);
  EXPECT_FALSE(e.verdicts[0].eligible);
  EXPECT_NE(e.verdicts[0].reason.find("behind b"), std::string::npos) << e.verdicts[0].reason;
  EXPECT_TRUE(e.verdicts[1].eligible);
  EXPECT_NE(e.verdicts[2].reason.find("no data"), std::string::npos) << e.verdicts[2].reason;
}

TEST(EligibilityTest, WithAnInSyncSetOnlyItsLiveMembersThatHoldDataMayRun) {
  IsrRecord isr;
  isr.epoch = 9;
  isr.members = {"l", "a", "b"};
  struct IsrCase {
    const char* name;
    std::vector<MemberRecord> members;
    std::string candidate;
  };
  const std::vector<IsrCase> cases = {
      {"the most advanced in-sync member wins",
       {M("a", "replica", 9, 10), M("b", "replica", 9, 12)}, "b"},
      {"a member outside the set never runs, even ahead",
       {M("a", "replica", 9, 10), M("c", "replica", 9, 40)}, "a"},
      {"an emptied member of the set never runs",
       {M("a", "replica", 9, 10), M("b", "empty", 0, 0)}, "a"},
      {"an emptied member alone: nobody", {M("b", "empty", 0, 0)}, ""},
      {"only members outside the set alive: nobody",
       {M("c", "replica", 9, 10), M("d", "replica", 9, 9)}, ""},
      {"an installing in-sync member ahead blocks",
       {M("a", "installing", 9, 20), M("b", "replica", 9, 10)}, ""},
  };
  for (const IsrCase& c : cases) {
    const Election e = ChooseCandidate(c.members, &isr);
    EXPECT_EQ(e.candidate, c.candidate) << c.name;
    if (c.candidate.empty()) EXPECT_FALSE(e.why_none.empty()) << c.name;
  }
  const Election none = ChooseCandidate({M("c", "replica", 9, 10), M("b", "empty", 0, 0)}, &isr);
  EXPECT_NE(none.verdicts[0].reason.find("not in the in-sync set"), std::string::npos)
      << none.verdicts[0].reason;
  EXPECT_NE(none.verdicts[1].reason.find("holds no data"), std::string::npos)
      << none.verdicts[1].reason;
}

TEST(SchemaTest, ValuesReadBackAndKeysNest) {
  MemberRecord m = M("n1", "replica", 7, 42);
  absl::StatusOr<MemberRecord> back = ParseMemberValue("n1", MemberValue(m));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, m);
  ClusterRecord c;
  c.epoch_base = kDefaultEpochBase;
  c.vnodes = 256;
  absl::StatusOr<ClusterRecord> cluster = ParseClusterValue(ClusterValue(c));
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  EXPECT_EQ(cluster->epoch_base, kDefaultEpochBase);
  EXPECT_FALSE(ParseClusterValue(R"({"format":2,"epoch_base":1,"vnodes":1})").ok());
  EXPECT_EQ(MemberKey("/kvstore/x/", "s1", "n1"), "/kvstore/x/shards/s1/members/n1");
  EXPECT_EQ(ShardLeaderKey("/kvstore/x", "s1"), "/kvstore/x/shards/s1/leader");
  EXPECT_EQ(DefaultPrefix(""), "/kvstore/default");
  EXPECT_EQ(IsrKey("/kvstore/x", "s1"), "/kvstore/x/shards/s1/isr");
  IsrRecord isr;
  isr.epoch = 1048600;
  isr.members = {"n1", "n2"};
  absl::StatusOr<IsrRecord> isr_back = ParseIsrValue(IsrValue(isr));
  ASSERT_TRUE(isr_back.ok()) << isr_back.status();
  EXPECT_EQ(isr_back->epoch, isr.epoch);
  EXPECT_EQ(isr_back->members, isr.members);
  EXPECT_FALSE(ParseIsrValue(R"({"epoch":1,"members":[1]})").ok());
}

}  // namespace
}  // namespace kvstore::coord
