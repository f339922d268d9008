// ParseHistory: how lines pair into ops, and a table of malformed histories,
// each refused naming its line and the reason (kvcheck exits 2 on them).
#include "tools/kvcheck/history.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/check/history_builder.h"

namespace kvstore::check {
namespace {

using ::testing::HasSubstr;
using namespace ::kvstore::check::testing;  // NOLINT: the history vocabulary

TEST(ParseHistoryTest, PairsInvokeAndCompletionByProc) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Invoke(2, Get("k")).Ok(1, Version(4)).Ok(2, Found("a", 4));
  absl::StatusOr<History> h = ParseHistory(b.Text());
  ASSERT_TRUE(h.ok()) << h.status();
  ASSERT_EQ(h->ops.size(), 2u);
  const Op& set = h->ops[0];
  EXPECT_EQ(set.f, Fn::kSet);
  EXPECT_EQ(set.outcome, Outcome::kOk);
  EXPECT_EQ(set.value, "a");
  EXPECT_EQ(set.version, 4u);
  EXPECT_EQ(set.invoke_pos, 0);
  EXPECT_EQ(set.complete_pos, 2);
  EXPECT_EQ(set.invoke_i, 1);
  EXPECT_EQ(set.complete_i, 3);
  const Op& get = h->ops[1];
  EXPECT_EQ(get.proc, 2);
  EXPECT_TRUE(get.found);
  EXPECT_EQ(get.read_value, "a");
  EXPECT_EQ(get.version, 4u);
  EXPECT_EQ(get.complete_line, 4);
}

TEST(ParseHistoryTest, SetWithIfVersionIsCas) {
  const std::string text =
      R"({"i":1,"t_ns":1,"proc":1,"type":"invoke","f":"set","key":"k","value":"a","if_version":0})"
      "\n"
      R"({"i":2,"t_ns":2,"proc":1,"type":"ok","f":"set","key":"k","version":1})";
  absl::StatusOr<History> h = ParseHistory(text);
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->ops[0].f, Fn::kCas);
  EXPECT_EQ(h->ops[0].if_version, 0u);
}

TEST(ParseHistoryTest, MismatchKeepsTheCurrentVersion) {
  HistoryBuilder b;
  b.Invoke(1, Cas("k", "a", 3)).Fail(1, CurrentVersion(7));
  absl::StatusOr<History> h = ParseHistory(b.Text());
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->ops[0].outcome, Outcome::kFail);
  EXPECT_EQ(h->ops[0].current_version, 7u);
}

TEST(ParseHistoryTest, OpStillInFlightAtTheEndIsInfo) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a"));
  absl::StatusOr<History> h = ParseHistory(b.Text());
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->ops[0].outcome, Outcome::kInfo);
  EXPECT_EQ(h->ops[0].complete_pos, kNoEvent);
}

TEST(ParseHistoryTest, ReadAnyIsAReplicaReadKeptApart) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Invoke(2, ReadAny("k")).Ok(1, Version(1)).Ok(2, Found("a", 1));
  b.Invoke(3, ReadAny("k"));  // Still in flight at the end.
  absl::StatusOr<History> h = ParseHistory(b.Text());
  ASSERT_TRUE(h.ok()) << h.status();
  ASSERT_EQ(h->ops.size(), 1u);
  ASSERT_EQ(h->replica_reads.size(), 2u);
  const Op& r = h->replica_reads[0];
  EXPECT_TRUE(r.replica_read);
  EXPECT_EQ(r.id, 0);
  EXPECT_EQ(r.f, Fn::kGet);
  EXPECT_EQ(r.outcome, Outcome::kOk);
  EXPECT_EQ(r.read_value, "a");
  EXPECT_EQ(r.invoke_pos, 1);
  EXPECT_EQ(r.complete_pos, 3);
  EXPECT_EQ(h->replica_reads[1].outcome, Outcome::kInfo);
  EXPECT_EQ(DescribeOp(r), "read-any k -> ok a@1 (proc 2, i=2..4)");
}

TEST(ParseHistoryTest, FinalPhaseOnEitherLineMarksTheOp) {
  HistoryBuilder b;
  b.Invoke(1, Final(Get("k"))).Ok(1, NotFound());
  absl::StatusOr<History> h = ParseHistory(b.Text());
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_TRUE(h->ops[0].final_phase);
}

TEST(ParseHistoryTest, BlankLinesAreSkippedButCounted) {
  HistoryBuilder b;
  b.Invoke(1, Get("k")).Ok(1, NotFound());
  absl::StatusOr<History> h = ParseHistory("\n" + b.Text() + "\n\n");
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->ops[0].invoke_line, 2);
}

// How a history is broken -> the line and reason the error must name.
struct Malformed {
  const char* name;
  std::string text;
  const char* error;
};

std::string L(const std::string& fields) { return "{" + fields + "}\n"; }
const std::string kSetA = L(R"("i":1,"t_ns":1,"proc":1,"type":"invoke","f":"set","key":"k","value":"a")");

class MalformedHistoryTest : public ::testing::TestWithParam<Malformed> {};

