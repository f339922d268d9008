// Node metrics from an Admin.Status answer, router metrics from probes.
#include "common/metrics/status_metrics.h"

#include "gtest/gtest.h"
#include "tests/unit/metrics/exposition_parser.h"

namespace kvstore {
namespace {

using ::kvstore::testing::ParsedScrape;
using ::kvstore::testing::ParseExposition;

ParsedScrape NodeScrape(const v1::StatusResponse& st, absl::Time now) {
  ExpositionWriter w;
  WriteNodeStatusMetrics(st, now, &w);
  return ParseExposition(w.Finish());
}

v1::StatusResponse LeaderStatus() {
  v1::StatusResponse st;
  st.set_role("leader");
  st.set_epoch(3);
  st.set_last_index(120);
  st.set_key_count(100);
  st.set_memory_bytes(65536);
  st.set_fsync("always");
  st.set_ack("sync:1");
  st.set_version("0.1.0");
  st.mutable_log()->set_bytes(4096);
  st.mutable_log()->set_segments(2);
  st.mutable_log()->set_first_index(1);
  st.mutable_log()->set_last_index(120);
  st.mutable_log()->set_durable_index(119);
  v1::FollowerStatus* a = st.add_followers();
  a->set_address("127.0.0.1:7001");
  a->set_state("streaming");
  a->set_acked_index(118);
  a->set_lag_entries(2);
  a->set_lag_seconds(0.25);
  v1::FollowerStatus* b = st.add_followers();
  b->set_address("127.0.0.1:7002");
  b->set_state("disconnected");
  b->set_lag_entries(120);
  b->set_lag_seconds(30);
  b->set_snapshots_sent(1);
  return st;
}

TEST(NodeStatusMetricsTest, LeaderReportsStoreLogAndLagPerFollower) {
  const ParsedScrape m = NodeScrape(LeaderStatus(), absl::Now());
  ASSERT_EQ(m.error, "");
  EXPECT_EQ(m.Value("kvstore_node_role", {{"role", "leader"}}), 1);
  EXPECT_EQ(m.Value("kvstore_node_role", {{"role", "replica"}}), 0);
  EXPECT_EQ(m.Value("kvstore_node_epoch"), 3);
  EXPECT_EQ(m.Value("kvstore_node_last_index"), 120);
  EXPECT_EQ(m.Value("kvstore_keys"), 100);
  EXPECT_EQ(m.Value("kvstore_memory_bytes"), 65536);
  EXPECT_EQ(m.Value("kvstore_wal_bytes"), 4096);
  EXPECT_EQ(m.Value("kvstore_wal_segments"), 2);
  EXPECT_EQ(m.Value("kvstore_wal_durable_index"), 119);
  EXPECT_EQ(m.Value("kvstore_node_info", {{"fsync", "always"}, {"ack", "sync:1"}}), 1);
  EXPECT_EQ(m.Value("kvstore_replication_follower_lag_entries", {{"follower", "127.0.0.1:7001"}}),
            2);
  EXPECT_EQ(m.Value("kvstore_replication_follower_lag_seconds", {{"follower", "127.0.0.1:7002"}}),
            30);
  EXPECT_EQ(m.Value("kvstore_replication_follower_acked_index", {{"follower", "127.0.0.1:7001"}}),
            118);
  EXPECT_EQ(m.Value("kvstore_replication_follower_snapshots_sent_total",
                    {{"follower", "127.0.0.1:7002"}}),
            1);
  EXPECT_EQ(m.Value("kvstore_replication_follower_state",
                    {{"follower", "127.0.0.1:7002"}, {"state", "disconnected"}}),
            1);
  EXPECT_EQ(m.Value("kvstore_replication_follower_state",
                    {{"follower", "127.0.0.1:7002"}, {"state", "streaming"}}),
            0);
  EXPECT_EQ(m.types.at("kvstore_replication_follower_snapshots_sent_total"), "counter");
  // A leader has no lag of its own, and no snapshot yet.
  EXPECT_EQ(m.Count("kvstore_replica_lag_entries"), 0);
  EXPECT_EQ(m.Count("kvstore_snapshot_age_seconds"), 0);
}

TEST(NodeStatusMetricsTest, SnapshotAgeIsMeasuredFromItsCreation) {
  v1::StatusResponse st = LeaderStatus();
  const absl::Time created = absl::FromUnixSeconds(1700000000);
  st.mutable_snapshot()->set_created_unix_ms(absl::ToUnixMillis(created));
  st.mutable_snapshot()->set_duration_seconds(1.5);
  st.mutable_snapshot()->set_keys(90);
  st.mutable_snapshot()->set_bytes(9000);
  const ParsedScrape m = NodeScrape(st, created + absl::Seconds(75));
  ASSERT_EQ(m.error, "");
  EXPECT_EQ(m.Value("kvstore_snapshot_age_seconds"), 75);
  EXPECT_EQ(m.Value("kvstore_snapshot_last_duration_seconds"), 1.5);
  EXPECT_EQ(m.Value("kvstore_snapshot_keys"), 90);
  EXPECT_EQ(m.Value("kvstore_snapshot_bytes"), 9000);
}

TEST(NodeStatusMetricsTest, ReplicaReportsItsOwnLag) {
  v1::StatusResponse st;
  st.set_role("replica");
  st.set_lag_entries(7);
  st.set_lag_seconds(0.5);
  const ParsedScrape m = NodeScrape(st, absl::Now());
  ASSERT_EQ(m.error, "");
  EXPECT_EQ(m.Value("kvstore_node_role", {{"role", "replica"}}), 1);
  EXPECT_EQ(m.Value("kvstore_replica_lag_entries"), 7);
  EXPECT_EQ(m.Value("kvstore_replica_lag_seconds"), 0.5);
  EXPECT_EQ(m.Count("kvstore_replication_follower_lag_entries"), 0);
}

TEST(NodeStatusMetricsTest, UnknownRoleGetsItsOwnSeries) {
  v1::StatusResponse st;
  st.set_role("observer");
  const ParsedScrape m = NodeScrape(st, absl::Now());
  ASSERT_EQ(m.error, "");
  EXPECT_EQ(m.Value("kvstore_node_role", {{"role", "observer"}}), 1);
  EXPECT_EQ(m.Value("kvstore_node_role", {{"role", "leader"}}), 0);
}

TEST(StorageMetricsTest, FsyncAndSnapshotHistograms) {
  StorageMetrics s;
  s.fsync.ObserveDuration(absl::Milliseconds(2));
  s.fsync.ObserveDuration(absl::Milliseconds(40));
  s.snapshot.ObserveDuration(absl::Seconds(3));
  ExpositionWriter w;
  s.Write(&w);
  const ParsedScrape m = ParseExposition(w.Finish());
  ASSERT_EQ(m.error, "");
  EXPECT_EQ(m.Value("kvstore_wal_fsync_seconds_count"), 2);
  EXPECT_DOUBLE_EQ(m.Value("kvstore_wal_fsync_seconds_sum").value_or(0), 0.042);
  EXPECT_EQ(m.Value("kvstore_wal_fsync_seconds_bucket", {{"le", "0.0025"}}), 1);
  EXPECT_EQ(m.Value("kvstore_wal_fsync_seconds_bucket", {{"le", "0.05"}}), 2);
  EXPECT_EQ(m.Value("kvstore_snapshot_duration_seconds_count"), 1);
  EXPECT_EQ(m.Value("kvstore_snapshot_duration_seconds_bucket", {{"le", "2.5"}}), 0);
  EXPECT_EQ(m.Value("kvstore_snapshot_duration_seconds_bucket", {{"le", "5"}}), 1);
}

TEST(RouterBackendMetricsTest, LeadersAndProbes) {
  BackendProbe up{"10.0.0.1:1", "shard-0", true, true, "leader", 4, 99, 0};
  BackendProbe down{"10.0.0.2:1", "shard-0", true, false, "", 0, 0, 0};
  BackendProbe unknown{"10.0.0.3:1", "shard-1", false, false, "", 0, 0, 0};
  ExpositionWriter w;
  WriteRouterBackendMetrics({{"shard-0", "10.0.0.1:1"}, {"shard-1", "10.0.0.3:1"}},
                            {up, down, unknown}, &w);
  const ParsedScrape m = ParseExposition(w.Finish());
  ASSERT_EQ(m.error, "");
  EXPECT_EQ(m.Value("kvstore_router_shards"), 2);
  EXPECT_EQ(m.Value("kvstore_router_shard_leader", {{"shard", "shard-1"}}), 1);
  EXPECT_EQ(m.Value("kvstore_router_backend_up", {{"backend", "10.0.0.1:1"}, {"shard", "shard-0"}}),
            1);
  EXPECT_EQ(m.Value("kvstore_router_backend_up", {{"backend", "10.0.0.2:1"}}), 0);
  EXPECT_EQ(m.Count("kvstore_router_backend_up"), 2);  // Never probed: no series.
  EXPECT_EQ(m.Value("kvstore_router_backend_last_index", {{"backend", "10.0.0.1:1"}}), 99);
  EXPECT_EQ(m.Value("kvstore_router_backend_epoch", {{"backend", "10.0.0.1:1"}}), 4);
  EXPECT_EQ(m.Count("kvstore_router_backend_last_index"), 1);
}

}  // namespace
}  // namespace kvstore
