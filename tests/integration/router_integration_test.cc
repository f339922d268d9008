// kv-router as a real process in front of three real kv-shard processes on
// 127.0.0.1: the API round trip through the router, keys landing where the
// ring says, a dead shard failing only its own keys, SIGHUP reloads, two
// routers agreeing, clean start-up refusals and shutdown, and kvctl against
// the router. Then in front of shard leaders with kv-replica followers:
// replica reads, a killed replica, and a promotion found without a restart.
// And `kvctl ring`, which needs no server.
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/ring/hash_ring.h"
#include "common/topology/topology.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvstore/v1/kv.grpc.pb.h"
#include "tests/support/process.h"
#include "tests/support/router_process.h"

#ifndef KV_REPLICA_BIN
#error "KV_REPLICA_BIN must name the kv-replica binary (see tests/CMakeLists.txt)"
#endif

namespace kvstore {
namespace {

using ::kvstore::testing::AwaitSameLastIndex;
using ::kvstore::testing::ExitStatus;
using ::kvstore::testing::FetchStatus;
using ::kvstore::testing::KvClient;
using ::kvstore::testing::KvctlResult;
using ::kvstore::testing::RouterProcess;
using ::kvstore::testing::RunKvctl;
using ::kvstore::testing::ShardGroup;
using ::kvstore::testing::ShardProcess;
using ::kvstore::testing::TempDir;
using ::kvstore::testing::WaitFor;
using ::kvstore::testing::WriteTopologyFile;
using ::testing::HasSubstr;

constexpr int kShards = 3;

std::string Describe(const grpc::Status& s) {
  return absl::StrCat("code ", s.error_code(), ": ", s.error_message());
}

class RouterIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 0; i < kShards; ++i) {
      shards_.push_back(std::make_unique<ShardProcess>(tmp_.Join(absl::StrCat("shard-", i))));
      ASSERT_TRUE(shards_[i]->Start().ok()) << "shard " << i;
      ShardTopology shard;
      shard.name = absl::StrCat("shard-", i);
      shard.leader = shards_[i]->address();
      topology_.shards.push_back(shard);
    }
    // vnodes left out of the file: the router's default, as for ring_ below.
    topology_.vnodes = 0;
    topology_path_ = tmp_.Join("topology.yaml");
    ASSERT_TRUE(WriteTopologyFile(topology_path_, topology_).ok());
    absl::StatusOr<HashRing> ring = HashRing::Build(topology_.ShardNames());
    ASSERT_TRUE(ring.ok());
    ring_ = std::make_unique<HashRing>(*std::move(ring));
    router_ = std::make_unique<RouterProcess>(tmp_.Join("router"));
    absl::Status started = router_->Start(topology_path_);
    ASSERT_TRUE(started.ok()) << started;
    client_ = std::make_unique<KvClient>(router_->address());
  }

  void TearDown() override {
    if (HasFailure()) {
      std::printf("--- tail of %s:\n%s\n", router_->log_path().c_str(), router_->LogTail().c_str());
      for (auto& shard : shards_) {
        std::printf("--- tail of %s:\n%s\n", shard->log_path().c_str(), shard->LogTail().c_str());
      }
    }
  }

  // `n` keys owned by shard `shard`, starting with `prefix`.
  std::vector<std::string> KeysOf(int shard, int n, const std::string& prefix) {
    std::vector<std::string> keys;
    for (int i = 0; static_cast<int>(keys.size()) < n; ++i) {
      std::string key = absl::StrCat(prefix, i);
      if (ring_->OwnerIndex(key) == shard) keys.push_back(key);
    }
    return keys;
  }

  // Sets `keys` through `client` (value "v:<key>") with one MultiSet.
  void SetAll(KvClient* client, const std::vector<std::string>& keys) {
    v1::MultiSetRequest request;
    for (const std::string& key : keys) {
      v1::SetItem* item = request.add_items();
      item->set_key(key);
      item->set_value("v:" + key);
    }
    v1::MultiSetResponse response;
    grpc::Status s = client->MultiSet(request, &response);
    ASSERT_TRUE(s.ok()) << Describe(s);
    ASSERT_EQ(response.results_size(), request.items_size());
    for (int i = 0; i < response.results_size(); ++i) {
      ASSERT_FALSE(response.results(i).has_error())
          << keys[i] << ": " << response.results(i).error().message();
    }
  }

  v1::MultiGetResponse GetAll(KvClient* client, const std::vector<std::string>& keys) {
    v1::MultiGetRequest request;
    for (const std::string& key : keys) request.add_keys(key);
    v1::MultiGetResponse response;
    grpc::Status s = client->MultiGet(request, &response);
    EXPECT_TRUE(s.ok()) << Describe(s);
    EXPECT_EQ(response.results_size(), request.keys_size());
    return response;
  }

  // Whether the server at `address` holds `key` (asked directly).
  bool Holds(const std::string& address, const std::string& key) {
    KvClient direct(address);
    v1::GetResponse got;
    grpc::Status s = direct.Get(key, &got);
    EXPECT_TRUE(s.ok()) << address << ": " << Describe(s);
    return got.found();
  }

  TempDir tmp_;  // First: removed last, after every process is gone.
  std::vector<std::unique_ptr<ShardProcess>> shards_;
  Topology topology_;
  std::string topology_path_;
  std::unique_ptr<HashRing> ring_;
  std::unique_ptr<RouterProcess> router_;
  std::unique_ptr<KvClient> client_;
};

