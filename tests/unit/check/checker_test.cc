// kvcheck on hand-made histories. Valid ones must pass; each invalid one must
// be reported with exactly the violation kinds it shows, so a test here fails
// if a check stops biting or starts naming the wrong thing.
#include "tools/kvcheck/checker.h"

#include <set>
#include <string>
#include <vector>

#include "common/storage/version.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/check/history_builder.h"
#include "tools/kvcheck/explain.h"
#include "tools/kvcheck/summary.h"

namespace kvstore::check {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using namespace ::kvstore::check::testing;  // NOLINT: the history vocabulary

History Parse(const HistoryBuilder& b) {
  absl::StatusOr<History> h = ParseHistory(b.Text());
  EXPECT_TRUE(h.ok()) << h.status() << "\n" << b.Text();
  return h.ok() ? *std::move(h) : History();
}

Report CheckHistory(const History& h, CheckOptions options = {}) { return Check(h, options); }

std::set<std::string> Kinds(const Report& r) {
  std::set<std::string> kinds;
  for (const Violation& v : r.violations) kinds.insert(ViolationKindName(v.kind));
  return kinds;
}

std::string Describe(const Report& r) {
  std::string s;
  for (const Violation& v : r.violations) s += std::string(ViolationKindName(v.kind)) + ": " + v.message + "\n";
  return s;
}

void ExpectValid(const HistoryBuilder& b) {
  const History h = Parse(b);
  const Report r = CheckHistory(h);
  EXPECT_TRUE(r.valid()) << Describe(r) << b.Text();
  for (const auto& [key, k] : r.keys) EXPECT_EQ(k.verdict, Verdict::kValid) << key;
}

void ExpectKinds(const HistoryBuilder& b, const std::set<std::string>& kinds) {
  const History h = Parse(b);
  const Report r = CheckHistory(h);
  EXPECT_EQ(Kinds(r), kinds) << Describe(r) << b.Text();
}

// ---- Valid histories.

// Two overlapping sets may take effect in either order; the later version wins.
class ConcurrentWritesTest : public ::testing::TestWithParam<bool> {};

TEST_P(ConcurrentWritesTest, EitherOrderIsValid) {
  const bool a_first = GetParam();
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Invoke(2, Set("k", "b"));
  b.Invoke(3, Get("k"));
  b.Ok(2, Version(a_first ? 4 : 3)).Ok(1, Version(a_first ? 3 : 4));
  // Concurrent with both: may see either, or nothing yet.
  b.Ok(3, a_first ? Found("a", 3) : NotFound());
  b.Invoke(4, Get("k")).Ok(4, a_first ? Found("b", 4) : Found("a", 4));
  ExpectValid(b);
}

INSTANTIATE_TEST_SUITE_P(Orders, ConcurrentWritesTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& i) { return i.param ? "AFirst" : "BFirst"; });

TEST(CheckerTest, InfoWriteThatLandsLateIsValid) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, Version(1));
  b.Invoke(2, Set("k", "x")).Info(2);  // Timed out; still in flight somewhere.
  b.Invoke(3, Get("k")).Ok(3, Found("a", 1));
  b.Invoke(4, Set("k", "b")).Ok(4, Version(2));
  b.Invoke(5, Get("k")).Ok(5, Found("x", 3));  // Landed after b.
  ExpectValid(b);
}

TEST(CheckerTest, InfoWriteThatNeverLandsIsValid) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, Version(1));
  b.Invoke(2, Set("k", "x")).Info(2);
  b.Invoke(3, Get("k")).Ok(3, Found("a", 1));
  b.Invoke(4, Set("k", "b")).Ok(4, Version(2));
  b.Invoke(5, Get("k")).Ok(5, Found("b", 2));
  ExpectValid(b);
}

TEST(CheckerTest, InfoWriteWhoseVersionNobodyReadIsValid) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, Version(1));
  b.Invoke(2, Set("k", "x")).Info(2);
  b.Invoke(3, Cas("k", "b", 1)).Fail(3, CurrentVersion(5));  // Saw x's version.
  b.Invoke(4, Cas("k", "c", 5)).Ok(4, Version(6));
  b.Invoke(5, Get("k")).Ok(5, Found("c", 6));
  ExpectValid(b);
}

TEST(CheckerTest, CasChainIsValid) {
  HistoryBuilder b;
  b.Invoke(1, Cas("k", "a", 0)).Ok(1, Version(1));
  b.Invoke(1, Cas("k", "b", 1)).Ok(1, Version(2));
  b.Invoke(1, Cas("k", "c", 2)).Invoke(2, Cas("k", "d", 2));
  b.Ok(1, Version(3)).Fail(2, CurrentVersion(3));  // Lost the race, saw c's version.
  b.Invoke(2, Cas("k", "e", 1)).Fail(2, CurrentVersion(3));
  b.Invoke(3, Get("k")).Ok(3, Found("c", 3));
  ExpectValid(b);
}

