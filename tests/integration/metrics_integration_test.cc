// Metrics of real processes on 127.0.0.1: a kv-shard leader with a kv-replica
// follower and a kv-router in front, all with --metrics-listen=127.0.0.1:0.
// The test writes through both paths, scrapes /metrics over HTTP (httplib's
// client) and checks that each scrape follows the text format and that the
// series say what happened: per-RPC counts, keys, fsyncs, lag per follower,
// the replica's role and lag, the router's backends; then kills the shard's
// leader and checks that the router counts the errors against that backend.
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/topology/topology.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "tests/support/process.h"
#include "tests/support/router_process.h"
#include "tests/unit/metrics/exposition_parser.h"

namespace kvstore {
namespace {

using ::kvstore::testing::AwaitSameLastIndex;
using ::kvstore::testing::KvClient;
using ::kvstore::testing::ParsedScrape;
using ::kvstore::testing::ParseExposition;
using ::kvstore::testing::ReadFileOrEmpty;
using ::kvstore::testing::RouterProcess;
using ::kvstore::testing::ShardGroup;
using ::kvstore::testing::TempDir;
using ::kvstore::testing::WaitFor;
using ::kvstore::testing::WriteTopologyFile;

constexpr char kSet[] = "/kvstore.v1.KeyValue/Set";
constexpr char kGet[] = "/kvstore.v1.KeyValue/Get";

// Waits for a --metrics-port-file and returns the HOST:PORT in it.
std::string AwaitMetricsAddress(const std::string& port_file) {
  std::string address;
  WaitFor(
      [&] {
        address = std::string(absl::StripSuffix(ReadFileOrEmpty(port_file), "\n"));
        return !address.empty();
      },
      absl::Now() + absl::Seconds(20));
  return address;
}

// GET http://address/metrics, parsed; `error` says what went wrong.
ParsedScrape Scrape(const std::string& address) {
  ParsedScrape failed;
  const size_t colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port)) {
    failed.error = absl::StrCat("bad metrics address '", address, "'");
    return failed;
  }
  httplib::Client client(address.substr(0, colon), port);
  client.set_connection_timeout(5);
  client.set_read_timeout(5);
  httplib::Result res = client.Get("/metrics");
  if (!res) {
    failed.error =
        absl::StrCat("GET /metrics from ", address, ": ", httplib::to_string(res.error()));
    return failed;
  }
  if (res->status != 200) {
    failed.error = absl::StrCat("GET /metrics from ", address, ": HTTP ", res->status);
    return failed;
  }
  if (res->get_header_value("Content-Type").find("version=0.0.4") == std::string::npos) {
    failed.error = "content type is not the 0.0.4 text format";
    return failed;
  }
  return ParseExposition(res->body);
}

// Scrapes until `ok` holds for the scrape (true) or 20 s pass (false); *last
// is the last scrape.
bool ScrapeUntil(const std::string& address, const std::function<bool(const ParsedScrape&)>& ok,
                 ParsedScrape* last) {
  return WaitFor(
      [&] {
        *last = Scrape(address);
        return last->error.empty() && ok(*last);
      },
      absl::Now() + absl::Seconds(20), absl::Milliseconds(50));
}

class MetricsIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    group_ = std::make_unique<ShardGroup>(tmp_.Join("shard"), KV_SHARD_BIN, KV_REPLICA_BIN, 1);
    const absl::Status started =
        group_->Start({"--fsync=always", "--metrics-listen=127.0.0.1:0",
                       absl::StrCat("--metrics-port-file=", tmp_.Join("leader.metrics"))},
                      {"--metrics-listen=127.0.0.1:0",
                       absl::StrCat("--metrics-port-file=", tmp_.Join("replica.metrics"))});
    ASSERT_TRUE(started.ok()) << started;
    leader_metrics_ = AwaitMetricsAddress(tmp_.Join("leader.metrics"));
    replica_metrics_ = AwaitMetricsAddress(tmp_.Join("replica.metrics"));
    ASSERT_FALSE(leader_metrics_.empty()) << group_->LogTails();
    ASSERT_FALSE(replica_metrics_.empty()) << group_->LogTails();

    Topology topology;
    topology.vnodes = 0;
    ShardTopology shard;
    shard.name = "shard-0";
    shard.leader = group_->leader().address();
    shard.replicas = group_->follower_addresses();
    topology.shards.push_back(shard);
    const std::string topology_path = tmp_.Join("topology.yaml");
    ASSERT_TRUE(WriteTopologyFile(topology_path, topology).ok());
    router_ = std::make_unique<RouterProcess>(tmp_.Join("router"));
    const absl::Status router_started = router_->Start(
        topology_path, {"--probe-interval-ms=100", "--metrics-listen=127.0.0.1:0",
                        absl::StrCat("--metrics-port-file=", tmp_.Join("router.metrics"))});
    ASSERT_TRUE(router_started.ok()) << router_started;
    router_metrics_ = AwaitMetricsAddress(tmp_.Join("router.metrics"));
    ASSERT_FALSE(router_metrics_.empty()) << router_->LogTail();
  }

  void TearDown() override {
    if (HasFailure()) {
      std::printf("--- tail of %s:\n%s\n", router_ ? router_->log_path().c_str() : "",
                  router_ ? router_->LogTail().c_str() : "");
      if (group_) std::printf("%s\n", group_->LogTails().c_str());
    }
  }

  TempDir tmp_;  // First: removed last, after every process is gone.
  std::unique_ptr<ShardGroup> group_;
  std::unique_ptr<RouterProcess> router_;
  std::string leader_metrics_;
  std::string replica_metrics_;
  std::string router_metrics_;
};

