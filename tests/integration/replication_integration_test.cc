// Replication as real processes on 127.0.0.1: a kv-shard leader pushing its
// log to kv-replica followers. Catch-up after a crash (partial and full
// resync), synchronous acknowledgements that survive the loss of the
// leader's disk, sync timeouts and per-request overrides, writes sent to a
// replica, fencing of a deposed leader after a promotion, and lag reporting.
//
// Each test states its invariant and prints what it checked. Random parts
// print their seed; rerun one with
//   KV_TEST_SEED=<seed> build/bin/replication_integration_test --gtest_filter=<test>
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "kvstore/v1/admin.grpc.pb.h"
#include "kvstore/v1/kv.grpc.pb.h"
#include "tests/support/process.h"
#include "tests/support/writers.h"

#ifndef KV_REPLICA_BIN
#error "KV_REPLICA_BIN must name the kv-replica binary (see tests/CMakeLists.txt)"
#endif
#ifndef KV_REPLICA_BUILT
#define KV_REPLICA_BUILT 1
#endif

namespace kvstore {
namespace {

using ::kvstore::testing::Describe;
using ::kvstore::testing::MakeValue;
using ::kvstore::testing::PipelinedWriter;
using ::kvstore::testing::Seed;
using ::kvstore::testing::WriteOp;
using ::kvstore::testing::WriteResult;

using ::kvstore::testing::AwaitSameLastIndex;
using ::kvstore::testing::CompareContents;
using ::kvstore::testing::ContentDiff;
using ::kvstore::testing::ExitStatus;
using ::kvstore::testing::FetchStatus;
using ::kvstore::testing::FindFollower;
using ::kvstore::testing::KvClient;
using ::kvstore::testing::KvctlResult;
using ::kvstore::testing::ListDir;
using ::kvstore::testing::ReadAllKeys;
using ::kvstore::testing::RunKvctl;
using ::kvstore::testing::ServerProcess;
using ::kvstore::testing::ShardGroup;
using ::kvstore::testing::TempDir;
using ::kvstore::testing::TestSeed;
using ::kvstore::testing::WaitFor;

// Snapshots only when a test asks for one, so that each test controls what is
// in the log and what is in a snapshot.
std::vector<std::string> Flags(std::vector<std::string> flags) {
  flags.push_back("--snapshot-every-writes=0");
  flags.push_back("--snapshot-every-seconds=0");
  return flags;
}

v1::WriteAck Ack(v1::AckMode mode, uint32_t replicas = 0) {
  v1::WriteAck ack;
  ack.set_mode(mode);
  ack.set_replicas(replicas);
  return ack;
}

// Admin.Status of `address`; a test failure (and an empty response) when the
// call fails.
v1::StatusResponse StatusOf(const std::string& address) {
  absl::StatusOr<v1::StatusResponse> status = FetchStatus(address);
  EXPECT_TRUE(status.ok()) << status.status();
  return status.ok() ? *status : v1::StatusResponse();
}

// The follower entry for `follower` on the leader at `leader`; empty (address
// "") when the call fails or there is no such entry.
v1::FollowerStatus FollowerOn(const std::string& leader, const std::string& follower) {
  absl::StatusOr<v1::StatusResponse> status = FetchStatus(leader);
  if (!status.ok()) return v1::FollowerStatus();
  const v1::FollowerStatus* f = FindFollower(*status, follower);
  return f != nullptr ? *f : v1::FollowerStatus();
}

// Tells a starting leader that is still waiting for followers that are down
// to lead without them (`kvctl promote --force` on the leader itself).
absl::Status LeadNow(const std::string& address) {
  KvClient client(address, absl::Seconds(10));
  v1::PromoteRequest request;
  request.set_force(true);
  v1::PromoteResponse response;
  grpc::Status s = client.Promote(request, &response);
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

// Polls until the leader at `address` takes a write: a leader answers
// UNAVAILABLE ("retry") until its followers answered (or it waited
// --start-wait-ms, under async acks). Probes with a
// ACK_MODE_LEADER_MEMORY Set of `probe_key`, which needs no follower.
absl::Status AwaitTakesWrites(const std::string& address,
                              const std::string& probe_key = "probe-writable") {
  KvClient client(address, absl::Seconds(5));
  grpc::Status last;
  const bool writable = WaitFor(
      [&] {
        v1::SetRequest request;
        request.set_key(probe_key);
        request.set_value("probe");
        *request.mutable_ack() = Ack(v1::ACK_MODE_LEADER_MEMORY);
        v1::SetResponse response;
        last = client.Set(request, &response);
        return last.error_code() != grpc::StatusCode::UNAVAILABLE;
      },
      absl::Now() + absl::Seconds(10), absl::Milliseconds(20));
  if (writable && last.ok()) return absl::OkStatus();
  return absl::UnavailableError(
      absl::StrCat("the leader ", address, " takes no write: ", Describe(last)));
}

std::vector<std::string> FilesLike(const std::string& dir, const std::string& prefix,
                                   const std::string& suffix) {
  std::vector<std::string> out;
  for (const std::string& name : ListDir(dir)) {
    if (absl::StartsWith(name, prefix) && absl::EndsWith(name, suffix)) out.push_back(name);
  }
  return out;
}

std::string ServerTrailer(const grpc::ClientContext& context, const std::string& name) {
  const auto& trailers = context.GetServerTrailingMetadata();
  auto it = trailers.find(name);
  if (it == trailers.end()) return "";
  return std::string(it->second.data(), it->second.size());
}

// ---------------------------------------------------------------- the oracle

// The expected state of the store: key -> (value, version).
struct Entry {
  std::string value;
  uint64_t version = 0;
};
using Oracle = std::map<std::string, Entry>;

// Counts the keys of `present` that do not hold exactly their value and
// version on `address`, and the keys of `absent` found there; reports the
// first few as failures when `report`. Returns -1 when the reads fail.
int64_t CountWrong(const std::string& address, const Oracle& present,
                   const std::vector<std::string>& absent, bool report) {
  std::vector<std::string> keys;
  for (const auto& [key, entry] : present) keys.push_back(key);
  keys.insert(keys.end(), absent.begin(), absent.end());
  absl::StatusOr<std::vector<v1::GetResult>> got = ReadAllKeys(address, keys);
  if (!got.ok()) {
    if (report) ADD_FAILURE() << got.status();
    return -1;
  }
  int64_t wrong = 0;
  size_t i = 0;
  for (const auto& [key, entry] : present) {
    const v1::GetResult& r = (*got)[i++];
    if (r.found() && r.value() == entry.value && r.version() == entry.version) continue;
    if (++wrong <= 5 && report) {
      ADD_FAILURE() << address << ", key " << key << ": want version " << entry.version
                    << " value '" << entry.value.substr(0, 40) << "...', got found=" << r.found()
                    << " version " << r.version() << " value '" << r.value().substr(0, 40)
                    << "...'";
    }
  }
  for (const std::string& key : absent) {
    const v1::GetResult& r = (*got)[i++];
    if (!r.found()) continue;
    if (++wrong <= 10 && report) {
      ADD_FAILURE() << address << ", key " << key << " should be absent but has version "
                    << r.version();
    }
  }
  return wrong;
}

// Expects `address` to hold exactly the oracle; returns the keys checked.
size_t ExpectHolds(const std::string& address, const Oracle& present,
                   const std::vector<std::string>& absent = {}) {
  const int64_t wrong = CountWrong(address, present, absent, /*report=*/true);
  EXPECT_EQ(wrong, 0) << "keys in the wrong state on " << address << ", out of "
                      << present.size() + absent.size();
  return present.size() + absent.size();
}

// Expects the same contents on both nodes for `keys`, and at least
// `min_present` of them present; returns the keys compared.
size_t ExpectSameContents(const std::string& a, const std::string& b,
                          const std::vector<std::string>& keys, size_t min_present = 1) {
  const ContentDiff diff = CompareContents(a, b, keys);
  EXPECT_TRUE(diff.Same()) << a << " vs " << b << ": " << diff.ToString();
  EXPECT_GE(diff.present, min_present) << a << " vs " << b << ": " << diff.ToString();
  return diff.compared;
}

std::vector<std::string> KeysOf(const Oracle& oracle, const std::vector<std::string>& more = {}) {
  std::vector<std::string> keys;
  for (const auto& [key, entry] : oracle) keys.push_back(key);
  keys.insert(keys.end(), more.begin(), more.end());
  return keys;
}

// ---------------------------------------------------------------- writers

// Writes every op to `address`, expects every one to be acknowledged, and
// applies them to `oracle` (and `deleted`, when given).
void WriteAll(const std::string& address, const std::vector<WriteOp>& ops, Oracle* oracle,
              std::vector<std::string>* deleted = nullptr, int window = 32) {
  KvClient client(address);
  PipelinedWriter writer(client.kv(), window);
  const std::vector<WriteResult> results = writer.Run(ops);
  int failed = 0;
  for (size_t i = 0; i < results.size(); ++i) {
    if (results[i].state != WriteResult::State::kAcked) {
      if (++failed <= 3) {
        ADD_FAILURE() << "write " << i << " (" << ops[i].key
                      << ") not acknowledged: " << Describe(results[i].status);
      }
      continue;
    }
    if (ops[i].kind == WriteOp::Kind::kSet) {
      (*oracle)[ops[i].key] = {ops[i].value, results[i].version};
    } else {
      oracle->erase(ops[i].key);
      if (deleted != nullptr) deleted->push_back(ops[i].key);
    }
  }
  EXPECT_EQ(failed, 0) << "writes to " << address << " not acknowledged";
}

std::vector<WriteOp> DistinctSets(const std::string& prefix, int n, uint64_t tag) {
  std::vector<WriteOp> ops(n);
  for (int i = 0; i < n; ++i) {
    ops[i].key = absl::StrFormat("%s%06d", prefix, i);
    ops[i].value = MakeValue(ops[i].key, tag + i);
  }
  return ops;
}

// Writes without pause from `threads` threads until Stop() (or `max_writes`
// in all), each thread cycling over its own keys with one synchronous Set at
// a time, so the last acknowledged write to a key is the one it holds.
class SteadyWriter {
 public:
  SteadyWriter(std::string address, int threads, int keys_per_thread, uint64_t seed,
               int64_t max_writes)
      : address_(std::move(address)),
        threads_(threads),
        keys_per_thread_(keys_per_thread),
        seed_(seed),
        max_writes_(max_writes),
        oracles_(threads) {}
  ~SteadyWriter() { Stop(); }

  void Start() {
    for (int t = 0; t < threads_; ++t) workers_.emplace_back([this, t] { Work(t); });
  }

  void Stop() {
    stop_ = true;
    for (std::thread& w : workers_) w.join();
    workers_.clear();
  }

  int64_t acked() const { return acked_.load(); }
  int64_t failed() const { return failed_.load(); }
  std::string first_error() {
    std::lock_guard<std::mutex> l(mu_);
    return first_error_;
  }

  // After Stop: the last acknowledged write of each key that saw no failure,
  // and the keys that saw one (their state is unknown).
  Oracle oracle() const {
    Oracle all;
    for (const Oracle& o : oracles_) all.insert(o.begin(), o.end());
    return all;
  }
  const std::set<std::string>& uncertain() const { return uncertain_; }

 private:
  void Work(int t) {
    KvClient client(address_);
    std::mt19937_64 rng(seed_ + static_cast<uint64_t>(t));
    for (int64_t n = 0; !stop_; ++n) {
      if (sent_.fetch_add(1) >= max_writes_) return;
      const std::string key =
          absl::StrFormat("steady-%d-%05d", t, static_cast<int>(n % keys_per_thread_));
      const std::string value = MakeValue(key, rng());
      v1::SetResponse response;
      const grpc::Status s = client.Set(key, value, &response);
      if (s.ok()) {
        oracles_[t][key] = {value, response.version()};
        acked_.fetch_add(1);
        continue;
      }
      failed_.fetch_add(1);
      std::lock_guard<std::mutex> l(mu_);
      oracles_[t].erase(key);
      uncertain_.insert(key);
      if (first_error_.empty()) first_error_ = absl::StrCat(key, ": ", Describe(s));
    }
  }

  const std::string address_;
  const int threads_;
  const int keys_per_thread_;
  const uint64_t seed_;
  const int64_t max_writes_;
  std::vector<Oracle> oracles_;  // One per thread, written only by it.
  std::vector<std::thread> workers_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> sent_{0};
  std::atomic<int64_t> acked_{0};
  std::atomic<int64_t> failed_{0};
  std::mutex mu_;
  std::set<std::string> uncertain_;
  std::string first_error_;
};

// ---------------------------------------------------------------- fixture

class ReplicationIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
#if !KV_REPLICA_BUILT
    GTEST_SKIP() << "there was no kv-replica target when this test was configured";
#endif
  }