TEST(CheckerTest, DeleteAndRecreateIsValid) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, Version(1));
  b.Invoke(1, Delete("k")).Ok(1, Deleted(2));
  b.Invoke(2, Get("k")).Ok(2, NotFound());
  b.Invoke(2, Delete("k")).Ok(2, NothingDeleted());  // Missing key: no error, no change.
  b.Invoke(3, Cas("k", "b", 0)).Ok(3, Version(3));
  b.Invoke(2, Get("k")).Ok(2, Found("b", 3));
  ExpectValid(b);
}

TEST(CheckerTest, InfoDeleteThatLandsLateIsValid) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, Version(1));
  b.Invoke(2, Delete("k")).Info(2);
  b.Invoke(3, Get("k")).Ok(3, Found("a", 1));
  b.Invoke(4, Get("k")).Ok(4, NotFound());
  ExpectValid(b);
}

TEST(CheckerTest, FailedWriteThatNobodySawIsValid) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, Version(1));
  b.Invoke(2, Set("k", "x")).Fail(2);
  b.Invoke(3, Get("k")).Ok(3, Found("a", 1));
  ExpectValid(b);
}

// ---- Invalid histories, one per kind of bug.

TEST(CheckerTest, StaleReadIsNotLinearizable) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, Version(1));
  b.Invoke(2, Set("k", "b")).Ok(2, Version(2));
  b.Invoke(3, Get("k")).Ok(3, Found("a", 1));
  const History h = Parse(b);
  const Report r = CheckHistory(h);
  EXPECT_EQ(Kinds(r), (std::set<std::string>{"not-linearizable", "stale-read"})) << Describe(r);
  EXPECT_EQ(r.keys.at("k").stuck_op, 2) << "the stale get";
  ASSERT_EQ(r.violations.size(), 2u) << Describe(r);
  EXPECT_THAT(r.violations.at(1).message, HasSubstr("could be b@2"));
}

TEST(CheckerTest, StaleVersionInACasMismatchIsNotLinearizable) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, Version(1));
  b.Invoke(2, Set("k", "b")).Ok(2, Version(2));
  b.Invoke(3, Cas("k", "c", 7)).Fail(3, CurrentVersion(1));
  ExpectKinds(b, {"not-linearizable", "stale-read"});
}

TEST(CheckerTest, CasThatIgnoresTheVersionIsNotLinearizable) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, Version(1));
  b.Invoke(2, Set("k", "b")).Ok(2, Version(2));
  b.Invoke(3, Cas("k", "c", 1)).Ok(3, Version(3));  // Applied although the key was at 2.
  ExpectKinds(b, {"not-linearizable", "stale-read"});
}

TEST(CheckerTest, DeleteOfAMissingKeyThatDeletesIsNotLinearizable) {
  HistoryBuilder b;
  b.Invoke(1, Get("k")).Ok(1, NotFound());
  b.Invoke(1, Delete("k")).Ok(1, Deleted(3));
  ExpectKinds(b, {"not-linearizable"});
}

TEST(CheckerTest, LostWriteIsReported) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, Version(1));
  b.Invoke(2, Final(Get("k"))).Ok(2, NotFound());  // After a crash and restart.
  const History h = Parse(b);
  const Report r = CheckHistory(h);
  // The final read is a leader read too: it missed an acknowledged write,
  // one that was lost, so it is counted as the loss's trace, not stale.
  EXPECT_EQ(Kinds(r),
            (std::set<std::string>{"lost-write", "not-linearizable", "read-behind-lost-write"}))
      << Describe(r);
  EXPECT_EQ(r.durability.lost, 1);
  EXPECT_THAT(r.durability.lost_ops, ElementsAre(0));
}

TEST(CheckerTest, PhantomIsReported) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "x")).Fail(1);  // Definitely not applied, says the server.
  b.Invoke(2, Get("k")).Ok(2, Found("x", 1));
  ExpectKinds(b, {"phantom", "not-linearizable"});
}

TEST(CheckerTest, DoubleApplyIsReported) {
  // A router retried x after it had been applied: x comes back above y.
  HistoryBuilder b;
  b.Invoke(1, Set("k", "x")).Ok(1, Version(5));
  b.Invoke(2, Set("k", "y")).Ok(2, Version(6));
  b.Invoke(3, Get("k")).Ok(3, Found("x", 7));
  ExpectKinds(b, {"double-apply", "not-linearizable"});
}

TEST(CheckerTest, VersionRegressionIsReported) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, Version(5));
  b.Invoke(2, Set("k", "b")).Ok(2, Version(3));  // A new leader reusing old indices.
  ExpectKinds(b, {"version-regression", "not-linearizable"});
}

TEST(CheckerTest, OverlappingWritesMayGetVersionsInEitherOrder) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Invoke(2, Set("k", "b")).Ok(1, Version(5)).Ok(2, Version(3));
  ExpectValid(b);
}

TEST(CheckerTest, VersionReuseIsReported) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Invoke(2, Set("k", "b")).Ok(1, Version(4)).Ok(2, Version(4));
  ExpectKinds(b, {"version-reuse", "not-linearizable"});
}

TEST(CheckerTest, ReadOfAValueNeverWrittenIsInvented) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, Version(1));
  b.Invoke(2, Get("k")).Ok(2, Found("zz", 2));
  ExpectKinds(b, {"invented-read", "not-linearizable"});
}

