// Automatic failover through etcd (docs/failover.md) with real processes on
// 127.0.0.1: a one-member etcd (tests/support/etcd_process.h), one shard of
// three nodes in etcd mode (kv-shard n1, kv-replica n2 and n3;
// --ack=sync --sync-acks=1 --fsync=always --lease-ttl=2s) and a kv-router
// that follows the topology in etcd.
//
//   KillingTheLeaderElectsTheMostAdvancedReplicaAndLosesNoAcknowledgedWrite:
//     a write load through the router records every acknowledged write
//     (writers.h-style oracle: a key holds its last acknowledged value, or the
//     value of a write whose answer was an error after it); kill -9 of the
//     leader; the time from the kill to the first acknowledged write sent
//     after it is printed; every key reads back as the oracle allows; the old
//     leader, restarted, rejoins as a follower of the new one. Rounds:
//     $KV_FAILOVER_ROUNDS (default 1; each round kills the current leader);
//     $KV_FAILOVER_TTL_S sets the nodes' lease TTL (default 2).
//   APausedLeaderIsReplacedAndAcknowledgesNothingAfterItResumes: SIGSTOP of
//     the leader for 2 x TTL; a new leader is elected; after SIGCONT the
//     writes that waited on the old leader fail, and it answers writes with
//     FAILED_PRECONDITION / UNAVAILABLE naming the new leader, then follows it.
//   AGracefulTransfer...: `kvctl --etcd=E promote s0 --to=ID` under the write
//     load (sync acks; and async acks with the target stopped until the
//     request is in etcd, where only the leader's catch-up wait keeps the
//     acknowledged writes it lacks; one writer writes each key once): ID leads a newer epoch within
//     5 s, the longest stretch without an acknowledged write and the longest write are printed and
//     bounded by 2 s + 500 ms, every acknowledged write reads back, the old leader follows ID.
//     Rounds: $KV_TRANSFER_ROUNDS (default 1; each round moves the leadership on to the next
//     member).
//   PromoteRefusesImpossibleTargets...: exit 3 for the leader, an unknown
//     member, a shard without leader; --force to a stopped target hands over
//     after the 2 s pause and says how many entries it lacked.
//   ATransferToATargetThatCannotCatchUpChangesNothing: the target SIGSTOPped
//     first; kvctl exits 4 saying it did not catch up, the old leader takes
//     writes again within 2 s + 500 ms, nothing else changed or was lost.
//   AnOldLeaderToldANewerEpochByARouterRefusesNotLeaderAndAcknowledgesNothing:
//     the leader SIGSTOPped past its TTL under a router's load; a new leader
//     wins; the old one resumes with its etcd path cut (so only its lease
//     could fence it besides the router's epoch); a write naming the new
//     epoch in kv-leader-epoch, as a router sends it, is refused NOT_LEADER
//     unapplied, and nothing it is sent afterwards is acknowledged.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/coord/etcd_client.h"
#include "common/coord/schema.h"
#include "common/server/grpc_status.h"
#include "gtest/gtest.h"
#include "tests/support/etcd_process.h"
#include "tests/support/process.h"
#include "tests/support/router_process.h"
#include "tools/kvfault/tcp_proxy.h"

namespace kvstore {
namespace {

using ::kvstore::testing::EtcdProcess;
using ::kvstore::testing::KvClient;
using ::kvstore::testing::RouterProcess;
using ::kvstore::testing::ServerProcess;
using ::kvstore::testing::TempDir;
using ::kvstore::testing::WaitFor;

constexpr char kPrefix[] = "/kvstore/failover-test";
constexpr char kShard[] = "s0";
// Every node's --lease-ttl: 2 s, or $KV_FAILOVER_TTL_S whole seconds (issue
// 13 asks for failover times at 2 s and 3 s).
absl::Duration Ttl() {
  static const absl::Duration ttl = [] {
    int seconds = 2;
    const char* env = std::getenv("KV_FAILOVER_TTL_S");
    if (env != nullptr && absl::SimpleAtoi(env, &seconds) && seconds >= 2) {
      return absl::Seconds(seconds);
    }
    return absl::Seconds(2);
  }();
  return ttl;
}

struct Leader {
  std::string id;
  std::string addr;
  int64_t epoch = 0;
};

// Every write of the load and what its answer allows a later read to see.
class Oracle {
 public:
  void Sent(const std::string& key) {
    absl::MutexLock l(&mu_);
    keys_[key];  // Known from now on.
  }
  void Acked(const std::string& key, const std::string& value, absl::Time sent, absl::Time at) {
    absl::MutexLock l(&mu_);
    KeyState& k = keys_[key];
    k.acked = value;
    k.pending.clear();  // Writes of one key are sequential: older outcomes are settled.
    acks_.push_back({sent, at});
  }
  void Failed(const std::string& key, const std::string& value, const grpc::Status& why = {}) {
    absl::MutexLock l(&mu_);
    keys_[key].pending.insert(value);
    ++failures_;
    if (!why.ok()) {
      // By code and the message's start (after the router's "shard s0 at
      // HOST:PORT: "), to say which refusals a client saw.
      std::string message = why.error_message();
      if (const size_t at = message.find(": "); at != std::string::npos && at < 40) {
        message = message.substr(at + 2);
      }
      ++failure_kinds_[absl::StrCat(why.error_code(), " ", message.substr(0, 48))];
    }
  }
  std::string FailureKinds() const {
    absl::MutexLock l(&mu_);
    std::string out;
    for (const auto& [kind, n] : failure_kinds_) absl::StrAppend(&out, "  ", n, " x ", kind, "\n");
    return out;
  }
  // The first acknowledgement of a write sent at or after `t`.
  std::optional<absl::Time> FirstAckSentAfter(absl::Time t) const {
    absl::MutexLock l(&mu_);
    std::optional<absl::Time> first;
    for (const auto& [sent, at] : acks_) {
      if (sent >= t && (!first || at < *first)) first = at;
    }
    return first;
  }
  size_t acks() const {
    absl::MutexLock l(&mu_);
    return acks_.size();
  }
  // (sent, acknowledged) of every acknowledged write, in the order answered.
  std::vector<std::pair<absl::Time, absl::Time>> AckTimes() const {
    absl::MutexLock l(&mu_);
    return acks_;
  }
  size_t failures() const {
    absl::MutexLock l(&mu_);
    return failures_;
  }

  struct KeyState {
    std::optional<std::string> acked;
    std::set<std::string> pending;  // Answered with an error after the last ack.
  };
  std::map<std::string, KeyState> Keys() const {
    absl::MutexLock l(&mu_);
    return keys_;
  }

