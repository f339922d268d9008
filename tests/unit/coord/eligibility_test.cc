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
       {M("a", "replica", 6, 3), M("b", "deposed", 5, 99)},
       "a"},
      {"ties go to the smallest id", {M("c", "replica", 5, 10), M("b", "replica", 5, 10)}, "b"},
      {"an installing member never runs",
       {M("a", "installing", 5, 10), M("b", "replica", 5, 10)},
       "b"},
      {"a more advanced member that cannot run blocks the election",
       {M("a", "installing", 5, 20), M("b", "replica", 5, 10)},
       ""},
      {"an empty member never runs while others hold data",
       {M("a", "empty", 0, 0), M("b", "replica", 5, 10)},
       "b"},
      {"a new shard: every member empty, the smallest id runs",
       {M("b", "empty", 0, 0), M("a", "empty", 0, 0)},
       "a"},
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
       {M("a", "replica", 9, 10), M("b", "replica", 9, 12)},
       "b"},
      {"a member outside the set never runs, even ahead",
       {M("a", "replica", 9, 10), M("c", "replica", 9, 40)},
       "a"},
      {"an emptied member of the set never runs",
       {M("a", "replica", 9, 10), M("b", "empty", 0, 0)},
       "a"},
      {"an emptied member alone: nobody", {M("b", "empty", 0, 0)}, ""},
      {"only members outside the set alive: nobody",
       {M("c", "replica", 9, 10), M("d", "replica", 9, 9)},
       ""},
      {"an installing in-sync member ahead blocks",
       {M("a", "installing", 9, 20), M("b", "replica", 9, 10)},
       ""},
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

TEST(EligibilityTest, InAsyncModeAMemberTooFarBehindTheLastLeaderNeverRuns) {
  PositionRecord last;
  last.epoch = 9;
  last.index = 1000;
  last.max_lag = 100;
  struct LagCase {
    const char* name;
    std::vector<MemberRecord> members;
    uint64_t max_lag;
    std::string candidate;
  };
  const std::vector<LagCase> cases = {
      {"within the lag: the most advanced runs",
       {M("a", "replica", 9, 950), M("b", "replica", 9, 900)},
       100,
       "a"},
      {"exactly max_lag behind still runs", {M("a", "replica", 9, 900)}, 100, "a"},
      {"one entry more than max_lag: nobody", {M("a", "replica", 9, 899)}, 100, ""},
      {"the most advanced too far blocks the others too",
       {M("a", "replica", 9, 800), M("b", "replica", 8, 990)},
       100,
       ""},
      {"a member of a newer epoch than recorded is not behind it",
       {M("a", "replica", 10, 5)},
       100,
       "a"},
      {"max_lag 0: no limit", {M("a", "replica", 9, 1)}, 0, "a"},
  };
  for (const LagCase& c : cases) {
    last.max_lag = c.max_lag;
    const Election e = ChooseCandidate(c.members, nullptr, &last);
    EXPECT_EQ(e.candidate, c.candidate) << c.name;
    if (c.candidate.empty()) {
      EXPECT_NE(e.why_none.find("--max-lag-on-failover=100"), std::string::npos)
          << c.name << ": " << e.why_none;
    }
  }
  last.max_lag = 100;
  const Election e = ChooseCandidate({M("a", "replica", 9, 850)}, nullptr, &last);
  ASSERT_EQ(e.verdicts.size(), 1u);
  EXPECT_NE(e.verdicts[0].reason.find("150 entries behind"), std::string::npos)
      << e.verdicts[0].reason;
  // With an in-sync set the set decides: the recorded position is ignored.
  IsrRecord isr;
  isr.epoch = 9;
  isr.members = {"a"};
  EXPECT_EQ(ChooseCandidate({M("a", "replica", 9, 850)}, &isr, &last).candidate, "a");
}