TEST(CheckerTest, ReadOfAValueWrittenToAnotherKeyIsInvented) {
  HistoryBuilder b;
  b.Invoke(1, Set("j", "a")).Ok(1, Version(1));
  b.Invoke(2, Get("k")).Ok(2, Found("a", 1));
  ExpectKinds(b, {"invented-read", "not-linearizable"});
}

TEST(CheckerTest, ReadBeforeItsWriteWasInvokedIsInvented) {
  HistoryBuilder b;
  b.Invoke(2, Get("k")).Ok(2, Found("a", 1));
  b.Invoke(1, Set("k", "a")).Ok(1, Version(1));
  ExpectKinds(b, {"invented-read", "not-linearizable"});
}

// ---- Replica reads ("read-any"): may be stale, never invented, never of a
// failed write (replica_reads.h).

TEST(CheckerTest, AStaleReplicaReadIsValid) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, Version(1));
  b.Invoke(1, Set("k", "b")).Ok(1, Version(2));
  b.Invoke(1, Delete("k")).Ok(1, Deleted(3));
  // Each would be a stale read from the leader: the key is absent by now.
  b.Invoke(2, ReadAny("k")).Ok(2, Found("a", 1));
  b.Invoke(2, ReadAny("k")).Ok(2, Found("b", 2));
  b.Invoke(2, ReadAny("k")).Ok(2, NotFound());
  b.Invoke(3, ReadAny("j")).Ok(3, NotFound());  // A key nothing wrote.
  const History h = Parse(b);
  ASSERT_EQ(h.replica_reads.size(), 4u);
  ASSERT_EQ(h.ops.size(), 3u) << "replica reads are kept apart from the checked ops";
  const Report r = CheckHistory(h);
  EXPECT_TRUE(r.valid()) << Describe(r);
  EXPECT_EQ(r.keys.count("j"), 0u) << "a key only read from replicas is not searched";
  EXPECT_EQ(r.ops.at("read-any").at("ok"), 4);
}

TEST(CheckerTest, AReplicaReadOfAWriteStillInFlightOrOfAnInfoWriteIsValid) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a"));
  b.Invoke(2, ReadAny("k")).Ok(2, Found("a", 1));  // The write is not answered yet.
  b.Info(1);
  b.Invoke(3, Set("k", "b")).Ok(3, Version(2));
  ExpectValid(b);
}

TEST(CheckerTest, AReplicaReadOfAValueNeverWrittenIsInvented) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, Version(1));
  b.Invoke(2, ReadAny("k")).Ok(2, Found("zz", 2));
  ExpectKinds(b, {"invented-read"});
}

TEST(CheckerTest, AReplicaReadOfAValueWrittenToAnotherKeyIsInvented) {
  HistoryBuilder b;
  b.Invoke(1, Set("j", "a")).Ok(1, Version(1));
  b.Invoke(2, ReadAny("k")).Ok(2, Found("a", 1));
  ExpectKinds(b, {"invented-read"});
}

TEST(CheckerTest, AReplicaReadBeforeItsWriteWasInvokedIsInvented) {
  HistoryBuilder b;
  b.Invoke(2, ReadAny("k")).Ok(2, Found("a", 1));
  b.Invoke(1, Set("k", "a")).Ok(1, Version(1));
  const History h = Parse(b);
  const Report r = CheckHistory(h);
  EXPECT_EQ(Kinds(r), std::set<std::string>{"invented-read"}) << Describe(r);
  ASSERT_EQ(r.violations.size(), 1u);
  EXPECT_THAT(r.violations[0].message, HasSubstr("replica read of a before its write"));
  EXPECT_THAT(r.violations[0].ops, ElementsAre(0)) << "names the write";
}

TEST(CheckerTest, AReplicaReadOfAFailedWriteIsAPhantom) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, Version(1));
  b.Invoke(1, Set("k", "x")).Fail(1);  // Definitely not applied, says the server.
  b.Invoke(2, ReadAny("k")).Ok(2, Found("x", 2));
  ExpectKinds(b, {"phantom"});
}

TEST(CheckerTest, ReplicaReadsAreCountedInTheSummary) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, Version(1));
  b.Invoke(2, ReadAny("k")).Ok(2, Found("a", 1));
  b.Invoke(3, ReadAny("k")).Fail(3);
  const History h = Parse(b);
  const Json j = Json::parse(SummaryJson(h, CheckHistory(h)));
  EXPECT_EQ(j["ops"]["total"], 3);
  EXPECT_EQ(j["ops"]["by_f"]["read-any"]["ok"], 1);
  EXPECT_EQ(j["ops"]["by_f"]["read-any"]["fail"], 1);
  EXPECT_EQ(j["linearizability"]["keys"], 1);
}

// ---- Stale leader reads: a leader read (a get, a CAS's precondition, a
// mismatch's current version) that shows a state older than a write
// acknowledged before the read was invoked.

std::vector<const Violation*> StaleReads(const Report& r) {
  std::vector<const Violation*> out;
  for (const Violation& v : r.violations) {
    if (v.kind == ViolationKind::kStaleRead) out.push_back(&v);
  }
  return out;
}