  std::string Dir(const std::string& name) {
    const std::string dir = tmp_.Join(name);
    std::filesystem::create_directories(dir);
    return dir;
  }

  // The address of a kv-replica that ran once and is stopped: a follower
  // that is configured but down.
  std::string StoppedReplicaAddress(const std::string& name) {
    ServerProcess replica(Dir(name), KV_REPLICA_BIN, "replica");
    const absl::Status started = replica.Start(Flags({}));
    EXPECT_TRUE(started.ok()) << started;
    if (!started.ok()) return "";
    absl::StatusOr<ExitStatus> exit = replica.Terminate();
    EXPECT_TRUE(exit.ok() && exit->Clean())
        << (exit.ok() ? exit->ToString() : exit.status().ToString()) << "\n"
        << replica.LogTail();
    return replica.last_address();
  }

  TempDir tmp_;
};

// ---------------------------------------------------------------- 1

// Invariant: a replica killed with kill -9 under load keeps in its log every
// entry it acknowledged as durable; restarted on its data directory, it gets
// only the entries it misses (partial resync: no snapshot is sent), and ends
// with exactly the leader's contents and last index.
TEST_F(ReplicationIntegrationTest, PartialResyncAfterKill9) {
  const uint64_t seed = Seed("PartialResyncAfterKill9");
  ShardGroup group(Dir("group"), KV_SHARD_BIN, KV_REPLICA_BIN, 2);
  const std::vector<std::string> flags = Flags({"--fsync=always"});
  const absl::Status started = group.Start(flags, flags);
  ASSERT_TRUE(started.ok()) << started;
  const std::string leader = group.leader().address();
  const std::string crashed = group.follower_addresses()[0];
  const std::string other = group.follower_addresses()[1];

  SteadyWriter writer(leader, 4, 250, seed, 200000);
  writer.Start();
  auto acked_at_least = [&](int64_t n) {
    return WaitFor([&] { return writer.acked() >= n || writer.failed() > 0; },
                   absl::Now() + absl::Seconds(15)) &&
           writer.failed() == 0;
  };

  // Replicating before the crash: the follower confirmed something durable.
  ASSERT_TRUE(acked_at_least(1000)) << writer.acked() << " acks; " << writer.first_error() << "\n"
                                    << group.LogTails();
  uint64_t acked_before_kill = 0;
  ASSERT_TRUE(WaitFor(
      [&] {
        acked_before_kill = FollowerOn(leader, crashed).acked_index();
        return acked_before_kill > 0;
      },
      absl::Now() + absl::Seconds(10)))
      << "the leader never saw an ack from " << crashed << "\n"
      << StatusOf(leader).DebugString() << group.LogTails();

  absl::StatusOr<ExitStatus> killed = group.replica(0).KillHard();
  ASSERT_TRUE(killed.ok()) << killed.status();
  const int64_t acked_at_kill = writer.acked();
  // The leader notices, and writes go on without the follower.
  std::string state_after_kill;
  EXPECT_TRUE(WaitFor(
      [&] {
        state_after_kill = FollowerOn(leader, crashed).state();
        return state_after_kill != "streaming" && !state_after_kill.empty();
      },
      absl::Now() + absl::Seconds(5)))
      << "follower state on the leader after kill -9: '" << state_after_kill << "'";
  ASSERT_TRUE(acked_at_least(acked_at_kill + 1000))
      << writer.acked() << " acks; " << writer.first_error() << "\n"
      << group.LogTails();

  const absl::Status restarted = group.replica(0).RestartOnSameAddress();
  ASSERT_TRUE(restarted.ok()) << restarted;
  const uint64_t index_after_restart = StatusOf(crashed).last_index();
  EXPECT_GE(index_after_restart, acked_before_kill)
      << "entries the replica acknowledged as durable are gone from its log after kill -9";
  const int64_t acked_at_restart = writer.acked();
  // Catch-up while writes go on.
  ASSERT_TRUE(acked_at_least(acked_at_restart + 500))
      << writer.acked() << " acks; " << writer.first_error() << "\n"
      << group.LogTails();
  writer.Stop();
  ASSERT_EQ(writer.failed(), 0) << writer.first_error();

  for (const std::string& follower : {crashed, other}) {
    const absl::Status same = AwaitSameLastIndex(leader, follower, absl::Now() + absl::Seconds(15));
    ASSERT_TRUE(same.ok()) << same << "\n" << group.LogTails();
  }
  const uint64_t last_index = StatusOf(leader).last_index();
  v1::FollowerStatus f_crashed, f_other;
  EXPECT_TRUE(WaitFor(
      [&] {
        f_crashed = FollowerOn(leader, crashed);
        f_other = FollowerOn(leader, other);
        return f_crashed.acked_index() == last_index && f_other.acked_index() == last_index;
      },
      absl::Now() + absl::Seconds(10)))
      << "acked_index should reach " << last_index << ":\n"
      << f_crashed.DebugString() << f_other.DebugString();
  EXPECT_EQ(f_crashed.snapshots_sent(), 0u)
      << "a restarted replica whose position is in the leader's log needs no snapshot:\n"
      << f_crashed.DebugString();
  EXPECT_EQ(f_other.snapshots_sent(), 0u) << f_other.DebugString();

  const Oracle oracle = writer.oracle();
  ASSERT_GT(oracle.size(), 0u);
  EXPECT_TRUE(writer.uncertain().empty());
  const std::vector<std::string> keys = KeysOf(oracle);
  const size_t checked = ExpectHolds(leader, oracle);
  ExpectSameContents(leader, crashed, keys, oracle.size());
  ExpectSameContents(leader, other, keys, oracle.size());
  const v1::StatusResponse on_crashed = StatusOf(crashed);
  EXPECT_EQ(on_crashed.role(), "replica");
  EXPECT_EQ(on_crashed.leader(), leader);
  EXPECT_EQ(on_crashed.key_count(), StatusOf(leader).key_count());
  EXPECT_EQ(StatusOf(other).key_count(), StatusOf(leader).key_count());
  std::printf(
      "%lld writes (%lld while the replica was down); replica durable at %llu before kill -9, "
      "at %llu after restart, caught up to %llu with %llu snapshot(s) sent; %zu keys equal on "
      "all three nodes\n",
      static_cast<long long>(writer.acked()),
      static_cast<long long>(acked_at_restart - acked_at_kill),
      static_cast<unsigned long long>(acked_before_kill),
      static_cast<unsigned long long>(index_after_restart),
      static_cast<unsigned long long>(last_index),
      static_cast<unsigned long long>(f_crashed.snapshots_sent()), checked);
}

// ---------------------------------------------------------------- 2

// Invariant: when the leader's log no longer holds the entry after a
// replica's position (pruned after a snapshot), the replica gets the
// leader's snapshot and then the tail (full resync), ends with exactly the
// leader's contents, including deletes it missed, and keeps a snapshot of its
// own; restarted again afterwards, it resumes from its own files.
TEST_F(ReplicationIntegrationTest, FullResyncWhenLogIsGone) {
  const uint64_t seed = Seed("FullResyncWhenLogIsGone");
  std::mt19937_64 rng(seed);
  ShardGroup group(Dir("group"), KV_SHARD_BIN, KV_REPLICA_BIN, 1);
  const absl::Status started = group.Start(Flags({"--fsync=no", "--segment-bytes=65536",
                                                  "--snapshots-to-keep=1", "--retain-log-bytes=0"}),
                                           Flags({"--fsync=no", "--segment-bytes=65536"}));
  ASSERT_TRUE(started.ok()) << started;
  const std::string leader = group.leader().address();
  const std::string follower = group.follower_addresses()[0];

  Oracle oracle;
  std::vector<std::string> deleted;
  const std::vector<WriteOp> first = DistinctSets("a-", 2000, rng());
  WriteAll(leader, first, &oracle);
  ASSERT_FALSE(HasFailure());
  absl::Status same = AwaitSameLastIndex(leader, follower, absl::Now() + absl::Seconds(15));
  ASSERT_TRUE(same.ok()) << same << "\n" << group.LogTails();
  const uint64_t replica_index = StatusOf(follower).last_index();
  ASSERT_TRUE(group.replica(0).KillHard().ok());

  // While it is down: new keys, overwrites and deletes of what it has.
  std::vector<WriteOp> second = DistinctSets("b-", 3000, rng());
  for (int i = 0; i < 500; ++i) {
    second.push_back({WriteOp::Kind::kSet, first[i].key, MakeValue(first[i].key, rng())});
  }
  for (int i = 500; i < 1000; ++i) second.push_back({WriteOp::Kind::kDelete, first[i].key, ""});
  std::shuffle(second.begin(), second.end(), rng);
  WriteAll(leader, second, &oracle, &deleted);
  ASSERT_FALSE(HasFailure());
  {
    KvClient client(leader);
    v1::SnapshotResponse snapshot;
    const grpc::Status s = client.Snapshot(&snapshot);
    ASSERT_TRUE(s.ok()) << Describe(s);
  }
  const v1::StatusResponse pruned = StatusOf(leader);
  ASSERT_GT(pruned.log().first_index(), replica_index + 1)
      << "setup: the leader's log should have been pruned past the replica's position "
      << replica_index << " (--segment-bytes=65536 --snapshots-to-keep=1 --retain-log-bytes=0 "
      << "and a snapshot); leader status:\n"
      << pruned.DebugString();

  // Restart it, and write more while it resyncs.
  const absl::Status restarted = group.replica(0).RestartOnSameAddress();
  ASSERT_TRUE(restarted.ok()) << restarted;
  WriteAll(leader, DistinctSets("c-", 500, rng()), &oracle);
  ASSERT_FALSE(HasFailure());
  same = AwaitSameLastIndex(leader, follower, absl::Now() + absl::Seconds(20));
  ASSERT_TRUE(same.ok()) << same << "\n" << group.LogTails();

  const v1::FollowerStatus f = FollowerOn(leader, follower);
  EXPECT_GE(f.snapshots_sent(), 1u) << "the replica's next entry was gone: a full resync\n"
                                    << f.DebugString();
  const std::vector<std::string> keys = KeysOf(oracle, deleted);
  ExpectHolds(leader, oracle, deleted);
  ExpectHolds(follower, oracle, deleted);
  const size_t compared = ExpectSameContents(leader, follower, keys, oracle.size());
  EXPECT_EQ(StatusOf(follower).key_count(), oracle.size());
  std::vector<std::string> snaps;
  EXPECT_TRUE(WaitFor(
      [&] {
        snaps = FilesLike(group.replica(0).data_dir(), "snap-", ".snap");
        return !snaps.empty();
      },
      absl::Now() + absl::Seconds(5)))
      << "no snap-*.snap in the replica's " << group.replica(0).data_dir() << ": "
      << absl::StrJoin(ListDir(group.replica(0).data_dir()), " ");

  // Once more: kill -9 and restart. Its own snapshot and log bring it back,
  // and its position is in the leader's log now, so no second snapshot.
  const uint64_t snapshots_sent = f.snapshots_sent();
  ASSERT_TRUE(group.replica(0).KillHard().ok());
  const absl::Status again = group.replica(0).RestartOnSameAddress();
  ASSERT_TRUE(again.ok()) << again;
  EXPECT_EQ(StatusOf(follower).last_index(), StatusOf(leader).last_index())
      << "the replica should recover everything it had from its own files";
  same = AwaitSameLastIndex(leader, follower, absl::Now() + absl::Seconds(15));
  ASSERT_TRUE(same.ok()) << same << "\n" << group.LogTails();
  ExpectHolds(follower, oracle, deleted);
  EXPECT_EQ(FollowerOn(leader, follower).snapshots_sent(), snapshots_sent)
      << "a replica restarted at the leader's position needs no new snapshot";
  std::printf(
      "replica down at index %llu, leader's log pruned to start at %llu; after restart: %llu "
      "snapshot(s) sent, %zu keys compared (%zu present, %zu deleted while it was down or "
      "after), replica has %zu snapshot file(s)\n",
      static_cast<unsigned long long>(replica_index),
      static_cast<unsigned long long>(pruned.log().first_index()),
      static_cast<unsigned long long>(snapshots_sent), compared, oracle.size(), deleted.size(),
      snaps.size());
}

// ---------------------------------------------------------------- 3

// Invariant: with --ack=sync --sync-acks=2, a write acknowledged to the client
// is on both followers, with its value and version, even after the leader is
// killed and its data directory deleted; and it stays there when the
// followers themselves are killed and restarted. A write pending at the kill
// holds nothing or its value; a write never sent is absent.
TEST_F(ReplicationIntegrationTest, SyncAcksSurviveLeaderDiskLoss) {
  const uint64_t seed = Seed("SyncAcksSurviveLeaderDiskLoss");
  std::mt19937_64 rng(seed);
  constexpr int kKeys = 10000;
  const int64_t kill_after = 5000 + static_cast<int64_t>(rng() % 3000);
  ShardGroup group(Dir("group"), KV_SHARD_BIN, KV_REPLICA_BIN, 2);
  const absl::Status started = group.Start(Flags({"--fsync=always", "--ack=sync", "--sync-acks=2"}),
                                           Flags({"--fsync=always"}));
  ASSERT_TRUE(started.ok()) << started;
  const std::vector<WriteOp> ops = DistinctSets("sync-", kKeys, rng());

  std::vector<WriteResult> results;
  int in_flight_at_kill = 0;
  {
    KvClient client(group.leader().address());
    PipelinedWriter writer(client.kv(), 32);
    std::thread writing([&] { results = writer.Run(ops); });
    const bool reached =
        WaitFor([&] { return writer.acked() >= kill_after; }, absl::Now() + absl::Seconds(30));
    in_flight_at_kill = writer.in_flight();
    absl::StatusOr<ExitStatus> killed = group.leader().KillHard();
    writing.join();
    ASSERT_TRUE(reached) << "only " << writer.acked() << " acks in 30 s\n" << group.LogTails();
    ASSERT_TRUE(killed.ok()) << killed.status();
  }
  std::error_code ec;
  std::filesystem::remove_all(group.leader().data_dir(), ec);
  ASSERT_FALSE(ec) << ec.message();

  Oracle acked;
  std::vector<std::string> unsent;
  std::vector<size_t> pending;
  for (size_t i = 0; i < ops.size(); ++i) {
    switch (results[i].state) {
      case WriteResult::State::kAcked:
        acked[ops[i].key] = {ops[i].value, results[i].version};
        break;
      case WriteResult::State::kPending:
      case WriteResult::State::kFailed:
        pending.push_back(i);
        break;
      case WriteResult::State::kNotSent:
        unsent.push_back(ops[i].key);
        break;
    }
  }
  ASSERT_GE(static_cast<int64_t>(acked.size()), kill_after);

  // A pending write: absent, or its own value.
  auto check_pending = [&](const std::string& address, const char* when) {
    std::vector<std::string> keys;
    for (size_t i : pending) keys.push_back(ops[i].key);
    absl::StatusOr<std::vector<v1::GetResult>> got = ReadAllKeys(address, keys);
    ASSERT_TRUE(got.ok()) << got.status();
    int landed = 0;
    for (size_t j = 0; j < pending.size(); ++j) {
      const v1::GetResult& r = (*got)[j];
      if (!r.found()) continue;
      ++landed;
      EXPECT_EQ(r.value(), ops[pending[j]].value)
          << address << ": pending write " << ops[pending[j]].key << " holds another value";
    }
    std::printf("%s (%s): %d of %zu pending writes landed\n", address.c_str(), when, landed,
                pending.size());
  };

  for (int i = 0; i < group.replica_count(); ++i) {
    const std::string address = group.replica(i).address();
    SCOPED_TRACE(absl::StrCat("replica ", i, " ", address));
    // Durable on the follower may precede applied to its map by a moment.
    int64_t wrong = -1;
    WaitFor(
        [&] {
          wrong = CountWrong(address, acked, unsent, /*report=*/false);
          return wrong == 0;
        },
        absl::Now() + absl::Seconds(10), absl::Milliseconds(100));
    ExpectHolds(address, acked, unsent);
    check_pending(address, "live");
  }

  // And from their own disks.
  for (int i = 0; i < group.replica_count(); ++i) {
    SCOPED_TRACE(absl::StrCat("replica ", i, " after kill -9"));
    ASSERT_TRUE(group.replica(i).KillHard().ok());
    const absl::Status restarted = group.replica(i).Restart();
    ASSERT_TRUE(restarted.ok()) << restarted;
    ExpectHolds(group.replica(i).address(), acked, unsent);
    check_pending(group.replica(i).address(), "after kill -9 and restart");
  }
  std::printf(
      "%zu acknowledged writes found with value and version on both replicas, live and after "
      "their own kill -9; %zu pending at the leader's kill (%d in flight), %zu never sent and "
      "absent\n",
      acked.size(), pending.size(), in_flight_at_kill, unsent.size());
}

// ---------------------------------------------------------------- 4

// Invariant: with --ack=sync and no follower up, a write fails with
// DEADLINE_EXCEEDED naming "not confirmed" and the replica count after about
// --sync-timeout-ms, and it stays applied on the leader (as the message says
// it may be).
TEST_F(ReplicationIntegrationTest, SyncTimeoutIsDeadlineExceeded) {
  const std::string down = StoppedReplicaAddress("stopped-replica");
  ASSERT_FALSE(down.empty());
  ServerProcess leader(Dir("leader"), KV_SHARD_BIN, "shard");
  const absl::Status started =
      leader.Start(Flags({"--ack=sync", "--sync-acks=1", "--sync-timeout-ms=1000",
                          "--start-wait-ms=100", absl::StrCat("--followers=", down)}));
  ASSERT_TRUE(started.ok()) << started;
  // A sync leader whose only follower is down does not lead by itself (it
  // cannot show that it holds every sync-acknowledged write): told to.
  ASSERT_TRUE(LeadNow(leader.address()).ok());
  const absl::Status writable = AwaitTakesWrites(leader.address());
  ASSERT_TRUE(writable.ok()) << writable << "\n" << leader.LogTail();
  KvClient client(leader.address(), absl::Seconds(20));

  v1::SetResponse set;
  absl::Time t0 = absl::Now();
  grpc::Status s = client.Set("unconfirmed", "written on the leader only", &set);
  const absl::Duration set_took = absl::Now() - t0;
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << Describe(s);
  EXPECT_TRUE(absl::StrContains(s.error_message(), "not confirmed")) << Describe(s);
  EXPECT_TRUE(absl::StrContains(s.error_message(), "1"))
      << "should name 1 replica: " << Describe(s);
  EXPECT_GE(set_took, absl::Milliseconds(800)) << "gave up before --sync-timeout-ms=1000";
  EXPECT_LT(set_took, absl::Seconds(5));

  // The write stays in the leader's log, but reads do not show it until its
  // in-sync follower holds it: a failover now could still lose it.
  v1::GetResponse got;
  ASSERT_TRUE(client.Get("unconfirmed", &got).ok());
  EXPECT_FALSE(got.found()) << "a leader read showed a write no in-sync follower holds";

  // Deletes wait the same way.
  v1::DeleteResponse del;
  t0 = absl::Now();
  s = client.Delete("unconfirmed", &del);
  const absl::Duration del_took = absl::Now() - t0;
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << Describe(s);
  EXPECT_TRUE(absl::StrContains(s.error_message(), "not confirmed")) << Describe(s);
  EXPECT_LT(del_took, absl::Seconds(5));
  ASSERT_TRUE(client.Get("unconfirmed", &got).ok());
  EXPECT_FALSE(got.found());

  const v1::StatusResponse status = StatusOf(leader.address());
  EXPECT_EQ(status.ack(), "sync:1");
  const v1::FollowerStatus* f = FindFollower(status, down);
  ASSERT_NE(f, nullptr) << "no follower " << down << " in\n" << status.DebugString();
  EXPECT_TRUE(f->state() == "connecting" || f->state() == "disconnected") << f->DebugString();
  EXPECT_EQ(f->acked_index(), 0u);
  std::printf("Set: '%s' after %s; Delete after %s; follower %s\n", s.error_message().c_str(),
              absl::FormatDuration(set_took).c_str(), absl::FormatDuration(del_took).c_str(),
              f->ShortDebugString().c_str());
}

// ---------------------------------------------------------------- 5

// Invariant: a request's WriteAck overrides --ack both ways: ACK_MODE_REPLICAS
// on an async leader waits for followers (and times out when none is up);
// ACK_MODE_LEADER_MEMORY and ACK_MODE_LEADER_FSYNC on a sync leader answer at
// once, while a default write on that leader waits for its timeout.
TEST_F(ReplicationIntegrationTest, PerRequestAckOverride) {
  const std::string down = StoppedReplicaAddress("stopped-replica");
  ASSERT_FALSE(down.empty());
  const std::string followers = absl::StrCat("--followers=", down);

  auto set = [](KvClient* client, const std::string& key, const v1::WriteAck& ack,
                absl::Duration* took) {
    v1::SetRequest request;
    request.set_key(key);
    request.set_value(MakeValue(key, 1));
    *request.mutable_ack() = ack;
    v1::SetResponse response;
    const absl::Time t0 = absl::Now();
    grpc::Status s = client->Set(request, &response);
    *took = absl::Now() - t0;
    return s;
  };
  absl::Duration took;

  {
    SCOPED_TRACE("--ack=async");
    ServerProcess leader(Dir("async-leader"), KV_SHARD_BIN, "shard");
    const absl::Status started =
        leader.Start(Flags({"--ack=async", "--sync-timeout-ms=1000", followers}));
    ASSERT_TRUE(started.ok()) << started;
    const absl::Status writable = AwaitTakesWrites(leader.address());
    ASSERT_TRUE(writable.ok()) << writable << "\n" << leader.LogTail();
    KvClient client(leader.address(), absl::Seconds(20));
    EXPECT_EQ(StatusOf(leader.address()).ack(), "async");

    // OK proves it did not wait: with no follower up, a write that waited
    // would end DEADLINE_EXCEEDED after --sync-timeout-ms (no wall-clock bound).
    grpc::Status s = set(&client, "default", Ack(v1::ACK_MODE_DEFAULT), &took);
    EXPECT_TRUE(s.ok()) << "async needs no follower: " << Describe(s);

    s = set(&client, "replicas-1", Ack(v1::ACK_MODE_REPLICAS, 1), &took);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << Describe(s);
    EXPECT_TRUE(absl::StrContains(s.error_message(), "not confirmed")) << Describe(s);
    EXPECT_TRUE(absl::StrContains(s.error_message(), "1")) << Describe(s);
    EXPECT_GE(took, absl::Milliseconds(800));
    EXPECT_LT(took, absl::Seconds(5));
    std::printf("async leader, ACK_MODE_REPLICAS/1: '%s' after %s\n", s.error_message().c_str(),
                absl::FormatDuration(took).c_str());

    // A batch with the same override: the call or each item is told.
    v1::MultiSetRequest batch;
    *batch.mutable_ack() = Ack(v1::ACK_MODE_REPLICAS, 1);
    for (const char* key : {"batch-a", "batch-b"}) {
      v1::SetItem* item = batch.add_items();
      item->set_key(key);
      item->set_value(MakeValue(key, 2));
    }
    v1::MultiSetResponse batch_response;
    const absl::Time t0 = absl::Now();
    s = client.MultiSet(batch, &batch_response);
    took = absl::Now() - t0;
    if (s.ok()) {
      ASSERT_EQ(batch_response.results_size(), 2);
      for (const v1::SetResult& r : batch_response.results()) {
        EXPECT_EQ(r.error().code(), grpc::StatusCode::DEADLINE_EXCEEDED)
            << "MultiSet with ACK_MODE_REPLICAS and no follower up: " << r.DebugString();
      }
    } else {
      EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << Describe(s);
      EXPECT_TRUE(absl::StrContains(s.error_message(), "not confirmed")) << Describe(s);
    }
    EXPECT_LT(took, absl::Seconds(5));
  }

  {
    SCOPED_TRACE("--ack=sync");
    ServerProcess leader(Dir("sync-leader"), KV_SHARD_BIN, "shard");
    const absl::Status started =
        leader.Start(Flags({"--ack=sync", "--sync-acks=1", "--sync-timeout-ms=4000", followers}));
    ASSERT_TRUE(started.ok()) << started;
    ASSERT_TRUE(LeadNow(leader.address()).ok());  // Its follower is down (see above).
    KvClient client(leader.address(), absl::Seconds(20));
    EXPECT_EQ(StatusOf(leader.address()).ack(), "sync:1");

    for (v1::AckMode mode : {v1::ACK_MODE_LEADER_MEMORY, v1::ACK_MODE_LEADER_FSYNC}) {
      const std::string key = absl::StrCat("override-", v1::AckMode_Name(mode));
      // OK means it did not wait for followers (none is up: waiting ends in
      // DEADLINE_EXCEEDED).
      grpc::Status s = set(&client, key, Ack(mode), &took);
      EXPECT_TRUE(s.ok()) << v1::AckMode_Name(mode) << ": " << Describe(s);
      v1::GetResponse got;
      ASSERT_TRUE(client.Get(key, &got).ok());
      EXPECT_TRUE(got.found()) << key;
    }
    v1::DeleteRequest del;
    del.set_key(absl::StrCat("override-", v1::AckMode_Name(v1::ACK_MODE_LEADER_MEMORY)));
    *del.mutable_ack() = Ack(v1::ACK_MODE_LEADER_MEMORY);
    v1::DeleteResponse del_response;
    grpc::Status s = client.Delete(del, &del_response);
    EXPECT_TRUE(s.ok()) << "Delete with ACK_MODE_LEADER_MEMORY: " << Describe(s);
    EXPECT_TRUE(del_response.deleted());

    // The flag is in force for a default write.
    s = set(&client, "default", Ack(v1::ACK_MODE_DEFAULT), &took);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << Describe(s);
    EXPECT_GE(took, absl::Milliseconds(3500)) << "--sync-timeout-ms=4000";
    EXPECT_LT(took, absl::Seconds(8));
    std::printf("sync leader: memory/fsync overrides answered at once; default write: %s\n",
                absl::FormatDuration(took).c_str());
  }
}

// ---------------------------------------------------------------- 6

// Invariant: a replica started after its leader gets the leader's data and
// serves it; a write sent to it is FAILED_PRECONDITION naming the leader in
// the message and in the "kv-leader" trailer, and writes nothing anywhere.
TEST_F(ReplicationIntegrationTest, WritesToReplicaNameTheLeader) {
  const uint64_t seed = Seed("WritesToReplicaNameTheLeader");
  // The replica's address first; the replica itself comes up after the leader.
  ServerProcess replica(Dir("replica"), KV_REPLICA_BIN, "replica");
  absl::Status s = replica.Start(Flags({}));
  ASSERT_TRUE(s.ok()) << s;
  const std::string follower = replica.address();
  ASSERT_TRUE(replica.Terminate().ok()) << replica.LogTail();

  ServerProcess shard(Dir("leader"), KV_SHARD_BIN, "shard");
  s = shard.Start(Flags({absl::StrCat("--followers=", follower)}));
  ASSERT_TRUE(s.ok()) << s;
  const std::string leader = shard.address();
  s = AwaitTakesWrites(leader);
  ASSERT_TRUE(s.ok()) << s << "\n" << shard.LogTail();
  Oracle oracle;
  WriteAll(leader, DistinctSets("early-", 100, seed), &oracle);
  ASSERT_FALSE(HasFailure());

  s = replica.RestartOnSameAddress();
  ASSERT_TRUE(s.ok()) << s;
  ASSERT_EQ(replica.address(), follower);
  WriteAll(leader, DistinctSets("late-", 100, seed + 1000), &oracle);
  ASSERT_FALSE(HasFailure());

  // Reads on the replica return what was written on the leader.
  int64_t wrong = -1;
  EXPECT_TRUE(WaitFor(
      [&] {
        wrong = CountWrong(follower, oracle, {}, /*report=*/false);
        return wrong == 0;
      },
      absl::Now() + absl::Seconds(10), absl::Milliseconds(50)))
      << wrong << " keys not (yet) on the replica\n"
      << shard.LogTail() << replica.LogTail();
  ExpectHolds(follower, oracle);
  v1::StatusResponse on_replica;
  EXPECT_TRUE(WaitFor(
      [&] {
        on_replica = StatusOf(follower);
        return on_replica.leader() == leader;
      },
      absl::Now() + absl::Seconds(5)))
      << on_replica.DebugString();
  EXPECT_EQ(on_replica.role(), "replica");
  const uint64_t leader_index = StatusOf(leader).last_index();
  const uint64_t replica_index = on_replica.last_index();

  KvClient client(follower);
  const std::string key = oracle.begin()->first;
  const Entry before = oracle.begin()->second;
  auto expect_refused = [&](const char* what, const grpc::Status& status,
                            const grpc::ClientContext& context) {
    SCOPED_TRACE(what);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << Describe(status);
    EXPECT_TRUE(absl::StrContains(status.error_message(), leader))
        << "the message should name the leader " << leader << ": " << Describe(status);
    EXPECT_EQ(ServerTrailer(context, "kv-leader"), leader) << "trailing metadata kv-leader";
    std::printf("%s on the replica: %s; kv-leader: %s\n", what, Describe(status).c_str(),
                ServerTrailer(context, "kv-leader").c_str());
  };
  {
    std::unique_ptr<grpc::ClientContext> context = client.NewContext();
    v1::SetRequest request;
    request.set_key(key);
    request.set_value("written to a replica");
    v1::SetResponse response;
    const grpc::Status st = client.kv()->Set(context.get(), request, &response);
    expect_refused("Set", st, *context);
  }
  {
    std::unique_ptr<grpc::ClientContext> context = client.NewContext();
    v1::SetRequest request;
    request.set_key("new-on-replica");
    request.set_value("x");
    v1::SetResponse response;
    const grpc::Status st = client.kv()->Set(context.get(), request, &response);
    expect_refused("Set of a new key", st, *context);
  }
  {
    std::unique_ptr<grpc::ClientContext> context = client.NewContext();
    v1::DeleteRequest request;
    request.set_key(key);
    v1::DeleteResponse response;
    const grpc::Status st = client.kv()->Delete(context.get(), request, &response);
    expect_refused("Delete", st, *context);
  }

  {
    // On a Pipeline stream: each write refused in its answer, naming the
    // leader (there are no per-request trailers); reads are served.
    std::vector<v1::PipelineRequest> requests(3);
    requests[0].set_id(1);
    requests[0].mutable_set()->set_key("new-on-replica");
    requests[0].mutable_set()->set_value("x");
    requests[1].set_id(2);
    requests[1].mutable_multi_set()->add_items()->set_key(key);
    requests[2].set_id(3);
    requests[2].mutable_get()->set_key(key);
    requests[2].mutable_get()->set_read_mode(v1::READ_MODE_ANY_REPLICA);
    std::vector<v1::PipelineResponse> answers;
    const grpc::Status st = client.Pipeline(requests, &answers);
    ASSERT_TRUE(st.ok()) << Describe(st);
    ASSERT_EQ(answers.size(), 3u);
    for (const v1::PipelineResponse& a : answers) {
      SCOPED_TRACE(a.id());
      if (a.id() == 3) {
        EXPECT_EQ(a.status().code(), 0);
        EXPECT_EQ(a.get().value(), before.value);
        continue;
      }
      EXPECT_EQ(a.status().code(), grpc::StatusCode::FAILED_PRECONDITION);
      EXPECT_TRUE(absl::StrContains(a.status().message(), leader)) << a.status().message();
    }
  }

  // Nothing was written, here or on the leader.
  ExpectHolds(follower, {{key, before}}, {"new-on-replica"});
  ExpectHolds(leader, {{key, before}}, {"new-on-replica"});
  EXPECT_EQ(StatusOf(follower).last_index(), replica_index);
  EXPECT_EQ(StatusOf(leader).last_index(), leader_index);
  std::printf("%zu keys written on the leader read back from the replica started after it\n",
              oracle.size());
}

// ---------------------------------------------------------------- 7

// Invariant: after R1 is promoted, the old leader L, restarted with its old
// data and followers, learns the newer epoch, reports "deposed", accepts no
// write (not even in its first moments), and ships nothing to the followers:
// R2 keeps following R1 with exactly R1's contents, at epoch old + 1.
TEST_F(ReplicationIntegrationTest, FencingAfterPromotion) {
  const uint64_t seed = Seed("FencingAfterPromotion");
  std::mt19937_64 rng(seed);
  ShardGroup group(Dir("group"), KV_SHARD_BIN, KV_REPLICA_BIN, 2);
  const absl::Status started = group.Start(Flags({}), Flags({}));
  ASSERT_TRUE(started.ok()) << started;
  const std::string old_leader = group.leader().address();
  const std::string r1 = group.follower_addresses()[0];
  const std::string r2 = group.follower_addresses()[1];

  Oracle oracle;
  std::vector<std::string> deleted;
  const std::vector<WriteOp> first = DistinctSets("old-", 500, rng());
  WriteAll(old_leader, first, &oracle);
  ASSERT_FALSE(HasFailure());
  for (const std::string& r : {r1, r2}) {
    const absl::Status same = AwaitSameLastIndex(old_leader, r, absl::Now() + absl::Seconds(10));
    ASSERT_TRUE(same.ok()) << same << "\n" << group.LogTails();
  }
  const uint64_t old_epoch = StatusOf(old_leader).epoch();
  EXPECT_EQ(StatusOf(r1).epoch(), old_epoch);

  absl::StatusOr<ExitStatus> stopped = group.leader().Terminate();
  ASSERT_TRUE(stopped.ok()) << stopped.status() << "\n" << group.leader().LogTail();
  EXPECT_TRUE(stopped->Clean()) << stopped->ToString();

  // Promote R1; it pushes to R2.
  {
    KvClient client(r1);
    v1::PromoteRequest request;
    request.set_epoch(0);
    request.add_followers(r2);
    v1::PromoteResponse response;
    const grpc::Status s = client.Promote(request, &response);
    ASSERT_TRUE(s.ok()) << "Promote on " << r1 << ": " << Describe(s);
    EXPECT_EQ(response.epoch(), old_epoch + 1);
    EXPECT_EQ(response.last_index(), StatusOf(r1).last_index());
  }
  const v1::StatusResponse promoted = StatusOf(r1);
  EXPECT_EQ(promoted.role(), "leader");
  EXPECT_EQ(promoted.epoch(), old_epoch + 1);
  // A new leader answers UNAVAILABLE (retry) until it has contacted its
  // followers; wait for the stream rather than retrying writes.
  const absl::Status pushing =
      testing::AwaitFollowersStreaming(r1, {r2}, absl::Now() + absl::Seconds(10));
  ASSERT_TRUE(pushing.ok()) << pushing << "\n" << group.LogTails();

  std::vector<WriteOp> second = DistinctSets("new-", 300, rng());
  for (int i = 0; i < 100; ++i) {
    second.push_back({WriteOp::Kind::kSet, first[i].key, MakeValue(first[i].key, rng())});
  }
  for (int i = 100; i < 150; ++i) second.push_back({WriteOp::Kind::kDelete, first[i].key, ""});
  std::shuffle(second.begin(), second.end(), rng);
  WriteAll(r1, second, &oracle, &deleted);
  ASSERT_FALSE(HasFailure());
  absl::Status same = AwaitSameLastIndex(r1, r2, absl::Now() + absl::Seconds(10));
  ASSERT_TRUE(same.ok()) << same << "\n" << group.LogTails();
  std::vector<std::string> fenced_keys = {"fenced-early", "fenced-1", "fenced-2", "fenced-3"};
  const std::vector<std::string> keys = KeysOf(oracle, deleted);
  std::vector<std::string> keys_and_fenced = keys;
  keys_and_fenced.insert(keys_and_fenced.end(), fenced_keys.begin(), fenced_keys.end());
  ExpectSameContents(r1, r2, keys, oracle.size());
  const uint64_t new_index = StatusOf(r1).last_index();

  // The old leader comes back with its old data and followers. Even its very
  // first write attempt must be refused.
  const absl::Status restarted = group.leader().RestartOnSameAddress();
  ASSERT_TRUE(restarted.ok()) << restarted;
  auto refused = [&](const std::string& key, std::string* message) {
    KvClient client(old_leader, absl::Seconds(10));
    v1::SetResponse response;
    const grpc::Status s = client.Set(key, MakeValue(key, 0), &response);
    *message = Describe(s);
    return s.error_code();
  };
  // Refused: FAILED_PRECONDITION once it knows, or UNAVAILABLE (retry) while
  // it is still contacting its followers; never accepted.
  std::string early_message;
  const grpc::StatusCode early = refused("fenced-early", &early_message);
  EXPECT_TRUE(early == grpc::StatusCode::FAILED_PRECONDITION ||
              early == grpc::StatusCode::UNAVAILABLE)
      << "the first write right after restart must be refused: " << early_message;

  v1::StatusResponse deposed;
  EXPECT_TRUE(WaitFor(
      [&] {
        deposed = StatusOf(old_leader);
        return deposed.role() == "deposed";
      },
      absl::Now() + absl::Seconds(10)))
      << "the old leader should learn the newer epoch from a follower that refuses it:\n"
      << deposed.DebugString() << group.LogTails();
  const uint64_t deposed_index = deposed.last_index();

  for (const char* key : {"fenced-1", "fenced-2", "fenced-3"}) {
    std::string message;
    EXPECT_EQ(refused(key, &message), grpc::StatusCode::FAILED_PRECONDITION) << message;
    EXPECT_TRUE(absl::StrContains(message, r1))
        << "the refusal should name the new leader " << r1 << ": " << message;
  }
  {
    KvClient client(old_leader);
    v1::DeleteResponse response;
    const grpc::Status s = client.Delete(first[200].key, &response);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << Describe(s);
  }
  EXPECT_EQ(StatusOf(old_leader).last_index(), deposed_index)
      << "a refused write must not reach the deposed leader's log";

  // The followers saw nothing of it.
  same = AwaitSameLastIndex(r1, r2, absl::Now() + absl::Seconds(10));
  ASSERT_TRUE(same.ok()) << same;
  const v1::StatusResponse s1 = StatusOf(r1);
  const v1::StatusResponse s2 = StatusOf(r2);
  EXPECT_EQ(s1.last_index(), new_index);
  EXPECT_EQ(s2.last_index(), new_index);
  EXPECT_EQ(s1.epoch(), old_epoch + 1);
  EXPECT_EQ(s2.epoch(), old_epoch + 1);
  EXPECT_EQ(s1.role(), "leader");
  EXPECT_EQ(s2.role(), "replica");
  EXPECT_EQ(s2.leader(), r1);
  ExpectHolds(r1, oracle, fenced_keys);
  ExpectHolds(r2, oracle, fenced_keys);
  const size_t compared = ExpectSameContents(r1, r2, keys_and_fenced, oracle.size());

  // The new leadership still replicates.
  Oracle after;
  WriteAll(r1, DistinctSets("after-", 20, rng()), &after);
  same = AwaitSameLastIndex(r1, r2, absl::Now() + absl::Seconds(10));
  ASSERT_TRUE(same.ok()) << same;
  ExpectHolds(r2, after);
  std::printf(
      "epoch %llu -> %llu; old leader deposed at index %llu (first write after restart: %s); "
      "R1 and R2 equal at index %llu over %zu keys; followers on the deposed leader: %s\n",
      static_cast<unsigned long long>(old_epoch), static_cast<unsigned long long>(s1.epoch()),
      static_cast<unsigned long long>(deposed_index), early_message.c_str(),
      static_cast<unsigned long long>(new_index), compared,
      [&] {
        std::string out;
        for (const v1::FollowerStatus& f : deposed.followers()) {
          absl::StrAppend(&out, f.address(), "=", f.state(), " ");
        }
        return out;
      }()
          .c_str());
}

// ---------------------------------------------------------------- 8

// Invariant: an async leader reports each follower in Status (and kvctl
// status); after a burst the follower's lag goes to zero and its acked index
// reaches the leader's last index, and the replica reports the same.
TEST_F(ReplicationIntegrationTest, AsyncLagVisibleAndReachesZero) {
  const uint64_t seed = Seed("AsyncLagVisibleAndReachesZero");
  ShardGroup group(Dir("group"), KV_SHARD_BIN, KV_REPLICA_BIN, 1);
  const absl::Status started = group.Start(Flags({"--ack=async"}), Flags({}));
  ASSERT_TRUE(started.ok()) << started;
  const std::string leader = group.leader().address();
  const std::string follower = group.follower_addresses()[0];
  EXPECT_EQ(StatusOf(leader).ack(), "async");

  // The burst, with Status polled beside it.
  std::atomic<bool> burst_done{false};
  uint64_t max_lag = 0;
  int polls = 0, listed = 0;
  std::set<std::string> states;
  std::thread watcher([&] {
    while (!burst_done) {
      absl::StatusOr<v1::StatusResponse> st = FetchStatus(leader);
      ++polls;
      if (!st.ok()) continue;
      if (const v1::FollowerStatus* f = FindFollower(*st, follower)) {
        ++listed;
        max_lag = std::max(max_lag, f->lag_entries());
        states.insert(f->state());
      }
      absl::SleepFor(absl::Milliseconds(20));  // A polling interval, not a wait for anything.
    }
  });
  Oracle oracle;
  WriteAll(leader, DistinctSets("burst-", 5000, seed), &oracle, nullptr, 64);
  burst_done = true;
  watcher.join();
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(listed, polls) << "every Status should list the follower";

  static const std::set<std::string> kStates = {"connecting", "streaming", "snapshotting",
                                                "disconnected", "refused"};
  for (const std::string& state : states) {
    EXPECT_EQ(kStates.count(state), 1u) << "unknown follower state '" << state << "'";
  }

  v1::StatusResponse status;
  v1::FollowerStatus f;
  EXPECT_TRUE(WaitFor(
      [&] {
        absl::StatusOr<v1::StatusResponse> st = FetchStatus(leader);
        if (!st.ok()) return false;
        status = *st;
        const v1::FollowerStatus* p = FindFollower(status, follower);
        if (p == nullptr) return false;
        f = *p;
        return f.lag_entries() == 0 && f.acked_index() == status.last_index() &&
               f.state() == "streaming" && f.lag_seconds() == 0;
      },
      absl::Now() + absl::Seconds(10)))
      << "the follower should catch up: leader last_index " << status.last_index() << "\n"
      << f.DebugString() << group.LogTails();
  EXPECT_EQ(f.address(), follower);
  EXPECT_EQ(f.snapshots_sent(), 0u);

  v1::StatusResponse on_replica;
  EXPECT_TRUE(WaitFor(
      [&] {
        on_replica = StatusOf(follower);
        return on_replica.lag_entries() == 0 && on_replica.last_index() == status.last_index();
      },
      absl::Now() + absl::Seconds(10)))
      << on_replica.DebugString();
  EXPECT_EQ(on_replica.role(), "replica");
  EXPECT_EQ(on_replica.leader(), leader);
  EXPECT_EQ(on_replica.lag_seconds(), 0.0);
  EXPECT_EQ(on_replica.epoch(), status.epoch());
  ExpectSameContents(leader, follower, KeysOf(oracle), oracle.size());

  const KvctlResult kvctl = RunKvctl(leader, {"status"});
  EXPECT_EQ(kvctl.exit_code, 0) << kvctl.ToString();
  EXPECT_TRUE(absl::StrContains(kvctl.out, follower))
      << "kvctl status on the leader should list the follower " << follower << "\n"
      << kvctl.ToString();
  std::printf(
      "5000 writes; %d Status polls during the burst, max lag seen %llu entries, states {%s}; "
      "caught up at index %llu\n",
      polls, static_cast<unsigned long long>(max_lag), absl::StrJoin(states, ",").c_str(),
      static_cast<unsigned long long>(status.last_index()));
}

// ---------------------------------------------------------------- 9

// Invariant: a leader that comes back with a shorter log than a follower has
// in the leader's own epoch (it lost its log tail) must not lead: overwriting
// the follower would drop writes that may have been acknowledged. It refuses
// writes saying why, and the follower keeps everything.
TEST_F(ReplicationIntegrationTest, LeaderThatLostItsTailRefusesToLead) {
  const uint64_t seed = Seed("LeaderThatLostItsTailRefusesToLead");
  ShardGroup group(Dir("group"), KV_SHARD_BIN, KV_REPLICA_BIN, 1);
  const absl::Status started = group.Start(Flags({"--ack=sync"}), Flags({}));
  ASSERT_TRUE(started.ok()) << started;
  const std::string leader = group.leader().address();
  const std::string follower = group.follower_addresses()[0];
  Oracle oracle;
  WriteAll(leader, DistinctSets("tail-", 500, seed), &oracle);
  ASSERT_FALSE(HasFailure());
  const uint64_t last = StatusOf(leader).last_index();
  ASSERT_EQ(StatusOf(follower).last_index(), last);  // Sync acks: it has every write.

  absl::StatusOr<ExitStatus> stopped = group.leader().Terminate();
  ASSERT_TRUE(stopped.ok() && stopped->Clean()) << group.leader().LogTail();
  // Lose the log's tail as a power cut under fsync=everysec could: cut bytes
  // off the end of the newest segment (recovery then cuts the torn record).
  const std::string data = group.leader().data_dir();
  std::vector<std::string> segments = FilesLike(data, "wal-", ".log");
  ASSERT_FALSE(segments.empty());
  std::sort(segments.begin(), segments.end());
  const std::string newest = data + "/" + segments.back();
  const uintmax_t size = std::filesystem::file_size(newest);
  ASSERT_GT(size, 3000u);
  std::filesystem::resize_file(newest, size - 3000);

  const absl::Status restarted = group.leader().RestartOnSameAddress();
  ASSERT_TRUE(restarted.ok()) << restarted << "\n" << group.leader().LogTail();
  v1::StatusResponse status;
  EXPECT_TRUE(WaitFor(
      [&] {
        status = StatusOf(leader);
        return status.role() == "deposed";
      },
      absl::Now() + absl::Seconds(10)))
      << status.DebugString() << group.LogTails();
  EXPECT_LT(status.last_index(), last);

  KvClient client(leader);
  v1::SetRequest request;
  request.set_key("after-the-loss");
  request.set_value("x");
  v1::SetResponse response;
  const grpc::Status s = client.Set(request, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << Describe(s);
  EXPECT_TRUE(absl::StrContains(s.error_message(), "lost its log tail")) << Describe(s);

  // The follower was not cut back, and can be promoted with everything.
  EXPECT_EQ(StatusOf(follower).last_index(), last);
  ExpectHolds(follower, oracle, {});
  KvClient replica(follower);
  v1::PromoteRequest promote;
  v1::PromoteResponse promoted;
  const grpc::Status p = replica.Promote(promote, &promoted);
  ASSERT_TRUE(p.ok()) << Describe(p);
  EXPECT_EQ(promoted.last_index(), last + 1);  // Its log plus the epoch record.
}


// ---------------------------------------------------------------- safety

// Invariant: a leader that restarts takes no write until its followers have
// answered, because only they can show it whether it lost writes. Here it
// lost its whole data directory while its follower was down: it must take no
// write meanwhile, and refuse to lead once the follower, which holds every
// acknowledged write, returns. (Before: a failed connection counted as "asked",
// the empty leader took writes at once at indexes the follower held, in the
// same epoch, and the follower later resumed as if they were one log.)
TEST_F(ReplicationIntegrationTest, LeaderThatLostItsDataWhileItsFollowerWasDownRefusesToLead) {
  const uint64_t seed = Seed("LeaderThatLostItsDataWhileItsFollowerWasDownRefusesToLead");
  ShardGroup group(Dir("group"), KV_SHARD_BIN, KV_REPLICA_BIN, 1);
  const absl::Status started =
      group.Start(Flags({"--ack=sync", "--fsync=always"}), Flags({"--fsync=always"}));
  ASSERT_TRUE(started.ok()) << started;
  const std::string follower = group.follower_addresses()[0];
  Oracle oracle;
  WriteAll(group.leader().address(), DistinctSets("acked-", 200, seed), &oracle);
  ASSERT_FALSE(HasFailure());
  const uint64_t follower_last = StatusOf(follower).last_index();

  ASSERT_TRUE(group.replica(0).Terminate().ok());
  ASSERT_TRUE(group.leader().KillHard().ok());
  std::filesystem::remove_all(group.leader().data_dir());
  const absl::Status restarted = group.leader().RestartOnSameAddress();
  ASSERT_TRUE(restarted.ok()) << restarted;
  const std::string leader = group.leader().address();

  // For longer than the start wait of an async leader: nothing is taken.
  KvClient client(leader, absl::Seconds(2));
  int accepted = 0;
  grpc::Status last;
  const absl::Time until = absl::Now() + absl::Milliseconds(3500);
  while (absl::Now() < until) {
    v1::SetRequest request;
    request.set_key(absl::StrCat("while-alone-", accepted));
    request.set_value("must not be acknowledged");
    *request.mutable_ack() = Ack(v1::ACK_MODE_LEADER_MEMORY);
    v1::SetResponse response;
    last = client.Set(request, &response);
    accepted += last.ok() ? 1 : 0;
    absl::SleepFor(absl::Milliseconds(50));  // Pacing the probe, not synchronising.
  }
  EXPECT_EQ(accepted, 0) << "a restarted leader took writes before any follower answered";
  EXPECT_EQ(last.error_code(), grpc::StatusCode::UNAVAILABLE) << Describe(last);

  const absl::Status back = group.replica(0).RestartOnSameAddress();
  ASSERT_TRUE(back.ok()) << back;
  v1::StatusResponse status;
  EXPECT_TRUE(WaitFor(
      [&] {
        status = StatusOf(leader);
        return status.role() == "deposed";
      },
      absl::Now() + absl::Seconds(10)))
      << status.DebugString() << group.LogTails();
  v1::SetResponse response;
  const grpc::Status s = client.Set("after", "x", &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << Describe(s);
  EXPECT_TRUE(absl::StrContains(s.error_message(), "lost its")) << Describe(s);
  // The follower kept every acknowledged write.
  EXPECT_EQ(StatusOf(follower).last_index(), follower_last);
  ExpectHolds(follower, oracle, {});
}

// Invariant: one epoch has one leader. Two promotions to the same epoch (as
// two operators, or a partition, could make): the follower that follows the
// first refuses the second, which stops leading rather than split the shard.
// (Before: the follower accepted an equal epoch from another leader.)
TEST_F(ReplicationIntegrationTest, FollowerRefusesASecondLeaderOfTheSameEpoch) {
  const uint64_t seed = Seed("FollowerRefusesASecondLeaderOfTheSameEpoch");
  ShardGroup group(Dir("group"), KV_SHARD_BIN, KV_REPLICA_BIN, 3);
  ASSERT_TRUE(group.Start(Flags({}), Flags({})).ok());
  const std::string r0 = group.follower_addresses()[0];
  const std::string r1 = group.follower_addresses()[1];
  const std::string r2 = group.follower_addresses()[2];
  Oracle oracle;
  WriteAll(group.leader().address(), DistinctSets("before-", 100, seed), &oracle);
  ASSERT_FALSE(HasFailure());
  for (const std::string& r : {r0, r1, r2}) {
    ASSERT_TRUE(AwaitSameLastIndex(group.leader().address(), r, absl::Now() + absl::Seconds(10)).ok());
  }
  const uint64_t epoch = StatusOf(group.leader().address()).epoch();
  ASSERT_TRUE(group.leader().KillHard().ok());

  // The second is forced (as a partition hiding some replica would make it),
  // yet r2 promised epoch + 1 to r0 and refuses to promise it again: forcing
  // overrules missing positions, never another candidate's promise.
  auto promote = [&](const std::string& node) {
    KvClient client(node);
    v1::PromoteRequest request;
    request.set_epoch(epoch + 1);
    request.set_force(node == r1);
    request.add_followers(r2);
    v1::PromoteResponse response;
    return client.Promote(request, &response);
  };
  const grpc::Status first = promote(r0);
  ASSERT_TRUE(first.ok()) << Describe(first);
  ASSERT_TRUE(::kvstore::testing::AwaitFollowersStreaming(r0, {r2}, absl::Now() + absl::Seconds(10)).ok());
  const grpc::Status second = promote(r1);
  EXPECT_EQ(second.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << Describe(second);
  EXPECT_NE(second.error_message().find(r2), std::string::npos) << Describe(second);
  EXPECT_NE(second.error_message().find("promise"), std::string::npos) << Describe(second);
  const v1::StatusResponse s1 = StatusOf(r1);
  EXPECT_NE(s1.role(), "leader") << "the second promotion of epoch " << epoch + 1
                                 << " led anyway: " << s1.DebugString();
  const v1::StatusResponse s2 = StatusOf(r2);
  EXPECT_EQ(s2.leader(), r0) << s2.DebugString();
  EXPECT_EQ(s2.epoch(), epoch + 1);
  KvClient second_leader(r1);
  v1::SetResponse response;
  const grpc::Status refused = second_leader.Set("split", "brain", &response);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << Describe(refused);
  // The first leader goes on, and r2 gets its writes.
  WriteAll(r0, DistinctSets("after-", 50, seed + 1), &oracle);
  ASSERT_TRUE(AwaitSameLastIndex(r0, r2, absl::Now() + absl::Seconds(10)).ok());
  ExpectHolds(r2, oracle, {});
}

// Invariant: promotion never silently drops writes another follower holds:
// a replica behind another is refused (naming it and how far), unless forced.
TEST_F(ReplicationIntegrationTest, PromoteRefusesAReplicaBehindAnotherUnlessForced) {
  const uint64_t seed = Seed("PromoteRefusesAReplicaBehindAnotherUnlessForced");
  ShardGroup group(Dir("group"), KV_SHARD_BIN, KV_REPLICA_BIN, 2);
  ASSERT_TRUE(group.Start(Flags({}), Flags({})).ok());
  const std::string r0 = group.follower_addresses()[0];
  const std::string r1 = group.follower_addresses()[1];
  Oracle oracle;
  WriteAll(group.leader().address(), DistinctSets("both-", 50, seed), &oracle);
  ASSERT_TRUE(AwaitSameLastIndex(group.leader().address(), r1, absl::Now() + absl::Seconds(10)).ok());
  ASSERT_TRUE(group.replica(1).Terminate().ok());
  WriteAll(group.leader().address(), DistinctSets("r0-only-", 50, seed + 1), &oracle);
  ASSERT_TRUE(AwaitSameLastIndex(group.leader().address(), r0, absl::Now() + absl::Seconds(10)).ok());
  ASSERT_TRUE(group.leader().KillHard().ok());
  ASSERT_TRUE(group.replica(1).RestartOnSameAddress().ok());

  KvctlResult refused = RunKvctl(r1, {absl::StrCat("--followers=", r0), "promote"});
  EXPECT_NE(refused.exit_code, 0) << refused.ToString();
  EXPECT_TRUE(absl::StrContains(refused.err, r0)) << refused.ToString();
  EXPECT_EQ(StatusOf(r1).role(), "replica");

  KvctlResult forced = RunKvctl(r1, {absl::StrCat("--followers=", r0), "--force", "promote"});
  EXPECT_EQ(forced.exit_code, 0) << forced.ToString();
  EXPECT_TRUE(absl::StrContains(forced.err, "may be lost")) << forced.ToString();
  EXPECT_EQ(StatusOf(r1).role(), "leader");
}

// Invariant: READ_MODE_LEADER reads see every acknowledged write, so a
// replica refuses them naming the leader; READ_MODE_ANY_REPLICA reads it serves.
TEST_F(ReplicationIntegrationTest, LeaderReadOnAReplicaIsRefusedNamingTheLeader) {
  ShardGroup group(Dir("group"), KV_SHARD_BIN, KV_REPLICA_BIN, 1);
  ASSERT_TRUE(group.Start(Flags({"--ack=sync"}), Flags({})).ok());
  const std::string leader = group.leader().address();
  const std::string replica = group.follower_addresses()[0];
  KvClient writer(leader);
  v1::SetResponse set;
  ASSERT_TRUE(writer.Set("k", "v", &set).ok());

  KvClient client(replica);
  v1::GetResponse got;
  const grpc::Status leader_read = client.Get("k", &got);
  EXPECT_EQ(leader_read.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << Describe(leader_read);
  EXPECT_TRUE(absl::StrContains(leader_read.error_message(), leader)) << Describe(leader_read);
  v1::GetRequest any;
  any.set_key("k");
  any.set_read_mode(v1::READ_MODE_ANY_REPLICA);
  const grpc::Status replica_read = client.Get(any, &got);
  ASSERT_TRUE(replica_read.ok()) << Describe(replica_read);
  EXPECT_EQ(got.value(), "v");
  EXPECT_EQ(got.version(), set.version());
}

// Invariant: a node that has nothing to serve says so. A replica no leader
// has reached answers reads with UNAVAILABLE, not found=false.
TEST_F(ReplicationIntegrationTest, AReplicaNoLeaderReachedAnswersUnavailable) {
  ServerProcess replica(Dir("replica"), KV_REPLICA_BIN, "replica");
  ASSERT_TRUE(replica.Start(Flags({})).ok());
  KvClient client(replica.address());
  v1::GetRequest any;
  any.set_key("anything");
  any.set_read_mode(v1::READ_MODE_ANY_REPLICA);
  v1::GetResponse got;
  const grpc::Status s = client.Get(any, &got);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << Describe(s) << " found=" << got.found();
}

// Invariant: a stream names its shard; a follower of another shard refuses it
// (naming both) instead of resyncing (wiping) itself from the wrong leader,
// and the misconfigured leader is not deposed by it.
TEST_F(ReplicationIntegrationTest, StreamForAnotherShardIsRefusedAndTheReplicaKeepsItsData) {
  const uint64_t seed = Seed("StreamForAnotherShardIsRefusedAndTheReplicaKeepsItsData");
  ShardGroup group(Dir("group"), KV_SHARD_BIN, KV_REPLICA_BIN, 1);
  ASSERT_TRUE(group.Start(Flags({"--shard=s0"}), Flags({"--shard=s0"})).ok());
  const std::string replica = group.follower_addresses()[0];
  Oracle oracle;
  WriteAll(group.leader().address(), DistinctSets("s0-", 100, seed), &oracle);
  ASSERT_TRUE(AwaitSameLastIndex(group.leader().address(), replica, absl::Now() + absl::Seconds(10)).ok());

  ServerProcess other(Dir("other"), KV_SHARD_BIN, "shard");
  ASSERT_TRUE(other.Start(Flags({"--shard=s1", absl::StrCat("--followers=", replica)})).ok());
  v1::StatusResponse status;
  const bool refused = WaitFor(
      [&] {
        status = StatusOf(other.address());
        const v1::FollowerStatus* f = FindFollower(status, replica);
        return f != nullptr && absl::StrContains(f->error(), "s0") &&
               absl::StrContains(f->error(), "s1");
      },
      absl::Now() + absl::Seconds(10));
  EXPECT_TRUE(refused) << status.DebugString();
  EXPECT_EQ(status.role(), "leader");
  const v1::StatusResponse r = StatusOf(replica);
  EXPECT_EQ(r.leader(), group.leader().address());
  EXPECT_EQ(r.shard(), "s0");
  ExpectHolds(replica, oracle, {});
}

}  // namespace
}  // namespace kvstore
