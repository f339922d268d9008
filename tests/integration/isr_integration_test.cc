// The in-sync set in etcd (docs/failover.md §9) with real processes on
// 127.0.0.1: a one-member etcd and one shard of three nodes in etcd mode
// (kv-shard n1, kv-replica n2 and n3; --ack=sync --sync-acks=1 --fsync=always
// --lease-ttl=2s --isr-timeout=1s). Writes go straight to the leader named by
// the leader key.
//
//   AStoppedReplicaLeavesTheSetInEtcdBeforeAnyWriteIsAcknowledgedWithoutIt:
//     SIGSTOP of replica B under a write load; the first write acknowledged
//     after the stop waited for the removal, and etcd already had the set
//     without B when its answer arrived (both times printed); kill -9 of the
//     leader with B resumed at once: A wins, never B; B catches up and is
//     recorded in the new leader's set.
//   NeitherAnEmptiedNorAnOutOfSyncReplicaIsPromoted: replica A paused until
//     the leader drops it from the set; the leader and replica B killed, B's
//     data directory wiped and B restarted; A resumed. Nobody may lead: A is
//     not in the set, B holds no data. No leader appears for TTL + 2 s, and
//     `kvctl cluster status` says why.
//   AnEtcdOutageFailsWritesNamingItAndTheyResumeAfterIt: etcd stopped for
//     2 x TTL: writes fail with UNAVAILABLE naming etcd; etcd back: writes
//     resume within TTL + 2 s, and every acknowledged write reads back.
#include <signal.h>

#include <atomic>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/coord/etcd_client.h"
#include "common/coord/schema.h"
#include "gtest/gtest.h"
#include "tests/support/etcd_process.h"
#include "tests/support/process.h"
#include "tests/support/router_process.h"

namespace kvstore {
namespace {

using ::kvstore::testing::EtcdProcess;
using ::kvstore::testing::KvClient;
using ::kvstore::testing::ServerProcess;
using ::kvstore::testing::TempDir;
using ::kvstore::testing::WaitFor;

constexpr char kPrefix[] = "/kvstore/isr-test";
constexpr char kShard[] = "s0";
constexpr absl::Duration kTtl = absl::Seconds(2);
constexpr absl::Duration kIsrTimeout = absl::Seconds(1);

struct Leader {
  std::string id;
  std::string addr;
  int64_t epoch = 0;
};

// Writes keys one at a time to whoever leads, keeping each acknowledged
// value and when it was sent and answered.
class Writer {
 public:
  struct Ack {
    std::string key;
    std::string value;
    absl::Time sent;
    absl::Time answered;
  };

  explicit Writer(std::function<std::optional<Leader>()> leader) : leader_(std::move(leader)) {
    thread_ = std::thread([this] { Run(); });
  }
  ~Writer() { Stop(); }
  void Stop() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }
  std::vector<Ack> acks() const {
    absl::MutexLock l(&mu_);
    return acks_;
  }
  // The first acknowledgement of a write sent at or after `t`.
  std::optional<Ack> FirstAckSentAfter(absl::Time t) const {
    absl::MutexLock l(&mu_);
    for (const Ack& a : acks_) {
      if (a.sent >= t) return a;
    }
    return std::nullopt;
  }
  std::vector<std::string> errors() const {
    absl::MutexLock l(&mu_);
    return errors_;
  }

 private:
  void Run() {
    for (uint64_t seq = 0; !stop_.load(); ++seq) {
      std::optional<Leader> leader = leader_();
      if (!leader) {
        absl::SleepFor(absl::Milliseconds(20));  // A rate limit, not a synchronisation.
        continue;
      }
      KvClient client(leader->addr, absl::Seconds(6));
      const std::string key = absl::StrCat("k", seq);
      const std::string value = absl::StrCat("v", seq);
      const absl::Time sent = absl::Now();
      v1::SetResponse response;
      grpc::Status s = client.Set(key, value, &response);
      const absl::Time answered = absl::Now();
      {
        absl::MutexLock l(&mu_);
        if (s.ok()) {
          acks_.push_back({key, value, sent, answered});
          continue;
        }
        errors_.push_back(absl::StrCat(s.error_code(), ": ", s.error_message()));
      }
      absl::SleepFor(absl::Milliseconds(10));  // A rate limit, not a synchronisation.
    }
  }