 private:
  mutable absl::Mutex mu_;
  std::map<std::string, KeyState> keys_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<absl::Time, absl::Time>> acks_ ABSL_GUARDED_BY(mu_);
  size_t failures_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, int> failure_kinds_ ABSL_GUARDED_BY(mu_);
};

// Writers through the router, each over its own keys, one write in flight
// each. A failed write is retried with the next value after a short pause
// (a rate limit for the 2-core machine, not a synchronisation).
// `keys` = 0: every write has a key of its own, never written again, so a
// lost acknowledged write shows however late the check runs. `name` prefixes
// the keys and values.
class WriteLoad {
 public:
  WriteLoad(const std::string& router, Oracle* oracle, int writers = 3, int keys = 20,
            const std::string& name = "w")
      : oracle_(oracle) {
    for (int w = 0; w < writers; ++w) {
      threads_.emplace_back([this, router, w, keys, name] {
        KvClient client(router, absl::Seconds(1));
        for (uint64_t seq = 0; !stop_.load(); ++seq) {
          const std::string key = absl::StrCat(name, w, "-k", keys == 0 ? seq : seq % keys);
          const std::string value = absl::StrCat(name, w, "-s", seq);
          oracle_->Sent(key);
          const absl::Time sent = absl::Now();
          v1::SetResponse response;
          grpc::Status s = client.Set(key, value, &response);
          if (s.ok()) {
            oracle_->Acked(key, value, sent, absl::Now());
          } else {
            oracle_->Failed(key, value, s);
            absl::SleepFor(absl::Milliseconds(10));
          }
        }
      });
    }
  }
  ~WriteLoad() { Stop(); }
  void Stop() {
    stop_.store(true);
    for (std::thread& t : threads_) {
      if (t.joinable()) t.join();
    }
  }

 private:
  Oracle* const oracle_;
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
};

class FailoverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(etcd_.Start().ok()) << etcd_.LogTail();
    coord::EtcdClientOptions options;
    options.endpoints = etcd_.endpoint();
    absl::StatusOr<std::unique_ptr<coord::EtcdClient>> client = coord::EtcdClient::Create(options);
    ASSERT_TRUE(client.ok()) << client.status();
    etcd_client_ = *std::move(client);
  }

  // Where node `id` ("n1".."n3") reaches etcd: through its own relay when a
  // test made them (to cut one node off from etcd alone), else directly.
  std::string EtcdEndpointOf(const std::string& id) const {
    const size_t i = static_cast<size_t>(id.back() - '1');
    return i < relays_.size() ? relays_[i]->address() : etcd_.endpoint();
  }

  std::vector<std::string> NodeFlags(const std::string& id) const {
    std::vector<std::string> flags = {
        "--shard=s0",
        absl::StrCat("--node-id=", id),
        absl::StrCat("--etcd-endpoints=", EtcdEndpointOf(id)),
        absl::StrCat("--etcd-prefix=", kPrefix),
        absl::StrCat("--lease-ttl=", absl::ToInt64Seconds(Ttl()), "s"),
        "--fsync=always"};
    flags.insert(flags.end(), ack_flags_.begin(), ack_flags_.end());
    return flags;
  }

  // The acknowledgement flags of every node (a test may change them before
  // StartCluster).
  std::vector<std::string> ack_flags_ = {"--ack=sync", "--sync-acks=1", "--sync-timeout-ms=2000"};

  // Three nodes, the cluster record, an elected leader, a router.
  void StartCluster() {
    for (int i = 0; i < 3; ++i) {
      const std::string id = absl::StrCat("n", i + 1);
      nodes_.push_back(std::make_unique<ServerProcess>(dir_.Join(id),
                                                       i == 0 ? KV_SHARD_BIN : KV_REPLICA_BIN, id));
      ASSERT_TRUE(nodes_.back()->Start(NodeFlags(id)).ok()) << nodes_.back()->LogTail();
    }
    Topology topology;
    topology.vnodes = 64;
    topology.shards.push_back(
        {kShard, nodes_[0]->address(), {nodes_[1]->address(), nodes_[2]->address()}});
    const std::string topology_file = dir_.Join("topology.yaml");
    ASSERT_TRUE(testing::WriteTopologyFile(topology_file, topology).ok());
    const testing::KvctlResult init = testing::RunKvctl(
        "", {absl::StrCat("--etcd=", etcd_.endpoint()), absl::StrCat("--etcd-prefix=", kPrefix),
             absl::StrCat("--config=", topology_file), "cluster", "init"});
    ASSERT_EQ(init.exit_code, 0) << init.ToString();
    const testing::KvctlResult again = testing::RunKvctl(
        "", {absl::StrCat("--etcd=", etcd_.endpoint()), absl::StrCat("--etcd-prefix=", kPrefix),
             absl::StrCat("--config=", topology_file), "cluster", "init"});
    EXPECT_EQ(again.exit_code, 3) << "a second init must be refused: " << again.ToString();
    std::optional<Leader> leader = AwaitLeaderOtherThan("", absl::Seconds(15));
    ASSERT_TRUE(leader.has_value()) << Logs();
    ASSERT_TRUE(
        router_
            .Start("", {absl::StrCat("--etcd-endpoints=", etcd_.endpoint()),
                        absl::StrCat("--etcd-prefix=", kPrefix), "--forward-timeout-ms=1000"})
            .ok())
        << router_.LogTail();
  }

  std::optional<Leader> CurrentLeader() {
    absl::StatusOr<coord::RangeResult> range =
        etcd_client_->Range(coord::ShardLeaderKey(kPrefix, kShard));
    if (!range.ok() || range->kvs.empty()) return std::nullopt;
    absl::StatusOr<coord::LeaderValueRecord> value = coord::ParseLeaderJson(range->kvs[0].value());
    if (!value.ok() || value->epoch == 0) return std::nullopt;
    return Leader{value->id, value->addr, value->epoch};
  }

  // A leader (confirmed epoch in its key, taking writes) whose id is not
  // `other`.
  std::optional<Leader> AwaitLeaderOtherThan(const std::string& other, absl::Duration timeout) {
    std::optional<Leader> found;
    WaitFor(
        [&] {
          found = CurrentLeader();
          if (!found || found->id == other) return false;
          absl::StatusOr<v1::StatusResponse> status =
              testing::FetchStatus(found->addr, absl::Seconds(1));
          return status.ok() && status->role() == "leader" && status->ready();
        },
        absl::Now() + timeout, absl::Milliseconds(20));
    if (found && found->id == other) return std::nullopt;
    return found;
  }

  ServerProcess* NodeById(const std::string& id) {
    for (auto& n : nodes_) {
      if (absl::EndsWith(n->dir(), "/" + id)) return n.get();
    }
    return nullptr;
  }

  // Every key of the oracle read through the router: its last acknowledged
  // value, or a value whose write was answered with an error after it.
  void ExpectEveryAcknowledgedWriteReadsBack(const Oracle& oracle) {
    KvClient client(router_.address(), absl::Seconds(5));
    size_t checked = 0;
    size_t acked_keys = 0;
    for (const auto& [key, state] : oracle.Keys()) {
      v1::GetResponse response;
      grpc::Status s;
      WaitFor([&] { return (s = client.Get(key, &response)).ok(); },
              absl::Now() + absl::Seconds(10), absl::Milliseconds(20));
      ASSERT_TRUE(s.ok()) << key << ": " << s.error_message();
      ++checked;
      if (state.acked) ++acked_keys;
      const bool allowed = (response.found() && state.acked && response.value() == *state.acked) ||
                           (response.found() && state.pending.count(response.value()) > 0) ||
                           (!response.found() && !state.acked);
      EXPECT_TRUE(allowed) << key << " reads "
                           << (response.found() ? response.value() : std::string("<absent>"))
                           << " but its last acknowledged value is "
                           << state.acked.value_or("<none>")
                           << " (errors after it: " << absl::StrJoin(state.pending, ",") << ")";
    }
    std::printf(
        "checked %zu keys (%zu with an acknowledged write): every acknowledged write "
        "reads back\n",
        checked, acked_keys);
  }

