// KvService on the default reactor, without a server: request validation, the
// error codes the API promises, and that a rejected request writes nothing.
#include "services/node/kv_service.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/test/default_reactor_test_peer.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/server/grpc_status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/fake_clock.h"
#include "tests/support/fake_file_system.h"

namespace kvstore {
namespace {

using ::testing::HasSubstr;

class KvServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StoreOptions o;
    o.dir = "/data";
    o.fs = &fs_;
    o.clock = &clock_;
    o.background_maintenance = false;
    absl::StatusOr<std::unique_ptr<Store>> s = Store::Open(o);
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = *std::move(s);
    limits_.max_value_bytes = 100;
    service_ = std::make_unique<KvService>(store_.get(), limits_);
  }

  // Runs one unary method and waits for its Finish.
  template <typename Method, typename Request, typename Response>
  grpc::Status Call(Method method, const Request& request, Response* response) {
    grpc::CallbackServerContext context;
    absl::Notification finished;
    grpc::Status status;
    grpc::testing::DefaultReactorTestPeer peer(&context, [&](grpc::Status s) {
      status = std::move(s);
      finished.Notify();
    });
    (service_.get()->*method)(&context, &request, response);
    finished.WaitForNotification();
    return status;
  }

  grpc::Status Set(const std::string& key, const std::string& value, v1::SetResponse* out) {
    v1::SetRequest request;
    request.set_key(key);
    request.set_value(value);
    return Call(&KvService::Set, request, out);
  }

  testing::FakeFileSystem fs_;
  testing::FakeClock clock_;
  std::unique_ptr<Store> store_;
  RequestLimits limits_;
  std::unique_ptr<KvService> service_;
};

TEST_F(KvServiceTest, SetThenGetRoundTrips) {
  v1::SetResponse set;
  ASSERT_TRUE(Set("k", std::string("a\0b", 3), &set).ok());
  v1::GetRequest get;
  get.set_key("k");
  v1::GetResponse got;
  ASSERT_TRUE(Call(&KvService::Get, get, &got).ok());
  EXPECT_TRUE(got.found());
  EXPECT_EQ(got.value(), std::string("a\0b", 3));
  EXPECT_EQ(got.version(), set.version());
}

TEST_F(KvServiceTest, MissingKeyIsFoundFalseNotAnError) {
  v1::GetRequest get;
  get.set_key("nope");
  v1::GetResponse got;
  EXPECT_TRUE(Call(&KvService::Get, get, &got).ok());
  EXPECT_FALSE(got.found());
  EXPECT_EQ(got.version(), 0u);
}

