// The resharding crash matrix (docs/resharding.md, "Crash matrix"; issue 14):
// kill -9 of one process at one phase of `kvctl reshard add-shard s3`, then
// only restart it (or let failover act), and the migration must finish with
// nothing lost. Real processes on 127.0.0.1: a one-member etcd, shards s0..s2
// (kv-shard + kv-replica each, --ack=sync --sync-acks=1, --lease-ttl=2s), the
// new group s3 (the same), two kv-routers following the ring in etcd, 20,000
// preloaded keys and a bounded write load (two writers, one per router, one
// write in flight each, ~300 writes/s at most; compare-and-set counters)
// with an oracle: a write is pending from send to answer, settled once
// acknowledged.
//
// Each (process, phase) is its own case (TEST_P, ctest name
// ReshardCrash/ReshardCrashTest.Kill/<Process>At<Phase>):
//   NewShardLeader at Copy, Catchup, Fenced, Switched, Cleanup: the driver's
//     failpoints (services/node/migration_failpoints.h), switched on in s3's
//     leader with fiu-ctrl before the migration starts; the process kills
//     itself exactly there; s3's replica takes over, the killed node is
//     restarted (it follows).
//   SourceLeader at Fenced, Cleanup: the source's failpoints in s0's leader
//     (after Fence took its hold; after Cleanup wrote a page of deletes).
//   SourceLeader at Copy: s0's leader killed by pid once it has copied some
//     keys and still copies. At Switched: killed by pid as soon as the new
//     ring is in etcd (the source has no step of its own there).
//   Router at Copy, Cleanup; Etcd at Copy, Cleanup: killed by pid while
//     etcd's migration record shows the phase, then restarted (the router
//     on a new port, the writer behind it follows; etcd on its data dir
//     and port once the driver has failed on it).
//   Kvctl: `kvctl reshard status --watch` killed during the copy, and the
//     start command itself killed as soon as its record is in etcd, between
//     its one Txn and its exit (the output says when it had already ended:
//     1 run in 4 here). A kill before the Txn leaves nothing to resume; the
//     test then runs the command again, as an operator would. Nothing of
//     the migration runs in kvctl.
// Left out, because they are equivalent to a case above or already in
// reshard_fault_test.cc (the reasoning is in docs/resharding.md):
//   SourceLeader at Catchup (KillingASourceLeaderDuringTheCatchUp...), and
//   Router / Etcd / Kvctl at Catchup, Fenced and Switched: those phases last
//   a few ms to < --cutover-max-pause, too short to be hit by pid, and a
//   router or kvctl keeps no migration state (a router before the switch is
//   the Copy case, after it the Cleanup case; kvctl is read-only once the
//   record is written).
//
// Invariants checked after each case, each counted: every acknowledged
// write reads back with its last value (or the value of a write that failed
// after it, whose version is then higher); no acknowledged version of a key
// is at or below an earlier one; each counter lies between its acknowledged
// increments and those plus the unknown ones; the shards' leaders together
// hold exactly the keys the routers find (each key on one shard); s3 holds
// its share; bytes copied in all <= 1.2 x the moved data unless the status
// reports a restart of a copy (restarts > 0, with a reason).
//
// Reproduce: ctest --test-dir build -R 'ReshardCrash.*' --output-on-failure
// (one case: -R 'ReshardCrash.*NewShardLeaderAtFenced'). A failed case keeps
// its directory with every log.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/coord/etcd_client.h"
#include "common/coord/schema.h"
#include "common/ring/hash_ring.h"
#include "gtest/gtest.h"
#include "services/node/migration_failpoints.h"
#include "tests/support/etcd_cluster.h"
#include "tests/support/process.h"
#include "tests/support/router_load.h"
#include "tests/support/router_process.h"