TEST_F(MetricsIntegrationTest, ScrapesReportRequestsKeysLagAndBackendErrors) {
  constexpr int kDirect = 12;  // Sets sent to the leader itself.
  constexpr int kRouted = 8;   // Sets sent through the router.
  constexpr int kRoutedGets = 5;
  KvClient leader(group_->leader().address());
  KvClient router(router_->address());
  v1::SetResponse set;
  for (int i = 0; i < kDirect; ++i) {
    ASSERT_TRUE(leader.Set(absl::StrCat("direct-", i), "v", &set).ok());
  }
  for (int i = 0; i < kRouted; ++i) {
    ASSERT_TRUE(router.Set(absl::StrCat("routed-", i), "v", &set).ok());
  }
  v1::GetResponse got;
  for (int i = 0; i < kRoutedGets; ++i) ASSERT_TRUE(router.Get("routed-0", &got).ok());
  const int keys = kDirect + kRouted;

  // The leader: every Set counted (the router's are forwarded Sets or, if it
  // coalesced some, MultiSets), keys, fsyncs under --fsync=always, and lag
  // series for its follower, which reaches 0 once it has caught up.
  ASSERT_TRUE(AwaitSameLastIndex(group_->leader().address(), group_->replica(0).address(),
                                 absl::Now() + absl::Seconds(20))
                  .ok());
  const std::string follower = group_->follower_addresses()[0];
  ParsedScrape m;
  ASSERT_TRUE(ScrapeUntil(
      leader_metrics_,
      [&](const ParsedScrape& s) {
        return s.Value("kvstore_replication_follower_lag_entries", {{"follower", follower}}) == 0;
      },
      &m))
      << m.error;
  const double leader_sets =
      m.Value("kvstore_grpc_server_handled_total", {{"method", kSet}, {"code", "OK"}}).value_or(0);
  const double leader_multisets =
      m.Value("kvstore_grpc_server_handled_total",
              {{"method", "/kvstore.v1.KeyValue/MultiSet"}, {"code", "OK"}})
          .value_or(0);
  EXPECT_GE(leader_sets, kDirect);
  EXPECT_LE(leader_sets, keys);
  EXPECT_GT(leader_sets + leader_multisets, kDirect);
  EXPECT_EQ(m.Value("kvstore_grpc_server_handling_seconds_count", {{"method", kSet}}), leader_sets);
  EXPECT_EQ(m.Value("kvstore_keys"), keys);
  // The log holds the leader's epoch record (its start), then one record a key.
  EXPECT_EQ(m.Value("kvstore_node_last_index"), keys + 1);
  EXPECT_EQ(m.Value("kvstore_node_role", {{"role", "leader"}}), 1);
  EXPECT_GE(m.Value("kvstore_wal_fsync_seconds_count").value_or(0), 1);
  EXPECT_GT(m.Value("kvstore_wal_bytes").value_or(0), 0);
  EXPECT_GT(m.Value("kvstore_memory_bytes").value_or(0), 0);
  EXPECT_EQ(m.Value("kvstore_replication_follower_acked_index", {{"follower", follower}}),
            keys + 1);
  EXPECT_TRUE(m.Value("kvstore_replication_follower_lag_seconds", {{"follower", follower}}))
      << "no lag-in-seconds series for " << follower;
  EXPECT_EQ(m.Value("kvstore_replication_follower_state",
                    {{"follower", follower}, {"state", "streaming"}}),
            1);
  std::printf("leader: %.0f Set, %.0f MultiSet, %d keys, %.0f fsyncs\n", leader_sets,
              leader_multisets, keys, m.Value("kvstore_wal_fsync_seconds_count").value_or(0));

  // The replica: its role, the same keys, no lag.
  ParsedScrape r = Scrape(replica_metrics_);
  ASSERT_EQ(r.error, "");
  EXPECT_EQ(r.Value("kvstore_node_role", {{"role", "replica"}}), 1);
  EXPECT_EQ(r.Value("kvstore_keys"), keys);
  EXPECT_EQ(r.Value("kvstore_replica_lag_entries"), 0);
  EXPECT_TRUE(r.Value("kvstore_replica_lag_seconds"));

  // The router: exactly what the client sent it, its backends up.
  ParsedScrape front;
  ASSERT_TRUE(ScrapeUntil(
      router_metrics_,
      [&](const ParsedScrape& s) {
        return s.Value("kvstore_router_backend_up", {{"backend", group_->leader().address()}}) ==
                   1 &&
               s.Value("kvstore_router_backend_up", {{"backend", follower}}) == 1;
      },
      &front))
      << front.error;
  EXPECT_EQ(front.Value("kvstore_grpc_server_handled_total", {{"method", kSet}, {"code", "OK"}}),
            kRouted);
  EXPECT_EQ(front.Value("kvstore_grpc_server_handled_total", {{"method", kGet}, {"code", "OK"}}),
            kRoutedGets);
  EXPECT_EQ(front.Value("kvstore_router_shard_leader",
                        {{"shard", "shard-0"}, {"backend", group_->leader().address()}}),
            1);
  EXPECT_EQ(front.Count("kvstore_router_backend_errors_total"), 0);

  // Kill the shard's leader: every Set through the router now fails, and
  // each failure is counted against that backend.
  ASSERT_TRUE(group_->leader().KillHard().ok());
  constexpr int kFailed = 3;
  for (int i = 0; i < kFailed; ++i) {
    EXPECT_FALSE(router.Set(absl::StrCat("after-kill-", i), "v", &set).ok());
  }
  front = Scrape(router_metrics_);
  ASSERT_EQ(front.error, "");
  double errors = 0;
  for (const auto& s : front.samples) {
    if (s.name == "kvstore_router_backend_errors_total") {
      EXPECT_EQ(s.labels.at("backend"), group_->leader().address());
      errors += s.value;
    }
  }
  EXPECT_EQ(errors, kFailed);
  EXPECT_EQ(front.Value("kvstore_router_backend_errors_total",
                        {{"backend", group_->leader().address()}, {"code", "UNAVAILABLE"}}),
            kFailed);
  EXPECT_EQ(
      front.Value("kvstore_grpc_server_handled_total", {{"method", kSet}, {"code", "UNAVAILABLE"}}),
      kFailed);
  // The probes notice too.
  ASSERT_TRUE(ScrapeUntil(
      router_metrics_,
      [&](const ParsedScrape& s) {
        return s.Value("kvstore_router_backend_up", {{"backend", group_->leader().address()}}) == 0;
      },
      &front))
      << front.error;
  std::printf("router: %d Set, %d Get, %.0f backend errors after the kill\n", kRouted, kRoutedGets,
              errors);
}

TEST_F(MetricsIntegrationTest, MetricsPortInUseStopsTheStart) {
  // A second kv-shard asked to serve metrics where the leader already does
  // must refuse to start rather than run without metrics.
  std::filesystem::create_directories(tmp_.Join("other"));
  testing::ShardProcess other(tmp_.Join("other"));
  absl::StatusOr<testing::ExitStatus> exit =
      other.RunExpectingExit({absl::StrCat("--metrics-listen=", leader_metrics_)});
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_TRUE(exit->exited && exit->code == 1) << exit->ToString() << "\n" << other.LogTail();
  EXPECT_NE(other.LogTail().find("cannot serve metrics"), std::string::npos) << other.LogTail();
}

}  // namespace
}  // namespace kvstore