  // Graceful transfers round after round under a write load (below).
  // `lagging_target`: the target is SIGSTOPped before the request and
  // resumed once it is in etcd.
  void TransferRoundsUnderLoad(bool lagging_target);

  // Waits (10 s) until member `id`'s record in etcd says it is a replica
  // holding data: records are published at most every 250 ms, and kvctl
  // refuses an "empty" transfer target without --force.
  bool AwaitMemberRecordShowsData(const std::string& id) {
    return WaitFor(
        [&] {
          absl::StatusOr<coord::RangeResult> r =
              etcd_client_->Range(coord::MemberKey(kPrefix, kShard, id));
          if (!r.ok() || r->kvs.empty()) return false;
          absl::StatusOr<coord::MemberRecord> m = coord::ParseMemberValue(id, r->kvs[0].value());
          return m.ok() && m->state == "replica" && m->durable_index > 0;
        },
        absl::Now() + absl::Seconds(10));
  }

  std::string Logs() {
    std::string out;
    for (auto& n : nodes_) absl::StrAppend(&out, "--- ", n->log_path(), ":\n", n->LogTail(2500));
    absl::StrAppend(&out, "--- router:\n", router_.LogTail(1500));
    return out;
  }

  TempDir dir_;
  EtcdProcess etcd_;
  std::unique_ptr<coord::EtcdClient> etcd_client_;
  std::vector<std::unique_ptr<ServerProcess>> nodes_;
  RouterProcess router_{dir_.Join("router")};
  std::vector<std::unique_ptr<fault::TcpProxy>> relays_;  // One per node, when made.
};

// --max-lag-on-failover (docs/failover.md §5): in async mode the leader records
// its position in etcd, and no member further behind it than the limit is
// elected, since the acknowledged writes it lacks would be lost.
TEST_F(FailoverTest, InAsyncModeNoMemberTooFarBehindTheLastLeaderIsElected) {
  ack_flags_ = {"--ack=async", "--max-lag-on-failover=50"};
  ASSERT_NO_FATAL_FAILURE(StartCluster());
  std::optional<Leader> old = CurrentLeader();
  ASSERT_TRUE(old.has_value());
  ServerProcess* leader = NodeById(old->id);
  ASSERT_NE(leader, nullptr);
  std::vector<ServerProcess*> replicas;
  for (auto& n : nodes_) {
    if (n.get() != leader) replicas.push_back(n.get());
  }
  // The replicas stop applying; the leader acknowledges 200 writes alone.
  for (ServerProcess* r : replicas) ASSERT_TRUE(r->process().Kill(SIGSTOP).ok());
  KvClient direct(old->addr, absl::Seconds(5));
  constexpr int kWrites = 200;
  for (int i = 0; i < kWrites; ++i) {
    v1::SetResponse response;
    grpc::Status s = direct.Set(absl::StrCat("lag-", i), absl::StrCat("v", i), &response);
    ASSERT_TRUE(s.ok()) << i << ": " << s.error_message();
  }
  absl::StatusOr<v1::StatusResponse> status = testing::FetchStatus(old->addr);
  ASSERT_TRUE(status.ok()) << status.status();
  const uint64_t leader_index = status->last_index();
  // Its position, with the limit, is in etcd before it dies.
  std::optional<coord::PositionRecord> position;
  ASSERT_TRUE(WaitFor(
      [&] {
        absl::StatusOr<coord::RangeResult> r =
            etcd_client_->Range(coord::PositionKey(kPrefix, kShard));
        if (!r.ok() || r->kvs.empty()) return false;
        absl::StatusOr<coord::PositionRecord> p = coord::ParsePositionValue(r->kvs[0].value());
        if (!p.ok()) return false;
        position = *p;
        return p->index >= leader_index;
      },
      absl::Now() + absl::Seconds(10)))
      << "the leader did not record its position " << leader_index << "\n"
      << Logs();
  EXPECT_EQ(position->max_lag, 50u);
  EXPECT_EQ(position->epoch, old->epoch);
  ASSERT_TRUE(leader->KillHard().ok());
  for (ServerProcess* r : replicas) ASSERT_TRUE(r->process().Kill(SIGCONT).ok());

  // Both replicas are over 50 entries behind: cluster status says why nobody
  // may lead, and nobody does.
  testing::KvctlResult cluster_status;
  const bool explained = WaitFor(
      [&] {
        cluster_status =
            testing::RunKvctl("", {absl::StrCat("--etcd=", etcd_.endpoint()),
                                   absl::StrCat("--etcd-prefix=", kPrefix), "cluster", "status"});
        return absl::StrContains(cluster_status.out, "more than --max-lag-on-failover=50") &&
               absl::StrContains(cluster_status.out, "NO LEADER");
      },
      absl::Now() + absl::Seconds(15), absl::Milliseconds(200));
  EXPECT_TRUE(explained) << cluster_status.ToString() << "\n" << Logs();
  // Several election rounds (--election-wait 500ms) pass without a leader.
  const absl::Time watch_until = absl::Now() + absl::Seconds(3);
  bool someone_led = false;
  WaitFor(
      [&] {
        someone_led = someone_led || CurrentLeader().has_value();
        return someone_led;
      },
      watch_until, absl::Milliseconds(50));
  EXPECT_FALSE(someone_led) << "a replica over --max-lag-on-failover behind was elected\n"
                            << Logs();
  for (ServerProcess* r : replicas) {
    EXPECT_TRUE(absl::StrContains(r->LogTail(20000), "--max-lag-on-failover=50"))
        << r->log_path() << " does not say why it did not campaign";
  }

  // The old leader comes back with every write it acknowledged and is
  // elected again; nothing was lost.
  ASSERT_TRUE(leader->RestartOnSameAddress().ok()) << leader->LogTail();
  std::optional<Leader> back = AwaitLeaderOtherThan("", absl::Seconds(20));
  ASSERT_TRUE(back.has_value()) << Logs();
  EXPECT_EQ(back->id, old->id);
  EXPECT_GT(back->epoch, old->epoch);
  KvClient client(back->addr, absl::Seconds(5));
  for (int i = 0; i < kWrites; ++i) {
    v1::GetResponse response;
    grpc::Status s = client.Get(absl::StrCat("lag-", i), &response);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_TRUE(response.found() && response.value() == absl::StrCat("v", i)) << "lag-" << i;
  }
  std::printf(
      "async leader at index %llu killed with both replicas over 50 entries behind: "
      "nobody elected; the old leader came back at epoch %lld with all %d writes\n",
      static_cast<unsigned long long>(leader_index), static_cast<long long>(back->epoch), kWrites);
}