namespace kvstore {
namespace {

using ::kvstore::testing::KvClient;
using ::kvstore::testing::RouterProcess;
using ::kvstore::testing::ServerProcess;
using ::kvstore::testing::TempDir;
using ::kvstore::testing::WaitFor;

constexpr char kPrefix[] = "/kvstore/reshard-crash-test";
constexpr char kNewShard[] = "s3";
constexpr char kSource[] = "s0";  // The source whose leader is killed.
const std::vector<std::string> kShards = {"s0", "s1", "s2", "s3"};
// Slow enough that the copy (~0.5 MB moves) and the cleanup last a second
// or more, so that a kill by pid lands inside them.
constexpr char kThrottle[] = "--throttle=256KiB/s";

enum class Victim { kNewShardLeader, kSourceLeader, kRouter, kKvctl, kEtcd };
enum class Phase { kCopy, kCatchup, kFenced, kSwitched, kCleanup };

struct CrashCase {
  Victim victim;
  Phase phase;
};

std::string VictimName(Victim v) {
  switch (v) {
    case Victim::kNewShardLeader:
      return "NewShardLeader";
    case Victim::kSourceLeader:
      return "SourceLeader";
    case Victim::kRouter:
      return "Router";
    case Victim::kKvctl:
      return "Kvctl";
    case Victim::kEtcd:
      return "Etcd";
  }
  return "?";
}

std::string PhaseName(Phase p) {
  switch (p) {
    case Phase::kCopy:
      return "Copy";
    case Phase::kCatchup:
      return "Catchup";
    case Phase::kFenced:
      return "Fenced";
    case Phase::kSwitched:
      return "Switched";
    case Phase::kCleanup:
      return "Cleanup";
  }
  return "?";
}

// The migration record's phase while the process is at `p` ("cutover" is
// the record's phase while the sources are fenced).
std::string RecordPhase(Phase p) {
  switch (p) {
    case Phase::kCopy:
      return "copy";
    case Phase::kCatchup:
      return "catchup";
    case Phase::kFenced:
      return "cutover";
    case Phase::kSwitched:
      return "switched";
    case Phase::kCleanup:
      return "cleanup";
  }
  return "?";
}

// The failpoint that kills `v` at `p`, or nullptr when the case kills by pid.
const char* FailpointOf(Victim v, Phase p) {
  if (v == Victim::kNewShardLeader) {
    switch (p) {
      case Phase::kCopy:
        return failpoints::kDriverCopyPageImported;
      case Phase::kCatchup:
        return failpoints::kDriverCatchupEntered;
      case Phase::kFenced:
        return failpoints::kDriverSourcesFenced;
      case Phase::kSwitched:
        return failpoints::kDriverSwitched;
      case Phase::kCleanup:
        return failpoints::kDriverCleanupPage;
    }
  }
  if (v == Victim::kSourceLeader && p == Phase::kFenced) return failpoints::kSourceFenced;
  if (v == Victim::kSourceLeader && p == Phase::kCleanup) return failpoints::kSourceCleanupPage;
  return nullptr;
}

// For test names and failure messages.
void PrintTo(const CrashCase& c, std::ostream* os) {
  *os << VictimName(c.victim) << " at " << PhaseName(c.phase);
}

using Totals = testing::MigrationTotals;
using testing::RouterWriteLoad;

// What the final check counted.
struct Checked : testing::ReadBackCounts {
  uint64_t held = 0;
  uint64_t on_new_shard = 0;
  uint64_t moved_bytes = 0;  // Key and value bytes of the keys the new ring gives s3.
  std::string ToString() const {
    return absl::StrCat(preloaded, " preloaded + ", acknowledged, " acknowledged + ", unsettled,
                        " unsettled keys read back, ", increments, " counter increments; ", keys,
                        " keys, shards hold ", held, " (", on_new_shard, " on s3)");
  }
};

class ReshardCrashTest : public ::testing::TestWithParam<CrashCase> {
 protected:
  void SetUp() override { ASSERT_TRUE(cluster_.Start().ok()) << cluster_.etcd().LogTail(); }

  void TearDown() override {
    if (HasFailure()) std::printf("logs:\n%s\n", Logs().c_str());
  }

  void StartShardGroup(const std::string& shard) {
    const absl::Status s = cluster_.StartShardGroup(shard);
    ASSERT_TRUE(s.ok()) << s;
  }

  ServerProcess* NodeAt(const std::string& address) { return cluster_.NodeAt(address); }