// A graceful transfer's request (<P>/shards/<s>/handoff) names who runs
// instead of the smallest id, when it may.
TEST(EligibilityTest, AHandoffNamesTheCandidateOnlyWhenItMayLead) {
  constexpr int64_t kNow = 1'000'000;
  const auto H = [](std::string to, int64_t deadline, bool force = false) {
    HandoffRecord h;
    h.id = "r1";
    h.from = "a";
    h.to = std::move(to);
    h.leader_create_revision = 7;
    h.deadline_unix_ms = deadline;
    h.force = force;
    return h;
  };
  IsrRecord isr;
  isr.epoch = 5;
  isr.members = {"a", "b", "c"};
  struct HandoffCase {
    const char* name;
    std::vector<MemberRecord> members;
    HandoffRecord handoff;
    const IsrRecord* isr;
    std::string candidate;
    bool by_handoff;
  };
  const std::vector<HandoffCase> cases = {
      {"to a member at the top wins over a smaller id",
       {M("a", "replica", 5, 10), M("c", "replica", 5, 10), M("b", "replica", 5, 10)},
       H("c", kNow + 1),
       nullptr,
       "c",
       true},
      {"to a member at the top of the in-sync set wins",
       {M("a", "replica", 5, 10), M("c", "replica", 5, 10)},
       H("c", kNow),
       &isr,
       "c",
       true},
      {"to a member behind is ignored without force",
       {M("a", "replica", 5, 10), M("c", "replica", 5, 9)},
       H("c", kNow + 1),
       nullptr,
       "a",
       false},
      {"to a member behind wins with force",
       {M("a", "replica", 5, 10), M("c", "replica", 5, 9)},
       H("c", kNow + 1, /*force=*/true),
       nullptr,
       "c",
       true},
      {"to an installing member is ignored even with force",
       {M("a", "replica", 5, 10), M("c", "installing", 5, 10)},
       H("c", kNow + 1, /*force=*/true),
       nullptr,
       "a",
       false},
      {"past its deadline it is ignored",
       {M("a", "replica", 5, 10), M("c", "replica", 5, 10)},
       H("c", kNow - 1),
       nullptr,
       "a",
       false},
      {"to a member that is not live it is ignored",
       {M("a", "replica", 5, 10), M("b", "replica", 5, 10)},
       H("c", kNow + 1),
       nullptr,
       "a",
       false},
  };
  for (const HandoffCase& c : cases) {
    const Election e = ChooseCandidate(c.members, c.isr, nullptr, &c.handoff, kNow);
    EXPECT_EQ(e.candidate, c.candidate) << c.name;
    EXPECT_EQ(e.by_handoff, c.by_handoff) << c.name;
    EXPECT_EQ(e.handoff_ignored.empty(), c.by_handoff) << c.name << ": " << e.handoff_ignored;
  }
  // A member outside the in-sync set is ignored without force.
  IsrRecord without_c;
  without_c.epoch = 5;
  without_c.members = {"a", "b"};
  const Election outside = ChooseCandidate({M("a", "replica", 5, 10), M("c", "replica", 5, 10)},
                                           &without_c, nullptr, &cases[0].handoff, kNow);
  EXPECT_EQ(outside.candidate, "a");
  EXPECT_NE(outside.handoff_ignored.find("not in the in-sync set"), std::string::npos)
      << outside.handoff_ignored;
}