// A leader cut off from etcd alone (its own connection to etcd cut; its
// followers and clients still reach it) fences itself: it acknowledges
// nothing after its lease's valid_until, which comes before etcd expires the
// lease and hands the key on, so before a new leader can acknowledge
// anything (docs/failover.md §2, §8 "Fencing").
TEST_F(FailoverTest, ALeaderCutOffFromEtcdAloneStopsAcknowledgingBeforeANewLeaderStarts) {
  for (int i = 0; i < 3; ++i) {
    relays_.push_back(std::make_unique<fault::TcpProxy>(etcd_.endpoint()));
    ASSERT_TRUE(relays_.back()->Start().ok());
  }
  ASSERT_NO_FATAL_FAILURE(StartCluster());
  std::optional<Leader> old = CurrentLeader();
  ASSERT_TRUE(old.has_value());
  fault::TcpProxy* relay = relays_[static_cast<size_t>(old->id.back() - '1')].get();

  // Writes straight to the old leader, one at a time, each ack's return
  // time kept: an ack happened before its call returned.
  Oracle oracle;
  std::atomic<bool> stop{false};
  absl::Mutex mu;
  absl::Time last_old_return = absl::InfinitePast();
  std::string last_refusal;
  std::thread direct([&] {
    KvClient client(old->addr, absl::Seconds(1));
    for (uint64_t seq = 0; !stop.load(); ++seq) {
      const std::string key = absl::StrCat("cut-", seq % 50);
      const std::string value = absl::StrCat("v", seq);
      oracle.Sent(key);
      const absl::Time sent = absl::Now();
      v1::SetResponse response;
      const grpc::Status s = client.Set(key, value, &response);
      const absl::Time returned = absl::Now();
      if (s.ok()) {
        oracle.Acked(key, value, sent, returned);
        absl::MutexLock l(&mu);
        last_old_return = returned;
      } else {
        oracle.Failed(key, value);
        {
          absl::MutexLock l(&mu);
          last_refusal = absl::StrCat(s.error_code(), ": ", s.error_message());
        }
        absl::SleepFor(absl::Milliseconds(5));  // A rate limit, not a synchronisation.
      }
    }
  });
  ASSERT_TRUE(WaitFor([&] { return oracle.acks() >= 20; }, absl::Now() + absl::Seconds(10)))
      << Logs();

  const absl::Time cut = absl::Now();
  relay->Cut();
  std::optional<Leader> next = AwaitLeaderOtherThan(old->id, absl::Seconds(20));
  ASSERT_TRUE(next.has_value()) << "no new leader after the old one lost etcd\n" << Logs();
  // The new leader's first acknowledged write: it was acknowledged after it
  // was sent.
  KvClient client(next->addr, absl::Seconds(2));
  absl::Time first_new_send = absl::InfiniteFuture();
  ASSERT_TRUE(WaitFor(
      [&] {
        const absl::Time sent = absl::Now();
        v1::SetResponse response;
        if (!client.Set("after-cut", "new", &response).ok()) return false;
        first_new_send = sent;
        return true;
      },
      absl::Now() + absl::Seconds(10), absl::Milliseconds(10)))
      << Logs();
  // Writes to the old leader go on a little longer: none may succeed now.
  const size_t acks_at_new = oracle.acks();
  WaitFor([&] { return oracle.failures() >= 20; }, absl::Now() + absl::Seconds(5));
  stop = true;
  direct.join();
  absl::Time last_old;
  std::string refusal;
  {
    absl::MutexLock l(&mu);
    last_old = last_old_return;
    refusal = last_refusal;
  }
  EXPECT_LT(last_old, first_new_send)
      << "the old leader acknowledged a write after the new leader could have";
  EXPECT_EQ(oracle.acks(), acks_at_new) << "the old leader acknowledged writes after a new one led";
  // Its lease is valid until TTL - 500 ms (the margin) after the last
  // keepalive it sent before the cut; 300 ms more for an answer decided
  // before then to come back on a loaded machine. etcd expires the key only
  // at TTL after that keepalive arrived, so a leader that went on would show
  // here before a new leader existed.
  EXPECT_LE(last_old - cut, Ttl() - absl::Milliseconds(500) + absl::Milliseconds(300))
      << "the old leader acknowledged writes after its lease's valid_until";
  EXPECT_TRUE(absl::StrContains(refusal, "leadership lost") ||
              absl::StrContains(refusal, "coordination outage") ||
              absl::StrContains(refusal, next->addr))
      << refusal;
  std::printf(
      "leader %s cut off from etcd at t=0: last write it acknowledged returned at "
      "%lld ms, the new leader %s (epoch %lld) took its first write sent at %lld ms; "
      "the old leader's refusal: %s\n",
      old->id.c_str(), static_cast<long long>(absl::ToInt64Milliseconds(last_old - cut)),
      next->id.c_str(), static_cast<long long>(next->epoch),
      static_cast<long long>(absl::ToInt64Milliseconds(first_new_send - cut)), refusal.c_str());

  // Back in touch, it follows the new leader, and nothing acknowledged is lost.
  relay->Restore();
  ASSERT_TRUE(WaitFor(
      [&] {
        absl::StatusOr<v1::StatusResponse> s = testing::FetchStatus(old->addr);
        return s.ok() && s->role() == "replica" && s->leader() == next->addr;
      },
      absl::Now() + absl::Seconds(15)))
      << "the old leader does not follow the new one\n"
      << Logs();
  ExpectEveryAcknowledgedWriteReadsBack(oracle);
}

int Rounds() {
  int rounds = 1;
  const char* env = std::getenv("KV_FAILOVER_ROUNDS");
  if (env != nullptr && absl::SimpleAtoi(env, &rounds) && rounds >= 1) return rounds;
  return 1;
}

TEST_F(FailoverTest, KillingTheLeaderElectsTheMostAdvancedReplicaAndLosesNoAcknowledgedWrite) {
  ASSERT_NO_FATAL_FAILURE(StartCluster());
  Oracle oracle;
  WriteLoad load(router_.address(), &oracle);
  std::vector<double> times;
  for (int round = 0; round < Rounds(); ++round) {
    std::optional<Leader> old = CurrentLeader();
    ASSERT_TRUE(old.has_value());
    ServerProcess* victim = NodeById(old->id);
    ASSERT_NE(victim, nullptr) << old->id;
    // Some writes acknowledged before the kill.
    const size_t before = oracle.acks();
    ASSERT_TRUE(
        WaitFor([&] { return oracle.acks() >= before + 50; }, absl::Now() + absl::Seconds(10)))
        << "no write load before the kill\n"
        << Logs();

    const absl::Time killed = absl::Now();
    ASSERT_TRUE(victim->KillHard().ok());
    std::optional<Leader> next = AwaitLeaderOtherThan(old->id, absl::Seconds(15));
    ASSERT_TRUE(next.has_value()) << "no new leader\n" << Logs();
    EXPECT_GT(next->epoch, old->epoch);
    ASSERT_TRUE(WaitFor([&] { return oracle.FirstAckSentAfter(killed).has_value(); },
                        absl::Now() + absl::Seconds(15)))
        << "no write acknowledged after the kill\n"
        << Logs();
    const double seconds = absl::ToDoubleSeconds(*oracle.FirstAckSentAfter(killed) - killed);
    times.push_back(seconds);
    std::printf(
        "round %d: killed leader %s (epoch %lld); %s leads epoch %lld; kill -> first "
        "acknowledged write: %.3f s\n",
        round + 1, old->id.c_str(), static_cast<long long>(old->epoch), next->id.c_str(),
        static_cast<long long>(next->epoch), seconds);

    // The old leader, restarted (on a new port), follows the new one.
    ASSERT_TRUE(victim->Restart().ok()) << victim->LogTail();
    ASSERT_TRUE(WaitFor(
        [&] {
          absl::StatusOr<v1::StatusResponse> s = testing::FetchStatus(victim->address());
          return s.ok() && s->role() == "replica" && s->ready() && s->leader() == next->addr;
        },
        absl::Now() + absl::Seconds(15)))
        << "the restarted old leader did not rejoin as a follower\n"
        << Logs();
  }
  load.Stop();
  std::sort(times.begin(), times.end());
  std::printf(
      "kill -> first acknowledged write over %zu rounds: min %.3f s, median %.3f s, max "
      "%.3f s; %zu writes acknowledged, %zu failed\n",
      times.size(), times.front(), times[times.size() / 2], times.back(), oracle.acks(),
      oracle.failures());
  ExpectEveryAcknowledgedWriteReadsBack(oracle);
}