  // `shard`'s leader, waiting up to 20 s for one; "" (and a failure) if none.
  std::string CurrentLeader(const std::string& shard) {
    absl::StatusOr<std::string> leader = cluster_.AwaitLeader(shard);
    if (!leader.ok()) {
      ADD_FAILURE() << leader.status();
      return "";
    }
    return *leader;
  }

  std::string RouterAddress(int i) {
    absl::MutexLock l(&routers_mu_);
    return router_addresses_[i];
  }

  void StartRouter(int i) {
    ASSERT_TRUE(routers_[i]->Start("", cluster_.RouterFlags()).ok()) << routers_[i]->LogTail();
    absl::MutexLock l(&routers_mu_);
    router_addresses_[i] = routers_[i]->address();
  }

  void StartCluster() {
    for (int s = 0; s < 3; ++s) ASSERT_NO_FATAL_FAILURE(StartShardGroup(kShards[s]));
    const absl::Status init = cluster_.Init({kShards[0], kShards[1], kShards[2]});
    ASSERT_TRUE(init.ok()) << init;
    for (int i = 0; i < 2; ++i) ASSERT_NO_FATAL_FAILURE(StartRouter(i));
    absl::StatusOr<coord::RingRecord> record = cluster_.Ring();
    ASSERT_TRUE(record.ok()) << record.status();
    ring_version_ = record->version;
    std::vector<std::string> shards = record->shards;
    shards.push_back(kNewShard);
    absl::StatusOr<HashRing> after = HashRing::Build(shards, record->vnodes);
    ASSERT_TRUE(after.ok()) << after.status();
    after_ = std::make_unique<HashRing>(*std::move(after));
  }

  int64_t RingVersion() {
    absl::StatusOr<coord::RingRecord> record = cluster_.Ring();
    return record.ok() ? record->version : -1;
  }

  std::vector<std::string> KvctlArgs(std::vector<std::string> args) const {
    args.insert(args.begin(), {absl::StrCat("--etcd=", cluster_.endpoint()),
                               absl::StrCat("--etcd-prefix=", kPrefix)});
    return args;
  }

  testing::KvctlResult Kvctl(std::vector<std::string> args,
                             absl::Duration timeout = absl::Seconds(20)) {
    return cluster_.Kvctl(std::move(args), timeout);
  }

  void Preload(int count) {
    absl::StatusOr<std::map<std::string, std::string>> written =
        testing::Preload(RouterAddress(0), count, testing::PaddedValue);
    ASSERT_TRUE(written.ok()) << written.status();
    preloaded_.insert(written->begin(), written->end());
  }

  std::string ActiveId() { return cluster_.ActiveMigrationId(); }

  std::string PhaseOf(const std::string& id) {
    std::optional<coord::MigrationRecord> r = cluster_.Migration(id);
    return r.has_value() ? r->phase : "";
  }

  Totals Sum(const std::string& id) { return testing::Sum(cluster_.Progress(id)); }

  // Until the migration is over and no longer active; its last phase.
  std::string AwaitOver(const std::string& id, absl::Duration timeout) {
    std::string phase;
    const bool over = WaitFor(
        [&] {
          phase = PhaseOf(id);
          return phase == "done" || phase == "cancelled" || phase == "failed";
        },
        absl::Now() + timeout, absl::Milliseconds(50));
    if (over) {
      WaitFor([&] { return ActiveId() != id; }, absl::Now() + absl::Seconds(20),
              absl::Milliseconds(50));
    }
    return phase;
  }

  // Until etcd's record shows `phase`; false if the migration passed it or
  // the deadline came first.
  bool AwaitPhase(const std::string& id, const std::string& phase) {
    static const std::vector<std::string> kOrder = {"copy",     "catchup", "cutover",
                                                    "switched", "cleanup", "done"};
    const auto rank = [](const std::string& p) {
      return std::find(kOrder.begin(), kOrder.end(), p) - kOrder.begin();
    };
    std::string now;
    WaitFor(
        [&] {
          now = PhaseOf(id);
          return now == phase || (!now.empty() && rank(now) > rank(phase));
        },
        absl::Now() + absl::Seconds(60), absl::Milliseconds(5));
    return now == phase;
  }