  std::function<std::optional<Leader>()> leader_;
  std::atomic<bool> stop_{false};
  mutable absl::Mutex mu_;
  std::vector<Ack> acks_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> errors_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

class IsrTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(etcd_.Start().ok()) << etcd_.LogTail();
    coord::EtcdClientOptions options;
    options.endpoints = etcd_.endpoint();
    options.call_timeout = absl::Seconds(1);
    absl::StatusOr<std::unique_ptr<coord::EtcdClient>> client = coord::EtcdClient::Create(options);
    ASSERT_TRUE(client.ok()) << client.status();
    etcd_client_ = *std::move(client);
  }

  std::vector<std::string> NodeFlags(const std::string& id) const {
    return {"--shard=s0",
            absl::StrCat("--node-id=", id),
            absl::StrCat("--etcd-endpoints=", etcd_.endpoint()),
            absl::StrCat("--etcd-prefix=", kPrefix),
            "--lease-ttl=2s",
            "--isr-timeout=1s",
            "--ack=sync",
            "--sync-acks=1",
            "--fsync=always",
            "--sync-timeout-ms=5000"};
  }

  // Three nodes, the cluster record, a leader whose in-sync set holds all.
  void StartCluster() {
    for (int i = 0; i < 3; ++i) {
      const std::string id = absl::StrCat("n", i + 1);
      nodes_[id] = std::make_unique<ServerProcess>(dir_.Join(id),
                                                   i == 0 ? KV_SHARD_BIN : KV_REPLICA_BIN, id);
      ASSERT_TRUE(nodes_[id]->Start(NodeFlags(id)).ok()) << nodes_[id]->LogTail();
    }
    Topology topology;
    topology.vnodes = 64;
    topology.shards.push_back(
        {kShard, nodes_["n1"]->address(), {nodes_["n2"]->address(), nodes_["n3"]->address()}});
    const std::string topology_file = dir_.Join("topology.yaml");
    ASSERT_TRUE(testing::WriteTopologyFile(topology_file, topology).ok());
    const testing::KvctlResult init = testing::RunKvctl(
        "", {absl::StrCat("--etcd=", etcd_.endpoint()), absl::StrCat("--etcd-prefix=", kPrefix),
             absl::StrCat("--config=", topology_file), "cluster", "init"});
    ASSERT_EQ(init.exit_code, 0) << init.ToString();
    std::optional<Leader> leader = AwaitLeaderOtherThan("", absl::Seconds(15));
    ASSERT_TRUE(leader.has_value()) << Logs();
    ASSERT_TRUE(WaitFor(
        [&] {
          std::optional<coord::IsrRecord> isr = Isr();
          return isr && isr->epoch == leader->epoch && isr->members.size() == 3;
        },
        absl::Now() + absl::Seconds(10)))
        << "the in-sync set never held all three\n" << Logs();
  }

  std::optional<Leader> CurrentLeader() {
    absl::StatusOr<coord::RangeResult> range =
        etcd_client_->Range(coord::ShardLeaderKey(kPrefix, kShard));
    if (!range.ok() || range->kvs.empty()) return std::nullopt;
    absl::StatusOr<coord::LeaderValueRecord> value = coord::ParseLeaderJson(range->kvs[0].value());
    if (!value.ok() || value->epoch == 0) return std::nullopt;
    return Leader{value->id, value->addr, value->epoch};
  }

  std::optional<coord::IsrRecord> Isr(int64_t* mod_revision = nullptr) {
    absl::StatusOr<coord::RangeResult> range = etcd_client_->Range(coord::IsrKey(kPrefix, kShard));
    if (!range.ok() || range->kvs.empty()) return std::nullopt;
    if (mod_revision != nullptr) *mod_revision = range->kvs[0].mod_revision();
    absl::StatusOr<coord::IsrRecord> isr = coord::ParseIsrValue(range->kvs[0].value());
    if (!isr.ok()) return std::nullopt;
    return *isr;
  }

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

