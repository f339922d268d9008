// kvctl's resharding surface against a real etcd (tests/support/etcd_process.h)
// and kvctl run as a subprocess, as an operator runs it. kvctl only writes
// records in etcd; no driver runs here, so the test writes what a driver
// would (a leader key for the new shard, a phase, a source's progress) itself.
//
//   ClusterInitWritesRingVersionOneAndPlansStayWithinTheLimit: cluster init
//     writes <P>/ring version 1; the add-shard plan's fractions sum to at
//     most 27 %, with estimates from the one source leader that answers (a
//     real kv-shard holding keys) and "unknown" for the others; a removal
//     over 27 % needs --force; bad names, names in or not in the ring, and a
//     cluster without a ring are refused.
//   AddShardRecordsOneMigrationThatTheOperatorSteers: add-shard is refused
//     without the new shard's leader key and, off a terminal, without --yes;
//     with both it records one migration with the flags given; a second one
//     is refused while it is active; throttle, pause, resume and cancel change
//     the record (status --json shows it); cancel is refused after the switch.
//   StatusWatchEndsWithTheMigration: status --watch exits 0 when the phase
//     becomes done, 1 when cancelled, 130 on Ctrl-C.
//
// Everything started here (etcd, kv-shard, kvctl) is stopped by its pid.
#include <signal.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/coord/etcd_client.h"
#include "common/coord/schema.h"
#include "common/topology/topology.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/etcd_process.h"
#include "tests/support/process.h"
#include "tests/support/router_process.h"

namespace kvstore {
namespace {

using ::kvstore::testing::ChildProcess;
using ::kvstore::testing::EtcdProcess;
using ::kvstore::testing::ExitStatus;
using ::kvstore::testing::KvctlResult;
using ::kvstore::testing::ShardProcess;
using ::kvstore::testing::TempDir;
using ::kvstore::testing::WaitFor;
using ::testing::HasSubstr;

constexpr char kPrefix[] = "/kvstore/reshard-test";

class ReshardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(etcd_.Start().ok()) << etcd_.LogTail();
    coord::EtcdClientOptions options;
    options.endpoints = etcd_.endpoint();
    absl::StatusOr<std::unique_ptr<coord::EtcdClient>> client = coord::EtcdClient::Create(options);
    ASSERT_TRUE(client.ok()) << client.status();
    etcd_client_ = *std::move(client);
  }

  std::vector<std::string> EtcdFlags() const {
    return {absl::StrCat("--etcd=", etcd_.endpoint()), absl::StrCat("--etcd-prefix=", kPrefix)};
  }

  // kvctl --etcd=... --etcd-prefix=... args...; stdin is /dev/null (no terminal).
  KvctlResult Kvctl(const std::vector<std::string>& args) {
    std::vector<std::string> argv = EtcdFlags();
    argv.insert(argv.end(), args.begin(), args.end());
    return testing::RunKvctl("", argv);
  }

  // Three shards whose addresses nobody serves (cluster init asks them for
  // their epochs and goes on without), 1024 vnodes.
  void InitCluster() {
    Topology topology;
    for (int i = 0; i < 3; ++i) {
      topology.shards.push_back(
          {absl::StrCat("shard-", i), absl::StrCat("127.0.0.1:", testing::PickFreePort()), {}});
    }
    const std::string file = dir_.Join("topology.yaml");
    ASSERT_TRUE(testing::WriteTopologyFile(file, topology).ok());
    const KvctlResult init =
        Kvctl({absl::StrCat("--config=", file), "--timeout_ms=2000", "cluster", "init"});
    ASSERT_EQ(init.exit_code, 0) << init.ToString();
  }

  std::string Get(const std::string& key) {
    absl::StatusOr<coord::RangeResult> range = etcd_client_->Range(key);
    EXPECT_TRUE(range.ok()) << range.status();
    if (!range.ok() || range->kvs.empty()) return "";
    return range->kvs[0].value();
  }

  void Put(const std::string& key, const std::string& value) {
    absl::StatusOr<int64_t> put = etcd_client_->Put(key, value);
    ASSERT_TRUE(put.ok()) << put.status();
  }

  // What a new shard group's elected leader writes (any address will do:
  // kvctl only checks that the key exists).
  void PutLeaderKey(const std::string& shard, const std::string& addr) {
    Put(coord::ShardLeaderKey(kPrefix, shard),
        nlohmann::json({{"id", "n1"}, {"addr", addr}, {"epoch", 1048600}}).dump());
  }