  // The invariants (see the top of the file), once the load has stopped.
  Checked CheckEverything(const RouterWriteLoad& load) {
    Checked c;
    static_cast<testing::ReadBackCounts&>(c) = testing::CheckReadBack(
        RouterAddress(0), preloaded_, &load,
        [&](const std::string& key) { return after_->Owner(key) == kNewShard; });
    c.moved_bytes = c.found_bytes;
    for (const std::string& shard : kShards) {
      const std::string leader = CurrentLeader(shard);
      std::optional<uint64_t> n =
          leader.empty() ? std::nullopt : testing::EtcdCluster::KeyCount(leader);
      EXPECT_TRUE(n.has_value()) << "no key count from " << shard << "'s leader";
      c.held += n.value_or(0);
      if (shard == kNewShard) c.on_new_shard = n.value_or(0);
    }
    EXPECT_EQ(c.held, c.keys) << "the shards hold " << c.held << " keys, the router finds "
                              << c.keys;
    EXPECT_GE(c.on_new_shard, c.keys * 15 / 100) << c.ToString();
    EXPECT_LE(c.on_new_shard, c.keys * 27 / 100) << c.ToString();
    return c;
  }

  std::string Logs() {
    std::string out = cluster_.Logs();
    for (auto& r : routers_) absl::StrAppend(&out, "--- router:\n", r->LogTail(1500));
    return out;
  }

  std::string StatusText(const std::string& id) { return cluster_.MigrationStatusText(id); }

  // The faults. Each returns once the killed process runs again (or its
  // replacement leads), with a line saying what happened.
  void CrashByFailpoint(const std::string& shard, const char* failpoint, Phase phase,
                        const std::function<std::string()>& start) {
    ServerProcess* victim = NodeAt(CurrentLeader(shard));
    ASSERT_NE(victim, nullptr);
    const absl::Status enabled = cluster_.EnableFailpoint(*victim, failpoint);
    ASSERT_TRUE(enabled.ok()) << enabled;
    id_ = start();
    ASSERT_FALSE(id_.empty());
    absl::StatusOr<testing::ExitStatus> exit =
        victim->process().WaitExit(absl::Now() + absl::Seconds(90));
    ASSERT_TRUE(exit.ok()) << failpoint << " was never reached\n" << StatusText(id_);
    // The record as the killed process left it (nobody else has moved it on:
    // a new leader of s3 needs the old one's lease to run out first).
    const std::string at = PhaseOf(id_);
    EXPECT_EQ(exit->signal, SIGKILL) << exit->ToString();
    if (shard == kSource && phase == Phase::kFenced) {
      // The driver sees its Fence call fail at once and abandons the cutover
      // (back to "catchup") before this test sees the exit; its log says so.
      EXPECT_TRUE(at == "cutover" || at == "catchup") << at;
      EXPECT_TRUE(WaitFor(
          [&] {
            for (const auto& n : cluster_.nodes()) {
              if (absl::StrContains(testing::ReadFileOrEmpty(n->log_path()),
                                    absl::StrCat("back to catch-up: fence of ", kSource))) {
                return true;
              }
            }
            return false;
          },
          absl::Now() + absl::Seconds(10), absl::Milliseconds(50)))
          << "the driver's Fence of " << kSource << " did not fail";
    } else {
      EXPECT_EQ(at, RecordPhase(phase)) << "the failpoint " << failpoint << " is not in its phase";
    }
    std::printf("%s (%s) killed itself at %s; the migration's phase was %s\n",
                victim->address().c_str(), shard.c_str(), failpoint, at.c_str());
    const absl::Status restarted = victim->Restart();
    ASSERT_TRUE(restarted.ok()) << restarted;
  }