TEST(CheckerTest, AStaleReadNamesTheReadAndTheWriteItMissed) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, Version(1));
  b.Invoke(2, Set("k", "b")).Ok(2, Version(2));
  b.Invoke(3, Get("k")).Ok(3, Found("a", 1));
  const Report r = CheckHistory(Parse(b));
  const std::vector<const Violation*> stale = StaleReads(r);
  ASSERT_EQ(stale.size(), 1u) << Describe(r);
  EXPECT_EQ(stale[0]->key, "k");
  EXPECT_THAT(stale[0]->ops, ElementsAre(2, 1)) << "the get, then the write it missed";
  EXPECT_THAT(stale[0]->message, HasSubstr("version 1"));
  EXPECT_THAT(stale[0]->message, HasSubstr("set k b -> ok version=2"));
}

// A read that missed only writes that were later lost shows the state the
// loss left: counted apart (read-behind-lost-write), so that "stale leader
// reads" is the figure of leaders serving an old state.
TEST(CheckerTest, AReadThatMissedOnlyLostWritesIsCountedApartFromStaleReads) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, Version(1));
  b.Invoke(1, Set("k", "b")).Ok(1, Version(2));  // Lost: the final read shows version 1.
  b.Invoke(2, Get("k")).Ok(2, Found("a", 1));
  b.Invoke(3, Final(Get("k"))).Ok(3, Found("a", 1));
  const Report r = CheckHistory(Parse(b));
  EXPECT_EQ(Kinds(r),
            (std::set<std::string>{"lost-write", "not-linearizable", "read-behind-lost-write"}))
      << Describe(r);
  EXPECT_EQ(r.StaleReads(), 0);
  EXPECT_EQ(r.ReadsBehindLostWrites(), 2) << "the get and the final read";
  for (const Violation& v : r.violations) {
    if (v.kind == ViolationKind::kReadBehindLostWrite)
      EXPECT_THAT(v.message, HasSubstr("lost later"));
  }
}

TEST(CheckerTest, AReadThatAlsoMissedASurvivingWriteStaysAStaleRead) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, Version(1));
  b.Invoke(1, Set("k", "b")).Ok(1, Version(2));       // Survives.
  b.Invoke(1, Set("k", "c")).Ok(1, Version(3));       // Lost.
  b.Invoke(2, Get("k")).Ok(2, Found("a", 1));         // Missed both: stale.
  b.Invoke(3, Final(Get("k"))).Ok(3, Found("b", 2));  // Missed the lost one only.
  const Report r = CheckHistory(Parse(b));
  EXPECT_EQ(r.durability.lost, 1) << Describe(r);
  EXPECT_EQ(r.StaleReads(), 1) << Describe(r);
  EXPECT_EQ(r.ReadsBehindLostWrites(), 1) << Describe(r);
  ASSERT_EQ(StaleReads(r).size(), 1u);
  EXPECT_THAT(StaleReads(r)[0]->ops, ElementsAre(3, 2)) << "the get, then the write it missed";
}

TEST(CheckerTest, AnAbsentReadBehindALostSetThatNoDeleteExplainsIsBehindALostWrite) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, Version(1));  // Removed by the delete: not missed.
  b.Invoke(1, Delete("k")).Ok(1, Deleted(2));
  b.Invoke(1, Set("k", "b")).Ok(1, Version(3));  // Lost.
  b.Invoke(2, Final(Get("k"))).Ok(2, NotFound());
  const Report r = CheckHistory(Parse(b));
  EXPECT_EQ(r.durability.lost, 1) << Describe(r);
  EXPECT_EQ(r.StaleReads(), 0) << Describe(r);
  EXPECT_EQ(r.ReadsBehindLostWrites(), 1) << Describe(r);
}

TEST(CheckerTest, WithoutALossAStaleReadStaysAStaleRead) {
  // The write the get missed is in the final state: a leader served an old one.
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, Version(1));
  b.Invoke(1, Set("k", "b")).Ok(1, Version(2));
  b.Invoke(2, Get("k")).Ok(2, Found("a", 1));
  b.Invoke(3, Final(Get("k"))).Ok(3, Found("b", 2));
  const Report r = CheckHistory(Parse(b));
  EXPECT_EQ(Kinds(r), (std::set<std::string>{"not-linearizable", "stale-read"})) << Describe(r);
  EXPECT_EQ(r.ReadsBehindLostWrites(), 0);
}

TEST(CheckerTest, EveryStaleReadIsCounted) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, Version(1));
  b.Invoke(1, Set("k", "b")).Ok(1, Version(2));
  b.Invoke(2, Get("k")).Ok(2, Found("a", 1));
  b.Invoke(3, Get("k")).Ok(3, Found("a", 1));
  b.Invoke(4, Get("k")).Ok(4, Found("b", 2));
  EXPECT_EQ(StaleReads(CheckHistory(Parse(b))).size(), 2u);
}

TEST(CheckerTest, NotFoundAfterAnAcknowledgedSetIsAStaleRead) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, Version(1));
  b.Invoke(2, Get("k")).Ok(2, NotFound());
  ExpectKinds(b, {"not-linearizable", "stale-read"});
}