TEST_F(KvServiceTest, InvalidRequestsNameTheLimitAndWriteNothing) {
  const uint64_t before = store_->last_index();
  v1::SetResponse set;
  grpc::Status empty = Set("", "v", &set);
  EXPECT_EQ(empty.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(empty.error_message(), HasSubstr("empty"));

  grpc::Status long_key = Set(std::string(4097, 'k'), "v", &set);
  EXPECT_EQ(long_key.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(long_key.error_message(), HasSubstr("4096"));

  grpc::Status big = Set("k", std::string(101, 'v'), &set);
  EXPECT_EQ(big.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(big.error_message(), HasSubstr("100"));

  v1::SetRequest bad_ack;
  bad_ack.set_key("k");
  bad_ack.mutable_ack()->set_mode(static_cast<v1::AckMode>(42));
  EXPECT_EQ(Call(&KvService::Set, bad_ack, &set).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  v1::GetRequest bad_mode;
  bad_mode.set_key("k");
  bad_mode.set_read_mode(static_cast<v1::ReadMode>(7));
  v1::GetResponse got;
  EXPECT_EQ(Call(&KvService::Get, bad_mode, &got).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  v1::MultiSetRequest batch;
  batch.add_items()->set_key("good");
  batch.add_items()->set_key("");
  v1::MultiSetResponse batch_out;
  grpc::Status bad_item = Call(&KvService::MultiSet, batch, &batch_out);
  EXPECT_EQ(bad_item.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(bad_item.error_message(), HasSubstr("item 1"));

  EXPECT_EQ(store_->last_index(), before) << "a rejected request wrote to the log";
  std::string value;
  uint64_t version;
  EXPECT_FALSE(store_->Get("good", &value, &version));
}

TEST_F(KvServiceTest, CasMismatchIsFailedPreconditionWithCurrentVersion) {
  v1::SetResponse first;
  ASSERT_TRUE(Set("k", "v", &first).ok());
  v1::SetRequest cas;
  cas.set_key("k");
  cas.set_value("w");
  cas.set_if_version(first.version() + 1);
  v1::SetResponse out;
  grpc::Status s = Call(&KvService::Set, cas, &out);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr(std::to_string(first.version())));
}

TEST_F(KvServiceTest, ReplicaAckWithoutFollowersIsFailedPrecondition) {
  v1::SetRequest request;
  request.set_key("k");
  request.mutable_ack()->set_mode(v1::ACK_MODE_REPLICAS);
  v1::SetResponse out;
  EXPECT_EQ(Call(&KvService::Set, request, &out).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
}

TEST_F(KvServiceTest, MultiSetReportsPerItemResultsInOrder) {
  v1::SetResponse existing;
  ASSERT_TRUE(Set("taken", "v", &existing).ok());
  v1::MultiSetRequest request;
  v1::SetItem* a = request.add_items();
  a->set_key("taken");
  a->set_value("x");
  a->set_if_version(0);  // Fails: the key exists.
  v1::SetItem* b = request.add_items();
  b->set_key("fresh");
  b->set_value("y");
  v1::MultiSetResponse out;
  ASSERT_TRUE(Call(&KvService::MultiSet, request, &out).ok());
  ASSERT_EQ(out.results_size(), 2);
  EXPECT_EQ(out.results(0).error().code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(out.results(1).error().code(), 0);
  EXPECT_GT(out.results(1).version(), existing.version());

  v1::MultiGetRequest get;
  get.add_keys("fresh");
  get.add_keys("missing");
  get.add_keys("taken");
  v1::MultiGetResponse got;
  ASSERT_TRUE(Call(&KvService::MultiGet, get, &got).ok());
  ASSERT_EQ(got.results_size(), 3);
  EXPECT_EQ(got.results(0).value(), "y");
  EXPECT_FALSE(got.results(1).found());
  EXPECT_EQ(got.results(2).value(), "v");
}

TEST_F(KvServiceTest, MultiGetLargerThanResponseCapIsResourceExhausted) {
  limits_.max_response_bytes = 1000;
  service_ = std::make_unique<KvService>(store_.get(), limits_);
  v1::SetResponse set;
  ASSERT_TRUE(Set("big", std::string(100, 'v'), &set).ok());

  v1::MultiGetRequest fits;
  for (int i = 0; i < 5; ++i) fits.add_keys("big");
  v1::MultiGetResponse got;
  ASSERT_TRUE(Call(&KvService::MultiGet, fits, &got).ok());
  EXPECT_LE(got.ByteSizeLong(), 1000u);

  // The same key 10,000 times: the answer would be 1 MB; gathering stops at 1000 bytes.
  v1::MultiGetRequest repeated;
  for (int i = 0; i < 10'000; ++i) repeated.add_keys("big");
  v1::MultiGetResponse too_big;
  grpc::Status s = Call(&KvService::MultiGet, repeated, &too_big);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(), HasSubstr("1000 bytes"));
  EXPECT_THAT(s.error_message(), HasSubstr("--max-response-bytes"));
}

TEST_F(KvServiceTest, DeleteReportsWhetherAKeyWasRemoved) {
  v1::SetResponse set;
  ASSERT_TRUE(Set("k", "v", &set).ok());
  v1::DeleteRequest del;
  del.set_key("k");
  v1::DeleteResponse out;
  ASSERT_TRUE(Call(&KvService::Delete, del, &out).ok());
  EXPECT_TRUE(out.deleted());
  EXPECT_GT(out.version(), set.version());
  v1::DeleteResponse again;
  ASSERT_TRUE(Call(&KvService::Delete, del, &again).ok());
  EXPECT_FALSE(again.deleted());
}

// A ReplicationHooks with a fixed number of followers and default sync acks.
class FixedHooks : public ReplicationHooks {
 public:
  FixedHooks(int followers, int sync_acks) : followers_(followers), sync_acks_(sync_acks) {}
  absl::Status CheckWritable(std::string*) override { return absl::OkStatus(); }
  absl::Status CheckReadable(bool, std::string*) override { return absl::OkStatus(); }
  int DefaultSyncAcks() override { return sync_acks_; }
  int FollowerCount() override { return followers_; }
  void AwaitReplicas(uint64_t, int, std::function<void(const absl::Status&)> done) override {
    done(absl::OkStatus());
  }
  void FillStatus(v1::StatusResponse*) override {}
  absl::StatusOr<PromoteResult> Promote(uint64_t, std::vector<std::string>, bool) override {
    return PromoteResult{};
  }

 private:
  const int followers_;
  const int sync_acks_;
};

v1::WriteAck AckOf(v1::AckMode mode, uint32_t replicas = 0) {
  v1::WriteAck ack;
  ack.set_mode(mode);
  ack.set_replicas(replicas);
  return ack;
}

TEST(PlanWriteTest, RequestAckOverridesTheShardDefaultBothWays) {
  FixedHooks sync2(/*followers=*/2, /*sync_acks=*/2);
  FixedHooks async(/*followers=*/2, /*sync_acks=*/0);
  EXPECT_EQ(PlanWrite(AckOf(v1::ACK_MODE_DEFAULT), &sync2)->replicas, 2);
  EXPECT_EQ(PlanWrite(AckOf(v1::ACK_MODE_DEFAULT), &async)->replicas, 0);
  absl::StatusOr<WritePlan> memory = PlanWrite(AckOf(v1::ACK_MODE_LEADER_MEMORY), &sync2);
  EXPECT_EQ(memory->replicas, 0);
  EXPECT_EQ(memory->durability, Durability::kWritten);
  EXPECT_EQ(PlanWrite(AckOf(v1::ACK_MODE_LEADER_FSYNC), &sync2)->durability, Durability::kFsynced);
  EXPECT_EQ(PlanWrite(AckOf(v1::ACK_MODE_REPLICAS, 1), &async)->replicas, 1);
  EXPECT_EQ(PlanWrite(AckOf(v1::ACK_MODE_REPLICAS, 0), &async)->replicas, 1);  // At least one.
  EXPECT_EQ(PlanWrite(AckOf(v1::ACK_MODE_REPLICAS, 0), &sync2)->replicas, 2);
}

// replicas is a uint32: values that do not fit an int must not wrap to a
// negative count that no follower needs to confirm.
TEST(PlanWriteTest, ReplicasAboveTheFollowerCountAreInvalidArgumentNamingTheNumber) {
  FixedHooks two(/*followers=*/2, /*sync_acks=*/0);
  for (uint32_t replicas : {3u, 1u << 31, (1u << 31) + 1, 0xffffffffu}) {
    absl::StatusOr<WritePlan> plan = PlanWrite(AckOf(v1::ACK_MODE_REPLICAS, replicas), &two);
    EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument) << replicas;
    EXPECT_THAT(plan.status().message(), HasSubstr(absl::StrCat(replicas, " replicas")));
    EXPECT_THAT(plan.status().message(), HasSubstr("2 followers"));
  }
  FixedHooks lone(/*followers=*/0, /*sync_acks=*/0);
  EXPECT_EQ(PlanWrite(AckOf(v1::ACK_MODE_REPLICAS, 1u << 31), &lone).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PlanWrite(AckOf(v1::ACK_MODE_REPLICAS, 2), &two)->replicas, 2);
}

TEST(PlanWriteTest, ShardWithTooFewFollowersForItsDefaultIsFailedPrecondition) {
  FixedHooks none(/*followers=*/0, /*sync_acks=*/1);  // A promoted node with no followers.
  EXPECT_EQ(PlanWrite(AckOf(v1::ACK_MODE_DEFAULT), &none).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(PlanWrite(AckOf(v1::ACK_MODE_LEADER_MEMORY), &none).ok());
  // Unset replicas means the shard's default, and a shard without followers
  // cannot give one: a matter of its configuration, not of the request.
  EXPECT_EQ(PlanWrite(AckOf(v1::ACK_MODE_REPLICAS, 0), &none).status().code(),
            absl::StatusCode::kFailedPrecondition);
  FixedHooks two(/*followers=*/2, /*sync_acks=*/0);
  v1::WriteAck unknown;
  unknown.set_mode(static_cast<v1::AckMode>(42));
  EXPECT_EQ(PlanWrite(unknown, &two).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(KvServiceTest, SetAskingForAbsurdlyManyReplicasIsRejectedAndWritesNothing) {
  FixedHooks two(/*followers=*/2, /*sync_acks=*/0);
  KvService service(store_.get(), limits_, &two);
  const uint64_t before = store_->last_index();
  v1::SetRequest request;
  request.set_key("k");
  request.set_value("v");
  *request.mutable_ack() = AckOf(v1::ACK_MODE_REPLICAS, 1u << 31);
  v1::SetResponse out;
  grpc::CallbackServerContext context;
  absl::Notification finished;
  grpc::Status status;
  grpc::testing::DefaultReactorTestPeer peer(&context, [&](grpc::Status s) {
    status = std::move(s);
    finished.Notify();
  });
  service.Set(&context, &request, &out);
  finished.WaitForNotification();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("2147483648 replicas"));
  EXPECT_EQ(store_->last_index(), before) << "the write was applied";
}

// ---- expires_at_ms and Scan

TEST_F(KvServiceTest, GetAndMultiGetReportTheAbsoluteExpiry) {
  v1::SetRequest set;
  set.set_key("ttl");
  set.set_value("v");
  set.set_ttl_ms(5000);
  v1::SetResponse set_out;
  ASSERT_TRUE(Call(&KvService::Set, set, &set_out).ok());
  ASSERT_TRUE(Set("forever", "v", &set_out).ok());
  const uint64_t expected = static_cast<uint64_t>(clock_.NowUnixMillis()) + 5000;

  v1::GetRequest get;
  get.set_key("ttl");
  v1::GetResponse got;
  ASSERT_TRUE(Call(&KvService::Get, get, &got).ok());
  EXPECT_EQ(got.expires_at_ms(), expected);
  get.set_key("forever");
  v1::GetResponse forever;
  ASSERT_TRUE(Call(&KvService::Get, get, &forever).ok());
  EXPECT_TRUE(forever.found());
  EXPECT_EQ(forever.expires_at_ms(), 0u);

  v1::MultiGetRequest multi;
  multi.add_keys("ttl");
  multi.add_keys("forever");
  multi.add_keys("missing");
  v1::MultiGetResponse results;
  ASSERT_TRUE(Call(&KvService::MultiGet, multi, &results).ok());
  ASSERT_EQ(results.results_size(), 3);
  EXPECT_EQ(results.results(0).expires_at_ms(), expected);
  EXPECT_EQ(results.results(1).expires_at_ms(), 0u);
  EXPECT_EQ(results.results(2).expires_at_ms(), 0u);

  clock_.AdvanceMillis(5000);  // Expired: gone, expiry and all.
  get.set_key("ttl");
  v1::GetResponse expired;
  ASSERT_TRUE(Call(&KvService::Get, get, &expired).ok());
  EXPECT_FALSE(expired.found());
  EXPECT_EQ(expired.expires_at_ms(), 0u);
}

// Follows next_cursor from an empty one to the end; fails the test on an error.
std::map<std::string, v1::ScanEntry> ScanToEnd(
    const std::function<grpc::Status(const v1::ScanRequest&, v1::ScanResponse*)>& call,
    v1::ScanRequest request, int* pages) {
  std::map<std::string, v1::ScanEntry> seen;
  *pages = 0;
  do {
    v1::ScanResponse page;
    grpc::Status s = call(request, &page);
    EXPECT_TRUE(s.ok()) << s.error_message();
    if (!s.ok()) break;
    ++*pages;
    EXPECT_LE(page.entries_size(), static_cast<int>(request.limit() == 0 ? 1000 : request.limit()));
    for (const v1::ScanEntry& e : page.entries()) {
      EXPECT_TRUE(seen.emplace(e.key(), e).second) << "returned twice: " << e.key();
    }
    request.set_cursor(page.next_cursor());
  } while (!request.cursor().empty() && *pages < 10'000);
  return seen;
}

TEST_F(KvServiceTest, ScanPagesThroughEveryKeyWithVersionsAndExpiries) {
  v1::MultiSetRequest batch;
  for (int i = 0; i < 500; ++i) {
    v1::SetItem* item = batch.add_items();
    item->set_key(absl::StrCat(i % 2 == 0 ? "even:" : "odd:", i));
    item->set_value(absl::StrCat("v", i));
    item->set_ttl_ms(i == 4 ? 60'000 : 0);
  }
  v1::MultiSetResponse written;
  ASSERT_TRUE(Call(&KvService::MultiSet, batch, &written).ok());
  auto call = [&](const v1::ScanRequest& r, v1::ScanResponse* out) {
    return Call(&KvService::Scan, r, out);
  };
  v1::ScanRequest request;
  request.set_limit(64);
  int pages = 0;
  std::map<std::string, v1::ScanEntry> all = ScanToEnd(call, request, &pages);
  EXPECT_EQ(all.size(), 500u);
  EXPECT_GE(pages, 500 / 64);
  EXPECT_EQ(all["even:4"].value(), "v4");
  EXPECT_EQ(all["even:4"].version(), written.results(4).version());
  EXPECT_EQ(all["even:4"].expires_at_ms(), static_cast<uint64_t>(clock_.NowUnixMillis()) + 60'000);
  EXPECT_EQ(all["odd:5"].expires_at_ms(), 0u);

  request.set_prefix("odd:");
  request.set_keys_only(true);
  std::map<std::string, v1::ScanEntry> odd = ScanToEnd(call, request, &pages);
  EXPECT_EQ(odd.size(), 250u);
  for (const auto& [key, e] : odd) {
    EXPECT_TRUE(absl::StartsWith(key, "odd:")) << key;
    EXPECT_EQ(e.value(), "") << "keys_only";
    EXPECT_GT(e.version(), 0u);
  }
}

TEST_F(KvServiceTest, ScanRefusesCursorsItDidNotMake) {
  v1::ScanRequest request;
  v1::ScanResponse out;
  for (const std::string& bad :
       {std::string("garbage"), std::string("\x01\x02", 2), std::string("R\0\0\0\0\0", 6)}) {
    request.set_cursor(bad);
    grpc::Status s = Call(&KvService::Scan, request, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad;
    EXPECT_THAT(s.error_message(), HasSubstr("invalid scan cursor"));
  }
  request.set_cursor("");
  request.set_prefix(std::string(limits_.max_key_bytes + 1, 'p'));
  EXPECT_EQ(Call(&KvService::Scan, request, &out).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(KvServiceTest, ScanPageStaysUnderTheResponseCap) {
  limits_.max_response_bytes = 5000;
  limits_.max_key_bytes = 100;
  service_ = std::make_unique<KvService>(store_.get(), limits_);
  v1::SetResponse set;
  for (int i = 0; i < 200; ++i)
    ASSERT_TRUE(Set(absl::StrCat("k", i), std::string(90, 'v'), &set).ok());
  v1::ScanRequest request;
  int total = 0;
  int pages = 0;
  do {
    v1::ScanResponse page;
    ASSERT_TRUE(Call(&KvService::Scan, request, &page).ok());
    EXPECT_LE(page.ByteSizeLong(), 5000u);
    EXPECT_GT(page.entries_size(), 0);
    total += page.entries_size();
    request.set_cursor(page.next_cursor());
    ++pages;
  } while (!request.cursor().empty());
  EXPECT_EQ(total, 200);
  EXPECT_GT(pages, 1);
}

TEST_F(KvServiceTest, ScanLimitIsCappedByMaxBatchItems) {
  limits_.max_batch_items = 10;
  service_ = std::make_unique<KvService>(store_.get(), limits_);
  v1::SetResponse set;
  for (int i = 0; i < 30; ++i) ASSERT_TRUE(Set(absl::StrCat("k", i), "v", &set).ok());
  v1::ScanRequest request;
  request.set_limit(1000);
  v1::ScanResponse page;
  ASSERT_TRUE(Call(&KvService::Scan, request, &page).ok());
  EXPECT_EQ(page.entries_size(), 10);
  EXPECT_FALSE(page.next_cursor().empty());
}

// A node that may not answer reads (installing, catching up, a replica asked
// for a leader read) answers Scan as it answers Get: UNAVAILABLE.
class NotReadableHooks : public FixedHooks {
 public:
  NotReadableHooks() : FixedHooks(0, 0) {}
  absl::Status CheckReadable(bool, std::string*) override {
    return absl::UnavailableError("this node is catching up");
  }
};

TEST_F(KvServiceTest, ScanOnANodeNotReadyIsUnavailableLikeGet) {
  NotReadableHooks hooks;
  service_ = std::make_unique<KvService>(store_.get(), limits_, &hooks);
  v1::ScanRequest scan;
  scan.set_read_mode(v1::READ_MODE_ANY_REPLICA);
  v1::ScanResponse page;
  EXPECT_EQ(Call(&KvService::Scan, scan, &page).error_code(), grpc::StatusCode::UNAVAILABLE);
  v1::GetRequest get;
  get.set_key("k");
  get.set_read_mode(v1::READ_MODE_ANY_REPLICA);
  v1::GetResponse got;
  EXPECT_EQ(Call(&KvService::Get, get, &got).error_code(), grpc::StatusCode::UNAVAILABLE);
  service_.reset();
}

// A snapshot install replaces the whole map (a replica resyncing, a restore):
// a read that overlaps it may see neither the old state nor the new. It must
// answer UNAVAILABLE then, never found=false for a key both states hold.
TEST_F(KvServiceTest, AReadOverlappingASnapshotInstallIsUnavailableNeverAbsent) {
  v1::SetResponse set;
  ASSERT_TRUE(Set("stay", "v", &set).ok());
  std::vector<Mutation> batch(20000);
  for (size_t i = 0; i < batch.size(); ++i) {
    batch[i].key = absl::StrCat("filler-", i);
    batch[i].value = "x";
  }
  absl::Notification written;
  store_->Write(std::move(batch), Durability::kDefault,
                [&](std::vector<MutationResult>) { written.Notify(); });
  written.WaitForNotification();
  absl::StatusOr<SnapshotMeta> snapshot = store_->TakeSnapshot();
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();
  const std::string image = fs_.Contents(snapshot->path);

  std::atomic<bool> installing{true};
  std::thread installer([&] {
    for (int i = 0; i < 10; ++i) {
      const std::string incoming = "/data/incoming.snap";
      fs_.SetContents(incoming, image);
      absl::StatusOr<SnapshotMeta> installed = store_->InstallSnapshot(incoming);
      EXPECT_TRUE(installed.ok()) << installed.status();
    }
    installing = false;
  });
  int found = 0, unavailable = 0, absent = 0;
  while (installing) {
    v1::GetRequest get;
    get.set_key("stay");
    v1::GetResponse got;
    const grpc::Status s = Call(&KvService::Get, get, &got);
    if (s.error_code() == grpc::StatusCode::UNAVAILABLE) {
      ++unavailable;
    } else if (s.ok() && got.found()) {
      ++found;
    } else if (s.ok()) {
      ++absent;
    }
  }
  installer.join();
  EXPECT_EQ(absent, 0) << "found=false for a key every state holds (" << found << " found, "
                       << unavailable << " unavailable)";
}

// A replica (or deposed leader) that knows who leads, at which epoch.
class FollowerHooks : public FixedHooks {
 public:
  FollowerHooks(std::string leader, uint64_t epoch)
      : FixedHooks(0, 0), leader_(std::move(leader)), epoch_(epoch) {}
  absl::Status CheckWritable(std::string* leader) override {
    *leader = leader_;
    return absl::FailedPreconditionError("this node is a replica; the leader is " + leader_);
  }
  void FillStatus(v1::StatusResponse* response) override { response->set_epoch(epoch_); }

 private:
  const std::string leader_;
  const uint64_t epoch_;
};

// A router (or any client) can tell "not the leader, nothing applied, go
// there" from other FAILED_PRECONDITIONs (a CAS mismatch) without parsing
// the message: google.rpc.ErrorInfo NOT_LEADER in the error details.
TEST_F(KvServiceTest, WriteToANonLeaderCarriesNotLeaderWithLeaderAndEpoch) {
  FollowerHooks hooks("127.0.0.1:7001", 1048600);
  service_ = std::make_unique<KvService>(store_.get(), limits_, &hooks);
  v1::SetResponse set;
  const grpc::Status status = Set("k", "v", &set);
  ASSERT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  const std::optional<ErrorInfo> info = ErrorInfoOf(status);
  ASSERT_TRUE(info.has_value()) << "no ErrorInfo in the details";
  EXPECT_EQ(info->reason, kReasonNotLeader);
  EXPECT_EQ(info->metadata.at("leader"), "127.0.0.1:7001");
  EXPECT_EQ(info->metadata.at("epoch"), "1048600");
  // Not applied.
  v1::GetRequest get;
  get.set_key("k");
  v1::GetResponse got;
  ASSERT_TRUE(Call(&KvService::Get, get, &got).ok());
  EXPECT_FALSE(got.found());
  service_.reset();
}

// A leader at epoch 10, as ReplicationNode::CheckRouterEpoch answers it:
// a router's epoch above 10 is refused.
class LeaderAtEpochHooks : public FixedHooks {
 public:
  LeaderAtEpochHooks() : FixedHooks(0, 0) {}
  absl::Status CheckRouterEpoch(uint64_t epoch, std::string* leader) override {
    leader->clear();
    named_.push_back(epoch);
    if (epoch <= 10) return absl::OkStatus();
    return absl::FailedPreconditionError("a newer leader exists");
  }
  void FillStatus(v1::StatusResponse* response) override { response->set_epoch(10); }
  std::vector<uint64_t> named_;
};

// The admission rule of a router's epoch (kv-leader-epoch metadata): newer
// than the node knows is NOT_LEADER naming no leader, nothing applied, for
// every kind of write; absent, lower or equal is served.
TEST_F(KvServiceTest, AWriteNamingANewerLeaderEpochIsRefusedAsNotLeaderUnapplied) {
  LeaderAtEpochHooks hooks;
  service_ = std::make_unique<KvService>(store_.get(), limits_, &hooks);
  grpc::ServerBuilder builder;
  builder.RegisterService(service_.get());
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  auto stub = v1::KeyValue::NewStub(server->InProcessChannel(grpc::ChannelArguments()));
  const auto with_epoch = [](grpc::ClientContext* context, const std::string& epoch) {
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    if (!epoch.empty()) context->AddMetadata(kLeaderEpochKey, epoch);
  };
  const auto set = [&](const std::string& key, const std::string& epoch) {
    grpc::ClientContext context;
    with_epoch(&context, epoch);
    v1::SetRequest request;
    request.set_key(key);
    request.set_value("v");
    v1::SetResponse response;
    return stub->Set(&context, request, &response);
  };
  for (const char* epoch : {"", "0", "9", "10", "junk"}) {
    EXPECT_TRUE(set(std::string("served-") + epoch, epoch).ok()) << "epoch '" << epoch << "'";
  }
  const grpc::Status refused = set("refused", "11");
  ASSERT_EQ(refused.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  const std::optional<ErrorInfo> info = ErrorInfoOf(refused);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->reason, kReasonNotLeader);
  EXPECT_EQ(info->metadata.count("leader"), 0u);
  EXPECT_EQ(info->metadata.at("epoch"), "10");
  {
    grpc::ClientContext context;
    with_epoch(&context, "11");
    v1::DeleteRequest request;
    request.set_key("served-9");
    v1::DeleteResponse response;
    EXPECT_EQ(stub->Delete(&context, request, &response).error_code(),
              grpc::StatusCode::FAILED_PRECONDITION);
  }
  {
    grpc::ClientContext context;
    with_epoch(&context, "11");
    v1::MultiSetRequest request;
    v1::SetItem* item = request.add_items();
    item->set_key("refused-too");
    item->set_value("v");
    v1::MultiSetResponse response;
    EXPECT_EQ(stub->MultiSet(&context, request, &response).error_code(),
              grpc::StatusCode::FAILED_PRECONDITION);
  }
  std::string value;
  uint64_t version = 0;
  EXPECT_FALSE(store_->Get("refused", &value, &version));
  EXPECT_FALSE(store_->Get("refused-too", &value, &version));
  EXPECT_TRUE(store_->Get("served-9", &value, &version)) << "the Delete was applied";
  EXPECT_THAT(hooks.named_, ::testing::Contains(11u));
  server->Shutdown();
  service_.reset();
}

TEST_F(KvServiceTest, CasMismatchCarriesNoNotLeader) {
  v1::SetResponse first;
  ASSERT_TRUE(Set("k", "v", &first).ok());
  v1::SetRequest cas;
  cas.set_key("k");
  cas.set_value("w");
  cas.set_if_version(first.version() + 1);
  v1::SetResponse out;
  const grpc::Status status = Call(&KvService::Set, cas, &out);
  ASSERT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_FALSE(ErrorInfoOf(status).has_value());
}

// ---- Ownership (etcd mode): every key checked against the ring by the gate.

class KvServiceOwnershipTest : public KvServiceTest {
 protected:
  void SetUp() override {
    KvServiceTest::SetUp();
    absl::StatusOr<HashRing> ring = HashRing::Build({"s0", "s1"}, 64);
    ASSERT_TRUE(ring.ok()) << ring.status();
    ring_ = std::make_shared<const HashRing>(*std::move(ring));
    for (int i = 0; mine_.size() < 6 || theirs_.size() < 6; ++i) {
      const std::string key = absl::StrCat("key-", i);
      (ring_->Owner(key) == "s0" ? mine_ : theirs_).push_back(key);
    }
    // Data written before the ring is known (or left behind by a move): a
    // shard may hold keys it does not own.
    v1::SetResponse set;
    for (const std::string& key : mine_) ASSERT_TRUE(Set(key, "v-" + key, &set).ok());
    for (const std::string& key : theirs_) ASSERT_TRUE(Set(key, "v-" + key, &set).ok());
    UseGate();
    gate_.SetRing(ring_, 2);
  }
  void TearDown() override { service_.reset(); }

  void UseGate(ReplicationHooks* hooks = nullptr) {
    service_ = std::make_unique<KvService>(store_.get(), limits_, hooks, nullptr, &gate_);
  }

  // The key's value in the store, bypassing the service.
  std::string Stored(const std::string& key) {
    std::string value;
    uint64_t version = 0;
    return store_->Get(key, &value, &version) ? value : "(absent)";
  }

  static void ExpectWrongShard(const grpc::Status& status, const std::string& what) {
    EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << what;
    const std::optional<ErrorInfo> info = ErrorInfoOf(status);
    ASSERT_TRUE(info.has_value()) << what << ": no ErrorInfo";
    EXPECT_EQ(info->reason, kReasonWrongShard) << what;
    EXPECT_EQ(info->metadata.at(kMetadataOwner), "s1") << what;
    EXPECT_EQ(info->metadata.at(kMetadataRingVersion), "2") << what;
  }

  OwnershipGate gate_{"s0"};
  std::shared_ptr<const HashRing> ring_;
  std::vector<std::string> mine_;    // Keys s0 owns.
  std::vector<std::string> theirs_;  // Keys s1 owns.
};

TEST_F(KvServiceOwnershipTest, AnotherShardsKeyIsWrongShardForEverySingleKeyCallAndNothingChanges) {
  const uint64_t last_index = store_->last_index();
  v1::GetRequest get;
  get.set_key(theirs_[0]);
  v1::GetResponse got;
  ExpectWrongShard(Call(&KvService::Get, get, &got), "Get");
  EXPECT_FALSE(got.found());

  v1::SetResponse set;
  ExpectWrongShard(Set(theirs_[0], "new", &set), "Set");
  v1::DeleteRequest del;
  del.set_key(theirs_[1]);
  v1::DeleteResponse deleted;
  ExpectWrongShard(Call(&KvService::Delete, del, &deleted), "Delete");
  EXPECT_EQ(store_->last_index(), last_index) << "a refused write reached the log";
  EXPECT_EQ(Stored(theirs_[0]), "v-" + theirs_[0]);
  EXPECT_EQ(Stored(theirs_[1]), "v-" + theirs_[1]);

  // This shard's keys are served as ever.
  get.set_key(mine_[0]);
  ASSERT_TRUE(Call(&KvService::Get, get, &got).ok());
  EXPECT_EQ(got.value(), "v-" + mine_[0]);
  ASSERT_TRUE(Set(mine_[0], "new", &set).ok());
  EXPECT_EQ(Stored(mine_[0]), "new");
}

TEST_F(KvServiceOwnershipTest, BatchesGiveEachRefusedKeyItsOwnErrorAndServeTheOthers) {
  v1::MultiGetRequest get;
  get.add_keys(mine_[0]);
  get.add_keys(theirs_[0]);
  get.add_keys("absent-but-mine-or-not");
  get.add_keys(mine_[1]);
  v1::MultiGetResponse got;
  ASSERT_TRUE(Call(&KvService::MultiGet, get, &got).ok());
  ASSERT_EQ(got.results_size(), 4);
  EXPECT_EQ(got.results(0).value(), "v-" + mine_[0]);
  EXPECT_EQ(got.results(0).error().code(), 0);
  EXPECT_FALSE(got.results(1).found());
  EXPECT_EQ(got.results(1).error().code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(got.results(1).error().reason(), kReasonWrongShard);
  EXPECT_THAT(got.results(1).error().message(), HasSubstr("shard s1"));
  // A missing key is found=false only on its owner.
  const bool third_is_mine = ring_->Owner(get.keys(2)) == "s0";
  EXPECT_EQ(got.results(2).error().code() == 0, third_is_mine);
  EXPECT_EQ(got.results(3).value(), "v-" + mine_[1]);

  v1::MultiSetRequest set;
  for (const std::string& key : {mine_[2], theirs_[1], mine_[3], theirs_[2]}) {
    v1::SetItem* item = set.add_items();
    item->set_key(key);
    item->set_value("batch");
  }
  v1::MultiSetResponse written;
  ASSERT_TRUE(Call(&KvService::MultiSet, set, &written).ok());
  ASSERT_EQ(written.results_size(), 4);
  for (int i : {0, 2}) {
    EXPECT_EQ(written.results(i).error().code(), 0) << i;
    EXPECT_GT(written.results(i).version(), 0u) << i;
    EXPECT_EQ(Stored(set.items(i).key()), "batch") << i;
  }
  for (int i : {1, 3}) {
    EXPECT_EQ(written.results(i).error().code(), grpc::StatusCode::FAILED_PRECONDITION) << i;
    EXPECT_EQ(written.results(i).error().reason(), kReasonWrongShard) << i;
    EXPECT_EQ(written.results(i).version(), 0u) << i;
    EXPECT_EQ(Stored(set.items(i).key()), "v-" + set.items(i).key()) << i;
  }
}

TEST_F(KvServiceOwnershipTest, AMultiSetOfOnlyRefusedKeysWritesNothing) {
  const uint64_t last_index = store_->last_index();
  v1::MultiSetRequest set;
  for (const std::string& key : theirs_) {
    v1::SetItem* item = set.add_items();
    item->set_key(key);
    item->set_value("x");
  }
  v1::MultiSetResponse written;
  ASSERT_TRUE(Call(&KvService::MultiSet, set, &written).ok());
  ASSERT_EQ(written.results_size(), static_cast<int>(theirs_.size()));
  for (const v1::SetResult& r : written.results()) EXPECT_EQ(r.error().reason(), kReasonWrongShard);
  EXPECT_EQ(store_->last_index(), last_index);
}

TEST_F(KvServiceOwnershipTest, AHeldRangeIsRangeMovingForReadsAndWritesAlike) {
  const uint64_t position = HashRing::KeyHash(mine_[0]);
  gate_.SetHeld(RangeSet({{position, position}}), 3);
  v1::GetRequest get;
  get.set_key(mine_[0]);
  v1::GetResponse got;
  const grpc::Status read = Call(&KvService::Get, get, &got);
  EXPECT_EQ(read.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(ErrorInfoOf(read).value_or(ErrorInfo{}).reason, kReasonRangeMoving);
  v1::SetResponse set;
  EXPECT_EQ(ErrorInfoOf(Set(mine_[0], "x", &set)).value_or(ErrorInfo{}).reason, kReasonRangeMoving);
  EXPECT_EQ(Stored(mine_[0]), "v-" + mine_[0]);

  v1::MultiGetRequest batch;
  batch.add_keys(mine_[0]);
  batch.add_keys(mine_[1]);
  v1::MultiGetResponse results;
  ASSERT_TRUE(Call(&KvService::MultiGet, batch, &results).ok());
  EXPECT_EQ(results.results(0).error().code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(results.results(0).error().reason(), kReasonRangeMoving);
  EXPECT_EQ(results.results(1).value(), "v-" + mine_[1]);

  gate_.SetHeld(RangeSet(), 0);
  ASSERT_TRUE(Call(&KvService::Get, get, &got).ok());
  EXPECT_TRUE(got.found());
}

// A stale read of a moved key must not say found=false: replicas check too.
TEST_F(KvServiceOwnershipTest, ReplicasCheckOwnershipOfTheirReads) {
  FollowerHooks hooks("127.0.0.1:7001", 7);
  UseGate(&hooks);
  v1::GetRequest get;
  get.set_key(theirs_[0]);
  get.set_read_mode(v1::READ_MODE_ANY_REPLICA);
  v1::GetResponse got;
  ExpectWrongShard(Call(&KvService::Get, get, &got), "replica Get");
  get.set_key(mine_[0]);
  ASSERT_TRUE(Call(&KvService::Get, get, &got).ok());
  EXPECT_TRUE(got.found());
  // A write on a replica is still NOT_LEADER first: the leader decides ownership.
  v1::SetResponse set;
  EXPECT_EQ(ErrorInfoOf(Set(theirs_[0], "x", &set)).value_or(ErrorInfo{}).reason, kReasonNotLeader);
}

TEST_F(KvServiceOwnershipTest, ScanLeavesOutTheKeysOfOtherShards) {
  auto call = [&](const v1::ScanRequest& r, v1::ScanResponse* out) {
    return Call(&KvService::Scan, r, out);
  };
  v1::ScanRequest request;
  request.set_limit(3);
  int pages = 0;
  std::map<std::string, v1::ScanEntry> seen = ScanToEnd(call, request, &pages);
  std::set<std::string> keys;
  for (const auto& [key, entry] : seen) keys.insert(key);
  EXPECT_EQ(keys, std::set<std::string>(mine_.begin(), mine_.end()));
}

TEST_F(KvServiceOwnershipTest, WithoutARingTheGateAllowsEveryKey) {
  OwnershipGate disabled("s0");
  service_ = std::make_unique<KvService>(store_.get(), limits_, nullptr, nullptr, &disabled);
  v1::GetRequest get;
  get.set_key(theirs_[0]);
  v1::GetResponse got;
  ASSERT_TRUE(Call(&KvService::Get, get, &got).ok());
  EXPECT_TRUE(got.found());
  service_.reset();
}

// Pipeline requests go through the same checks, and their answers carry the
// reason a unary call would carry in its ErrorInfo.
TEST_F(KvServiceOwnershipTest, PipelineRequestsAreCheckedAndAnswerWithTheReason) {
  grpc::ServerBuilder builder;
  builder.RegisterService(service_.get());
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  auto stub = v1::KeyValue::NewStub(server->InProcessChannel(grpc::ChannelArguments()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto stream = stub->Pipeline(&context);
  v1::PipelineRequests message;
  v1::PipelineRequest* r = message.add_requests();
  r->set_id(1);
  r->mutable_get()->set_key(theirs_[0]);
  r = message.add_requests();
  r->set_id(2);
  r->mutable_set()->set_key(theirs_[1]);
  r->mutable_set()->set_value("x");
  r = message.add_requests();
  r->set_id(3);
  r->mutable_get()->set_key(mine_[0]);
  ASSERT_TRUE(stream->Write(message));
  ASSERT_TRUE(stream->WritesDone());
  std::map<uint64_t, v1::PipelineResponse> answers;
  v1::PipelineResponses in;
  while (stream->Read(&in)) {
    for (const v1::PipelineResponse& a : in.responses()) answers[a.id()] = a;
  }
  ASSERT_TRUE(stream->Finish().ok());
  ASSERT_EQ(answers.size(), 3u);
  for (uint64_t id : {1, 2}) {
    EXPECT_EQ(answers[id].status().code(), grpc::StatusCode::FAILED_PRECONDITION) << id;
    EXPECT_EQ(answers[id].status().reason(), kReasonWrongShard) << id;
  }
  EXPECT_EQ(answers[3].status().code(), 0);
  EXPECT_EQ(answers[3].get().value(), "v-" + mine_[0]);
  EXPECT_EQ(Stored(theirs_[1]), "v-" + theirs_[1]);
  server->Shutdown();
}

TEST(GrpcStatusTest, ErrorInfoSurvivesTheRoundTripThroughGrpcStatus) {
  const absl::Status refused = WithErrorInfo(absl::FailedPreconditionError("not leading"),
                                             {kReasonNotLeader, {{"leader", "h:1"}}});
  const grpc::Status wire = ToGrpcStatus(refused);
  EXPECT_EQ(wire.error_message(), "not leading");
  EXPECT_FALSE(wire.error_details().empty());
  const absl::Status back = FromGrpcStatus(wire);
  EXPECT_EQ(back, refused);
  ASSERT_TRUE(ErrorInfoOf(back).has_value());
  EXPECT_EQ(ErrorInfoOf(back)->metadata.at("leader"), "h:1");
  EXPECT_TRUE(ToGrpcStatus(absl::FailedPreconditionError("x")).error_details().empty());
}

}  // namespace
}  // namespace kvstore