  // Copy: kill -9 of s0's leader once s0 has copied some keys and still
  // copies. Switched: as soon as the new ring is in etcd.
  void KillSourceByPid(Phase phase) {
    ServerProcess* victim = NodeAt(CurrentLeader(kSource));
    ASSERT_NE(victim, nullptr);
    if (phase == Phase::kCopy) {
      const std::string prefix = coord::MigrationSourcesPrefix(kPrefix, id_);
      ASSERT_TRUE(WaitFor(
          [&] {
            absl::StatusOr<coord::RangeResult> r = cluster_.client().Range(prefix + kSource);
            if (!r.ok() || r->kvs.empty()) return false;
            absl::StatusOr<coord::SourceProgress> p =
                coord::ParseSourceProgressValue(kSource, r->kvs[0].value());
            return p.ok() && p->phase == "copy" && p->keys_copied > 0;
          },
          absl::Now() + absl::Seconds(60), absl::Milliseconds(5)))
          << "s0 was never seen copying\n"
          << StatusText(id_);
    } else {
      ASSERT_EQ(phase, Phase::kSwitched);
      ASSERT_TRUE(WaitFor([&] { return RingVersion() > ring_version_; },
                          absl::Now() + absl::Seconds(90), absl::Milliseconds(2)))
          << "the ring never switched\n"
          << StatusText(id_);
    }
    ASSERT_TRUE(victim->KillHard().ok());
    const std::string at = PhaseOf(id_);
    std::printf("killed %s's leader %s in phase %s\n", kSource, victim->address().c_str(),
                at.c_str());
    if (phase == Phase::kCopy) {
      EXPECT_EQ(at, "copy");
    } else {
      EXPECT_TRUE(at == "switched" || at == "cleanup") << at;
    }
    const absl::Status restarted = victim->Restart();
    ASSERT_TRUE(restarted.ok()) << restarted;
  }

  void KillRouterDuring(Phase phase) {
    ASSERT_TRUE(AwaitPhase(id_, RecordPhase(phase)))
        << "never saw phase " << RecordPhase(phase) << "\n"
        << StatusText(id_);
    ASSERT_TRUE(routers_[1]->process().KillHard().ok());
    const std::string at = PhaseOf(id_);
    EXPECT_EQ(at, RecordPhase(phase)) << "the phase ended before the kill";
    std::printf("killed router 1 (%s) in phase %s\n", RouterAddress(1).c_str(), at.c_str());
    ASSERT_NO_FATAL_FAILURE(StartRouter(1));
  }

  void KillEtcdDuring(Phase phase) {
    ASSERT_TRUE(AwaitPhase(id_, RecordPhase(phase)))
        << "never saw phase " << RecordPhase(phase) << "\n"
        << StatusText(id_);
    ServerProcess* driver = NodeAt(CurrentLeader(kNewShard));
    ASSERT_NE(driver, nullptr);
    ASSERT_TRUE(cluster_.etcd().process().KillHard().ok());
    const absl::Time killed = absl::Now();
    // Down until the driver has noticed: it logged a warning for the
    // migration, or its node stopped leading (its lease ran out).
    const std::string warning = absl::StrCat("] Migration ", id_, ": ");
    const bool noticed = WaitFor(
        [&] {
          for (absl::string_view line :
               absl::StrSplit(testing::ReadFileOrEmpty(driver->log_path()), '\n')) {
            if (absl::StartsWith(line, "W") && absl::StrContains(line, warning)) return true;
          }
          absl::StatusOr<v1::StatusResponse> status =
              testing::FetchStatus(driver->address(), absl::Milliseconds(500));
          return !(status.ok() && status->role() == "leader" && status->ready());
        },
        absl::Now() + absl::Seconds(20), absl::Milliseconds(50));
    const absl::Status restarted = cluster_.etcd().Restart();
    ASSERT_TRUE(restarted.ok()) << restarted;
    EXPECT_TRUE(noticed) << "the driver went on without etcd for 20 s";
    std::printf("killed etcd in phase %s; down %.1f s\n", RecordPhase(phase).c_str(),
                absl::ToDoubleSeconds(absl::Now() - killed));
  }