int TransferRounds() {
  int rounds = 1;
  const char* env = std::getenv("KV_TRANSFER_ROUNDS");
  if (env != nullptr && absl::SimpleAtoi(env, &rounds) && rounds >= 1) return rounds;
  return 1;
}

// What the write load saw in [from, to]: the longest stretch without an
// acknowledged write (from the last acknowledgement before `from`), and the
// longest acknowledged write sent in it.
struct LoadPause {
  absl::Duration without_ack;
  absl::Duration longest_write;
};
LoadPause PauseSeen(const Oracle& oracle, absl::Time from, absl::Time to) {
  std::vector<absl::Time> acked;
  LoadPause pause{absl::ZeroDuration(), absl::ZeroDuration()};
  absl::Time last_before = absl::InfinitePast();
  for (const auto& [sent, at] : oracle.AckTimes()) {
    if (at < from) last_before = std::max(last_before, at);
    if (at >= from && at <= to) acked.push_back(at);
    if (sent >= from && at <= to) pause.longest_write = std::max(pause.longest_write, at - sent);
  }
  std::sort(acked.begin(), acked.end());
  absl::Time previous = last_before == absl::InfinitePast() ? from : last_before;
  for (absl::Time at : acked) {
    pause.without_ack = std::max(pause.without_ack, at - previous);
    previous = at;
  }
  pause.without_ack = std::max(pause.without_ack, to - previous);
  return pause;
}

double Ms(absl::Duration d) { return absl::ToDoubleMilliseconds(d); }

std::string MinMedianMax(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return absl::StrFormat("min %.0f ms, median %.0f ms, max %.0f ms", v.front(), v[v.size() / 2],
                         v.back());
}

// The graceful transfer (docs/failover.md §8a) round after round under the
// write load; the bound is the 2 s pause plus 500 ms.
void FailoverTest::TransferRoundsUnderLoad(bool lagging_target) {
  Oracle oracle;
  WriteLoad load(router_.address(), &oracle);
  WriteLoad unique(router_.address(), &oracle, /*writers=*/1, /*keys=*/0, "u");
  std::vector<double> reported;
  std::vector<double> without_ack;
  std::vector<double> longest_write;
  for (int round = 0; round < TransferRounds(); ++round) {
    std::optional<Leader> old = CurrentLeader();
    ASSERT_TRUE(old.has_value());
    // The next member after the leader, n1 -> n2 -> n3 -> n1.
    const std::string to = absl::StrCat("n", old->id == "n1" ? 2 : old->id == "n2" ? 3 : 1);
    const size_t before = oracle.acks();
    ASSERT_TRUE(
        WaitFor([&] { return oracle.acks() >= before + 50; }, absl::Now() + absl::Seconds(10)))
        << "no write load before the transfer\n"
        << Logs();

    ServerProcess* target = NodeById(to);
    ASSERT_NE(target, nullptr);
    if (lagging_target) {
      ASSERT_TRUE(AwaitMemberRecordShowsData(to)) << Logs();
      // The target stops applying while the leader acknowledges alone, so
      // at the pause it lacks acknowledged writes the leader must wait for.
      ASSERT_TRUE(target->process().Kill(SIGSTOP).ok());
      const size_t stopped_at = oracle.acks();
      const bool lags = WaitFor([&] { return oracle.acks() >= stopped_at + 30; },
                                absl::Now() + absl::Seconds(10));
      if (!lags) {
        ASSERT_TRUE(target->process().Kill(SIGCONT).ok());
      }
      ASSERT_TRUE(lags) << "no write acknowledged without the target\n" << Logs();
    }
    const absl::Time asked = absl::Now();
    testing::KvctlResult promote;
    std::thread kvctl([&] {
      promote = testing::RunKvctl(
          "", {absl::StrCat("--etcd=", etcd_.endpoint()), absl::StrCat("--etcd-prefix=", kPrefix),
               absl::StrCat("--to=", to), "promote", kShard});
    });
    if (lagging_target) {
      // Resumed once the leader paused for it (the request is in etcd).
      WaitFor(
          [&] {
            absl::StatusOr<coord::RangeResult> r =
                etcd_client_->Range(coord::HandoffKey(kPrefix, kShard));
            return r.ok() && !r->kvs.empty();
          },
          absl::Now() + absl::Seconds(5), absl::Milliseconds(5));
      EXPECT_TRUE(target->process().Kill(SIGCONT).ok());
    }
    kvctl.join();
    const absl::Time answered = absl::Now();
    ASSERT_EQ(promote.exit_code, 0) << promote.ToString() << "\n" << Logs();
    EXPECT_TRUE(absl::StrContains(
        promote.out, absl::StrCat("transferred shard s0 from ", old->id, " to ", to, " at epoch ")))
        << promote.out;
    std::optional<Leader> next = CurrentLeader();
    ASSERT_TRUE(next.has_value());
    EXPECT_EQ(next->id, to);
    EXPECT_GT(next->epoch, old->epoch);
    EXPECT_LE(answered - asked, absl::Seconds(5)) << promote.ToString();
    int paused_ms = -1;
    const size_t at = promote.out.find("writes paused ");
    ASSERT_NE(at, std::string::npos) << promote.out;
    ASSERT_TRUE(absl::SimpleAtoi(promote.out.substr(at + 14, promote.out.find(" ms", at) - at - 14),
                                 &paused_ms))
        << promote.out;
    // The load goes on through the new leader.
    ASSERT_TRUE(WaitFor([&] { return oracle.FirstAckSentAfter(answered).has_value(); },
                        absl::Now() + absl::Seconds(10)))
        << "no write acknowledged after the transfer\n"
        << Logs();
    const absl::Time resumed = *oracle.FirstAckSentAfter(answered);
    const LoadPause seen = PauseSeen(oracle, asked, resumed);
    reported.push_back(paused_ms);
    without_ack.push_back(Ms(seen.without_ack));
    longest_write.push_back(Ms(seen.longest_write));
    std::printf(
        "round %d: %s (epoch %lld) -> %s (epoch %lld) in %.0f ms; leader reports writes "
        "paused %d ms; load: longest stretch without an acknowledged write %.0f ms, "
        "longest write %.0f ms\n",
        round + 1, old->id.c_str(), static_cast<long long>(old->epoch), to.c_str(),
        static_cast<long long>(next->epoch), Ms(answered - asked), paused_ms, Ms(seen.without_ack),
        Ms(seen.longest_write));
    EXPECT_LE(paused_ms, 2000);
    EXPECT_LE(seen.without_ack, absl::Milliseconds(2500)) << Logs();
    EXPECT_LE(seen.longest_write, absl::Milliseconds(2500)) << Logs();
    // The old leader follows the new one.
    ASSERT_TRUE(WaitFor(
        [&] {
          absl::StatusOr<v1::StatusResponse> s = testing::FetchStatus(old->addr);
          return s.ok() && s->role() == "replica" && s->leader() == next->addr;
        },
        absl::Now() + absl::Seconds(10)))
        << "the old leader does not follow the new one\n"
        << Logs();
    // The request is gone once the new leader won.
    ASSERT_TRUE(WaitFor(
        [&] {
          absl::StatusOr<coord::RangeResult> r =
              etcd_client_->Range(coord::HandoffKey(kPrefix, kShard));
          return r.ok() && r->kvs.empty();
        },
        absl::Now() + absl::Seconds(5)));
  }
  load.Stop();
  unique.Stop();
  std::printf(
      "graceful transfer over %zu rounds: leader-reported pause %s; load's longest "
      "stretch without an acknowledged write %s; longest write %s; %zu writes "
      "acknowledged, %zu failed\n",
      reported.size(), MinMedianMax(reported).c_str(), MinMedianMax(without_ack).c_str(),
      MinMedianMax(longest_write).c_str(), oracle.acks(), oracle.failures());
  std::printf("the failed writes, by answer:\n%s", oracle.FailureKinds().c_str());
  ExpectEveryAcknowledgedWriteReadsBack(oracle);
}