TEST(CheckerTest, AValueReadAfterAnAcknowledgedDeleteIsAStaleRead) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, Version(1));
  b.Invoke(1, Delete("k")).Ok(1, Deleted(2));
  b.Invoke(2, Get("k")).Ok(2, Found("a", 1));
  ExpectKinds(b, {"not-linearizable", "stale-read"});
}

TEST(CheckerTest, AMismatchThatSawTheKeyAbsentAfterAnAcknowledgedSetIsAStaleRead) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, Version(1));
  b.Invoke(2, Cas("k", "c", 5)).Fail(2, CurrentVersion(0));
  ExpectKinds(b, {"not-linearizable", "stale-read"});
}

TEST(CheckerTest, AnInfoDeleteThatCannotApplyAfterTheWriteExplainsNothing) {
  // Its precondition names a version the key had left before the get.
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, Version(1));
  b.Invoke(1, Set("k", "b")).Ok(1, Version(2));
  b.Invoke(2, Json{{"f", "delete"}, {"key", "k"}, {"if_version", 1}}).Info(2);
  b.Invoke(3, Get("k")).Ok(3, NotFound());
  ExpectKinds(b, {"not-linearizable", "stale-read"});
}

TEST(CheckerTest, AReadConcurrentWithAWriteMayMissItAndIsNoStaleRead) {
  // b completes after the get was invoked: the get may come first.
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, Version(1));
  b.Invoke(2, Set("k", "b")).Invoke(3, Get("k")).Ok(2, Version(2)).Ok(3, Found("a", 1));
  ExpectValid(b);
}

TEST(CheckerTest, NotFoundConcurrentWithAnAcknowledgedDeleteIsNoStaleRead) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, Version(1));
  b.Invoke(2, Delete("k")).Invoke(3, Get("k")).Ok(3, NotFound()).Ok(2, Deleted(2));
  ExpectValid(b);
}

TEST(CheckerTest, NotFoundAfterAnInfoDeleteIsNoStaleRead) {
  // The delete may have landed (InfoDeleteThatLandsLateIsValid, with the
  // not-found read first).
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, Version(1));
  b.Invoke(2, Delete("k")).Info(2);
  b.Invoke(3, Get("k")).Ok(3, NotFound());
  ExpectValid(b);
}

TEST(CheckerTest, AReadOfAnInfoWriteNewerThanEveryAcknowledgedOneIsNoStaleRead) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, Version(1));
  b.Invoke(2, Set("k", "x")).Info(2);
  b.Invoke(1, Set("k", "b")).Ok(1, Version(2));
  b.Invoke(3, Get("k")).Ok(3, Found("x", 3));
  b.Invoke(4, Cas("k", "c", 3)).Ok(4, Version(4));
  ExpectValid(b);
}

TEST(CheckerTest, ANeverWrittenKeyReadAbsentIsNoStaleRead) {
  HistoryBuilder b;
  b.Invoke(1, Set("j", "a")).Ok(1, Version(1));
  b.Invoke(2, Get("k")).Ok(2, NotFound());
  b.Invoke(2, Cas("k", "b", 0)).Ok(2, Version(2));
  b.Invoke(3, Delete("j")).Ok(3, Deleted(3));
  b.Invoke(3, Delete("j")).Ok(3, NothingDeleted());
  b.Invoke(4, Cas("j", "c", 7)).Fail(4, CurrentVersion(0));
  ExpectValid(b);
}

TEST(CheckerTest, AFailedWriteIsNoAcknowledgedStateToMiss) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, Version(1));
  b.Invoke(2, Set("k", "x")).Fail(2);
  b.Invoke(3, Get("k")).Ok(3, Found("a", 1));
  ExpectValid(b);
}

// ---- The search's limits.

// Stale "not found" after n info writes nobody read: invalid, but only after
// trying every subset of them in every state, about n * 2^n states.
HistoryBuilder ManyInfoWritesThenAStaleRead(int n) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, Version(1));
  for (int i = 0; i < n; ++i) b.Invoke(10 + i, Set("k", "x" + std::to_string(i)));
  for (int i = 0; i < n; ++i) b.Info(10 + i);
  b.Invoke(2, Get("k")).Ok(2, NotFound());
  return b;
}

TEST(CheckerTest, HardHistoryIsInvalidWithoutALimit) {
  const History h = Parse(ManyInfoWritesThenAStaleRead(6));
  const Report r = CheckHistory(h);
  EXPECT_EQ(r.keys.at("k").verdict, Verdict::kInvalid);
  EXPECT_EQ(Kinds(r), (std::set<std::string>{"not-linearizable", "stale-read"}));
}

TEST(CheckerTest, TimeLimitTurnsAnUndecidedSearchIntoUnknown) {
  const History h = Parse(ManyInfoWritesThenAStaleRead(24));
  CheckOptions options;
  options.search.time_limit_ms = 50;
  int64_t fake_ns = 0;
  options.search.now_ns = [&fake_ns] { return fake_ns += 1'000'000; };  // 1 ms per look.
  const Report r = CheckHistory(h, options);
  EXPECT_EQ(r.keys.at("k").verdict, Verdict::kUnknown);
  EXPECT_THAT(r.keys.at("k").detail, HasSubstr("time limit of 50 ms"));
  // The cheap check still names the stale read the search could not reach.
  EXPECT_EQ(Kinds(r), (std::set<std::string>{"stale-read", "undecided"}));
  EXPECT_FALSE(r.valid()) << "undecided counts as a failure";
}