TEST_P(MalformedHistoryTest, IsRefusedNamingLineAndReason) {
  absl::StatusOr<History> h = ParseHistory(GetParam().text);
  ASSERT_FALSE(h.ok()) << "accepted: " << GetParam().text;
  EXPECT_EQ(h.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(h.status().message()), HasSubstr(GetParam().error));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, MalformedHistoryTest,
    ::testing::Values(
        Malformed{"NotJson", kSetA + "{\"i\":2,\n", "line 2: not valid JSON"},
        Malformed{"NotAnObject", "[1,2]\n", "line 1: not a JSON object"},
        Malformed{"NoKey", L(R"("i":1,"t_ns":1,"proc":1,"type":"invoke","f":"get")"), "line 1: no \"key\""},
        Malformed{"ProcNotInteger", L(R"("i":1,"t_ns":1,"proc":"p1","type":"invoke","f":"get","key":"k")"),
                  "line 1: \"proc\" is not an integer"},
        Malformed{"UnknownF", L(R"("i":1,"t_ns":1,"proc":1,"type":"invoke","f":"incr","key":"k")"),
                  "line 1: unknown \"f\" \"incr\""},
        Malformed{"UnknownType", kSetA + L(R"("i":2,"t_ns":2,"proc":1,"type":"done","f":"set","key":"k")"),
                  "line 2: unknown \"type\" \"done\""},
        Malformed{"SetWithoutValue", L(R"("i":1,"t_ns":1,"proc":1,"type":"invoke","f":"set","key":"k")"),
                  "line 1: no \"value\""},
        Malformed{"CasWithoutIfVersion",
                  L(R"("i":1,"t_ns":1,"proc":1,"type":"invoke","f":"cas","key":"k","value":"a")"),
                  "line 1: a cas without \"if_version\""},
        Malformed{"NegativeIfVersion",
                  L(R"("i":1,"t_ns":1,"proc":1,"type":"invoke","f":"delete","key":"k","if_version":-1)"),
                  "line 1: \"if_version\" is not a non-negative integer"},
        Malformed{"CompletionWithoutInvoke", L(R"("i":1,"t_ns":1,"proc":1,"type":"ok","f":"get","key":"k","found":false)"),
                  "line 1: a completion without an invoke on proc 1"},
        Malformed{"TwoOpsInFlightOnOneProc",
                  kSetA + L(R"("i":2,"t_ns":2,"proc":1,"type":"invoke","f":"get","key":"k")"),
                  "line 2: proc 1 already has an op in flight (line 1)"},
        Malformed{"ProcIssuesAfterInfo",
                  kSetA + L(R"("i":2,"t_ns":2,"proc":1,"type":"info","f":"set","key":"k")") +
                      L(R"("i":3,"t_ns":3,"proc":1,"type":"invoke","f":"get","key":"k")"),
                  "line 3: proc 1 issues again after its info at line 2"},
        Malformed{"CompletionOfAnotherKey",
                  kSetA + L(R"("i":2,"t_ns":2,"proc":1,"type":"ok","f":"set","key":"x","version":1)"),
                  "line 2: completes set x but proc 1 invoked set k at line 1"},
        Malformed{"EchoedValueDiffers",
                  kSetA + L(R"("i":2,"t_ns":2,"proc":1,"type":"ok","f":"set","key":"k","value":"b","version":1)"),
                  "line 2: \"value\" differs from the invoke's (line 1)"},
        Malformed{"OkSetWithoutVersion", kSetA + L(R"("i":2,"t_ns":2,"proc":1,"type":"ok","f":"set","key":"k")"),
                  "line 2: no \"version\""},
        Malformed{"OkSetWithVersionZero",
                  kSetA + L(R"("i":2,"t_ns":2,"proc":1,"type":"ok","f":"set","key":"k","version":0)"),
                  "line 2: an ok write with version 0"},
        Malformed{"FoundWithoutValue",
                  L(R"("i":1,"t_ns":1,"proc":1,"type":"invoke","f":"get","key":"k")") +
                      L(R"("i":2,"t_ns":2,"proc":1,"type":"ok","f":"get","key":"k","found":true,"version":3)"),
                  "line 2: no \"value\""},
        Malformed{"DeleteWithoutDeleted",
                  L(R"("i":1,"t_ns":1,"proc":1,"type":"invoke","f":"delete","key":"k")") +
                      L(R"("i":2,"t_ns":2,"proc":1,"type":"ok","f":"delete","key":"k","version":3)"),
                  "line 2: no \"deleted\""},
        Malformed{"IDoesNotIncrease",
                  kSetA + L(R"("i":1,"t_ns":2,"proc":2,"type":"invoke","f":"get","key":"k")"),
                  "line 2: \"i\" 1 does not increase (previous 1)"},
        Malformed{"TimeGoesBackwards",
                  kSetA + L(R"("i":2,"t_ns":0,"proc":2,"type":"invoke","f":"get","key":"k")"),
                  "line 2: \"t_ns\" 0 goes backwards (previous 1)"},
        Malformed{"ReadAnyCompletedAsGet",
                  L(R"("i":1,"t_ns":1,"proc":1,"type":"invoke","f":"read-any","key":"k")") +
                      L(R"("i":2,"t_ns":2,"proc":1,"type":"ok","f":"get","key":"k","found":false)"),
                  "line 2: completes get k but proc 1 invoked read-any k at line 1"},
        Malformed{"ReadAnyWhileAWriteIsInFlight",
                  kSetA + L(R"("i":2,"t_ns":2,"proc":1,"type":"invoke","f":"read-any","key":"k")"),
                  "line 2: proc 1 already has an op in flight (line 1)"},
        Malformed{"ValueWrittenTwice",
                  kSetA + L(R"("i":2,"t_ns":2,"proc":2,"type":"invoke","f":"set","key":"j","value":"a")"),
                  "line 2: value \"a\" was already written at line 1"}),
    [](const ::testing::TestParamInfo<Malformed>& info) { return info.param.name; });

}  // namespace
}  // namespace kvstore::check
