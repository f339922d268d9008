// Availability during faults: the fault windows read from hand-made nemesis
// logs (as nemesis.cc writes them), and the writes counted in them.
#include "tools/kvcheck/availability.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/check/history_builder.h"
#include "tools/kvcheck/checker.h"
#include "tools/kvcheck/summary.h"

namespace kvstore::check {
namespace {

using ::testing::HasSubstr;
using namespace ::kvstore::check::testing;  // NOLINT: the history vocabulary

constexpr int64_t kMs = 1'000'000;

// One nemesis.jsonl line at `t_ms` milliseconds on the history's clock.
class NemesisLog {
 public:
  NemesisLog& Add(int64_t t_ms, int step, const std::string& action, const std::string& node,
                  const std::string& command = "", const std::string& note = "", bool ok = true) {
    Json j = {{"t_ns", t_ms * kMs}, {"step", step},       {"action", action},
              {"node", node},       {"command", command}, {"ok", ok}};
    if (!note.empty()) j["note"] = note;
    text_ += j.dump() + "\n";
    return *this;
  }
  NemesisLog& Net(int64_t t_ms, int step, const std::string& link, const std::string& faults) {
    return Add(t_ms, step, "net", link, "proxy " + link + ": " + faults);
  }
  const std::string& Text() const { return text_; }