  coord::MigrationRecord Record(const std::string& id) {
    absl::StatusOr<coord::MigrationRecord> record =
        coord::ParseMigrationValue(Get(coord::MigrationKey(kPrefix, id)));
    EXPECT_TRUE(record.ok()) << record.status();
    return record.ok() ? *record : coord::MigrationRecord();
  }

  // Sets the phase as the driver would.
  void SetPhase(const std::string& id, const std::string& phase) {
    coord::MigrationRecord record = Record(id);
    record.phase = phase;
    Put(coord::MigrationKey(kPrefix, id), coord::MigrationValue(record));
  }

  // add-shard NAME --yes after putting NAME's leader key; returns the id.
  std::string StartAddShard(const std::string& name, std::vector<std::string> extra = {}) {
    PutLeaderKey(name, "127.0.0.1:1");
    std::vector<std::string> args = {"reshard", "add-shard", name, "--yes", "--json"};
    args.insert(args.end(), extra.begin(), extra.end());
    const KvctlResult started = Kvctl(args);
    EXPECT_EQ(started.exit_code, 0) << started.ToString();
    const nlohmann::json out = nlohmann::json::parse(started.out, nullptr, false);
    EXPECT_TRUE(out.is_object() && out.contains("id")) << started.out;
    if (!out.is_object() || !out.contains("id")) return "";
    EXPECT_EQ(out["started"], true);
    return out["id"].get<std::string>();
  }

  // reshard status [ID] --json; the active or newest migration when `id` is empty.
  nlohmann::json StatusJson(const std::string& id) {
    std::vector<std::string> args = {"reshard", "status", "--json"};
    if (!id.empty()) args.push_back(id);
    const KvctlResult status = Kvctl(args);
    EXPECT_EQ(status.exit_code, 0) << status.ToString();
    return nlohmann::json::parse(status.out, nullptr, false);
  }

  TempDir dir_;
  EtcdProcess etcd_;
  std::unique_ptr<coord::EtcdClient> etcd_client_;
};