  // Writes `n` keys to the leader, each acknowledged.
  void WriteKeys(const std::string& prefix, int n) {
    std::optional<Leader> leader = CurrentLeader();
    ASSERT_TRUE(leader.has_value());
    KvClient client(leader->addr, absl::Seconds(6));
    for (int i = 0; i < n; ++i) {
      v1::SetResponse response;
      grpc::Status s;
      ASSERT_TRUE(WaitFor(
          [&] { return (s = client.Set(absl::StrCat(prefix, i), "x", &response)).ok(); },
          absl::Now() + absl::Seconds(10), absl::Milliseconds(20)))
          << s.error_message();
    }
  }

  void ExpectAcknowledgedWritesReadBack(const std::vector<Writer::Ack>& acks,
                                        const std::string& addr) {
    KvClient client(addr, absl::Seconds(5));
    for (const Writer::Ack& a : acks) {
      v1::GetResponse response;
      grpc::Status s;
      WaitFor([&] { return (s = client.Get(a.key, &response)).ok(); },
              absl::Now() + absl::Seconds(10), absl::Milliseconds(20));
      ASSERT_TRUE(s.ok()) << a.key << ": " << s.error_message();
      EXPECT_TRUE(response.found() && response.value() == a.value)
          << a.key << " lost: acknowledged " << a.value;
    }
    std::printf("%zu acknowledged writes read back from %s\n", acks.size(), addr.c_str());
  }

  std::string ClusterStatus() {
    return testing::RunKvctl("", {absl::StrCat("--etcd=", etcd_.endpoint()),
                                  absl::StrCat("--etcd-prefix=", kPrefix), "cluster", "status"})
        .ToString();
  }

  std::string Logs() {
    std::string out;
    for (auto& [id, n] : nodes_) {
      absl::StrAppend(&out, "--- ", n->log_path(), ":\n", n->LogTail(2500));
    }
    return out;
  }

  TempDir dir_;
  EtcdProcess etcd_;
  std::unique_ptr<coord::EtcdClient> etcd_client_;
  std::map<std::string, std::unique_ptr<ServerProcess>> nodes_;
};

std::vector<std::string> Others(const std::string& leader) {
  std::vector<std::string> out;
  for (const char* id : {"n1", "n2", "n3"}) {
    if (id != leader) out.push_back(id);
  }
  return out;
}