 private:
  std::string text_;
};

std::vector<FaultWindow> Windows(const NemesisLog& log) {
  absl::StatusOr<std::vector<FaultWindow>> w = ParseFaultWindows(log.Text());
  EXPECT_TRUE(w.ok()) << w.status() << "\n" << log.Text();
  return w.ok() ? *w : std::vector<FaultWindow>();
}

void ExpectWindow(const FaultWindow& w, const std::string& fault, int64_t start_ms,
                  int64_t end_ms) {
  EXPECT_EQ(w.fault, fault);
  EXPECT_EQ(w.start_ns, start_ms * kMs) << fault;
  EXPECT_EQ(w.end_ns, end_ms < 0 ? kOpenWindow : end_ms * kMs) << fault;
}

// ---- Windows from the nemesis log.

TEST(FaultWindowsTest, AKillLastsUntilTheNodesRestart) {
  NemesisLog log;
  log.Add(1000, 0, "kill", "n0", "kill -9 123")
      .Add(3000, 1, "restart", "n0", "kv-shard ...", "pid 124");
  log.Add(3500, 2, "await-healed", "");
  const std::vector<FaultWindow> w = Windows(log);
  ASSERT_EQ(w.size(), 1u);
  ExpectWindow(w[0], "kill n0", 1000, 3000);
  EXPECT_EQ(w[0].step, 0);
}

TEST(FaultWindowsTest, APromotionEndsADownLeadersWindowBeforeItsRestartAsAReplica) {
  NemesisLog log;
  log.Add(1000, 0, "kill", "n0")
      .Add(2000, 1, "promote", "n1")
      .Add(2500, 2, "restart", "n0", "", "pid 9");
  const std::vector<FaultWindow> w = Windows(log);
  ASSERT_EQ(w.size(), 1u);
  ExpectWindow(w[0], "kill n0", 1000, 2000);
}

TEST(FaultWindowsTest, TheOldLeaderBackAsAReplicaLeavesItsWindowToThePromotion) {
  NemesisLog log;
  log.Add(1000, 0, "kill", "n0").Add(1500, 1, "wipe", "n0");
  log.Add(2000, 2, "restart", "n0", "/b/kv-replica --listen=127.0.0.1:1", "pid 4");
  log.Add(2200, 3, "promote", "n1");
  // Now n1 leads: n0, a follower, is back at its restart as a replica.
  log.Add(3000, 4, "kill", "n0")
      .Add(3300, 5, "restart", "n0", "/b/kv-replica --listen=127.0.0.1:1", "pid 5");
  const std::vector<FaultWindow> w = Windows(log);
  ASSERT_EQ(w.size(), 2u) << "the promotion ended a window, so it opens none";
  ExpectWindow(w[0], "kill n0", 1000, 2200);
  ExpectWindow(w[1], "kill n0", 3000, 3300);
}

TEST(FaultWindowsTest, APowerLossOfEveryNodeIsOneWindowUntilTheLastIsBack) {
  NemesisLog log;
  for (const char* n : {"n0", "n1", "n2"})
    log.Add(1000, 0, "kill", n, "kill -9 1", "power loss: 12 bytes");
  for (const char* n : {"n0", "n1", "n2"})
    log.Add(1100, 0, "powerloss", n, "kvfault powerloss ...");
  log.Add(2000, 1, "restart", "n1", "", "pid 1").Add(2100, 1, "restart", "n2", "", "pid 2");
  log.Add(2500, 2, "promote", "n1").Add(2600, 3, "restart", "n0", "", "pid 3");
  const std::vector<FaultWindow> w = Windows(log);
  ASSERT_EQ(w.size(), 1u);
  ExpectWindow(w[0], "powerloss n0,n1,n2", 1000, 2500);
}

TEST(FaultWindowsTest, APauseEndsAtItsResumeNotAtAPromotion) {
  NemesisLog log;
  log.Add(1000, 0, "pause", "n1").Add(2000, 1, "kill", "n0").Add(3000, 2, "resume", "n1");
  log.Add(3500, 3, "promote", "n1");
  const std::vector<FaultWindow> w = Windows(log);
  ASSERT_EQ(w.size(), 2u);
  ExpectWindow(w[0], "pause n1", 1000, 3000);
  ExpectWindow(w[1], "kill n0", 2000, 3500);
}

TEST(FaultWindowsTest, AFailpointOrAFullDiskLastsUntilTheNodeIsBack) {
  NemesisLog log;
  log.Add(1000, 0, "failpoint", "n0", "fiu-ctrl ...").Add(1200, 0, "await-exit", "n0");
  log.Add(1300, 1, "powerloss", "n0").Add(4000, 2, "restart", "n0", "", "pid 7");
  log.Add(5000, 3, "fill-disk", "n0").Add(5100, 3, "await-exit", "n0");
  log.Add(8000, 4, "grow-disk", "n0").Add(8100, 5, "restart", "n0", "", "pid 8");
  const std::vector<FaultWindow> w = Windows(log);
  ASSERT_EQ(w.size(), 2u);
  ExpectWindow(w[0], "failpoint n0", 1000, 4000);
  ExpectWindow(w[1], "fill-disk n0", 5000, 8000);
}

TEST(FaultWindowsTest, AStartRefusedAfterABitFlipLeavesTheNodeDown) {
  NemesisLog log;
  log.Add(1000, 0, "kill", "n1").Add(1100, 1, "bitflip", "n1");
  log.Add(1200, 2, "restart", "n1", "kv-replica ...",
          "refused, naming wal-1.log offset 9 (flipped byte at 12)");
  log.Add(1300, 3, "repair", "n1").Add(1400, 4, "restart", "n1", "", "pid 5");
  const std::vector<FaultWindow> w = Windows(log);
  ASSERT_EQ(w.size(), 1u);
  ExpectWindow(w[0], "kill n1", 1000, 1400);
}

TEST(FaultWindowsTest, APartitionIsOneWindowUntilItsLastLinkHeals) {
  NemesisLog log;
  log.Net(500, 0, "n0->n1", "delay 10ms ± 5ms");  // Slow, not cut: no window.
  for (const char* l : {"n0->n1", "n0->n2", "n1->n0", "n2->n0"}) log.Net(1000, 1, l, "blackhole");
  for (const char* l : {"n0->n1", "n0->n2"}) log.Net(3000, 2, l, "healthy");
  log.Add(4000, -1, "heal", "n1->n0", "proxy n1->n0: healthy").Add(4100, -1, "heal", "n2->n0");
  const std::vector<FaultWindow> w = Windows(log);
  ASSERT_EQ(w.size(), 1u);
  ExpectWindow(w[0], "net blackhole n0->n1,n0->n2,n1->n0,n2->n0", 1000, 4100);
}

TEST(FaultWindowsTest, ARateLimitEndsABlackholeAndARefusalOpensOne) {
  NemesisLog log;
  log.Net(1000, 0, "n0->n2", "blackhole").Net(3000, 1, "n0->n2", "rate 250000 B/s");
  log.Net(4000, 2, "client->n0", "refuse new connections; reset 2 open");
  const std::vector<FaultWindow> w = Windows(log);
  ASSERT_EQ(w.size(), 2u);
  ExpectWindow(w[0], "net blackhole n0->n2", 1000, 3000);
  ExpectWindow(w[1], "net refuse client->n0", 4000, -1);  // Never healed: open.
}

TEST(FaultWindowsTest, NamespaceFaultsAreOneWindowUntilNoneIsLeft) {
  // As nemesis_network.cc logs them: one line per namespace whose nft rules
  // changed, noting what the step did and every fault left.
  NemesisLog log;
  log.Add(1000, 0, "loss", "n2", "ip netns exec kvf7-n2 nft '...'", "loss n2 10%: loss n2 10%");
  log.Add(1001, 0, "loss", "n0", "ip netns exec kvf7-n0 nft '...'", "loss n2 10%: loss n2 10%");
  log.Add(2000, 1, "partition", "n1", "", "one-way leader->n1: blocked n0->n1; loss n2 10%");
  log.Add(4000, 2, "partition", "n1", "", "heal: healthy")
      .Add(4001, 2, "partition", "n2", "", "heal: healthy");
  log.Add(5000, 3, "partition", "n0", "", "isolate n0: blocked n0->n1, n0->n2, n1->n0, n2->n0");
  log.Add(5500, 4, "promote", "n1");
  log.Add(8000, 5, "partition", "n0", "", "heal: healthy");
  log.Add(9000, 6, "partition", "isolate n1", "(no table changes)", "blocked n1->n0");
  log.Add(9500, 7, "partition", "heal", "(no table changes)", "healthy");
  const std::vector<FaultWindow> w = Windows(log);
  ASSERT_EQ(w.size(), 3u);
  ExpectWindow(w[2], "partition isolate n1", 9000, 9500);
  ExpectWindow(w[0], "loss n2 10%", 1000, 4000);
  ExpectWindow(w[1], "partition isolate n0", 5000, 8000);
}

TEST(FaultWindowsTest, InstantaneousFaultsLastAFixedSpan) {
  NemesisLog log;
  log.Add(1000, 0, "clock", "n1").Add(1001, 0, "clock", "n2");
  log.Net(5000, 1, "client->n0", "reset 3 open connection(s)");
  log.Net(5000, 1, "client->n1", "reset 0 open connection(s)");
  const std::vector<FaultWindow> w = Windows(log);
  ASSERT_EQ(w.size(), 2u);
  ExpectWindow(w[0], "clock n1,n2", 1000, 1000 + kInstantFaultNs / kMs);
  ExpectWindow(w[1], "net reset client->n0,client->n1", 5000, 5000 + kInstantFaultNs / kMs);
}

TEST(FaultWindowsTest, APromotionWhileNothingElseIsWrongIsAnInstantaneousFault) {
  NemesisLog log;
  log.Add(1000, 0, "promote", "n1").Add(9000, 1, "settle", "n1");
  log.Net(10000, 2, "n0->n1", "blackhole").Add(11000, 3, "promote", "n2");
  const std::vector<FaultWindow> w = Windows(log);
  ASSERT_EQ(w.size(), 2u) << "a settle, or a promotion inside a partition, opens none";
  ExpectWindow(w[0], "promote n1", 1000, 1000 + kInstantFaultNs / kMs);
  ExpectWindow(w[1], "net blackhole n0->n1", 10000, -1);
}

TEST(FaultWindowsTest, FailedActionsAndOtherStepsOpenNoWindow) {
  NemesisLog log;
  log.Add(1000, 0, "kill", "n0", "kill -9 1", "", /*ok=*/false);
  log.Add(1000, 1, "record-index", "n2")
      .Add(1100, 2, "bitflip-live", "n0")
      .Add(1200, 3, "probe-write", "n0");
  log.Add(1300, 4, "await-healed", "").Add(1400, -1, "healed", "");
  EXPECT_TRUE(Windows(log).empty());
}

TEST(FaultWindowsTest, AMalformedLineIsRefusedNamingIt) {
  const std::string text =
      "{\"t_ns\":1,\"step\":0,\"action\":\"kill\",\"node\":\"n0\"}\n{\"t_ns\":\"x\"}\n";
  absl::StatusOr<std::vector<FaultWindow>> w = ParseFaultWindows(text);
  ASSERT_FALSE(w.ok());
  EXPECT_THAT(std::string(w.status().message()), HasSubstr("line 2: no integer \"t_ns\""));
}

TEST(FaultWindowsTest, TheNamespaceTeardownKvfaultAppendsAfterTheRunIsSkipped) {
  // Written when the run's clock is gone: no t_ns (tools/kvfault/main.cc, AppendNetnsLog).
  const std::string text =
      "{\"t_ns\":1,\"step\":0,\"action\":\"kill\",\"node\":\"n0\"}\n"
      "{\"t_ns\":2000000001,\"step\":1,\"action\":\"restart\",\"node\":\"n0\"}\n"
      "{\"step\":-1,\"action\":\"netns-teardown\",\"node\":\"kvf1-cl\",\"ok\":true}\n";
  absl::StatusOr<std::vector<FaultWindow>> w = ParseFaultWindows(text);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->size(), 1u);
  // Any other line without a time is still refused.
  EXPECT_FALSE(ParseFaultWindows("{\"step\":-1,\"action\":\"healed\",\"node\":\"\"}\n").ok());
}

// ---- Writes counted in the windows.

History Parse(const HistoryBuilder& b) {
  absl::StatusOr<History> h = ParseHistory(b.Text());
  EXPECT_TRUE(h.ok()) << h.status();
  return h.ok() ? *std::move(h) : History();
}

// The builder puts event i at i ms: a window [from, to) in ms covers the
// writes invoked at those lines.
TEST(AvailabilityTest, CountsTheWritesInvokedInEachWindowByOutcome) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, Version(1));              // i=1: before.
  b.Invoke(2, Set("k", "b")).Info(2);                        // i=3: in.
  b.Invoke(3, Set("k", "c")).Fail(3);                        // i=5: in.
  b.Invoke(4, Cas("k", "d", 9)).Fail(4, CurrentVersion(1));  // i=7: in, a mismatch.
  b.Invoke(5, Get("k")).Ok(5, Found("a", 1));                // i=9: a read, not counted.
  b.Invoke(6, Set("k", "e")).Ok(6, Version(2));              // i=11: in.
  b.Invoke(7, Delete("k")).Ok(7, Deleted(3));                // i=13: after.
  b.Invoke(8, Final(Get("k"))).Ok(8, NotFound());
  const History h = Parse(b);
  const AvailabilityFigures a = ComputeAvailability(h, {{"kill n0", 0, 2 * kMs, 12 * kMs}});
  ASSERT_EQ(a.windows.size(), 1u);
  const WriteCounts& c = a.windows[0].counts;
  EXPECT_EQ(c.writes, 4);
  EXPECT_EQ(c.ok, 1);
  EXPECT_EQ(c.info, 1);
  EXPECT_EQ(c.fail, 2);
  EXPECT_EQ(c.mismatches, 1);
  EXPECT_DOUBLE_EQ(c.OkShare(), 1.0 / 3) << "a mismatch is an answer: left out of the share";
  EXPECT_EQ(a.during.writes, 4);
  EXPECT_EQ(a.outside.writes, 2);
  EXPECT_EQ(a.outside.ok, 2);
  EXPECT_DOUBLE_EQ(a.outside.OkShare(), 1.0);
  EXPECT_DOUBLE_EQ(a.seconds, 0.010);
}

