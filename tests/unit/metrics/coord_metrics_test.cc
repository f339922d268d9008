// CoordMetrics: what a scrape shows of a process's etcd calls, elections,
// self-fences, lease and (router) topology revision.
#include "common/metrics/coord_metrics.h"

#include <cstdint>
#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace kvstore {
namespace {

std::string Scrape(const CoordMetrics& m) {
  ExpositionWriter out;
  m.Write(&out);
  return out.Finish();
}

TEST(CoordMetricsTest, EtcdCallsAreCountedByMethodAndCode) {
  CoordMetrics m([] { return int64_t{0}; });
  m.EtcdCall("Txn", absl::Milliseconds(3), absl::StatusCode::kOk);
  m.EtcdCall("Txn", absl::Seconds(2), absl::StatusCode::kUnavailable);
  const std::string text = Scrape(m);
  EXPECT_TRUE(absl::StrContains(text, "kvstore_etcd_calls_total{method=\"Txn\",code=\"OK\"} 1"));
  EXPECT_TRUE(
      absl::StrContains(text, "kvstore_etcd_calls_total{method=\"Txn\",code=\"UNAVAILABLE\"} 1"));
  EXPECT_TRUE(absl::StrContains(text, "kvstore_etcd_call_seconds_count 2"));
  // A router or a node that never ran the agent shows no failover families.
  EXPECT_FALSE(absl::StrContains(text, "kvstore_failover_"));
  EXPECT_FALSE(absl::StrContains(text, "kvstore_router_topology_revision"));
}

TEST(CoordMetricsTest, ElectionsSelfFencesAndLeaseTimeLeft) {
  int64_t now = 10'000'000'000;
  CoordMetrics m([&now] { return now; });
  m.SetLeaseValidUntil(now + 1'500'000'000);
  m.Elected("leader_gone", absl::Milliseconds(2600));
  m.Elected("promote", absl::ZeroDuration());
  m.SelfFenced("lease_lost");
  m.SelfFenced("router_epoch");
  m.SelfFenced("router_epoch");
  std::string text = Scrape(m);
  EXPECT_TRUE(absl::StrContains(text, "kvstore_failover_lease_seconds_left 1.5"));
  EXPECT_TRUE(
      absl::StrContains(text, "kvstore_failover_elections_total{reason=\"leader_gone\"} 1"));
  EXPECT_TRUE(absl::StrContains(text, "kvstore_failover_elections_total{reason=\"promote\"} 1"));
  EXPECT_TRUE(absl::StrContains(text, "kvstore_failover_election_seconds_count 1"));
  EXPECT_TRUE(
      absl::StrContains(text, "kvstore_failover_self_fences_total{reason=\"lease_lost\"} 1"));
  EXPECT_TRUE(
      absl::StrContains(text, "kvstore_failover_self_fences_total{reason=\"router_epoch\"} 2"));
  // Past valid_until, or without a lease: 0, never negative.
  now += 5'000'000'000;
  EXPECT_TRUE(absl::StrContains(Scrape(m), "kvstore_failover_lease_seconds_left 0"));
  m.SetLeaseValidUntil(0);
  EXPECT_TRUE(absl::StrContains(Scrape(m), "kvstore_failover_lease_seconds_left 0"));
}

TEST(CoordMetricsTest, TheInSyncSetsSizeShrinksAndExpandsOnTheLeaderOnly) {
  CoordMetrics m([] { return int64_t{0}; });
  m.SetLeaseValidUntil(0);  // A node.
  std::string text = Scrape(m);
  EXPECT_FALSE(absl::StrContains(text, "kvstore_isr_size")) << "not a leader keeping a set";
  EXPECT_TRUE(absl::StrContains(text, "kvstore_isr_shrinks_total 0"));
  m.InSyncRecorded(3, 0, 0);  // A leadership's first record.
  m.InSyncRecorded(2, 1, 0);
  m.InSyncRecorded(3, 0, 1);
  m.InSyncRecorded(3, 1, 1);  // One left, another joined: both.
  text = Scrape(m);
  EXPECT_TRUE(absl::StrContains(text, "kvstore_isr_size 3"));
  EXPECT_TRUE(absl::StrContains(text, "kvstore_isr_shrinks_total 2"));
  EXPECT_TRUE(absl::StrContains(text, "kvstore_isr_expands_total 2"));
  m.EndInSync();
  EXPECT_FALSE(absl::StrContains(Scrape(m), "kvstore_isr_size"));
}

TEST(CoordMetricsTest, RouterShowsItsTopologyRevision) {
  CoordMetrics m([] { return int64_t{0}; });
  m.SetTopologyRevision(42);
  EXPECT_TRUE(absl::StrContains(Scrape(m), "kvstore_router_topology_revision 42"));
}

}  // namespace
}  // namespace kvstore