TEST_F(ReshardTest, ClusterInitWritesRingVersionOneAndPlansStayWithinTheLimit) {
  ASSERT_NO_FATAL_FAILURE(InitCluster());
  absl::StatusOr<coord::RingRecord> ring = coord::ParseRingValue(Get(coord::RingKey(kPrefix)));
  ASSERT_TRUE(ring.ok()) << ring.status();
  EXPECT_EQ(ring->version, 1);
  EXPECT_EQ(ring->vnodes, 1024);
  EXPECT_EQ(ring->shards, (std::vector<std::string>{"shard-0", "shard-1", "shard-2"}));
  const KvctlResult status = Kvctl({"cluster", "status", "--json"});
  ASSERT_EQ(status.exit_code, 0) << status.ToString();
  const nlohmann::json cluster = nlohmann::json::parse(status.out, nullptr, false);
  ASSERT_TRUE(cluster.is_object()) << status.out;
  EXPECT_EQ(cluster["ring"]["version"], 1);
  EXPECT_TRUE(cluster["migration"].is_null());

  // One source leader answers: a kv-shard holding 600 keys, named as
  // shard-0's leader.
  ShardProcess source(dir_.Join("shard-0"));
  ASSERT_TRUE(source.Start({"--fsync=no"}).ok()) << source.LogTail();
  testing::KvClient client(source.address());
  for (int i = 0; i < 600; ++i) {
    v1::SetResponse response;
    ASSERT_TRUE(client.Set(absl::StrCat("key-", i), std::string(100, 'v'), &response).ok());
  }
  PutLeaderKey("shard-0", source.address());

  const KvctlResult plan = Kvctl({"reshard", "add-shard", "shard-3", "--plan", "--json"});
  ASSERT_EQ(plan.exit_code, 0) << plan.ToString();
  const nlohmann::json json = nlohmann::json::parse(plan.out, nullptr, false);
  ASSERT_TRUE(json.is_object()) << plan.out;
  EXPECT_EQ(json["to"]["version"], 2);
  ASSERT_EQ(json["moves"].size(), 3u);
  double sum = 0;
  for (const nlohmann::json& move : json["moves"]) {
    EXPECT_EQ(move["to"], "shard-3");
    sum += move["fraction"].get<double>();
    if (move["from"] == "shard-0") {
      // About a quarter of the source's 600 keys (its share is about a third,
      // the move about a twelfth of the ring).
      ASSERT_TRUE(move["keys_estimate"].is_number()) << move.dump();
      EXPECT_GT(move["keys_estimate"].get<int>(), 100);
      EXPECT_LT(move["keys_estimate"].get<int>(), 250);
      EXPECT_GT(move["bytes_estimate"].get<int>(), 0);
    } else {
      EXPECT_TRUE(move["keys_estimate"].is_null()) << move.dump();
      EXPECT_THAT(move["estimate_unknown"].get<std::string>(), HasSubstr("no leader"));
    }
  }
  std::printf("shard-3 would take %.2f%% of the ring\n", sum * 100);
  EXPECT_LE(sum, 0.27);
  EXPECT_NEAR(json["total"]["fraction"].get<double>(), sum, 1e-9);
  EXPECT_EQ(json["over_limit"], false);

  const KvctlResult text = Kvctl({"reshard", "add-shard", "shard-3", "--plan"});
  ASSERT_EQ(text.exit_code, 0) << text.ToString();
  EXPECT_THAT(text.out, HasSubstr("shard-1  shard-3"));
  EXPECT_THAT(text.out, HasSubstr("unknown"));
  EXPECT_THAT(text.out, HasSubstr("total"));

  // Removing one of three moves a third: over the limit.
  const KvctlResult remove = Kvctl({"reshard", "remove-shard", "shard-1", "--plan"});
  EXPECT_EQ(remove.exit_code, 3) << remove.ToString();
  EXPECT_THAT(remove.err, HasSubstr("more than the limit of 27%"));
  EXPECT_THAT(remove.out, HasSubstr("shard-1  shard-"));  // The plan is still shown.
  const KvctlResult forced = Kvctl({"reshard", "remove-shard", "shard-1", "--plan", "--force"});
  EXPECT_EQ(forced.exit_code, 0) << forced.ToString();

  struct Refusal {
    std::vector<std::string> args;
    int exit_code;
    std::string message;
  };
  const std::vector<Refusal> refusals = {
      {{"reshard", "add-shard", "shard-0", "--plan"}, 3, "is in the ring already"},
      {{"reshard", "remove-shard", "shard-9", "--plan"}, 3, "is not in the ring"},
      {{"reshard", "add-shard", "bad#name", "--plan"}, 2, "may only hold letters"},
      {{"reshard", "add-shard", "--plan"}, 2, "takes one shard NAME"},
      {{"reshard", "add-shard", "shard-3", "--plan", "--throttle=fast"}, 2, "--throttle"},
      {{"--etcd-prefix=/kvstore/nothing-here", "reshard", "add-shard", "s", "--plan"},
       3,
       "cluster init"},
  };
  for (const Refusal& r : refusals) {
    const KvctlResult result = Kvctl(r.args);
    EXPECT_EQ(result.exit_code, r.exit_code) << result.ToString();
    EXPECT_THAT(result.err, HasSubstr(r.message)) << result.ToString();
  }
  EXPECT_TRUE(Get(coord::ActiveMigrationKey(kPrefix)).empty()) << "a plan started something";
}