TEST(SchemaTest, HandoffRequestAndOutcomeReadBack) {
  EXPECT_EQ(HandoffKey("/kvstore/x/", "s1"), "/kvstore/x/shards/s1/handoff");
  EXPECT_EQ(LastHandoffKey("/kvstore/x", "s1"), "/kvstore/x/shards/s1/last_handoff");
  HandoffRecord h;
  h.id = "n1-n2-1700000000000";
  h.from = "n1";
  h.to = "n2";
  h.leader_create_revision = 42;
  h.deadline_unix_ms = 1700000005000;
  h.force = true;
  absl::StatusOr<HandoffRecord> back = ParseHandoffValue(HandoffValue(h));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, h);
  EXPECT_FALSE(ParseHandoffValue(R"({"id":"x","from":"n1","to":"n2"})").ok());
  EXPECT_FALSE(ParseHandoffValue(R"({"id":"x","from":"n1","to":"n2","leader_create_revision":-1,)"
                                 R"("deadline_unix_ms":1,"force":false})")
                   .ok());
  EXPECT_FALSE(ParseHandoffValue(R"({"id":"x","from":"n1","to":2,"leader_create_revision":1,)"
                                 R"("deadline_unix_ms":1,"force":false})")
                   .ok());
  EXPECT_FALSE(ParseHandoffValue("not json").ok());

  HandoffOutcome o;
  o.id = h.id;
  o.from = "n1";
  o.to = "n2";
  o.result = kHandoffTransferred;
  o.pause_ms = 123;
  o.leader_index = 4567;
  o.lacked = 3;
  o.epoch = 1048600;
  absl::StatusOr<HandoffOutcome> outcome = ParseHandoffOutcomeValue(HandoffOutcomeValue(o));
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_EQ(*outcome, o);
  EXPECT_FALSE(ParseHandoffOutcomeValue(R"({"id":"x","result":"transferred"})").ok());
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
  EXPECT_EQ(PositionKey("/kvstore/x", "s1"), "/kvstore/x/shards/s1/position");
  PositionRecord position;
  position.epoch = 1048600;
  position.index = 123456;
  position.max_lag = 1000;
  position.unix_ms = 1700000000000;
  absl::StatusOr<PositionRecord> position_back = ParsePositionValue(PositionValue(position));
  ASSERT_TRUE(position_back.ok()) << position_back.status();
  EXPECT_EQ(*position_back, position);
  EXPECT_EQ(position_back->unix_ms, position.unix_ms);
  EXPECT_FALSE(ParsePositionValue(R"({"epoch":1,"index":-1,"max_lag":0,"unix_ms":0})").ok());
}

// ---------------------------------------------------------------- resharding records

TEST(SchemaTest, RingRecordReadsBackWithItsShardsSorted) {
  RingRecord ring;
  ring.version = 7;
  ring.vnodes = 1024;
  ring.shards = {"shard-2", "shard-0", "shard-10"};
  const std::string value = RingValue(ring);
  EXPECT_EQ(value, R"({"format":1,"shards":["shard-0","shard-10","shard-2"],"version":7,)"
                   R"("vnodes":1024})");
  absl::StatusOr<RingRecord> back = ParseRingValue(value);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->format, 1);
  EXPECT_EQ(back->version, 7);
  EXPECT_EQ(back->vnodes, 1024);
  EXPECT_EQ(back->shards, (std::vector<std::string>{"shard-0", "shard-10", "shard-2"}));
  // A hand-written value in another order is sorted too.
  absl::StatusOr<RingRecord> unsorted =
      ParseRingValue(R"({"format":1,"version":1,"vnodes":8,"shards":["b","a"]})");
  ASSERT_TRUE(unsorted.ok()) << unsorted.status();
  EXPECT_EQ(unsorted->shards, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(RingKey("/kvstore/x/"), "/kvstore/x/ring");
}