TEST(CheckerTest, MemoryLimitTurnsAnUndecidedSearchIntoUnknown) {
  const History h = Parse(ManyInfoWritesThenAStaleRead(24));
  CheckOptions options;
  options.search.max_memo_bytes = 1 << 20;
  const Report r = CheckHistory(h, options);
  EXPECT_EQ(r.keys.at("k").verdict, Verdict::kUnknown);
  EXPECT_THAT(r.keys.at("k").detail, HasSubstr("memory limit of 1 MiB"));
}

// ---- Durability figures from the final reads.

TEST(CheckerTest, DurabilityFiguresFromTheFinalReads) {
  HistoryBuilder b;
  b.Invoke(1, Set("kept", "a")).Ok(1, Version(1));
  b.Invoke(1, Set("over", "b")).Ok(1, Version(2));
  b.Invoke(2, Set("over", "c")).Info(2);  // Lands, supersedes b.
  b.Invoke(1, Set("lost", "d")).Ok(1, Version(4));
  b.Invoke(3, Set("phantom", "e")).Fail(3);
  b.Invoke(1, Set("deleted", "f")).Ok(1, Version(6));
  b.Invoke(4, Delete("deleted")).Info(4);  // Lands: f absent is no loss.
  b.Invoke(1, Set("unread", "g")).Ok(1, Version(7));
  b.Invoke(5, Final(Get("kept"))).Ok(5, Found("a", 1));
  b.Invoke(5, Final(Get("over"))).Ok(5, Found("c", 3));
  b.Invoke(5, Final(Get("lost"))).Ok(5, NotFound());
  b.Invoke(5, Final(Get("phantom"))).Ok(5, Found("e", 5));
  b.Invoke(5, Final(Get("deleted"))).Ok(5, NotFound());
  const History h = Parse(b);
  const Report r = CheckHistory(h);
  const DurabilityFigures& d = r.durability;
  EXPECT_EQ(d.keys_with_final_read, 5);
  EXPECT_EQ(d.acked, 5);
  EXPECT_EQ(d.acked_without_final_read, 1);
  EXPECT_EQ(d.lost, 1);
  EXPECT_EQ(d.recovered, 1);
  EXPECT_EQ(d.phantom, 1);
  EXPECT_THAT(d.lost_ops, ElementsAre(3));
  EXPECT_EQ(Kinds(r), (std::set<std::string>{"lost-write", "not-linearizable", "phantom",
                                             "read-behind-lost-write"}))
      << Describe(r);
}

TEST(CheckerTest, FinalVersionBelowAnAckedOneIsALoss) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, Version(1));
  b.Invoke(1, Set("k", "b")).Ok(1, Version(2));
  b.Invoke(2, Final(Get("k"))).Ok(2, Found("a", 1));  // b's record did not survive.
  const History h = Parse(b);
  const Report r = CheckHistory(h);
  EXPECT_EQ(r.durability.lost, 1);
  EXPECT_THAT(r.durability.lost_ops, ElementsAre(1));
}

TEST(CheckerTest, ResurrectedKeyIsALostDelete) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, Version(1));
  b.Invoke(1, Delete("k")).Ok(1, Deleted(2));
  b.Invoke(2, Final(Get("k"))).Ok(2, Found("a", 1));
  const History h = Parse(b);
  const Report r = CheckHistory(h);
  EXPECT_EQ(r.durability.acked, 2);
  EXPECT_THAT(r.durability.lost_ops, ElementsAre(1));
}

// ---- What the CLI prints and writes.

TEST(CheckerTest, ExplainShowsTheWindowAroundTheFirstViolation) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "old")).Ok(1, Version(1));  // Before the window.
  b.Invoke(1, Set("j", "other")).Ok(1, Version(2));
  b.Invoke(1, Set("k", "a")).Ok(1, Version(3));
  b.Invoke(2, Set("k", "b")).Ok(2, Version(4));
  b.Invoke(3, Get("k")).Ok(3, Found("a", 3));
  b.Invoke(1, Set("k", "after")).Ok(1, Version(5));  // After it.
  const History h = Parse(b);
  const Report r = CheckHistory(h);
  const Explanation e = Explain(h, r, "k");
  EXPECT_TRUE(e.violated);
  // The cheap check comes first: it names the read and the write it missed.
  EXPECT_THAT(e.text, HasSubstr("stale-read [k]"));
  EXPECT_THAT(e.text, HasSubstr("window: 6 events of k"));
  EXPECT_THAT(e.text, HasSubstr("* i=5 "));   // Invoke of a, whose value the get read.
  EXPECT_THAT(e.text, HasSubstr("* i=7 "));   // b: the acknowledged write the get missed.
  EXPECT_THAT(e.text, HasSubstr("* i=10 "));  // The stale get's completion.
  EXPECT_THAT(e.text, Not(HasSubstr("old")));
  EXPECT_THAT(e.text, Not(HasSubstr("other")));
  EXPECT_THAT(e.text, Not(HasSubstr("after")));
  EXPECT_FALSE(Explain(h, r, "j").violated);
  EXPECT_THAT(Explain(h, r, "nope").text, HasSubstr("no op of key nope"));
}

