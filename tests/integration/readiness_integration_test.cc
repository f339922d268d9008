// Readiness as the health service reports it (what Kubernetes' readiness probe
// asks): grpc.health.v1.Health/Check for "kvstore.v1.KeyValue". A kv-shard
// leader is ready once it serves; a kv-replica only once it has caught up with
// its leader for the first time (the leader's last index when the stream
// began, through a snapshot install when the leader's log no longer reaches
// back to the replica); a deposed leader is not ready. "" stays SERVING from
// the moment the server listens.
//
// Invariant checked: whenever a replica reports SERVING, it holds at least
// every entry its leader had before the replica connected.
#include <signal.h>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kvstore/v1/admin.grpc.pb.h"
#include "kvstore/v1/kv.grpc.pb.h"
#include "tests/support/process.h"

namespace kvstore {
namespace {

using ::kvstore::testing::CompareContents;
using ::kvstore::testing::ContentDiff;
using ::kvstore::testing::FetchStatus;
using ::kvstore::testing::KvClient;
using ::kvstore::testing::ServerProcess;
using ::kvstore::testing::TempDir;
using ::kvstore::testing::WaitFor;

constexpr char kReadinessService[] = "kvstore.v1.KeyValue";

// grpc.health.v1.HealthCheckResponse.ServingStatus, and kNoAnswer when the
// call failed (e.g. NOT_FOUND for a service the server does not know).
enum class Health { kNoAnswer = -1, kUnknown = 0, kServing = 1, kNotServing = 2 };

const char* HealthName(Health h) {
  switch (h) {
    case Health::kNoAnswer:
      return "no answer";
    case Health::kUnknown:
      return "UNKNOWN";
    case Health::kServing:
      return "SERVING";
    case Health::kNotServing:
      return "NOT_SERVING";
  }
  return "?";
}

// Health/Check for `service` on `address`, encoding the two one-field messages
// by hand (Debian ships no generated health stubs): the request is field 1
// (string), the response field 1 (enum varint).
Health CheckService(const std::string& address, const std::string& service) {
  testing::KeepCallbackThreadsRunning();
  std::string request;
  request.push_back('\x0a');
  request.push_back(static_cast<char>(service.size()));  // Names here are < 128 bytes.
  request += service;
  grpc::Slice slice(request);
  grpc::ByteBuffer request_buffer(&slice, 1);
  grpc::ByteBuffer response;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  grpc::GenericStub stub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  absl::Notification done;
  grpc::Status status;
  stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request_buffer,
                 &response, [&](grpc::Status s) {
                   status = std::move(s);
                   done.Notify();
                 });
  done.WaitForNotification();
  if (!status.ok()) return Health::kNoAnswer;
  std::vector<grpc::Slice> slices;
  if (!response.Dump(&slices).ok()) return Health::kNoAnswer;
  std::string bytes;
  for (const grpc::Slice& s : slices) {
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  if (bytes.empty()) return Health::kUnknown;  // status 0 is not encoded.
  if (bytes.size() != 2 || bytes[0] != '\x08') return Health::kNoAnswer;
  return static_cast<Health>(bytes[1]);
}

// Snapshots only when a test asks for one.
std::vector<std::string> Flags(std::vector<std::string> flags) {
  flags.push_back("--fsync=no");
  flags.push_back("--snapshot-every-writes=0");
  flags.push_back("--snapshot-every-seconds=0");
  return flags;
}

std::string Key(int i) { return absl::StrCat("readiness-", i); }

// Writes keys 0..count-1 (200-byte values) through MultiSet, 500 per call,
// retrying while the leader still contacts its followers (UNAVAILABLE).
absl::Status LoadKeys(const std::string& leader, int count) {
  KvClient client(leader);
  for (int first = 0; first < count; first += 500) {
    v1::MultiSetRequest request;
    for (int i = first; i < first + 500 && i < count; ++i) {
      v1::SetItem* item = request.add_items();
      item->set_key(Key(i));
      item->set_value(std::string(200, static_cast<char>('a' + i % 26)));
    }
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    for (;;) {
      v1::MultiSetResponse response;
      const grpc::Status s = client.MultiSet(request, &response);
      if (s.ok()) {
        for (const v1::SetResult& r : response.results()) {
          if (r.has_error()) return absl::InternalError(r.error().DebugString());
        }
        break;
      }
      if (s.error_code() != grpc::StatusCode::UNAVAILABLE || absl::Now() > deadline) {
        return absl::InternalError(absl::StrCat("MultiSet: ", s.error_message()));
      }
      absl::SleepFor(absl::Milliseconds(20));  // Retry pacing, not synchronisation.
    }
  }
  return absl::OkStatus();
}

TEST(ReadinessIntegrationTest, LoneLeaderIsReadyWhenServing) {
  TempDir tmp;
  ServerProcess leader(tmp.Join("leader"), KV_SHARD_BIN, "leader");
  const absl::Status started = leader.Start(Flags({}));
  ASSERT_TRUE(started.ok()) << started;
  Health last = Health::kNoAnswer;
  EXPECT_TRUE(WaitFor(
      [&] {
        last = CheckService(leader.address(), kReadinessService);
        return last == Health::kServing;
      },
      absl::Now() + absl::Seconds(10)))
      << "kv-shard without followers reports " << HealthName(last) << " for " << kReadinessService
      << "\n"
      << leader.LogTail();
  EXPECT_EQ(CheckService(leader.address(), ""), Health::kServing);
}

// How the replica gets the leader's data: the leader's log (partial resync),
// or a snapshot because the log was pruned (full resync).
enum class CatchUp { kLog, kSnapshot };
void PrintTo(CatchUp c, std::ostream* os) { *os << (c == CatchUp::kLog ? "log" : "snapshot"); }

class ReplicaReadinessTest : public ::testing::TestWithParam<CatchUp> {};

// A replica started while its leader holds many keys is NOT_SERVING (for
// kvstore.v1.KeyValue; "" is SERVING) until it has them all, then SERVING.
TEST_P(ReplicaReadinessTest, NotServingUntilCaughtUp) {
  const bool snapshot = GetParam() == CatchUp::kSnapshot;
  constexpr int kKeys = 40000;
  TempDir tmp;

  // The replica first runs alone, to fix its address: no leader has contacted
  // it, so it is up ("") but not ready.
  ServerProcess replica(tmp.Join("replica"), KV_REPLICA_BIN, "replica");
  absl::Status s = replica.Start(Flags({"--segment-bytes=65536"}));
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(CheckService(replica.address(), ""), Health::kServing);
  EXPECT_EQ(CheckService(replica.address(), kReadinessService), Health::kNotServing)
      << "a replica no leader has contacted must not be ready";
  ASSERT_TRUE(replica.Terminate().ok());

  // The leader gets the data while the replica is down.
  std::vector<std::string> leader_flags = {"--followers=" + replica.last_address()};
  if (snapshot) {
    for (const char* f :
         {"--segment-bytes=65536", "--snapshots-to-keep=1", "--retain-log-bytes=0"}) {
      leader_flags.push_back(f);
    }
  }
  ServerProcess leader(tmp.Join("leader"), KV_SHARD_BIN, "leader");
  s = leader.Start(Flags(leader_flags));
  ASSERT_TRUE(s.ok()) << s;
  s = LoadKeys(leader.address(), kKeys);
  ASSERT_TRUE(s.ok()) << s << "\n" << leader.LogTail();
  if (snapshot) {
    KvClient client(leader.address());
    v1::SnapshotResponse response;
    const grpc::Status taken = client.Snapshot(&response);
    ASSERT_TRUE(taken.ok()) << taken.error_message();
  }
  absl::StatusOr<v1::StatusResponse> before = FetchStatus(leader.address());
  ASSERT_TRUE(before.ok()) << before.status();
  const uint64_t target = before->last_index();
  ASSERT_GE(target, static_cast<uint64_t>(kKeys / 500));
  if (snapshot) {
    ASSERT_GT(before->log().first_index(), 1u)
        << "setup: the leader's log should no longer start at index 1:\n"
        << before->DebugString();
  }

  // Freeze the leader while the replica comes back, so that the replica is
  // seen before any stream reaches it.
  ASSERT_TRUE(leader.process().Kill(SIGSTOP).ok());
  s = replica.RestartOnSameAddress();
  ASSERT_TRUE(s.ok()) << s;  // (The frozen leader is killed with the test.)
  EXPECT_EQ(CheckService(replica.address(), kReadinessService), Health::kNotServing)
      << "the replica's leader is frozen: it cannot have caught up";
  ASSERT_TRUE(leader.process().Kill(SIGCONT).ok());

  // From now on: SERVING implies last_index >= target. Status is read after
  // health, and a replica's index only grows, so a premature SERVING shows.
  int behind_not_serving = 0;  // NOT_SERVING seen with a partial state.
  int polls = 0;
  Health health = Health::kNoAnswer;
  uint64_t last_index = 0;
  const bool ready = WaitFor(
      [&] {
        ++polls;
        health = CheckService(replica.address(), kReadinessService);
        absl::StatusOr<v1::StatusResponse> st = FetchStatus(replica.address());
        if (!st.ok()) return false;
        last_index = st->last_index();
        if (health == Health::kServing) return true;
        if (last_index > 0 && last_index < target) ++behind_not_serving;
        return false;
      },
      absl::Now() + absl::Seconds(60), absl::Milliseconds(2));
  ASSERT_TRUE(ready) << "the replica never became ready: " << HealthName(health) << " at index "
                     << last_index << ", target " << target << "\n"
                     << replica.LogTail() << "\n"
                     << leader.LogTail();
  EXPECT_GE(last_index, target) << "SERVING before the replica held the leader's entries";

  std::vector<std::string> keys;
  for (int i = 0; i < kKeys; ++i) keys.push_back(Key(i));
  const ContentDiff diff = CompareContents(leader.address(), replica.address(), keys);
  EXPECT_TRUE(diff.Same()) << diff.ToString();
  std::printf(
      "readiness (%s): NOT_SERVING alone and with a frozen leader; %d of %d polls saw "
      "NOT_SERVING with a partial state; SERVING at index %llu (the leader had %llu); %zu keys "
      "the same\n",
      snapshot ? "snapshot" : "log", behind_not_serving, polls,
      static_cast<unsigned long long>(last_index), static_cast<unsigned long long>(target),
      diff.present);
}

// A leader that learns of a newer epoch (a replica was promoted and refuses
// its stream) is deposed: it takes no writes, and is no longer ready. The
// promoted replica is ready as a leader.
TEST(ReadinessIntegrationTest, DeposedLeaderIsNotReady) {
  TempDir tmp;
  testing::ShardGroup group(tmp.path(), KV_SHARD_BIN, KV_REPLICA_BIN, 1);
  absl::Status s = group.Start(Flags({}), Flags({}));
  ASSERT_TRUE(s.ok()) << s;
  const std::string leader = group.leader().address();
  const std::string replica = group.follower_addresses()[0];
  ASSERT_TRUE(WaitFor([&] { return CheckService(replica, kReadinessService) == Health::kServing; },
                      absl::Now() + absl::Seconds(20)))
      << "the replica of an empty leader never became ready\n"
      << group.LogTails();
  ASSERT_EQ(CheckService(leader, kReadinessService), Health::kServing);

  // Promoted with no followers of its own, the replica refuses the old
  // leader's next stream with its newer epoch.
  KvClient client(replica);
  v1::PromoteRequest request;
  v1::PromoteResponse response;
  const grpc::Status promoted = client.Promote(request, &response);
  ASSERT_TRUE(promoted.ok()) << promoted.error_message();

  std::string role;
  EXPECT_TRUE(WaitFor(
      [&] {
        absl::StatusOr<v1::StatusResponse> st = FetchStatus(leader);
        role = st.ok() ? st->role() : std::string(st.status().message());
        return role == "deposed";
      },
      absl::Now() + absl::Seconds(20)))
      << "the old leader was not deposed: role " << role << "\n"
      << group.LogTails();
  Health health = Health::kNoAnswer;
  EXPECT_TRUE(WaitFor(
      [&] {
        health = CheckService(leader, kReadinessService);
        return health == Health::kNotServing;
      },
      absl::Now() + absl::Seconds(10)))
      << "a deposed leader reports " << HealthName(health);
  EXPECT_EQ(CheckService(leader, ""), Health::kServing) << "the process is still up";
  EXPECT_EQ(CheckService(replica, kReadinessService), Health::kServing)
      << "the promoted replica leads: it is ready";
}

INSTANTIATE_TEST_SUITE_P(CatchUp, ReplicaReadinessTest,
                         ::testing::Values(CatchUp::kLog, CatchUp::kSnapshot),
                         [](const ::testing::TestParamInfo<CatchUp>& info) {
                           return std::string(info.param == CatchUp::kLog ? "FromLog"
                                                                          : "FromSnapshot");
                         });

}  // namespace
}  // namespace kvstore