TEST(SchemaTest, RingRecordRejectsWhatRingValueNeverWrites) {
  const char* bad[] = {
      "",
      "not json",
      "[]",
      R"({"version":1,"vnodes":8,"shards":["a"]})",              // no format
      R"({"format":1,"vnodes":8,"shards":["a"]})",               // no version
      R"({"format":1,"version":1,"shards":["a"]})",              // no vnodes
      R"({"format":1,"version":1,"vnodes":8})",                  // no shards
      R"({"format":1,"version":1,"vnodes":8,"shards":[]})",      // no shard at all
      R"({"format":1,"version":1,"vnodes":8,"shards":"a"})",     // not a list
      R"({"format":1,"version":1,"vnodes":8,"shards":[1]})",     // not a name
      R"({"format":1,"version":1,"vnodes":8,"shards":[""]})",    // empty name
      R"({"format":1,"version":-1,"vnodes":8,"shards":["a"]})",  // negative version
      R"({"format":1,"version":"1","vnodes":8,"shards":["a"]})",
      R"({"format":1,"version":1.5,"vnodes":8,"shards":["a"]})",
      R"({"format":2,"version":1,"vnodes":8,"shards":["a"]})",  // a later format
  };
  for (const char* value : bad) {
    EXPECT_FALSE(ParseRingValue(value).ok()) << value;
  }
  absl::StatusOr<RingRecord> twice =
      ParseRingValue(R"({"format":1,"version":1,"vnodes":8,"shards":["a","b","a"]})");
  ASSERT_FALSE(twice.ok());
  EXPECT_NE(twice.status().message().find("shard a twice"), std::string::npos) << twice.status();
}

TEST(SchemaTest, RingRecordWithADrainReadsBackAndWithoutOnePrintsAsBefore) {
  RingRecord ring;
  ring.version = 3;
  ring.vnodes = 8;
  ring.shards = {"s2", "s0", "s1", "s3"};
  EXPECT_EQ(RingValue(ring).find("draining"), std::string::npos);
  ring.draining = RingDrain{"s1", {"s3", "s0"}};
  const std::string value = RingValue(ring);
  EXPECT_EQ(value, R"({"draining":{"handed_to":["s0","s3"],"shard":"s1"},"format":1,)"
                   R"("shards":["s0","s1","s2","s3"],"version":3,"vnodes":8})");
  absl::StatusOr<RingRecord> back = ParseRingValue(value);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->draining, (RingDrain{"s1", {"s0", "s3"}}));
  absl::StatusOr<HashRing> built = BuildRing(*back);
  ASSERT_TRUE(built.ok()) << built.status();
  EXPECT_EQ(built->drain(), back->draining);

  const char* bad[] = {
      R"({"format":1,"version":1,"vnodes":8,"shards":["a","b"],"draining":"a"})",
      R"({"format":1,"version":1,"vnodes":8,"shards":["a","b"],"draining":{"shard":"a"}})",
      R"({"format":1,"version":1,"vnodes":8,"shards":["a","b"],)"
      R"("draining":{"shard":"c","handed_to":[]}})",
      R"({"format":1,"version":1,"vnodes":8,"shards":["a","b"],)"
      R"("draining":{"shard":"a","handed_to":["a"]}})",
      R"({"format":1,"version":1,"vnodes":8,"shards":["a","b"],)"
      R"("draining":{"shard":"a","handed_to":["c"]}})",
      R"({"format":1,"version":1,"vnodes":8,"shards":["a","b","c"],)"
      R"("draining":{"shard":"a","handed_to":["b","b"]}})",
  };
  for (const char* v : bad) EXPECT_FALSE(ParseRingValue(v).ok()) << v;
}

TEST(SchemaTest, RemoveStageRingsDrainOneMoreShardEachAndTheLastDropsTheShard) {
  RingRecord ring;
  ring.version = 5;
  ring.vnodes = 8;
  ring.shards = {"s0", "s1", "s2", "s3"};
  const RingRecord first = RemoveStageRing(ring, "s1", "s2", /*last=*/false);
  EXPECT_EQ(first.version, 6);
  EXPECT_EQ(first.shards, ring.shards);
  EXPECT_EQ(first.draining, (RingDrain{"s1", {"s2"}}));
  const RingRecord second = RemoveStageRing(first, "s1", "s0", /*last=*/false);
  EXPECT_EQ(second.version, 7);
  EXPECT_EQ(second.draining, (RingDrain{"s1", {"s0", "s2"}}));
  const RingRecord last = RemoveStageRing(second, "s1", "s3", /*last=*/true);
  EXPECT_EQ(last.version, 8);
  EXPECT_EQ(last.shards, (std::vector<std::string>{"s0", "s2", "s3"}));
  EXPECT_TRUE(last.draining.empty());
}