  // kvctl: the start command killed as soon as its record is in etcd (or, if
  // it was faster, after it ended), then a `status --watch` killed during the
  // copy. Returns the migration's id.
  std::string KillKvctl() {
    testing::ChildProcess start;
    const std::string log = dir_.Join("kvctl-start.log");
    EXPECT_TRUE(start
                    .Start(KVCTL_BIN,
                           KvctlArgs({"reshard", "add-shard", kNewShard, "--yes", kThrottle}), log)
                    .ok());
    std::string id;
    WaitFor(
        [&] {
          id = ActiveId();
          return !id.empty();
        },
        absl::Now() + absl::Seconds(20), absl::Milliseconds(1));
    // Still running (no exit yet): killed mid-way.
    bool killed_mid_way = false;
    if (!start.WaitExit(absl::Now()).ok()) {
      killed_mid_way = start.Kill(SIGKILL).ok();
      EXPECT_TRUE(start.WaitExit(absl::Now() + absl::Seconds(10)).ok());
    }
    std::printf("kvctl reshard add-shard %s; record %s\n",
                killed_mid_way ? "killed -9 once its record was in etcd" : "ended before the kill",
                id.empty() ? "absent" : id.c_str());
    if (id.empty()) {
      // Killed before its Txn: nothing was started; the operator runs it again.
      const testing::KvctlResult again =
          Kvctl({"reshard", "add-shard", kNewShard, "--yes", kThrottle});
      EXPECT_EQ(again.exit_code, 0) << again.ToString();
      id = ActiveId();
    }
    if (id.empty()) return id;
    testing::ChildProcess watch;
    const std::string watch_log = dir_.Join("kvctl-watch.log");
    EXPECT_TRUE(
        watch.Start(KVCTL_BIN, KvctlArgs({"reshard", "status", "--watch", "--json"}), watch_log)
            .ok());
    const bool copying = AwaitPhase(id, "copy");
    EXPECT_TRUE(WaitFor([&] { return !testing::ReadFileOrEmpty(watch_log).empty(); },
                        absl::Now() + absl::Seconds(10), absl::Milliseconds(20)))
        << "the watch printed nothing";
    EXPECT_FALSE(watch.WaitExit(absl::Now()).ok()) << "the watch ended by itself";
    EXPECT_TRUE(watch.KillHard().ok());
    std::printf("kvctl reshard status --watch killed -9 in phase %s\n",
                copying ? "copy" : PhaseOf(id).c_str());
    return id;
  }

  std::string AddShard() {
    const testing::KvctlResult add = Kvctl({"reshard", "add-shard", kNewShard, "--yes", kThrottle});
    EXPECT_EQ(add.exit_code, 0) << add.ToString();
    const std::string id = ActiveId();
    EXPECT_FALSE(id.empty()) << add.ToString();
    return id;
  }