TEST_F(IsrTest, AStoppedReplicaLeavesTheSetInEtcdBeforeAnyWriteIsAcknowledgedWithoutIt) {
  ASSERT_NO_FATAL_FAILURE(StartCluster());
  const Leader old = *CurrentLeader();
  const std::string a = Others(old.id)[0];
  const std::string b = Others(old.id)[1];
  Writer writer([this] { return CurrentLeader(); });
  ASSERT_TRUE(WaitFor([&] { return writer.acks().size() >= 20; }, absl::Now() + absl::Seconds(10)))
      << Logs();

  const absl::Time stopped = absl::Now();
  ASSERT_TRUE(nodes_[b]->process().Kill(SIGSTOP).ok());
  // Watch for the set without B while the writer runs.
  absl::Time removal_seen;
  int64_t removal_revision = 0;
  ASSERT_TRUE(WaitFor(
      [&] {
        std::optional<coord::IsrRecord> isr = Isr(&removal_revision);
        removal_seen = absl::Now();
        return isr && !isr->Contains(b);
      },
      absl::Now() + absl::Seconds(10), absl::Milliseconds(5)))
      << "the leader never removed " << b << "\n" << Logs();
  std::optional<Writer::Ack> first;
  ASSERT_TRUE(WaitFor([&] { return (first = writer.FirstAckSentAfter(stopped)).has_value(); },
                      absl::Now() + absl::Seconds(10)))
      << "no write acknowledged after the stop\n" << Logs();
  // The write waited for the removal (B stopped acknowledging at `stopped`).
  EXPECT_GE(first->answered - stopped, kIsrTimeout - absl::Milliseconds(150))
      << "a write was acknowledged without " << b << " before it could have been removed";
  // And etcd held the set without B by the time the answer arrived: a read
  // after the answer cannot miss a write the leader made before it.
  {
    const int64_t header_before = removal_revision;
    int64_t revision_now = 0;
    std::optional<coord::IsrRecord> isr = Isr(&revision_now);
    ASSERT_TRUE(isr.has_value());
    EXPECT_FALSE(isr->Contains(b));
    EXPECT_EQ(revision_now, header_before) << "the set changed again";
  }
  std::printf("SIGSTOP %s at t=0; first write sent after it acknowledged at t=%.3f s (sent "
              "t=%.3f s); set without %s seen in etcd at t=%.3f s (mod revision %lld)\n",
              b.c_str(), absl::ToDoubleSeconds(first->answered - stopped),
              absl::ToDoubleSeconds(first->sent - stopped), b.c_str(),
              absl::ToDoubleSeconds(removal_seen - stopped),
              static_cast<long long>(removal_revision));

  // Kill the leader and resume B at once: B is alive for the election, but
  // not in the set.
  ASSERT_TRUE(nodes_[old.id]->KillHard().ok());
  ASSERT_TRUE(nodes_[b]->process().Kill(SIGCONT).ok());
  std::optional<Leader> next;
  std::set<std::string> leaders_seen;
  ASSERT_TRUE(WaitFor(
      [&] {
        std::optional<Leader> now = CurrentLeader();
        if (now) leaders_seen.insert(now->id);
        next = AwaitLeaderOtherThan(old.id, absl::Milliseconds(1));
        return next.has_value();
      },
      absl::Now() + absl::Seconds(15), absl::Milliseconds(10)))
      << "no new leader\n" << Logs();
  EXPECT_EQ(next->id, a) << "the in-sync replica " << a << " must win";
  EXPECT_EQ(leaders_seen.count(b), 0u) << b << " (out of the set) led";
  // B catches up and the new leader records it in its set.
  ASSERT_TRUE(WaitFor(
      [&] {
        std::optional<coord::IsrRecord> isr = Isr();
        return isr && isr->epoch == next->epoch && isr->Contains(b);
      },
      absl::Now() + absl::Seconds(10)))
      << b << " did not rejoin the set\n" << Logs();
  writer.Stop();
  std::printf("leader %s killed: %s won (epoch %lld); %s rejoined the set; %zu writes "
              "acknowledged, %zu failed\n",
              old.id.c_str(), next->id.c_str(), static_cast<long long>(next->epoch), b.c_str(),
              writer.acks().size(), writer.errors().size());
  ExpectAcknowledgedWritesReadBack(writer.acks(), next->addr);
}

TEST_F(IsrTest, NeitherAnEmptiedNorAnOutOfSyncReplicaIsPromoted) {
  ASSERT_NO_FATAL_FAILURE(StartCluster());
  const Leader old = *CurrentLeader();
  const std::string a = Others(old.id)[0];
  const std::string b = Others(old.id)[1];
  ASSERT_NO_FATAL_FAILURE(WriteKeys("before-", 10));
  // A stops; writes wait until the leader records the set without it.
  ASSERT_TRUE(nodes_[a]->process().Kill(SIGSTOP).ok());
  ASSERT_NO_FATAL_FAILURE(WriteKeys("without-a-", 5));
  std::optional<coord::IsrRecord> isr = Isr();
  ASSERT_TRUE(isr && !isr->Contains(a) && isr->Contains(b)) << Logs();

  // The leader and B die; B comes back with an empty data directory.
  ASSERT_TRUE(nodes_[old.id]->KillHard().ok());
  ASSERT_TRUE(nodes_[b]->KillHard().ok());
  std::filesystem::remove_all(nodes_[b]->data_dir());
  ASSERT_TRUE(nodes_[b]->Restart().ok()) << nodes_[b]->LogTail();
  ASSERT_TRUE(nodes_[a]->process().Kill(SIGCONT).ok());

  // Once the old leader's key has expired, nobody may take it.
  ASSERT_TRUE(WaitFor([&] {
    absl::StatusOr<coord::RangeResult> r =
        etcd_client_->Range(coord::ShardLeaderKey(kPrefix, kShard));
    return r.ok() && r->kvs.empty();
  }, absl::Now() + absl::Seconds(10))) << Logs();
  const absl::Time gone = absl::Now();
  std::optional<Leader> promoted;
  WaitFor([&] { return (promoted = CurrentLeader()).has_value(); }, gone + kTtl + absl::Seconds(2),
          absl::Milliseconds(50));
  EXPECT_FALSE(promoted.has_value()) << promoted->id << " was promoted\n" << Logs();
  std::string status;
  ASSERT_TRUE(WaitFor(
      [&] {
        status = ClusterStatus();
        return absl::StrContains(status, absl::StrCat("member ", a)) &&
               absl::StrContains(status, absl::StrCat("member ", b));
      },
      absl::Now() + absl::Seconds(10)))
      << status;
  EXPECT_TRUE(absl::StrContains(status, "no failover possible")) << status;
  EXPECT_TRUE(absl::StrContains(status, "not in the in-sync set")) << status;
  EXPECT_TRUE(absl::StrContains(status, "holds no data")) << status;
  std::printf("no leader for %.1f s after the key expired; kvctl cluster status:\n%s\n",
              absl::ToDoubleSeconds(absl::Now() - gone), status.c_str());
}