TEST(SchemaTest, RemoveMigrationRecordReadsBackItsStagesAndOldAddRecordsHaveNoFrom) {
  MigrationRecord r;
  r.id = "m1";
  r.kind = "remove";
  r.shard = "s1";
  r.phase = "copy";
  r.from_version = 6;
  r.from = RingRecord{1, 6, 8, {"s0", "s1", "s2"}, RingDrain{"s1", {"s0"}}};
  r.to = RingRecord{1, 7, 8, {"s0", "s2"}, RingDrain()};
  r.stages = {"s0", "s2"};
  r.stage = 1;
  absl::StatusOr<MigrationRecord> back = ParseMigrationValue(MigrationValue(r));
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_TRUE(back->from.has_value());
  EXPECT_EQ(back->from->version, 6);
  EXPECT_EQ(back->from->draining, (RingDrain{"s1", {"s0"}}));
  EXPECT_EQ(back->stages, r.stages);
  EXPECT_EQ(back->stage, 1);
  EXPECT_EQ(MigrationProgressKey("/kvstore/x", *back, "s1"),
            "/kvstore/x/migrations/m1/sources/s1/to/s2");
  EXPECT_EQ(ProgressKeySource("s1/to/s2"), "s1");
  EXPECT_EQ(ProgressKeySource("shard-0"), "shard-0");

  // An add record as written before removals: no from, stages or stage.
  absl::StatusOr<MigrationRecord> old =
      ParseMigrationValue(R"({"id":"m2","kind":"add","shard":"s3","phase":"copy",)"
                          R"("from_version":4,)"
                          R"("to":{"format":1,"version":5,"vnodes":8,"shards":["s0","s3"]}})");
  ASSERT_TRUE(old.ok()) << old.status();
  EXPECT_FALSE(old->from.has_value());
  EXPECT_TRUE(old->stages.empty());
  EXPECT_EQ(MigrationProgressKey("/kvstore/x", *old, "s0"), "/kvstore/x/migrations/m2/sources/s0");
  EXPECT_EQ(MigrationValue(*old).find("stages"), std::string::npos);
}

MigrationRecord AMigration() {
  MigrationRecord r;
  r.id = "m20261203T110548Z-3fa9c1";
  r.kind = "add";
  r.shard = "shard-3";
  r.from_version = 4;
  r.to.version = 5;
  r.to.vnodes = 1024;
  r.to.shards = {"shard-3", "shard-0", "shard-1", "shard-2"};
  r.phase = "catchup";
  r.throttle_bytes_per_second = 4 << 20;
  r.paused = true;
  r.cancel_requested = true;
  r.cutover_max_pause_ms = 1500;
  r.handoff_lag = 250;
  r.copy_from = "replica";
  r.created_unix_ms = 1796295948000;
  r.finished_unix_ms = 1796296000000;
  r.error = "source shard-1: stream reset";
  return r;
}