TEST(AvailabilityTest, OverlappingWindowsCountEachWriteOnceInTheAggregate) {
  HistoryBuilder b;
  for (int p = 1; p <= 4; ++p)
    b.Invoke(p, Set("k", "v" + std::to_string(p))).Info(p);  // i = 1, 3, 5, 7.
  const History h = Parse(b);
  const AvailabilityFigures a =
      ComputeAvailability(h, {{"kill n0", 0, 2 * kMs, 6 * kMs}, {"pause n1", 1, 4 * kMs, 8 * kMs}});
  EXPECT_EQ(a.windows[0].counts.writes, 2);  // i=3, 5.
  EXPECT_EQ(a.windows[1].counts.writes, 2);  // i=5, 7.
  EXPECT_EQ(a.during.writes, 3);
  EXPECT_EQ(a.during.ok, 0);
  EXPECT_DOUBLE_EQ(a.during.OkShare(), 0.0);
  EXPECT_EQ(a.outside.writes, 1);
  EXPECT_DOUBLE_EQ(a.seconds, 0.006);
}

TEST(AvailabilityTest, AnOpenWindowRunsToTheEndOfTheHistory) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, Version(1));  // i=1..2.
  b.Invoke(1, Set("k", "b")).Ok(1, Version(2));  // i=3..4.
  const AvailabilityFigures a =
      ComputeAvailability(Parse(b), {{"pause n0", 0, 3 * kMs, kOpenWindow}});
  EXPECT_EQ(a.windows[0].counts.writes, 1);
  EXPECT_EQ(a.windows[0].end_ns, 4 * kMs + 1);
}