TEST_F(IsrTest, AnEtcdOutageFailsWritesNamingItAndTheyResumeAfterIt) {
  ASSERT_NO_FATAL_FAILURE(StartCluster());
  const Leader old = *CurrentLeader();
  std::atomic<bool> etcd_up{true};
  Leader last_known = old;
  absl::Mutex leader_mu;
  // While etcd is down the writer keeps writing to the last leader it knew.
  Writer writer([&]() -> std::optional<Leader> {
    absl::MutexLock l(&leader_mu);
    if (etcd_up.load()) {
      std::optional<Leader> now = CurrentLeader();
      if (now) last_known = *now;
    }
    return last_known;
  });
  ASSERT_TRUE(WaitFor([&] { return writer.acks().size() >= 20; }, absl::Now() + absl::Seconds(10)))
      << Logs();

  etcd_up.store(false);
  const absl::Time down = absl::Now();
  ASSERT_TRUE(etcd_.Stop().ok());
  // Writes fail, naming the coordination outage.
  std::string outage;
  ASSERT_TRUE(WaitFor(
      [&] {
        for (const std::string& e : writer.errors()) {
          if (absl::StartsWith(e, "14: ") && absl::StrContains(e, "coordination outage")) {
            outage = e;
            return true;
          }
        }
        return false;
      },
      absl::Now() + 2 * kTtl + absl::Seconds(2)))
      << "no UNAVAILABLE naming the coordination outage; errors: " << absl::StrJoin(writer.errors(), " | ") << Logs();
  WaitFor([] { return false; }, down + 2 * kTtl);  // The outage lasts 2 x TTL.
  const size_t acked_during = writer.acks().size();
  ASSERT_TRUE(etcd_.Restart().ok()) << etcd_.LogTail();
  const absl::Time up = absl::Now();
  etcd_up.store(true);
  std::optional<Writer::Ack> resumed;
  ASSERT_TRUE(WaitFor([&] { return (resumed = writer.FirstAckSentAfter(up)).has_value(); },
                      up + kTtl + absl::Seconds(2)))
      << "writes did not resume within TTL + 2 s\n" << Logs();
  writer.Stop();
  std::printf("etcd down %.1f s: writes failed with \"%s\"; etcd back -> first acknowledged write "
              "after %.3f s (%zu acknowledged before it came back)\n",
              absl::ToDoubleSeconds(up - down), outage.c_str(),
              absl::ToDoubleSeconds(resumed->answered - up), acked_during);
  std::optional<Leader> now = AwaitLeaderOtherThan("", absl::Seconds(5));
  ASSERT_TRUE(now.has_value());
  ExpectAcknowledgedWritesReadBack(writer.acks(), now->addr);
}

}  // namespace
}  // namespace kvstore