TEST(SchemaTest, MigrationRecordReadsBackEveryField) {
  const MigrationRecord r = AMigration();
  absl::StatusOr<MigrationRecord> back = ParseMigrationValue(MigrationValue(r));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->id, r.id);
  EXPECT_EQ(back->kind, r.kind);
  EXPECT_EQ(back->shard, r.shard);
  EXPECT_EQ(back->from_version, r.from_version);
  EXPECT_EQ(back->to.version, r.to.version);
  EXPECT_EQ(back->to.vnodes, r.to.vnodes);
  EXPECT_EQ(back->to.shards,
            (std::vector<std::string>{"shard-0", "shard-1", "shard-2", "shard-3"}));
  EXPECT_EQ(back->phase, r.phase);
  EXPECT_EQ(back->throttle_bytes_per_second, r.throttle_bytes_per_second);
  EXPECT_EQ(back->paused, r.paused);
  EXPECT_EQ(back->cancel_requested, r.cancel_requested);
  EXPECT_EQ(back->cutover_max_pause_ms, r.cutover_max_pause_ms);
  EXPECT_EQ(back->handoff_lag, r.handoff_lag);
  EXPECT_EQ(back->copy_from, r.copy_from);
  EXPECT_EQ(back->created_unix_ms, r.created_unix_ms);
  EXPECT_EQ(back->finished_unix_ms, r.finished_unix_ms);
  EXPECT_EQ(back->error, r.error);

  // The fields a driver or an older kvctl may leave out keep their defaults.
  absl::StatusOr<MigrationRecord> minimal =
      ParseMigrationValue(R"({"id":"m1","kind":"remove","shard":"s1","phase":"copy",)"
                          R"("to":{"format":1,"version":2,"vnodes":8,"shards":["s0"]}})");
  ASSERT_TRUE(minimal.ok()) << minimal.status();
  EXPECT_EQ(minimal->throttle_bytes_per_second, 32 << 20);
  EXPECT_FALSE(minimal->paused);
  EXPECT_EQ(minimal->cutover_max_pause_ms, 1000);
  EXPECT_EQ(minimal->handoff_lag, 1000);
  EXPECT_EQ(minimal->copy_from, "leader");

  EXPECT_EQ(MigrationKey("/kvstore/x/", "m1"), "/kvstore/x/migrations/m1");
  EXPECT_EQ(ActiveMigrationKey("/kvstore/x"), "/kvstore/x/migrations/active");
  EXPECT_EQ(MigrationSourceKey("/kvstore/x", "m1", "shard-0"),
            "/kvstore/x/migrations/m1/sources/shard-0");
  EXPECT_EQ(MigrationSourcesPrefix("/kvstore/x", "m1"), "/kvstore/x/migrations/m1/sources/");
}

TEST(SchemaTest, MigrationRecordRejectsMissingOrMistypedFields) {
  const std::string to = R"("to":{"format":1,"version":2,"vnodes":8,"shards":["s0"]})";
  const std::string good = R"({"id":"m1","kind":"add","shard":"s1","phase":"copy",)" + to + "}";
  ASSERT_TRUE(ParseMigrationValue(good).ok());
  const std::vector<std::string> bad = {
      "",
      "[]",
      R"({"kind":"add","shard":"s1","phase":"copy",)" + to + "}",          // no id
      R"({"id":"","kind":"add","shard":"s1","phase":"copy",)" + to + "}",  // empty id
      R"({"id":"m1","shard":"s1","phase":"copy",)" + to + "}",             // no kind
      R"({"id":"m1","kind":"move","shard":"s1","phase":"copy",)" + to + "}",
      R"({"id":"m1","kind":"add","phase":"copy",)" + to + "}",    // no shard
      R"({"id":"m1","kind":"add","shard":"s1",)" + to + "}",      // no phase
      R"({"id":"m1","kind":"add","shard":"s1","phase":"copy"})",  // no ring
      R"({"id":"m1","kind":"add","shard":"s1","phase":"copy","to":{"format":1}})",
      R"({"id":"m1","kind":"add","shard":"s1","phase":"copy","to":"s0"})",
      R"({"id":7,"kind":"add","shard":"s1","phase":"copy",)" + to + "}",
      R"({"id":"m1","kind":"add","shard":"s1","phase":"copy","paused":1,)" + to + "}",
      R"({"id":"m1","kind":"add","shard":"s1","phase":"copy","throttle_bytes_per_second":"4MiB",)" +
          to + "}",
      R"({"id":"m1","kind":"add","shard":"s1","phase":"copy","handoff_lag":1.5,)" + to + "}",
  };
  for (const std::string& value : bad) {
    EXPECT_FALSE(ParseMigrationValue(value).ok()) << value;
  }
}