TEST_F(FailoverTest, AGracefulTransferMovesTheLeadershipWithABoundedWritePause) {
  ASSERT_NO_FATAL_FAILURE(StartCluster());
  ASSERT_NO_FATAL_FAILURE(TransferRoundsUnderLoad(/*lagging_target=*/false));
}

// Async acks: a write is acknowledged by the leader alone, so only the
// catch-up wait before the resignation keeps it. The target is stopped
// until the leader has paused, so it always lacks acknowledged writes then
// (keys written once: a lost one shows in the final check).
TEST_F(FailoverTest, AGracefulTransferToALaggingTargetInAsyncModeLosesNoAcknowledgedWrite) {
  ack_flags_ = {"--ack=async"};
  ASSERT_NO_FATAL_FAILURE(StartCluster());
  ASSERT_NO_FATAL_FAILURE(TransferRoundsUnderLoad(/*lagging_target=*/true));
}

TEST_F(FailoverTest, ATransferToATargetThatCannotCatchUpChangesNothing) {
  // Async acks: the leader goes on acknowledging while the target is
  // stopped, so the target surely lacks entries (under sync acks the leader
  // would drop it from the in-sync set and kvctl refuse it up front).
  ack_flags_ = {"--ack=async"};
  ASSERT_NO_FATAL_FAILURE(StartCluster());
  std::optional<Leader> old = CurrentLeader();
  ASSERT_TRUE(old.has_value());
  const std::string to = old->id == "n1" ? "n2" : "n1";
  ServerProcess* target = NodeById(to);
  ASSERT_NE(target, nullptr);
  Oracle oracle;
  WriteLoad load(router_.address(), &oracle);
  ASSERT_TRUE(WaitFor([&] { return oracle.acks() >= 50; }, absl::Now() + absl::Seconds(10)))
      << Logs();
  // An "empty" target is refused up front, which is not what this test is for.
  ASSERT_TRUE(AwaitMemberRecordShowsData(to)) << Logs();
  ASSERT_TRUE(target->process().Kill(SIGSTOP).ok());
  const size_t stopped_at = oracle.acks();
  ASSERT_TRUE(
      WaitFor([&] { return oracle.acks() >= stopped_at + 50; }, absl::Now() + absl::Seconds(10)))
      << "the leader stopped acknowledging without the target\n"
      << Logs();

  const absl::Time asked = absl::Now();
  const testing::KvctlResult promote = testing::RunKvctl(
      "", {absl::StrCat("--etcd=", etcd_.endpoint()), absl::StrCat("--etcd-prefix=", kPrefix),
           absl::StrCat("--to=", to), "promote", kShard});
  const absl::Time answered = absl::Now();
  EXPECT_EQ(promote.exit_code, 4) << promote.ToString();
  EXPECT_TRUE(
      absl::StrContains(promote.err, absl::StrCat("target ", to, " did not catch up within 2s")))
      << promote.ToString();
  EXPECT_TRUE(absl::StrContains(promote.err, "nothing changed")) << promote.ToString();
  // Nothing changed: the same leadership, no request left.
  std::optional<Leader> now = CurrentLeader();
  ASSERT_TRUE(now.has_value());
  EXPECT_EQ(now->id, old->id);
  EXPECT_EQ(now->epoch, old->epoch);
  absl::StatusOr<coord::RangeResult> handoff =
      etcd_client_->Range(coord::HandoffKey(kPrefix, kShard));
  ASSERT_TRUE(handoff.ok());
  EXPECT_TRUE(handoff->kvs.empty());
  // Writes resumed on the old leader after at most the 2 s pause.
  ASSERT_TRUE(WaitFor([&] { return oracle.FirstAckSentAfter(answered).has_value(); },
                      absl::Now() + absl::Seconds(10)))
      << Logs();
  const LoadPause seen = PauseSeen(oracle, asked, *oracle.FirstAckSentAfter(answered));
  std::printf(
      "transfer to a stopped %s refused after %.0f ms (%s); load: longest stretch "
      "without an acknowledged write %.0f ms, longest write %.0f ms\n",
      to.c_str(), Ms(answered - asked), promote.err.c_str(), Ms(seen.without_ack),
      Ms(seen.longest_write));
  EXPECT_GE(seen.without_ack, absl::Milliseconds(1500)) << "writes were not paused";
  EXPECT_LE(seen.without_ack, absl::Milliseconds(2500));
  EXPECT_LE(seen.longest_write, absl::Milliseconds(2500));

  ASSERT_TRUE(target->process().Kill(SIGCONT).ok());
  ASSERT_TRUE(WaitFor(
      [&] {
        absl::StatusOr<v1::StatusResponse> s = testing::FetchStatus(target->address());
        return s.ok() && s->role() == "replica" && s->leader() == old->addr;
      },
      absl::Now() + absl::Seconds(10)))
      << Logs();
  load.Stop();
  EXPECT_EQ(CurrentLeader()->epoch, old->epoch);
  ExpectEveryAcknowledgedWriteReadsBack(oracle);
}