TEST(AvailabilityTest, NoWriteInAWindowHasNoShare) {
  EXPECT_LT(WriteCounts{}.OkShare(), 0);
  WriteCounts only_mismatches{2, 0, 2, 0, 2};
  EXPECT_LT(only_mismatches.OkShare(), 0);
}

// ---- What kvcheck and kvfault print and write (figures_table.py reads it).

TEST(AvailabilityTest, TheLinesCarryTheAggregateThenEachWindow) {
  AvailabilityFigures a;
  a.windows.push_back(
      {{"kill n0", 0, 6'210 * kMs, 10'060 * kMs}, 10'060 * kMs, {830, 12, 406, 412, 25}});
  a.during = {830, 12, 406, 412, 25};
  a.seconds = 3.86;
  a.outside = {3320, 3310, 10, 0, 0};
  const std::vector<std::string> lines = AvailabilityLines(a, "  ");
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0],
            "  availability during faults: 12 of 805 writes ok (1.5 %) in 1 window(s), 3.9s; "
            "outside: 3310 of "
            "3320 (99.7 %)");
  EXPECT_EQ(lines[1],
            "    kill n0 (step 0) at 6.21s for 3.85s: 12 of 805 writes ok (1.5 %), 412 info, 381 "
            "fail, 25 "
            "mismatches left out");
  EXPECT_THAT(AvailabilityLines({}, "  "),
              ::testing::ElementsAre("  availability during faults: no fault window"));
}