TEST_F(ReshardTest, AddShardRecordsOneMigrationThatTheOperatorSteers) {
  ASSERT_NO_FATAL_FAILURE(InitCluster());
  const KvctlResult no_leader = Kvctl({"reshard", "add-shard", "shard-3", "--yes"});
  EXPECT_EQ(no_leader.exit_code, 3) << no_leader.ToString();
  EXPECT_THAT(no_leader.err, HasSubstr("has no leader"));
  EXPECT_THAT(no_leader.err, HasSubstr("start the new shard group first"));

  PutLeaderKey("shard-3", "127.0.0.1:1");
  const KvctlResult unasked = Kvctl({"reshard", "add-shard", "shard-3"});
  EXPECT_EQ(unasked.exit_code, 2) << unasked.ToString();
  EXPECT_THAT(unasked.err, HasSubstr("pass --yes"));
  EXPECT_TRUE(Get(coord::ActiveMigrationKey(kPrefix)).empty());

  const std::string id =
      StartAddShard("shard-3", {"--throttle=4MiB/s", "--copy-from=replica",
                                "--cutover-max-pause=1500ms", "--handoff-lag=500"});
  ASSERT_FALSE(id.empty());
  EXPECT_TRUE(absl::StartsWith(id, "m")) << id;
  absl::StatusOr<std::string> active =
      coord::ParseActiveMigrationValue(Get(coord::ActiveMigrationKey(kPrefix)));
  ASSERT_TRUE(active.ok()) << active.status();
  EXPECT_EQ(*active, id);
  coord::MigrationRecord record = Record(id);
  EXPECT_EQ(record.id, id);
  EXPECT_EQ(record.kind, "add");
  EXPECT_EQ(record.shard, "shard-3");
  EXPECT_EQ(record.phase, "copy");
  EXPECT_EQ(record.from_version, 1);
  EXPECT_EQ(record.to.version, 2);
  EXPECT_EQ(record.to.vnodes, 1024);
  EXPECT_EQ(record.to.shards,
            (std::vector<std::string>{"shard-0", "shard-1", "shard-2", "shard-3"}));
  EXPECT_EQ(record.throttle_bytes_per_second, 4 << 20);
  EXPECT_EQ(record.copy_from, "replica");
  EXPECT_EQ(record.cutover_max_pause_ms, 1500);
  EXPECT_EQ(record.handoff_lag, 500);
  EXPECT_GT(record.created_unix_ms, absl::ToUnixMillis(absl::Now() - absl::Minutes(5)));
  EXPECT_FALSE(record.paused);
  EXPECT_FALSE(record.cancel_requested);
  // The ring itself changes only at cutover, which is the driver's.
  absl::StatusOr<coord::RingRecord> ring = coord::ParseRingValue(Get(coord::RingKey(kPrefix)));
  ASSERT_TRUE(ring.ok());
  EXPECT_EQ(ring->version, 1);

  // One at a time.
  PutLeaderKey("shard-4", "127.0.0.1:2");
  const KvctlResult second = Kvctl({"reshard", "add-shard", "shard-4", "--yes"});
  EXPECT_EQ(second.exit_code, 3) << second.ToString();
  EXPECT_THAT(second.err, HasSubstr(id));
  EXPECT_THAT(second.err, HasSubstr("reshard status"));
  EXPECT_EQ(*coord::ParseActiveMigrationValue(Get(coord::ActiveMigrationKey(kPrefix))), id);
  const KvctlResult cluster = Kvctl({"cluster", "status"});
  EXPECT_THAT(cluster.out, HasSubstr(absl::StrCat("migration: ", id)));

  // The operator steers it.
  KvctlResult r = Kvctl({"reshard", "throttle", id, "8MiB/s"});
  ASSERT_EQ(r.exit_code, 0) << r.ToString();
  EXPECT_EQ(Record(id).throttle_bytes_per_second, 8 << 20);
  r = Kvctl({"reshard", "pause", id});
  ASSERT_EQ(r.exit_code, 0) << r.ToString();
  EXPECT_TRUE(Record(id).paused);
  nlohmann::json status = StatusJson("");
  ASSERT_TRUE(status.is_object());
  EXPECT_EQ(status["id"], id);
  EXPECT_EQ(status["active"], true);
  EXPECT_EQ(status["paused"], true);
  EXPECT_EQ(status["throttle_bytes_per_second"], 8 << 20);
  r = Kvctl({"reshard", "resume", id});
  ASSERT_EQ(r.exit_code, 0) << r.ToString();
  EXPECT_FALSE(Record(id).paused);

  // What the driver reports of a source shows in status.
  coord::SourceProgress progress;
  progress.destination = "shard-3";
  progress.phase = "catchup";
  progress.keys_copied = 900;
  progress.keys_estimate = 1000;
  progress.bytes_copied = 90000;
  progress.bytes_estimate = 100000;
  progress.source_index = 5000;
  progress.applied_index = 4880;
  progress.retries = 2;
  Put(coord::MigrationSourceKey(kPrefix, id, "shard-1"), coord::SourceProgressValue(progress));
  status = StatusJson(id);
  ASSERT_TRUE(status.is_object());
  EXPECT_EQ(status["paused"], false);
  ASSERT_EQ(status["sources"].size(), 1u);
  EXPECT_EQ(status["sources"][0]["source"], "shard-1");
  EXPECT_EQ(status["sources"][0]["catchup_lag"], 120);
  EXPECT_EQ(status["sources"][0]["retries"], 2);
  const KvctlResult text = Kvctl({"reshard", "status"});
  EXPECT_THAT(text.out, HasSubstr("source shard-1 -> shard-3: catchup"));
  EXPECT_THAT(text.out, HasSubstr("catch-up lag 120 entries"));

  // Cancel: refused once the ring has switched, accepted before.
  SetPhase(id, "switched");
  r = Kvctl({"reshard", "cancel", id});
  EXPECT_EQ(r.exit_code, 3) << r.ToString();
  EXPECT_THAT(r.err, HasSubstr("cannot be cancelled"));
  EXPECT_THAT(r.err, HasSubstr("remove-shard shard-3"));
  EXPECT_FALSE(Record(id).cancel_requested);
  SetPhase(id, "catchup");
  r = Kvctl({"reshard", "cancel", id});
  ASSERT_EQ(r.exit_code, 0) << r.ToString();
  EXPECT_TRUE(Record(id).cancel_requested);
  EXPECT_EQ(Record(id).phase, "catchup");  // The driver's to change.
  status = StatusJson(id);
  EXPECT_EQ(status["cancel_requested"], true);

  for (const char* verb : {"pause", "resume", "cancel"}) {
    r = Kvctl({"reshard", verb, "m-no-such-migration"});
    EXPECT_EQ(r.exit_code, 1) << r.ToString();
    EXPECT_THAT(r.err, HasSubstr("no migration m-no-such-migration"));
  }
  r = Kvctl({"reshard", "status", "m-no-such-migration"});
  EXPECT_EQ(r.exit_code, 1) << r.ToString();
  r = Kvctl({"reshard", "throttle", id, "1KB/s"});
  EXPECT_EQ(r.exit_code, 2) << r.ToString();
}