TEST_F(RouterIntegrationTest, SetGetDeleteRoundTripThroughTheRouter) {
  v1::SetResponse set;
  grpc::Status s = client_->Set("greeting", std::string("hel\0lo", 6), &set);
  ASSERT_TRUE(s.ok()) << Describe(s);
  EXPECT_GT(set.version(), 0u);
  v1::GetResponse got;
  ASSERT_TRUE(client_->Get("greeting", &got).ok());
  EXPECT_TRUE(got.found());
  EXPECT_EQ(got.value(), std::string("hel\0lo", 6));
  EXPECT_EQ(got.version(), set.version());

  v1::DeleteResponse deleted;
  ASSERT_TRUE(client_->Delete("greeting", &deleted).ok());
  EXPECT_TRUE(deleted.deleted());
  ASSERT_TRUE(client_->Get("greeting", &got).ok());
  EXPECT_FALSE(got.found());
  ASSERT_TRUE(client_->Delete("greeting", &deleted).ok());
  EXPECT_FALSE(deleted.deleted());

  // Validation answers as a shard would.
  s = client_->Set("", "v", &set);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(), "key is empty");
  s = client_->Set(std::string(4097, 'k'), "v", &set);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("the limit is 4096 bytes"));
}

TEST_F(RouterIntegrationTest, MultiSetAndMultiGetKeepTheCallersOrderAcrossShards) {
  std::vector<std::string> keys;
  for (int i = 0; i < 200; ++i) keys.push_back(absl::StrCat("batch-", i));
  SetAll(client_.get(), keys);
  std::vector<std::string> asked = keys;
  asked.insert(asked.begin() + 100, "batch-never-written");
  v1::MultiGetResponse got = GetAll(client_.get(), asked);
  ASSERT_EQ(got.results_size(), static_cast<int>(asked.size()));
  for (size_t i = 0; i < asked.size(); ++i) {
    const v1::GetResult& r = got.results(static_cast<int>(i));
    EXPECT_FALSE(r.has_error()) << asked[i] << ": " << r.error().message();
    if (asked[i] == "batch-never-written") {
      EXPECT_FALSE(r.found());
    } else {
      EXPECT_TRUE(r.found()) << asked[i];
      EXPECT_EQ(r.value(), "v:" + asked[i]);
    }
  }
}