TEST(SchemaTest, ActiveMigrationNamesOneId) {
  absl::StatusOr<std::string> id = ParseActiveMigrationValue(ActiveMigrationValue("m1"));
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(*id, "m1");
  EXPECT_FALSE(ParseActiveMigrationValue("").ok());
  EXPECT_FALSE(ParseActiveMigrationValue(R"({"id":1})").ok());
  EXPECT_FALSE(ParseActiveMigrationValue(R"({"name":"m1"})").ok());
}

TEST(SchemaTest, SourceProgressReadsBackEveryField) {
  SourceProgress p;
  p.source = "shard-0";
  p.destination = "shard-3";
  p.phase = "catchup";
  p.start_index = 100;
  p.cursor = "AAECAw==";
  p.applied_index = 150;
  p.source_index = 180;
  p.fence_index = 0;
  p.keys_copied = 81234;
  p.bytes_copied = uint64_t{9} << 30;  // Beyond 32 bits.
  p.keys_estimate = 81000;
  p.bytes_estimate = uint64_t{10} << 30;
  p.keys_cleaned = 3;
  p.rate_bytes_per_second = 8.5 * (1 << 20);
  p.last_cutover_pause_ms = 420;
  p.retries = 1;
  p.restarts = 2;
  p.error = "restarted: the source's log no longer holds index 101";
  p.updated_unix_ms = 1796295948123;
  absl::StatusOr<SourceProgress> back = ParseSourceProgressValue("shard-0", SourceProgressValue(p));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->source, "shard-0");  // From the key, not the value.
  EXPECT_EQ(back->destination, p.destination);
  EXPECT_EQ(back->phase, p.phase);
  EXPECT_EQ(back->start_index, p.start_index);
  EXPECT_EQ(back->cursor, p.cursor);
  EXPECT_EQ(back->applied_index, p.applied_index);
  EXPECT_EQ(back->source_index, p.source_index);
  EXPECT_EQ(back->fence_index, p.fence_index);
  EXPECT_EQ(back->keys_copied, p.keys_copied);
  EXPECT_EQ(back->bytes_copied, p.bytes_copied);
  EXPECT_EQ(back->keys_estimate, p.keys_estimate);
  EXPECT_EQ(back->bytes_estimate, p.bytes_estimate);
  EXPECT_EQ(back->keys_cleaned, p.keys_cleaned);
  EXPECT_EQ(back->rate_bytes_per_second, p.rate_bytes_per_second);
  EXPECT_EQ(back->last_cutover_pause_ms, p.last_cutover_pause_ms);
  EXPECT_EQ(back->retries, p.retries);
  EXPECT_EQ(back->restarts, p.restarts);
  EXPECT_EQ(back->error, p.error);
  EXPECT_EQ(back->updated_unix_ms, p.updated_unix_ms);
  // Every field is optional: a driver's first report may hold only a few.
  absl::StatusOr<SourceProgress> empty = ParseSourceProgressValue("shard-1", "{}");
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(empty->keys_copied, 0u);
}

TEST(SchemaTest, SourceProgressRejectsMistypedFields) {
  const char* bad[] = {
      "",
      "[]",
      R"({"keys_copied":-1})",  // Counts are unsigned.
      R"({"bytes_copied":"1"})",
      R"({"phase":3})",
      R"({"rate_bytes_per_second":"fast"})",
      R"({"retries":0.5})",
      R"({"error":null})",
  };
  for (const char* value : bad) {
    absl::StatusOr<SourceProgress> p = ParseSourceProgressValue("shard-0", value);
    EXPECT_FALSE(p.ok()) << value;
    if (!p.ok()) {
      EXPECT_NE(p.status().message().find("shard-0"), std::string::npos) << p.status();
    }
  }
}

}  // namespace
}  // namespace kvstore::coord