// kvctl refuses up front what cannot work, and --force hands over to a
// target that lacks entries, saying how many (async acks: they may be lost).
TEST_F(FailoverTest, PromoteRefusesImpossibleTargetsAndForceSaysWhatTheTargetLacked) {
  ack_flags_ = {"--ack=async"};
  ASSERT_NO_FATAL_FAILURE(StartCluster());
  std::optional<Leader> old = CurrentLeader();
  ASSERT_TRUE(old.has_value());
  const std::vector<std::string> etcd_flags = {absl::StrCat("--etcd=", etcd_.endpoint()),
                                               absl::StrCat("--etcd-prefix=", kPrefix)};
  const auto promote = [&](std::vector<std::string> more) {
    std::vector<std::string> args = etcd_flags;
    args.insert(args.end(), more.begin(), more.end());
    return testing::RunKvctl("", args);
  };
  testing::KvctlResult refused = promote({absl::StrCat("--to=", old->id), "promote", kShard});
  EXPECT_EQ(refused.exit_code, 3) << refused.ToString();
  EXPECT_TRUE(absl::StrContains(refused.err, "leads shard s0 already")) << refused.ToString();
  refused = promote({"--to=n9", "promote", kShard});
  EXPECT_EQ(refused.exit_code, 3) << refused.ToString();
  EXPECT_TRUE(absl::StrContains(refused.err, "n9 is not a live member of shard s0"))
      << refused.ToString();
  refused = promote({"promote", "no-such-shard"});
  EXPECT_EQ(refused.exit_code, 3) << refused.ToString();
  EXPECT_TRUE(absl::StrContains(refused.err, "has no leader")) << refused.ToString();
  EXPECT_EQ(CurrentLeader()->epoch, old->epoch) << "a refused request changed the leadership";

  // The target stops; the leader acknowledges writes it will never have.
  const std::string to = old->id == "n1" ? "n2" : "n1";
  ServerProcess* target = NodeById(to);
  ASSERT_NE(target, nullptr);
  ASSERT_TRUE(WaitFor(
      [&] {
        absl::StatusOr<coord::RangeResult> r =
            etcd_client_->Range(coord::MemberKey(kPrefix, kShard, to));
        if (!r.ok() || r->kvs.empty()) return false;
        absl::StatusOr<coord::MemberRecord> m = coord::ParseMemberValue(to, r->kvs[0].value());
        return m.ok() && m->state == "replica";
      },
      absl::Now() + absl::Seconds(10)));
  ASSERT_TRUE(target->process().Kill(SIGSTOP).ok());
  KvClient direct(old->addr, absl::Seconds(5));
  for (int i = 0; i < 20; ++i) {
    v1::SetResponse response;
    grpc::Status s = direct.Set(absl::StrCat("forced-", i), "x", &response);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  testing::KvctlResult forced;
  std::thread kvctl([&] {
    forced = promote({absl::StrCat("--to=", to), "--force", "promote", kShard});
  });
  // While the leader waits for the target, `kvctl cluster status` shows the
  // pending request.
  const std::vector<std::string> cluster_status = {absl::StrCat("--etcd=", etcd_.endpoint()),
                                                   absl::StrCat("--etcd-prefix=", kPrefix),
                                                   "cluster", "status"};
  testing::KvctlResult during;
  const bool shown = WaitFor(
      [&] {
        during = testing::RunKvctl("", cluster_status);
        return absl::StrContains(
            during.out, absl::StrCat("handoff pending: ", old->id, " -> ", to, " (--force)"));
      },
      absl::Now() + absl::Seconds(5), absl::Milliseconds(20));
  EXPECT_TRUE(shown) << during.ToString();
  // The leader waits its 2 s, then resigns anyway; the target resumes and wins.
  const bool resigned = WaitFor([&] { return !CurrentLeader().has_value(); },
                                absl::Now() + absl::Seconds(5), absl::Milliseconds(10));
  EXPECT_TRUE(target->process().Kill(SIGCONT).ok());
  kvctl.join();
  ASSERT_TRUE(resigned) << "the leader did not resign for a forced transfer\n" << Logs();
  EXPECT_EQ(forced.exit_code, 0) << forced.ToString() << "\n" << Logs();
  EXPECT_TRUE(absl::StrContains(forced.out,
                                absl::StrCat("transferred shard s0 from ", old->id, " to ", to)))
      << forced.ToString();
  EXPECT_TRUE(absl::StrContains(forced.out, "entries, which may be lost (--force)"))
      << forced.ToString();
  std::optional<Leader> next = CurrentLeader();
  ASSERT_TRUE(next.has_value());
  EXPECT_EQ(next->id, to);
  EXPECT_GT(next->epoch, old->epoch);
  // Done: no request pending (the winner deleted it), the outcome recorded.
  std::vector<std::string> as_json = cluster_status;
  as_json.push_back("--json");
  testing::KvctlResult after;
  EXPECT_TRUE(WaitFor(
      [&] {
        after = testing::RunKvctl("", as_json);
        return absl::StrContains(after.out, "\"handoff\":null");
      },
      absl::Now() + absl::Seconds(5), absl::Milliseconds(50)))
      << after.ToString();
  EXPECT_TRUE(absl::StrContains(after.out, "\"result\":\"transferred\"")) << after.out;
  std::printf("refusals: exit 3 each; forced transfer to a stopped %s: %s", to.c_str(),
              forced.out.c_str());
  const size_t pending = during.out.find("  handoff pending");
  if (pending != std::string::npos) {
    std::printf("cluster status during the transfer: %s", during.out.substr(pending).c_str());
  }
}

TEST_F(FailoverTest, APausedLeaderIsReplacedAndAcknowledgesNothingAfterItResumes) {
  ASSERT_NO_FATAL_FAILURE(StartCluster());
  std::optional<Leader> old = CurrentLeader();
  ASSERT_TRUE(old.has_value());
  ServerProcess* paused = NodeById(old->id);
  ASSERT_NE(paused, nullptr);
  {
    KvClient direct(old->addr, absl::Seconds(5));
    v1::SetResponse response;
    grpc::Status s = direct.Set("before", "pause", &response);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }

  const absl::Time stopped = absl::Now();
  ASSERT_TRUE(paused->process().Kill(SIGSTOP).ok());
  // Writes sent to the paused leader wait in its socket.
  std::atomic<int> late_acks{0};
  std::atomic<int> late_answers{0};
  std::vector<std::thread> in_flight;
  for (int i = 0; i < 4; ++i) {
    in_flight.emplace_back([&, i] {
      KvClient direct(old->addr, absl::Seconds(20));
      v1::SetResponse response;
      grpc::Status s = direct.Set(absl::StrCat("during-pause-", i), "x", &response);
      if (s.ok()) ++late_acks;
      ++late_answers;
    });
  }
  std::optional<Leader> next = AwaitLeaderOtherThan(old->id, absl::Seconds(15));
  const bool elected = next.has_value();
  // Paused for at least 2 x TTL.
  WaitFor([&] { return absl::Now() - stopped >= 2 * Ttl(); }, absl::Now() + 3 * Ttl());
  ASSERT_TRUE(paused->process().Kill(SIGCONT).ok());
  for (std::thread& t : in_flight) t.join();
  ASSERT_TRUE(elected) << "no new leader while the old one was paused\n" << Logs();
  EXPECT_GT(next->epoch, old->epoch);
  EXPECT_EQ(late_acks.load(), 0)
      << "the resumed old leader acknowledged writes that waited on it during the pause";

  // Every write sent to it directly now is refused, and soon names the new leader.
  KvClient direct(old->addr, absl::Seconds(2));
  int refusals = 0;
  int acknowledged = 0;
  std::string last;
  const bool names_new_leader = WaitFor(
      [&] {
        v1::SetResponse response;
        grpc::Status s = direct.Set(absl::StrCat("after-resume-", refusals), "x", &response);
        if (s.ok()) {
          ++acknowledged;
          return false;
        }
        ++refusals;
        last = absl::StrCat(s.error_code(), ": ", s.error_message());
        const bool right_code = s.error_code() == grpc::StatusCode::FAILED_PRECONDITION ||
                                s.error_code() == grpc::StatusCode::UNAVAILABLE;
        return right_code && absl::StrContains(s.error_message(), next->addr);
      },
      absl::Now() + absl::Seconds(10), absl::Milliseconds(20));
  EXPECT_EQ(acknowledged, 0) << "the old leader acknowledged a write after it resumed";
  EXPECT_TRUE(names_new_leader) << "last answer: " << last << "\n" << Logs();
  std::printf(
      "paused leader %s (epoch %lld) replaced by %s (epoch %lld); after SIGCONT: %d "
      "in-flight writes all failed, %d direct writes refused, last: %s\n",
      old->id.c_str(), static_cast<long long>(old->epoch), next->id.c_str(),
      static_cast<long long>(next->epoch), late_answers.load(), refusals, last.c_str());
  ASSERT_TRUE(WaitFor(
      [&] {
        absl::StatusOr<v1::StatusResponse> s = testing::FetchStatus(old->addr);
        return s.ok() && s->role() == "replica" && s->leader() == next->addr;
      },
      absl::Now() + absl::Seconds(10)))
      << "the resumed old leader does not follow the new one\n"
      << Logs();
  // The shard takes writes through the router, and kept the one from before.
  KvClient client(router_.address(), absl::Seconds(2));
  grpc::Status s;
  v1::SetResponse set;
  ASSERT_TRUE(WaitFor([&] { return (s = client.Set("after", "failover", &set)).ok(); },
                      absl::Now() + absl::Seconds(10), absl::Milliseconds(20)))
      << s.error_message();
  v1::GetResponse get;
  ASSERT_TRUE(client.Get("before", &get).ok());
  EXPECT_TRUE(get.found());
  EXPECT_EQ(get.value(), "pause");
}

// Router epochs (docs/failover.md, "Router epochs"): a router sends the
// leader epoch it believes in with each write; a node leading (or having
// led) an older epoch refuses it as NOT_LEADER and acknowledges nothing more.
// The old leader's etcd path is cut before it resumes, so neither its watch
// of the leader key nor a fresh lease can tell it about the new leader.
TEST_F(FailoverTest, AnOldLeaderToldANewerEpochByARouterRefusesNotLeaderAndAcknowledgesNothing) {
  for (int i = 0; i < 3; ++i) {
    relays_.push_back(std::make_unique<fault::TcpProxy>(etcd_.endpoint()));
    ASSERT_TRUE(relays_.back()->Start().ok());
  }
  ASSERT_NO_FATAL_FAILURE(StartCluster());
  std::optional<Leader> old = CurrentLeader();
  ASSERT_TRUE(old.has_value());
  ServerProcess* paused = NodeById(old->id);
  ASSERT_NE(paused, nullptr);
  fault::TcpProxy* relay = relays_[static_cast<size_t>(old->id.back() - '1')].get();
  Oracle oracle;
  WriteLoad load(router_.address(), &oracle);
  ASSERT_TRUE(WaitFor([&] { return oracle.acks() >= 20; }, absl::Now() + absl::Seconds(10)))
      << Logs();

  ASSERT_TRUE(paused->process().Kill(SIGSTOP).ok());
  std::optional<Leader> next = AwaitLeaderOtherThan(old->id, absl::Seconds(20));
  ASSERT_TRUE(next.has_value()) << "no new leader while the old one was paused\n" << Logs();
  ASSERT_GT(next->epoch, old->epoch);
  // The router follows the new leader: its writes are acknowledged again.
  const absl::Time elected = absl::Now();
  ASSERT_TRUE(WaitFor([&] { return oracle.FirstAckSentAfter(elected).has_value(); },
                      absl::Now() + absl::Seconds(10)))
      << Logs();
  relay->Cut();
  ASSERT_TRUE(paused->process().Kill(SIGCONT).ok());

  // As the router sends it: the epoch it believes in, in the metadata.
  KvClient direct(old->addr, absl::Seconds(2));
  const auto set_naming = [&](const std::string& key, int64_t epoch) {
    std::unique_ptr<grpc::ClientContext> context = direct.NewContext();
    if (epoch != 0) context->AddMetadata(kLeaderEpochKey, std::to_string(epoch));
    v1::SetRequest request;
    request.set_key(key);
    request.set_value("from-a-router");
    v1::SetResponse response;
    return direct.kv()->Set(context.get(), request, &response);
  };
  const grpc::Status refused = set_naming("named-new-epoch", next->epoch);
  ASSERT_EQ(refused.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << refused.error_code() << ": " << refused.error_message() << "\n"
      << Logs();
  const std::optional<ErrorInfo> info = ErrorInfoOf(refused);
  ASSERT_TRUE(info.has_value()) << refused.error_message();
  EXPECT_EQ(info->reason, kReasonNotLeader);
  EXPECT_TRUE(absl::StrContains(refused.error_message(), absl::StrCat("epoch ", next->epoch)))
      << refused.error_message();

  // From then on nothing it is sent is acknowledged, with or without an
  // epoch, for 2 s (its etcd path still cut).
  int answered = 0;
  int acknowledged = 0;
  std::string last;
  const absl::Time until = absl::Now() + absl::Seconds(2);
  for (int i = 0; absl::Now() < until; ++i) {
    const grpc::Status s =
        set_naming(absl::StrCat("after-refusal-", i), i % 2 == 0 ? next->epoch : int64_t{0});
    ++answered;
    if (s.ok()) ++acknowledged;
    last = absl::StrCat(s.error_code(), ": ", s.error_message());
    absl::SleepFor(absl::Milliseconds(20));  // A rate limit, not a synchronisation.
  }
  EXPECT_EQ(acknowledged, 0) << "the old leader acknowledged writes after a router told it of "
                                "a newer epoch; last: "
                             << last;
  const bool fenced_by_router = absl::StrContains(paused->LogTail(200000), "A router named epoch");
  std::printf(
      "old leader %s (epoch %lld) resumed cut off from etcd; a write naming epoch %lld (%s) "
      "was refused: %s; then %d writes, %d acknowledged (last: %s); %s\n",
      old->id.c_str(), static_cast<long long>(old->epoch), static_cast<long long>(next->epoch),
      next->id.c_str(), refused.error_message().c_str(), answered, acknowledged, last.c_str(),
      fenced_by_router ? "it fenced itself on the router's epoch"
                       : "its lease had already stepped it down");

  // Back in touch: it follows the new leader; the refused write was not
  // applied anywhere, and every acknowledged write reads back.
  relay->Restore();
  ASSERT_TRUE(WaitFor(
      [&] {
        absl::StatusOr<v1::StatusResponse> st = testing::FetchStatus(old->addr);
        return st.ok() && st->role() == "replica" && st->leader() == next->addr;
      },
      absl::Now() + absl::Seconds(15)))
      << "the old leader does not follow the new one\n"
      << Logs();
  load.Stop();
  KvClient client(router_.address(), absl::Seconds(5));
  v1::GetResponse got;
  ASSERT_TRUE(client.Get("named-new-epoch", &got).ok());
  EXPECT_FALSE(got.found()) << "a refused write was applied";
  ExpectEveryAcknowledgedWriteReadsBack(oracle);
}

}  // namespace
}  // namespace kvstore