TEST_F(ReshardTest, StatusWatchEndsWithTheMigration) {
  ASSERT_NO_FATAL_FAILURE(InitCluster());
  const std::string id = StartAddShard("shard-3");
  ASSERT_FALSE(id.empty());

  // Runs `reshard status ID --watch` in the background; its output in `out`.
  const auto watch = [&](ChildProcess* child, const std::string& out) {
    std::vector<std::string> args = EtcdFlags();
    args.insert(args.end(), {"reshard", "status", id, "--watch"});
    ASSERT_TRUE(child->Start(KVCTL_BIN, args, out, out + ".err").ok());
    // It has read etcd (and set up its Ctrl-C handler) once it printed.
    ASSERT_TRUE(WaitFor([&] { return !testing::ReadFileOrEmpty(out).empty(); },
                        absl::Now() + absl::Seconds(20)))
        << testing::ReadFileOrEmpty(out + ".err");
  };
  const auto exit_of = [](ChildProcess* child) {
    absl::StatusOr<ExitStatus> exit = child->WaitExit(absl::Now() + absl::Seconds(20));
    EXPECT_TRUE(exit.ok()) << exit.status();
    return exit.ok() && exit->exited ? exit->code : -1;
  };

  {
    ChildProcess child;
    const std::string out = dir_.Join("watch-interrupted");
    ASSERT_NO_FATAL_FAILURE(watch(&child, out));
    ASSERT_TRUE(child.Kill(SIGINT).ok());
    EXPECT_EQ(exit_of(&child), 130) << testing::ReadFileOrEmpty(out + ".err");
    EXPECT_EQ(Record(id).phase, "copy") << "watching changes nothing";
  }
  {
    ChildProcess child;
    const std::string out = dir_.Join("watch-done");
    ASSERT_NO_FATAL_FAILURE(watch(&child, out));
    SetPhase(id, "done");
    EXPECT_EQ(exit_of(&child), 0) << testing::ReadFileOrEmpty(out + ".err");
    // Off a terminal each change is printed once: the copy, then the end.
    const std::string printed = testing::ReadFileOrEmpty(out);
    EXPECT_THAT(printed, HasSubstr("phase copy"));
    EXPECT_THAT(printed, HasSubstr("phase done"));
  }
  {
    // The driver clears `active` when a migration ends; then another starts.
    ASSERT_TRUE(etcd_client_->DeleteRange(coord::ActiveMigrationKey(kPrefix)).ok());
    const std::string next = StartAddShard("shard-4");
    ASSERT_FALSE(next.empty());
    ASSERT_NE(next, id);
    const nlohmann::json newest = StatusJson("");
    EXPECT_EQ(newest["id"], next);
    ChildProcess child;
    const std::string out = dir_.Join("watch-cancelled");
    std::vector<std::string> args = EtcdFlags();
    args.insert(args.end(), {"reshard", "status", "--watch", "--json"});
    ASSERT_TRUE(child.Start(KVCTL_BIN, args, out, out + ".err").ok());
    ASSERT_TRUE(WaitFor([&] { return !testing::ReadFileOrEmpty(out).empty(); },
                        absl::Now() + absl::Seconds(20)));
    SetPhase(next, "cancelled");
    EXPECT_EQ(exit_of(&child), 1);
    EXPECT_THAT(testing::ReadFileOrEmpty(out + ".err"), HasSubstr("ended cancelled"));
    // One JSON object per change.
    int objects = 0;
    for (absl::string_view line : absl::StrSplit(testing::ReadFileOrEmpty(out), '\n')) {
      if (line.empty()) continue;
      EXPECT_TRUE(nlohmann::json::parse(line, nullptr, false).is_object()) << line;
      ++objects;
    }
    EXPECT_GE(objects, 2);
  }
}

}  // namespace
}  // namespace kvstore