TEST(CheckerTest, ExplainStartsFromTheStateACasFoundWhenNothingWasRead) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "old")).Ok(1, Version(1));
  b.Invoke(1, Set("k", "a")).Ok(1, Version(2));
  b.Invoke(2, Cas("k", "c", 7)).Ok(2, Version(3));  // Matched a version the key never had.
  const History h = Parse(b);
  const Explanation e = Explain(h, CheckHistory(h), "k");
  EXPECT_THAT(e.text, HasSubstr("window: 4 events of k"));
  EXPECT_THAT(e.text, HasSubstr("* i=3 "));  // a: the state the CAS ignored.
  EXPECT_THAT(e.text, HasSubstr("* i=6 "));  // The CAS.
  EXPECT_THAT(e.text, Not(HasSubstr("old")));
}

TEST(CheckerTest, SummaryJsonHasFiguresVerdictsAndViolations) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, Version(1));
  b.Invoke(2, Set("k", "x")).Fail(2);
  b.Invoke(3, Set("j", "y")).Info(3);
  b.Invoke(4, Get("k")).Ok(4, Found("x", 2));
  const History h = Parse(b);
  const Report r = CheckHistory(h);
  const Json j = Json::parse(SummaryJson(h, r));
  EXPECT_EQ(j["valid"], false);
  EXPECT_EQ(j["ops"]["total"], 4);
  EXPECT_EQ(j["ops"]["ok"], 2);
  EXPECT_EQ(j["ops"]["fail"], 1);
  EXPECT_EQ(j["ops"]["info"], 1);
  EXPECT_EQ(j["ops"]["by_f"]["set"]["fail"], 1);
  EXPECT_EQ(j["durability"]["acked"], 1);
  EXPECT_EQ(j["linearizability"]["keys"], 2);
  EXPECT_EQ(j["linearizability"]["valid"], 1);
  EXPECT_EQ(j["linearizability"]["invalid"], 1);
  EXPECT_EQ(j["linearizability"]["invalid_keys"], Json::array({"k"}));
  EXPECT_EQ(j["violations_by_kind"]["phantom"], 1);
  EXPECT_EQ(j["violations"][0]["kind"], "phantom");
  EXPECT_EQ(j["violations"][0]["ops"], Json::array({7, 3})) << "named by the i of their invoke";
}

// ---- One acknowledging node per epoch (scenario 20). A version carries its
// leader's epoch in the high bits (common/storage/version.h); "node" names
// who answered.

Json AckedBy(const std::string& node, uint64_t epoch, uint64_t index) {
  return {{"version", MakeVersion(epoch, index)}, {"node", node}};
}

// A read answered by `node`.
Json On(const std::string& node, Json results) {
  results["node"] = node;
  return results;
}

// ---- Reads behind a loss that a later write hid from the final read: the
// node that answered had led a newer epoch than the write's without it.

TEST(CheckerTest, AReadFromALeaderPastTheMissedWritesEpochIsBehindALostWrite) {
  // n0 acknowledges b in epoch 2, loses it in a power cut and leads epoch 3
  // without it; c, written later, hides the loss from the final read.
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, AckedBy("n0", 2, 10));
  b.Invoke(1, Set("k", "b")).Ok(1, AckedBy("n0", 2, 11));
  b.Invoke(1, Set("j", "x")).Ok(1, AckedBy("n0", 3, 20));
  b.Invoke(2, Get("k")).Ok(2, On("n0", Found("a", MakeVersion(2, 10))));
  b.Invoke(1, Set("k", "c")).Ok(1, AckedBy("n0", 3, 21));
  b.Invoke(3, Final(Get("k"))).Ok(3, On("n0", Found("c", MakeVersion(3, 21))));
  const Report r = CheckHistory(Parse(b));
  EXPECT_EQ(r.durability.lost, 0) << "the final read cannot tell";
  EXPECT_EQ(r.StaleReads(), 0) << Describe(r);
  EXPECT_EQ(r.ReadsBehindLostWrites(), 1) << Describe(r);
  EXPECT_EQ(Kinds(r), (std::set<std::string>{"not-linearizable", "read-behind-lost-write"}))
      << Describe(r);
}

TEST(CheckerTest, ANewLeaderWithoutTheOldLeadersWriteIsBehindALostWrite) {
  // Async acks: n0 acknowledges b in epoch 2 that n1 never receives; n1,
  // promoted, answers with a (epoch 2) before it acknowledges anything.
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, AckedBy("n0", 2, 10));
  b.Invoke(1, Set("k", "b")).Ok(1, AckedBy("n0", 2, 11));
  b.Invoke(2, Get("k")).Ok(2, On("n1", Found("a", MakeVersion(2, 10))));
  b.Invoke(2, Set("k", "c")).Ok(2, AckedBy("n1", 3, 12));
  b.Invoke(3, Final(Get("k"))).Ok(3, On("n1", Found("c", MakeVersion(3, 12))));
  const Report r = CheckHistory(Parse(b));
  EXPECT_EQ(r.StaleReads(), 0) << Describe(r);
  EXPECT_EQ(r.ReadsBehindLostWrites(), 1) << Describe(r);
}