TEST_F(RouterIntegrationTest, CompareAndSetMismatchIsFailedPreconditionWithTheVersion) {
  v1::SetResponse first;
  ASSERT_TRUE(client_->Set("cas", "a", &first).ok());
  v1::SetRequest request;
  request.set_key("cas");
  request.set_value("b");
  request.set_if_version(first.version() + 1000);
  v1::SetResponse response;
  grpc::Status s = client_->Set(request, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << Describe(s);
  EXPECT_THAT(s.error_message(), HasSubstr(std::to_string(first.version())));
  request.set_if_version(0);  // Only if absent: it is not.
  EXPECT_EQ(client_->Set(request, &response).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  request.set_if_version(first.version());
  s = client_->Set(request, &response);
  ASSERT_TRUE(s.ok()) << Describe(s);
  EXPECT_GT(response.version(), first.version());

  // In a batch the mismatch is that item's error; the other items are written.
  v1::MultiSetRequest batch;
  v1::SetItem* stale = batch.add_items();
  stale->set_key("cas");
  stale->set_value("c");
  stale->set_if_version(first.version());
  v1::SetItem* fresh = batch.add_items();
  fresh->set_key("cas-other");
  fresh->set_value("d");
  v1::MultiSetResponse batch_response;
  ASSERT_TRUE(client_->MultiSet(batch, &batch_response).ok());
  EXPECT_EQ(batch_response.results(0).error().code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_FALSE(batch_response.results(1).has_error());
}

TEST_F(RouterIntegrationTest, TtlExpiresThroughTheRouter) {
  v1::SetRequest request;
  request.set_key("short-lived");
  request.set_value("v");
  request.set_ttl_ms(1000);
  v1::SetResponse set;
  const absl::Time written = absl::Now();
  ASSERT_TRUE(client_->Set(request, &set).ok());
  ASSERT_TRUE(client_->Set("long-lived", "v", &set).ok());
  v1::GetResponse got;
  ASSERT_TRUE(client_->Get("short-lived", &got).ok());
  if (absl::Now() - written < absl::Milliseconds(900)) {
    EXPECT_TRUE(got.found());
  }
  const bool expired =
      WaitFor([&] { return client_->Get("short-lived", &got).ok() && !got.found(); },
              absl::Now() + absl::Seconds(15), absl::Milliseconds(50));
  EXPECT_TRUE(expired);
  EXPECT_GE(absl::Now() - written, absl::Milliseconds(1000));
  ASSERT_TRUE(client_->Get("long-lived", &got).ok());
  EXPECT_TRUE(got.found());
}

TEST_F(RouterIntegrationTest, EachKeyIsStoredOnlyOnTheShardTheRingNames) {
  std::vector<std::string> keys;
  for (int i = 0; i < 150; ++i) keys.push_back(absl::StrCat("placed-", i));
  SetAll(client_.get(), keys);
  int checked[kShards] = {0, 0, 0};
  for (const std::string& key : keys) {
    const int owner = ring_->OwnerIndex(key);
    for (int s = 0; s < kShards; ++s) {
      EXPECT_EQ(Holds(shards_[s]->address(), key), s == owner) << key << " on shard-" << s;
    }
    ++checked[owner];
  }
  std::printf("keys per shard: %d %d %d\n", checked[0], checked[1], checked[2]);
  for (int s = 0; s < kShards; ++s) EXPECT_GT(checked[s], 0) << "shard-" << s;
}

TEST_F(RouterIntegrationTest, AKilledShardFailsOnlyItsOwnKeys) {
  std::vector<std::string> keys;
  for (int i = 0; i < 90; ++i) keys.push_back(absl::StrCat("survive-", i));
  SetAll(client_.get(), keys);
  ASSERT_TRUE(shards_[1]->KillHard().ok());

  v1::MultiGetResponse got = GetAll(client_.get(), keys);
  int failed = 0, served = 0;
  for (size_t i = 0; i < keys.size(); ++i) {
    const v1::GetResult& r = got.results(static_cast<int>(i));
    if (ring_->OwnerIndex(keys[i]) == 1) {
      ++failed;
      EXPECT_EQ(r.error().code(), grpc::StatusCode::UNAVAILABLE) << keys[i];
      EXPECT_THAT(r.error().message(), HasSubstr("shard-1"));
      EXPECT_FALSE(r.found());
    } else {
      ++served;
      EXPECT_FALSE(r.has_error()) << keys[i] << ": " << r.error().message();
      EXPECT_EQ(r.value(), "v:" + keys[i]);
    }
  }
  std::printf("%d keys failed with their shard, %d served\n", failed, served);
  EXPECT_GT(failed, 0);
  EXPECT_GT(served, 0);

  v1::GetResponse one;
  grpc::Status s = client_->Get(KeysOf(1, 1, "dead-")[0], &one);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(s.error_message(), HasSubstr("shard shard-1 at " + shards_[1]->last_address()));
  v1::SetResponse set;
  EXPECT_TRUE(client_->Set(KeysOf(0, 1, "alive-")[0], "v", &set).ok());
  EXPECT_TRUE(client_->Set(KeysOf(2, 1, "alive-")[0], "v", &set).ok());
}

TEST_F(RouterIntegrationTest, SighupReloadsTheTopology) {
  const std::vector<std::string> before = KeysOf(1, 5, "before-");
  SetAll(client_.get(), before);

  // shard-1 gets a new (empty) leader process; the old one is stopped.
  ShardProcess replacement(tmp_.Join("shard-1-new"));
  ASSERT_TRUE(replacement.Start().ok());
  ASSERT_TRUE(shards_[1]->Terminate().ok());
  topology_.shards[1].leader = replacement.address();
  ASSERT_TRUE(WriteTopologyFile(topology_path_, topology_).ok());
  absl::Status reloaded = router_->Reload();
  ASSERT_TRUE(reloaded.ok()) << reloaded;

  const std::vector<std::string> after = KeysOf(1, 5, "after-");
  SetAll(client_.get(), after);
  for (const std::string& key : after) EXPECT_TRUE(Holds(replacement.address(), key)) << key;
  // The old keys were on the old process; the new leader never had them.
  v1::MultiGetResponse got = GetAll(client_.get(), before);
  for (const v1::GetResult& r : got.results()) {
    EXPECT_FALSE(r.has_error()) << r.error().message();
    EXPECT_FALSE(r.found());
  }

  // A broken file is refused and the topology in use stays.
  { std::ofstream(topology_path_) << "shards: []\n"; }
  absl::Status refused = router_->Reload();
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.message(), HasSubstr("'shards' is empty"));
  const std::vector<std::string> still = KeysOf(1, 3, "still-");
  SetAll(client_.get(), still);
  for (const std::string& key : still) EXPECT_TRUE(Holds(replacement.address(), key)) << key;
}

// Invariant: with --watch-topology-ms, an edit of the topology file takes
// effect without a signal (as when Kubernetes updates a mounted ConfigMap).
TEST_F(RouterIntegrationTest, AChangedTopologyFileIsReloadedWithoutASignal) {
  RouterProcess watching(tmp_.Join("router-watch"));
  absl::Status started = watching.Start(topology_path_, {"--watch-topology-ms=100"});
  ASSERT_TRUE(started.ok()) << started;
  KvClient client(watching.address());

  ShardProcess replacement(tmp_.Join("shard-1-watched"));
  ASSERT_TRUE(replacement.Start().ok());
  topology_.shards[1].leader = replacement.address();
  ASSERT_TRUE(WriteTopologyFile(topology_path_, topology_).ok());

  const std::string key = KeysOf(1, 1, "watched-")[0];
  EXPECT_TRUE(WaitFor(
      [&] {
        v1::SetResponse set;
        return client.Set(key, "v", &set).ok() && Holds(replacement.address(), key);
      },
      absl::Now() + absl::Seconds(10)))
      << watching.LogTail();
  EXPECT_THAT(watching.LogTail(), HasSubstr("the topology file changed: topology reloaded"));
}

TEST_F(RouterIntegrationTest, TwoRoutersGiveTheSameAnswers) {
  // The second router takes its topology from a --config file.
  const std::string config = tmp_.Join("router2.yaml");
  std::ofstream(config) << "topology: " << topology_path_ << "\nforward-timeout-ms: 3000\n";
  RouterProcess second(tmp_.Join("router2"));
  absl::Status started = second.Start("", {absl::StrCat("--config=", config)});
  ASSERT_TRUE(started.ok()) << started;
  KvClient other(second.address());

  std::vector<std::string> even, odd, all;
  for (int i = 0; i < 100; ++i) {
    const std::string key = absl::StrCat("shared-", i);
    (i % 2 == 0 ? even : odd).push_back(key);
    all.push_back(key);
  }
  SetAll(client_.get(), even);
  SetAll(&other, odd);
  v1::DeleteResponse deleted;
  ASSERT_TRUE(other.Delete(even[0], &deleted).ok());
  EXPECT_TRUE(deleted.deleted());

  v1::MultiGetResponse from_first = GetAll(client_.get(), all);
  v1::MultiGetResponse from_second = GetAll(&other, all);
  ASSERT_EQ(from_first.results_size(), from_second.results_size());
  int present = 0;
  for (int i = 0; i < from_first.results_size(); ++i) {
    const v1::GetResult& a = from_first.results(i);
    const v1::GetResult& b = from_second.results(i);
    EXPECT_FALSE(a.has_error() || b.has_error()) << all[i];
    EXPECT_EQ(a.found(), b.found()) << all[i];
    EXPECT_EQ(a.value(), b.value()) << all[i];
    EXPECT_EQ(a.version(), b.version()) << all[i];
    EXPECT_EQ(a.found(), all[i] != even[0]) << all[i];
    if (a.found()) ++present;
  }
  EXPECT_EQ(present, 99);
  absl::StatusOr<ExitStatus> exit = second.Terminate();
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_TRUE(exit->Clean()) << exit->ToString();
}

// Values of the largest size, eight at once, each way, all on one shard and
// with one call to it out at a time before others wait: the router sends them
// to the shard together, but none fails because of the others.
TEST_F(RouterIntegrationTest, EightConcurrentOneMiBSetsThenGetsAllSucceed) {
  ASSERT_TRUE(router_->Terminate().ok());
  absl::Status started = router_->Start(topology_path_, {"--coalesce-in-flight=1"});
  ASSERT_TRUE(started.ok()) << started;
  client_ = std::make_unique<KvClient>(router_->address());
  constexpr int kCalls = 8;
  const std::vector<std::string> keys = KeysOf(0, kCalls, "large-");
  auto value_of = [](int i) { return std::string(1 << 20, static_cast<char>('a' + i)); };
  struct Call {
    grpc::ClientContext context;
    v1::SetRequest set;
    v1::SetResponse set_response;
    v1::GetRequest get;
    v1::GetResponse get_response;
    grpc::Status status;
  };
  std::vector<std::unique_ptr<Call>> calls;
  for (int round = 0; round < 2; ++round) {
    calls.clear();
    absl::Mutex mu;
    int done = 0;
    for (int i = 0; i < kCalls; ++i) {
      calls.push_back(std::make_unique<Call>());
      Call* c = calls.back().get();
      c->context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
      auto finished = [c, &mu, &done](grpc::Status s) {
        absl::MutexLock lock(&mu);
        c->status = std::move(s);
        ++done;
      };
      if (round == 0) {
        c->set.set_key(keys[i]);
        c->set.set_value(value_of(i));
        client_->kv()->async()->Set(&c->context, &c->set, &c->set_response, finished);
      } else {
        c->get.set_key(keys[i]);
        client_->kv()->async()->Get(&c->context, &c->get, &c->get_response, finished);
      }
    }
    {
      absl::MutexLock lock(&mu);
      mu.Await(absl::Condition(
          +[](int* n) { return *n == kCalls; }, &done));
    }
    for (int i = 0; i < kCalls; ++i) {
      ASSERT_TRUE(calls[i]->status.ok())
          << (round == 0 ? "Set " : "Get ") << i << ": " << Describe(calls[i]->status);
      if (round == 1) {
        EXPECT_TRUE(calls[i]->get_response.value() == value_of(i)) << "Get " << i;
      }
    }
  }
}

// --max-response-bytes on the router bounds the answer it gathers from the
// shards (each of whose slices is under the shards' own limit), unary and
// pipelined alike.
TEST_F(RouterIntegrationTest, MultiGetLargerThanTheRoutersMaxResponseBytesIsResourceExhausted) {
  ASSERT_TRUE(router_->Terminate().ok());
  absl::Status started = router_->Start(topology_path_, {"--max-response-bytes=100000"});
  ASSERT_TRUE(started.ok()) << started;
  client_ = std::make_unique<KvClient>(router_->address());
  std::vector<std::string> keys;
  for (int shard = 0; shard < kShards; ++shard) {
    for (const std::string& key : KeysOf(shard, 4, "ten-kb-")) keys.push_back(key);
  }
  v1::MultiSetRequest set;
  for (const std::string& key : keys) {
    v1::SetItem* item = set.add_items();
    item->set_key(key);
    item->set_value(std::string(10'000, 'v'));
  }
  v1::MultiSetResponse set_response;
  ASSERT_TRUE(client_->MultiSet(set, &set_response).ok());
  v1::MultiGetRequest request;
  for (int i = 0; i < 3; ++i) {
    for (const std::string& key : keys) request.add_keys(key);  // 36 keys, 360 KB.
  }

  v1::MultiGetResponse got;
  grpc::Status s = client_->MultiGet(request, &got);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << Describe(s);
  EXPECT_THAT(s.error_message(), HasSubstr("100000 bytes (--max-response-bytes)"));

  std::vector<v1::PipelineRequest> requests(1);
  requests[0].set_id(1);
  *requests[0].mutable_multi_get() = request;
  std::vector<v1::PipelineResponse> answers;
  s = client_->Pipeline(requests, &answers);
  ASSERT_TRUE(s.ok()) << Describe(s);
  ASSERT_EQ(answers.size(), 1u);
  EXPECT_EQ(answers[0].status().code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(answers[0].status().message(), HasSubstr("--max-response-bytes"));
}

TEST_F(RouterIntegrationTest, SigtermStopsTheRouterCleanly) {
  v1::SetResponse set;
  ASSERT_TRUE(client_->Set("k", "v", &set).ok());
  absl::StatusOr<ExitStatus> exit = router_->Terminate();
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_TRUE(exit->Clean()) << exit->ToString();
  EXPECT_THAT(router_->LogTail(), HasSubstr("kv-router stopped cleanly"));
}

TEST_F(RouterIntegrationTest, KvctlStatusOnTheRouterSaysRouterAndPromoteNamesTheShards) {
  KvctlResult status = RunKvctl(router_->address(), {"status"});
  ASSERT_EQ(status.exit_code, 0) << status.ToString();
  EXPECT_THAT(status.out, HasSubstr("role:         router\n"));
  EXPECT_THAT(status.out, HasSubstr("address:      " + router_->address() + "\n"));
  EXPECT_THAT(status.out, HasSubstr("version:      "));
  EXPECT_THAT(status.out, ::testing::Not(HasSubstr("snapshot:")));
  KvctlResult json = RunKvctl(router_->address(), {"--json", "status"});
  ASSERT_EQ(json.exit_code, 0) << json.ToString();
  EXPECT_THAT(json.out, HasSubstr("\"role\":\"router\""));

  KvctlResult promote = RunKvctl(router_->address(), {"promote"});
  EXPECT_EQ(promote.exit_code, 5) << promote.ToString();
  EXPECT_THAT(promote.err, HasSubstr("UNIMPLEMENTED"));
  EXPECT_THAT(promote.err, HasSubstr("call Admin.Promote on the replica"));
  KvctlResult snapshot = RunKvctl(router_->address(), {"snapshot"});
  EXPECT_EQ(snapshot.exit_code, 5) << snapshot.ToString();
  EXPECT_THAT(snapshot.err, HasSubstr("call Admin.Snapshot on a shard node"));
  // The data commands still work through it.
  KvctlResult set = RunKvctl(router_->address(), {"set", "via-kvctl", "v"});
  EXPECT_EQ(set.exit_code, 0) << set.ToString();
}

TEST_F(RouterIntegrationTest, StartUpRefusesAMissingOrBadTopology) {
  RouterProcess bad(tmp_.Join("bad-router"));
  absl::StatusOr<ExitStatus> exit = bad.RunExpectingExit(tmp_.Join("missing.yaml"));
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_EQ(exit->code, 2) << exit->ToString();
  EXPECT_THAT(bad.LogTail(), HasSubstr("missing.yaml: cannot read the file"));

  const std::string broken = tmp_.Join("broken.yaml");
  std::ofstream(broken) << "shards:\n  - name: a\n    leader: 127.0.0.1:1\n  - name: a\n"
                        << "    leader: 127.0.0.1:2\n";
  exit = bad.RunExpectingExit(broken);
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_EQ(exit->code, 2) << exit->ToString();
  EXPECT_THAT(bad.LogTail(), HasSubstr("broken.yaml:4: shard name 'a' appears twice"));
}

// ---------------------------------------------------------------- with replicas

// Two shards, each a kv-shard leader with two kv-replica followers, behind a
// router that probes every 200 ms.
class RouterReplicationIntegrationTest : public ::testing::Test {
 protected:
  static constexpr int kGroups = 2;
  static constexpr int kProbeIntervalMs = 200;

  void SetUp() override {
    for (int i = 0; i < kGroups; ++i) {
      groups_.push_back(std::make_unique<ShardGroup>(tmp_.Join(absl::StrCat("shard-", i)),
                                                     KV_SHARD_BIN, KV_REPLICA_BIN, 2));
      const absl::Status started = groups_[i]->Start({}, {});
      ASSERT_TRUE(started.ok()) << "shard " << i << ": " << started;
      ShardTopology shard;
      shard.name = absl::StrCat("shard-", i);
      shard.leader = groups_[i]->leader().address();
      shard.replicas = groups_[i]->follower_addresses();
      topology_.shards.push_back(shard);
    }
    topology_.vnodes = 0;
    topology_path_ = tmp_.Join("topology.yaml");
    ASSERT_TRUE(WriteTopologyFile(topology_path_, topology_).ok());
    absl::StatusOr<HashRing> ring = HashRing::Build(topology_.ShardNames());
    ASSERT_TRUE(ring.ok());
    ring_ = std::make_unique<HashRing>(*std::move(ring));
    router_ = std::make_unique<RouterProcess>(tmp_.Join("router"));
    const absl::Status started =
        router_->Start(topology_path_, {absl::StrCat("--probe-interval-ms=", kProbeIntervalMs)});
    ASSERT_TRUE(started.ok()) << started;
    client_ = std::make_unique<KvClient>(router_->address(), absl::Seconds(5));
  }

  void TearDown() override {
    if (HasFailure()) {
      std::printf("--- tail of %s:\n%s\n", router_->log_path().c_str(), router_->LogTail().c_str());
      for (auto& group : groups_) std::printf("%s\n", group->LogTails().c_str());
    }
  }

  std::vector<std::string> KeysOf(int shard, int n, const std::string& prefix) {
    std::vector<std::string> keys;
    for (int i = 0; static_cast<int>(keys.size()) < n; ++i) {
      std::string key = absl::StrCat(prefix, i);
      if (ring_->OwnerIndex(key) == shard) keys.push_back(key);
    }
    return keys;
  }

  grpc::Status ReadAny(const std::string& key, v1::GetResponse* got) {
    v1::GetRequest request;
    request.set_key(key);
    request.set_read_mode(v1::READ_MODE_ANY_REPLICA);
    return client_->Get(request, got);
  }

  TempDir tmp_;  // First: removed last, after every process is gone.
  std::vector<std::unique_ptr<ShardGroup>> groups_;
  Topology topology_;
  std::string topology_path_;
  std::unique_ptr<HashRing> ring_;
  std::unique_ptr<RouterProcess> router_;
  std::unique_ptr<KvClient> client_;
};

// Invariant: a write acknowledged by the leader is, after replication,
// what every replica read through the router returns (several reads in a row,
// so the round robin has passed every node of the shard).
TEST_F(RouterReplicationIntegrationTest, ReplicaReadsThroughTheRouterSeeAWriteEventually) {
  const std::vector<std::string> keys = {KeysOf(0, 1, "seen-")[0], KeysOf(1, 1, "seen-")[0]};
  std::vector<uint64_t> versions;
  for (const std::string& key : keys) {
    v1::SetResponse set;
    const grpc::Status s = client_->Set(key, "v:" + key, &set);
    ASSERT_TRUE(s.ok()) << Describe(s);
    versions.push_back(set.version());
  }
  int reads = 0, stale = 0;
  int in_a_row = 0;
  const bool seen = WaitFor(
      [&] {
        for (size_t k = 0; k < keys.size(); ++k) {
          v1::GetResponse got;
          const grpc::Status s = ReadAny(keys[k], &got);
          ++reads;
          if (!s.ok()) {
            ADD_FAILURE() << keys[k] << ": " << Describe(s);
            return true;
          }
          if (!got.found() || got.version() != versions[k] || got.value() != "v:" + keys[k]) {
            ++stale;
            in_a_row = 0;
            return false;
          }
        }
        return ++in_a_row >= 9;  // Three rounds over the three nodes of each shard.
      },
      absl::Now() + absl::Seconds(10));
  EXPECT_TRUE(seen) << reads << " reads, " << stale << " stale";
  // The replicas really hold it: asked directly.
  for (int g = 0; g < kGroups; ++g) {
    for (const std::string& replica : groups_[g]->follower_addresses()) {
      KvClient direct(replica);
      v1::GetRequest get;
      get.set_key(keys[g]);
      get.set_read_mode(v1::READ_MODE_ANY_REPLICA);
      v1::GetResponse got;
      ASSERT_TRUE(direct.Get(get, &got).ok());
      EXPECT_TRUE(got.found()) << keys[g] << " on " << replica;
    }
  }
  // A MultiGet over both shards with replica reads.
  v1::MultiGetRequest batch;
  batch.set_read_mode(v1::READ_MODE_ANY_REPLICA);
  for (const std::string& key : keys) batch.add_keys(key);
  v1::MultiGetResponse got;
  ASSERT_TRUE(client_->MultiGet(batch, &got).ok());
  for (int i = 0; i < got.results_size(); ++i) {
    EXPECT_FALSE(got.results(i).has_error()) << got.results(i).error().message();
    EXPECT_EQ(got.results(i).version(), versions[i]);
  }
  std::printf("%d replica reads, %d of them stale before every node had the writes\n", reads,
              stale);
}

// Invariant: with one replica of a shard killed (-9), every replica read of
// that shard through the router succeeds, before and after the probes mark
// the replica down, and returns the acknowledged value.
TEST_F(RouterReplicationIntegrationTest, AKilledReplicaIsSkippedAndReplicaReadsKeepSucceeding) {
  const std::vector<std::string> keys = KeysOf(0, 20, "kept-");
  v1::MultiSetRequest request;
  for (const std::string& key : keys) {
    v1::SetItem* item = request.add_items();
    item->set_key(key);
    item->set_value("v:" + key);
  }
  v1::MultiSetResponse set;
  ASSERT_TRUE(client_->MultiSet(request, &set).ok());
  for (const std::string& replica : groups_[0]->follower_addresses()) {
    const absl::Status same = AwaitSameLastIndex(groups_[0]->leader().address(), replica,
                                                 absl::Now() + absl::Seconds(10));
    ASSERT_TRUE(same.ok()) << same;
  }
  const std::string dead = groups_[0]->replica(0).address();
  ASSERT_TRUE(groups_[0]->replica(0).KillHard().ok());

  int reads = 0;
  auto read_all = [&](const char* phase) {
    for (const std::string& key : keys) {
      v1::GetResponse got;
      const grpc::Status s = ReadAny(key, &got);
      ++reads;
      ASSERT_TRUE(s.ok()) << phase << ", " << key << ": " << Describe(s);
      ASSERT_TRUE(got.found()) << phase << ", " << key;
      EXPECT_EQ(got.value(), "v:" + key);
    }
  };
  // Until the router notices (within one probe interval or so): the read
  // that meets the dead node is retried on the next one.
  const std::string skipped = absl::StrCat("Backend ", dead, " (shard-0 replica): skipped");
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (router_->CountLogLines(skipped) == 0 && absl::Now() < deadline) {
    read_all("before the probe");
    if (HasFatalFailure()) return;
  }
  ASSERT_GT(router_->CountLogLines(skipped), 0) << router_->LogTail();
  const int before = reads;
  // From now on the dead replica is not even tried.
  for (int round = 0; round < 10; ++round) {
    read_all("after the probe");
    if (HasFatalFailure()) return;
  }
  v1::MultiGetRequest batch;
  batch.set_read_mode(v1::READ_MODE_ANY_REPLICA);
  for (const std::string& key : keys) batch.add_keys(key);
  for (int round = 0; round < 10; ++round) {
    v1::MultiGetResponse got;
    ASSERT_TRUE(client_->MultiGet(batch, &got).ok());
    for (const v1::GetResult& r : got.results()) {
      ASSERT_FALSE(r.has_error()) << r.error().message();
      EXPECT_TRUE(r.found());
    }
  }
  std::printf("%d replica reads before the probe marked %s down, %d after, all served\n", before,
              dead.c_str(), reads - before);
}

// Invariant: after the leader stops and a replica is promoted with
// Admin.Promote, writes through the same router (no restart, no reload) reach
// the new leader within a few seconds; the change is logged once.
TEST_F(RouterReplicationIntegrationTest, APromotedReplicaTakesTheWritesWithoutARouterRestart) {
  const std::vector<std::string> keys = KeysOf(0, 4, "moved-");
  v1::SetResponse first;
  ASSERT_TRUE(client_->Set(keys[0], "before", &first).ok());
  const std::string old_leader = groups_[0]->leader().address();
  const std::string r0 = groups_[0]->follower_addresses()[0];
  const std::string r1 = groups_[0]->follower_addresses()[1];
  for (const std::string& replica : {r0, r1}) {
    const absl::Status same =
        AwaitSameLastIndex(old_leader, replica, absl::Now() + absl::Seconds(10));
    ASSERT_TRUE(same.ok()) << same;
  }
  absl::StatusOr<v1::StatusResponse> leader_status = FetchStatus(groups_[0]->leader().address());
  ASSERT_TRUE(leader_status.ok()) << leader_status.status();
  absl::StatusOr<ExitStatus> stopped = groups_[0]->leader().Terminate();
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  {
    KvClient replica(r0);
    v1::PromoteRequest promote;
    promote.add_followers(r1);
    v1::PromoteResponse promoted;
    const grpc::Status s = replica.Promote(promote, &promoted);
    ASSERT_TRUE(s.ok()) << Describe(s);
    EXPECT_EQ(promoted.epoch(), leader_status->epoch() + 1);
  }
  const absl::Time promoted_at = absl::Now();

  v1::SetResponse set;
  grpc::Status last;
  int attempts = 0;
  const bool written = WaitFor(
      [&] {
        ++attempts;
        last = client_->Set(keys[1], "after", &set);
        return last.ok();
      },
      promoted_at + absl::Seconds(5), absl::Milliseconds(50));
  ASSERT_TRUE(written) << "after " << attempts << " attempts: " << Describe(last);
  const absl::Duration took = absl::Now() - promoted_at;
  EXPECT_GT(set.version(), first.version());
  {
    KvClient direct(r0);
    v1::GetResponse got;
    ASSERT_TRUE(direct.Get(keys[1], &got).ok());
    EXPECT_TRUE(got.found());
    EXPECT_EQ(got.value(), "after");
  }
  // Everything of the shard now goes there: leader reads, deletes, batches.
  v1::GetResponse got;
  ASSERT_TRUE(client_->Get(keys[0], &got).ok());
  EXPECT_EQ(got.value(), "before");
  v1::DeleteResponse deleted;
  ASSERT_TRUE(client_->Delete(keys[0], &deleted).ok());
  EXPECT_TRUE(deleted.deleted());
  v1::MultiSetRequest batch;
  for (const std::string& key : {keys[2], keys[3], KeysOf(1, 1, "other-")[0]}) {
    v1::SetItem* item = batch.add_items();
    item->set_key(key);
    item->set_value("batch");
  }
  v1::MultiSetResponse batch_set;
  ASSERT_TRUE(client_->MultiSet(batch, &batch_set).ok());
  for (const v1::SetResult& r : batch_set.results()) {
    EXPECT_FALSE(r.has_error()) << r.error().message();
  }
  ASSERT_TRUE(ReadAny(keys[1], &got).ok());

  const std::string change = "Leader change: shard shard-0 writes now go to " + r0;
  EXPECT_EQ(router_->CountLogLines(change), 1) << router_->LogTail();
  EXPECT_EQ(router_->CountLogLines("Leader change:"), 1) << router_->LogTail();
  const absl::StatusOr<v1::StatusResponse> status = FetchStatus(r0);
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_EQ(status->role(), "leader");
  std::printf("writes reached the promoted replica %s %s after the promotion (%d attempts)\n",
              r0.c_str(), absl::FormatDuration(took).c_str(), attempts);
}

// Invariant: a deposed node never takes a write through the router, even
// when a reload names it as the leader again; the writes find the new leader
// without any failing for another reason than UNAVAILABLE (retry).
TEST_F(RouterReplicationIntegrationTest, AReloadNamingTheDeposedOldLeaderKeepsWritesOnTheNewOne) {
  const std::vector<std::string> keys = KeysOf(0, 40, "fenced-");
  const std::string old_leader = groups_[0]->leader().address();
  const std::string r0 = groups_[0]->follower_addresses()[0];
  const std::string r1 = groups_[0]->follower_addresses()[1];
  ASSERT_TRUE(groups_[0]->leader().Terminate().ok());
  {
    KvClient replica(r0);
    v1::PromoteRequest promote;
    promote.add_followers(r1);
    v1::PromoteResponse promoted;
    const grpc::Status s = replica.Promote(promote, &promoted);
    ASSERT_TRUE(s.ok()) << Describe(s);
  }
  ASSERT_TRUE(router_->AwaitLogLine("Leader change: shard shard-0 writes now go to " + r0).ok())
      << router_->LogTail();
  // The old leader comes back on its address and learns it was replaced.
  const absl::Status restarted = groups_[0]->leader().RestartOnSameAddress();
  ASSERT_TRUE(restarted.ok()) << restarted;
  ASSERT_TRUE(WaitFor(
      [&] {
        absl::StatusOr<v1::StatusResponse> status = FetchStatus(old_leader);
        return status.ok() && status->role() == "deposed";
      },
      absl::Now() + absl::Seconds(10)))
      << groups_[0]->LogTails();
  // ...and the router's probes see that.
  const std::string deposed_seen = absl::StrCat(
      "Backend ", old_leader, " (shard-0 leader): skipped for replica reads: role is 'deposed'");
  ASSERT_TRUE(router_->AwaitLogLine(deposed_seen).ok()) << router_->LogTail();
  const uint64_t deposed_index = FetchStatus(old_leader)->last_index();

  // The reload names the old leader again (the file did not change). What
  // the probes know applies at once: no write goes to it, none fails.
  ASSERT_TRUE(router_->Reload().ok());
  int unavailable = 0;
  std::vector<std::string> written;
  for (const std::string& key : keys) {
    v1::SetResponse set;
    const grpc::Status s = client_->Set(key, "v", &set);
    if (s.ok()) {
      written.push_back(key);
    } else {
      ++unavailable;
      EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << key << ": " << Describe(s);
    }
  }
  EXPECT_EQ(unavailable, 0);
  EXPECT_EQ(router_->CountLogLines("Leader change: shard shard-0 writes now go to " + r0), 2)
      << router_->LogTail();
  EXPECT_THAT(router_->LogTail(), HasSubstr(old_leader + " reports role deposed"));
  EXPECT_EQ(router_->CountLogLines("refused a write naming it"), 0) << router_->LogTail();
  EXPECT_EQ(FetchStatus(old_leader)->last_index(), deposed_index);
  KvClient direct(r0);
  for (const std::string& key : written) {
    v1::GetResponse got;
    ASSERT_TRUE(direct.Get(key, &got).ok());
    EXPECT_TRUE(got.found()) << key;
  }
  std::printf("after the reload: %zu writes served (by %s), %d UNAVAILABLE\n", written.size(),
              r0.c_str(), unavailable);
}

// ---------------------------------------------------------------- kvctl ring

TEST(KvctlRingTest, PrintsTheRingAndTheOwnerAndHashOfEachKeyWithoutAServer) {
  TempDir tmp;
  Topology topology;
  for (int i = 0; i < 3; ++i) {
    // Addresses nobody listens on: the command is offline.
    topology.shards.push_back(
        {absl::StrCat("shard-", i), absl::StrCat("127.0.0.1:", 1 + i),
         i == 0 ? std::vector<std::string>{"127.0.0.1:9"} : std::vector<std::string>{}});
  }
  topology.vnodes = 0;
  const std::string path = tmp.Join("topology.yaml");
  ASSERT_TRUE(WriteTopologyFile(path, topology).ok());

  // The worked example of docs/ring.md.
  KvctlResult r = RunKvctl(
      "", {"--topology=" + path, "ring", "greeting", "user:42", "session-42", "a", "key-0001"});
  ASSERT_EQ(r.exit_code, 0) << r.ToString();
  EXPECT_THAT(r.out, HasSubstr("shards:       3\n"));
  EXPECT_THAT(r.out, HasSubstr("vnodes:       1024\n"));
  EXPECT_THAT(r.out, HasSubstr("tokens:       3072\n"));
  EXPECT_THAT(
      r.out,
      HasSubstr("shard:        shard-0 share=33.40% leader=127.0.0.1:1 replicas=127.0.0.1:9\n"));
  EXPECT_THAT(r.out,
              HasSubstr("shard:        shard-1 share=33.61% leader=127.0.0.1:2 replicas=-\n"));
  EXPECT_THAT(r.out, HasSubstr("shard:        shard-2 share=32.99%"));
  EXPECT_THAT(r.out, HasSubstr("greeting\tshard-1\t0xe7c5ca42cd4bed7f\n"
                               "user:42\tshard-1\t0xdc1fea7da8d2d1c2\n"
                               "session-42\tshard-2\t0x2389e998631f091e\n"
                               "a\tshard-0\t0xd24ec4f1a98c6e5b\n"
                               "key-0001\tshard-0\t0x6d0dee4bbd2ca30b\n"));

  // Without keys: the summary alone.
  r = RunKvctl("", {"--topology=" + path, "ring"});
  ASSERT_EQ(r.exit_code, 0) << r.ToString();
  EXPECT_THAT(r.out, ::testing::EndsWith("replicas=-\n"));
}

TEST(KvctlRingTest, AMissingOrBadTopologyIsAUsageError) {
  TempDir tmp;
  KvctlResult r = RunKvctl("", {"ring", "k"});
  EXPECT_EQ(r.exit_code, 2) << r.ToString();
  EXPECT_THAT(r.err, HasSubstr("kvctl --topology=FILE ring"));
  r = RunKvctl("", {"--topology=" + tmp.Join("missing.yaml"), "ring"});
  EXPECT_EQ(r.exit_code, 2) << r.ToString();
  EXPECT_THAT(r.err, HasSubstr("missing.yaml: cannot read the file"));
  const std::string broken = tmp.Join("broken.yaml");
  std::ofstream(broken) << "shards: []\n";
  r = RunKvctl("", {"--topology=" + broken, "ring"});
  EXPECT_EQ(r.exit_code, 2) << r.ToString();
  EXPECT_THAT(r.err, HasSubstr("'shards' is empty"));
  // --help lists it.
  r = RunKvctl("", {"--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.out, HasSubstr("ring [KEY...]"));
  EXPECT_THAT(r.out, HasSubstr("--topology="));
}

}  // namespace
}  // namespace kvstore