  TempDir dir_;
  testing::EtcdCluster cluster_{dir_.path(), kPrefix};
  std::unique_ptr<RouterProcess> routers_[2] = {
      std::make_unique<RouterProcess>(dir_.Join("router-0")),
      std::make_unique<RouterProcess>(dir_.Join("router-1"))};
  absl::Mutex routers_mu_;
  std::string router_addresses_[2] ABSL_GUARDED_BY(routers_mu_);
  std::map<std::string, std::string> preloaded_;
  int64_t ring_version_ = 0;
  std::unique_ptr<HashRing> after_;
  std::string id_;
};

TEST_P(ReshardCrashTest, Kill) {
  const CrashCase param = GetParam();
  ASSERT_NO_FATAL_FAILURE(StartCluster());
  ASSERT_NO_FATAL_FAILURE(Preload(20000));
  ASSERT_NO_FATAL_FAILURE(StartShardGroup(kNewShard));
  ASSERT_FALSE(CurrentLeader(kNewShard).empty());
  RouterWriteLoad load([this](int w) { return RouterAddress(w); });
  load.Start();
  ASSERT_TRUE(
      WaitFor([&] { return load.ledger().acks() >= 200; }, absl::Now() + absl::Seconds(20)));

  const absl::Time started = absl::Now();
  const char* failpoint = FailpointOf(param.victim, param.phase);
  if (failpoint != nullptr) {
    const std::string shard =
        param.victim == Victim::kNewShardLeader ? kNewShard : std::string(kSource);
    ASSERT_NO_FATAL_FAILURE(
        CrashByFailpoint(shard, failpoint, param.phase, [this] { return AddShard(); }));
  } else if (param.victim == Victim::kKvctl) {
    id_ = KillKvctl();
    ASSERT_FALSE(id_.empty());
  } else {
    id_ = AddShard();
    ASSERT_FALSE(id_.empty());
    if (param.victim == Victim::kSourceLeader) {
      ASSERT_NO_FATAL_FAILURE(KillSourceByPid(param.phase));
    } else if (param.victim == Victim::kRouter) {
      ASSERT_NO_FATAL_FAILURE(KillRouterDuring(param.phase));
    } else {
      ASSERT_NO_FATAL_FAILURE(KillEtcdDuring(param.phase));
    }
  }

  // Restarting the killed process (or failover) is all it takes.
  const std::string phase = AwaitOver(id_, absl::Seconds(90));
  const absl::Duration took = absl::Now() - started;
  std::printf("%s", StatusText(id_).c_str());
  ASSERT_EQ(phase, "done") << StatusText(id_);
  EXPECT_EQ(RingVersion(), ring_version_ + 1);
  const size_t after = load.ledger().acks();
  EXPECT_TRUE(
      WaitFor([&] { return load.ledger().acks() >= after + 100; }, absl::Now() + absl::Seconds(20)))
      << "no write acknowledged after the migration";
  load.Stop();

  const Checked c = CheckEverything(load);
  const Totals total = Sum(id_);
  std::printf(
      "%s at %s: migration done in %.1f s; checked %s; %zu writes acknowledged, %zu failed; "
      "bytes copied %llu (%llu keys) for %llu bytes moved: %.3f x; restarts %lld, cutover "
      "retries %lld%s%s\n",
      VictimName(param.victim).c_str(), PhaseName(param.phase).c_str(), absl::ToDoubleSeconds(took),
      c.ToString().c_str(), load.ledger().acks(), load.ledger().failures(),
      static_cast<unsigned long long>(total.bytes_copied),
      static_cast<unsigned long long>(total.keys_copied),
      static_cast<unsigned long long>(c.moved_bytes),
      static_cast<double>(total.bytes_copied) / std::max<uint64_t>(c.moved_bytes, 1),
      static_cast<long long>(total.restarts), static_cast<long long>(total.retries),
      total.errors.empty() ? "" : "; ", total.errors.c_str());
  if (total.restarts == 0) {
    EXPECT_LE(total.bytes_copied, c.moved_bytes * 12 / 10)
        << "more than 1.2 x the moved data was copied and no restart is reported";
  } else {
    EXPECT_FALSE(total.errors.empty()) << "a restart without a reason";
  }
}

INSTANTIATE_TEST_SUITE_P(ReshardCrash, ReshardCrashTest,
                         ::testing::Values(CrashCase{Victim::kNewShardLeader, Phase::kCopy},
                                           CrashCase{Victim::kNewShardLeader, Phase::kCatchup},
                                           CrashCase{Victim::kNewShardLeader, Phase::kFenced},
                                           CrashCase{Victim::kNewShardLeader, Phase::kSwitched},
                                           CrashCase{Victim::kNewShardLeader, Phase::kCleanup},
                                           CrashCase{Victim::kSourceLeader, Phase::kCopy},
                                           CrashCase{Victim::kSourceLeader, Phase::kFenced},
                                           CrashCase{Victim::kSourceLeader, Phase::kSwitched},
                                           CrashCase{Victim::kSourceLeader, Phase::kCleanup},
                                           CrashCase{Victim::kRouter, Phase::kCopy},
                                           CrashCase{Victim::kRouter, Phase::kCleanup},
                                           CrashCase{Victim::kKvctl, Phase::kCopy},
                                           CrashCase{Victim::kEtcd, Phase::kCopy},
                                           CrashCase{Victim::kEtcd, Phase::kCleanup}),
                         [](const ::testing::TestParamInfo<CrashCase>& info) {
                           return absl::StrCat(VictimName(info.param.victim), "At",
                                               PhaseName(info.param.phase));
                         });

}  // namespace
}  // namespace kvstore