TEST(CheckerTest, ADeposedLeaderServingAnOldStateIsAStaleRead) {
  // n1 leads epoch 3 and acknowledges b; n0, still leading epoch 2 in its
  // own view, answers a read with a: a stale leader read, not a loss.
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, AckedBy("n0", 2, 10));
  b.Invoke(2, Set("k", "b")).Ok(2, AckedBy("n1", 3, 11));
  b.Invoke(3, Get("k")).Ok(3, On("n0", Found("a", MakeVersion(2, 10))));
  b.Invoke(4, Final(Get("k"))).Ok(4, On("n1", Found("b", MakeVersion(3, 11))));
  const Report r = CheckHistory(Parse(b));
  EXPECT_EQ(r.StaleReads(), 1) << Describe(r);
  EXPECT_EQ(r.ReadsBehindLostWrites(), 0) << Describe(r);
}

TEST(CheckerTest, AnOldStateInTheMissedWritesOwnEpochStaysAStaleRead) {
  // n0 shows a after acknowledging b in the same epoch and leads no newer
  // one: nothing says b was lost (c follows it), so the read is stale.
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, AckedBy("n0", 2, 10));
  b.Invoke(1, Set("k", "b")).Ok(1, AckedBy("n0", 2, 11));
  b.Invoke(2, Get("k")).Ok(2, On("n0", Found("a", MakeVersion(2, 10))));
  b.Invoke(1, Set("k", "c")).Ok(1, AckedBy("n0", 2, 12));
  b.Invoke(3, Final(Get("k"))).Ok(3, On("n0", Found("c", MakeVersion(2, 12))));
  const Report r = CheckHistory(Parse(b));
  EXPECT_EQ(r.StaleReads(), 1) << Describe(r);
  EXPECT_EQ(r.ReadsBehindLostWrites(), 0) << Describe(r);
}

TEST(CheckerTest, TwoNodesAcknowledgingOneEpochIsReported) {
  // A promotion that kept the old epoch: n1 leads in n0's epoch 7.
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, AckedBy("n0", 7, 10));
  b.Invoke(2, Set("j", "b")).Ok(2, AckedBy("n1", 7, 11));
  ExpectKinds(b, {"epoch-two-nodes"});
}

TEST(CheckerTest, TwoNodesInOneEpochAreReportedOncePerNode) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, AckedBy("n0", 7, 10));
  b.Invoke(2, Set("j", "b")).Ok(2, AckedBy("n1", 7, 11));
  b.Invoke(3, Set("i", "c")).Ok(3, AckedBy("n1", 7, 12));
  const Report r = CheckHistory(Parse(b));
  ASSERT_EQ(r.violations.size(), 1u) << Describe(r);
  EXPECT_THAT(r.violations[0].message, HasSubstr("epoch 7 acknowledged by two nodes: n1"));
}

TEST(CheckerTest, ANewNodeInANewEpochIsValid) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, AckedBy("n0", 7, 10));
  b.Invoke(2, Set("k", "b")).Ok(2, AckedBy("n1", 8, 11));
  b.Invoke(3, Set("j", "c")).Ok(3, AckedBy("n1", 8, 12));
  ExpectValid(b);
}

TEST(CheckerTest, WritesThatNameNoNodeAreNotAttributed) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, AckedBy("n0", 7, 10));
  b.Invoke(2, Set("j", "b")).Ok(2, Version(MakeVersion(7, 11)));
  ExpectValid(b);
}

TEST(CheckerTest, AWriteAcknowledgedInAnOlderEpochAfterANewerOneIsReported) {
  // n0 lost its lease and n1 leads epoch 8; n0 still acknowledges a write
  // (another key) invoked after n1's first answer.
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, AckedBy("n0", 7, 10));
  b.Invoke(2, Set("j", "b")).Ok(2, AckedBy("n1", 8, 11));
  b.Invoke(3, Set("i", "c")).Ok(3, AckedBy("n0", 7, 11));
  ExpectKinds(b, {"stale-epoch-ack"});
}

TEST(CheckerTest, AnOlderEpochsAnswerInFlightAcrossTheChangeIsValid) {
  // Invoked before the newer epoch's first answer: it may have been
  // acknowledged before the change.
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Invoke(2, Set("j", "b"));
  b.Ok(2, AckedBy("n1", 8, 11)).Ok(1, AckedBy("n0", 7, 10));
  ExpectValid(b);
}

TEST(CheckerTest, ANodeThatIsNotAStringIsRefused) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, {{"version", 1}, {"node", 3}});
  absl::StatusOr<History> h = ParseHistory(b.Text());
  EXPECT_FALSE(h.ok());
  EXPECT_THAT(std::string(h.status().message()), HasSubstr("\"node\" is not a string"));
}

}  // namespace
}  // namespace kvstore::check
