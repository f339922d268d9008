// kv-router as a real process in front of three real kv-shard processes on
// 127.0.0.1: the API round trip through the router, keys landing where the
// ring says, a dead shard failing only its own keys, SIGHUP reloads, two
// routers agreeing, and clean start-up refusals and shutdown.
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/ring/hash_ring.h"
#include "common/topology/topology.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvstore/v1/kv.grpc.pb.h"
#include "tests/support/process.h"
#include "tests/support/router_process.h"

namespace kvstore {
namespace {

using ::kvstore::testing::ExitStatus;
using ::kvstore::testing::KvClient;
using ::kvstore::testing::RouterProcess;
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

TEST_F(RouterIntegrationTest, SigtermStopsTheRouterCleanly) {
  v1::SetResponse set;
  ASSERT_TRUE(client_->Set("k", "v", &set).ok());
  absl::StatusOr<ExitStatus> exit = router_->Terminate();
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_TRUE(exit->Clean()) << exit->ToString();
  EXPECT_THAT(router_->LogTail(), HasSubstr("kv-router stopped cleanly"));
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

}  // namespace
}  // namespace kvstore