TEST(AvailabilityTest, SummaryHasTheFiguresWhenTheCheckHadWindows) {
  HistoryBuilder b;
  b.Invoke(1, Set("k", "a")).Ok(1, Version(1));
  b.Invoke(2, Set("k", "b")).Info(2);
  b.Invoke(3, Get("k")).Ok(3, Found("a", 1));
  const History h = Parse(b);
  CheckOptions options;
  options.fault_windows = std::vector<FaultWindow>{{"kill n0", 0, 2 * kMs, 4 * kMs}};
  const Report r = Check(h, options);
  const Json j = Json::parse(SummaryJson(h, r));
  EXPECT_EQ(j["availability"]["windows"][0]["fault"], "kill n0");
  EXPECT_EQ(j["availability"]["windows"][0]["writes"], 1);
  EXPECT_EQ(j["availability"]["windows"][0]["info"], 1);
  EXPECT_EQ(j["availability"]["during"]["ok_share"], 0.0);
  EXPECT_EQ(j["availability"]["outside"]["ok"], 1);
  EXPECT_EQ(j["stale_leader_reads"], 0);
  EXPECT_EQ(j["reads_behind_lost_writes"], 0);
  EXPECT_THAT(SummaryText(h, r), HasSubstr("availability during faults: 0 of 1 writes ok (0.0 %)"));
  EXPECT_THAT(SummaryText(h, r),
              HasSubstr("stale leader reads: 0; reads behind a lost write: 0\n"));

  const Report without = Check(h, CheckOptions());
  EXPECT_FALSE(Json::parse(SummaryJson(h, without)).contains("availability"));
  EXPECT_THAT(SummaryText(h, without), ::testing::Not(HasSubstr("availability")));
}

}  // namespace
}  // namespace kvstore::check
