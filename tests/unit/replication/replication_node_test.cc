// The replication library (common/replication) end to end in one process:
// ReplicationNodes over stores on a FakeFileSystem, talking through an
// InProcessTransport, with a FakeClock for every deadline. Cases: handshake
// outcomes at a leader's start, partial and full resync, epochs, acks and
// their deadlines, step-down with writes in flight, retention. The clock moves
// only when a test advances it; other threads are waited for by polling a
// condition with a deadline, never by sleeping a fixed time.
#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/replication/follower_session.h"
#include "common/replication/node.h"
#include "common/storage/log_format.h"
#include "common/storage/op.h"
#include "common/storage/store.h"
#include "common/storage/version.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/fake_clock.h"
#include "tests/support/fake_file_system.h"
#include "tests/support/in_process_transport.h"
#include "tests/support/poll.h"

namespace kvstore {
namespace {

using ::kvstore::testing::FakeClock;
using ::kvstore::testing::FakeFileSystem;
using ::kvstore::testing::InProcessTransport;
using ::testing::HasSubstr;

// Polls `done` until it holds; false after 20 s of real time (a hang).
bool Eventually(const std::function<bool()>& done) { return ::kvstore::testing::PollUntil(done); }

// What a sync wait's callback reported.
class Outcome {
 public:
  void Set(const absl::Status& s) {
    absl::MutexLock l(&mu_);
    status_ = s;
    done_ = true;
  }
  bool done() const {
    absl::MutexLock l(&mu_);
    return done_;
  }
  absl::Status status() const {
    absl::MutexLock l(&mu_);
    return status_;
  }

 private:
  mutable absl::Mutex mu_;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
};

// A follower-side stream driven by the test: it hands the session the leader
// messages the test queues, and records what the session writes back.
class ScriptedStream final : public FollowerStream {
 public:
  void Send(v1::LeaderMessage m) {
    absl::MutexLock l(&mu_);
    incoming_.push_back(std::move(m));
  }
  bool Read(v1::LeaderMessage* m) override {
    absl::MutexLock l(&mu_);
    const auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return closed_ || !incoming_.empty();
    };
    mu_.Await(absl::Condition(&ready));
    if (closed_) return false;
    *m = std::move(incoming_.front());
    incoming_.pop_front();
    return true;
  }
  bool Write(const v1::FollowerMessage& m) override {
    absl::MutexLock l(&mu_);
    if (closed_) return false;
    written_.push_back(m);
    return true;
  }
  void Cancel() override {
    absl::MutexLock l(&mu_);
    closed_ = true;
  }
  // Highest durable index acked on this stream (0: none).
  uint64_t acked() const {
    absl::MutexLock l(&mu_);
    uint64_t best = 0;
    for (const v1::FollowerMessage& m : written_) {
      if (m.has_ack()) best = std::max(best, m.ack().durable_index());
    }
    return best;
  }
  // The Refused this stream was answered with, if any.
  std::optional<v1::Refused> refused() const {
    absl::MutexLock l(&mu_);
    for (const v1::FollowerMessage& m : written_) {
      if (m.has_refused()) return m.refused();
    }
    return std::nullopt;
  }
  bool answered_position() const {
    absl::MutexLock l(&mu_);
    for (const v1::FollowerMessage& m : written_) {
      if (m.has_position()) return true;
    }
    return false;
  }

 private:
  mutable absl::Mutex mu_;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<v1::LeaderMessage> incoming_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::FollowerMessage> written_ ABSL_GUARDED_BY(mu_);
};

v1::LeaderMessage HelloFrom(const std::string& leader, uint64_t epoch) {
  v1::LeaderMessage m;
  m.mutable_hello()->set_epoch(epoch);
  m.mutable_hello()->set_leader(leader);
  m.mutable_hello()->set_leader_id(leader + "-id");
  return m;
}

// Log records first..last of `epoch` as a leader frames them: puts of k<index>.
v1::LeaderMessage EntriesOf(uint64_t first, uint64_t last, uint64_t epoch) {
  v1::LeaderMessage m;
  std::string records;
  std::string payload;
  for (uint64_t i = first; i <= last; ++i) {
    const std::string key = absl::StrCat("k", i);
    OpView op;
    op.version = MakeVersion(epoch, i);
    op.key = key;
    op.value = "v";
    payload.clear();
    EncodeOp(op, &payload);
    log::AppendRecord(i, epoch, log::RecordType::kOp, payload, &records);
  }
  m.mutable_entries()->set_records(records);
  m.mutable_entries()->set_last_index(last);
  m.mutable_entries()->set_leader_last_index(last);
  return m;
}

// One node: its store and its ReplicationNode, on the shared fake file system.
struct Member {
  std::string address;
  std::unique_ptr<Store> store;
  std::unique_ptr<ReplicationNode> node;
};

class ReplicationNodeTest : public ::testing::Test {
 protected:
  ~ReplicationNodeTest() override {
    f1_fs_.HoldSyncs(false);  // A failed test may leave F1's log thread waiting.
    // Links first (they use the transport), then the transport's sessions.
    for (auto& [address, m] : members_) {
      if (m.node) m.node->Stop();
    }
    transport_.reset();
    members_.clear();
  }

  StoreOptions StoreOptionsFor(const std::string& address) {
    StoreOptions o;
    o.dir = "/data/" + address;
    o.fs = address == "F1" ? &f1_fs_ : &fs_;  // F1's disk can be slowed alone.
    o.clock = &clock_;
    o.fsync = FsyncPolicy::kAlways;
    o.background_maintenance = false;
    o.segment_bytes = 4096;
    o.snapshot_every_writes = 0;
    o.snapshot_every_seconds = 0;
    o.snapshots_to_keep = 1;
    return o;
  }

  NodeOptions NodeOptionsFor(std::vector<std::string> followers, int sync_acks = 0) {
    NodeOptions o;
    o.followers = std::move(followers);
    o.sync_acks = sync_acks;
    o.transport = transport_.get();
    o.clock = &clock_;
    o.tick = absl::Milliseconds(1);
    o.min_backoff = absl::Milliseconds(1);
    o.max_backoff = absl::Milliseconds(5);
    o.heartbeat = absl::Milliseconds(10);
    o.start_wait = absl::Seconds(3);
    o.sync_timeout = absl::Seconds(5);
    return o;
  }

  // Opens (or reopens) the member at `address` with `role`, and starts it.
  Member& Open(const std::string& address, Role role, NodeOptions options,
               StoreOptions store_options = StoreOptions()) {
    Member& m = members_[address];
    if (m.node) {
      transport_->Unregister(address);
      m.node.reset();
    }
    m.store.reset();
    m.address = address;
    absl::StatusOr<std::unique_ptr<Store>> store =
        Store::Open(store_options.dir.empty() ? StoreOptionsFor(address) : store_options);
    EXPECT_TRUE(store.ok()) << store.status();
    m.store = *std::move(store);
    options.advertise = address;
    absl::StatusOr<std::unique_ptr<ReplicationNode>> node =
        ReplicationNode::Create(m.store.get(), std::move(options), role);
    EXPECT_TRUE(node.ok()) << node.status();
    m.node = *std::move(node);
    transport_->Register(address, m.node.get());
    m.node->Start(address);
    return m;
  }

  // Stops the member (links, then its sessions), keeping its files.
  void Close(const std::string& address) {
    Member& m = members_[address];
    if (!m.node) return;
    m.node->Stop();
    transport_->Unregister(address);
    m.node.reset();
    m.store.reset();
  }

  static MutationResult Set(Store* store, const std::string& key, const std::string& value) {
    Mutation m;
    m.key = key;
    m.value = value;
    absl::Notification done;
    MutationResult out;
    store->Write({m}, Durability::kDefault, [&](std::vector<MutationResult> r) {
      out = r[0];
      done.Notify();
    });
    done.WaitForNotification();
    return out;
  }

  // Writes through the node's admission, as KvService does.
  absl::StatusOr<MutationResult> Write(Member& m, const std::string& key,
                                       const std::string& value) {
    std::string leader;
    if (absl::Status s = m.node->CheckWritable(&leader); !s.ok()) return s;
    MutationResult r = Set(m.store.get(), key, value);
    if (!r.status.ok()) return r.status;
    return r;
  }

  // Starts a leader "L" with followers "F1".."Fn", waits until it leads.
  void StartGroup(int followers, int sync_acks = 0) {
    std::vector<std::string> addresses;
    for (int i = 1; i <= followers; ++i) {
      addresses.push_back(absl::StrCat("F", i));
      Open(addresses.back(), Role::kReplica, NodeOptionsFor({}));
    }
    Open("L", Role::kLeader, NodeOptionsFor(addresses, sync_acks));
    ASSERT_TRUE(Eventually([&] { return Leads("L"); })) << Describe("L");
  }

  bool Leads(const std::string& address) {
    std::string leader;
    return members_[address].node->CheckWritable(&leader).ok();
  }

  std::string Describe(const std::string& address) {
    v1::StatusResponse status;
    members_[address].node->FillStatus(&status);
    return status.ShortDebugString();
  }

  v1::StatusResponse StatusOf(const std::string& address) {
    v1::StatusResponse status;
    members_[address].node->FillStatus(&status);
    return status;
  }

  bool CaughtUp(const std::string& follower, const std::string& leader = "L") {
    return members_[follower].store->last_index() == members_[leader].store->last_index();
  }

  FakeFileSystem fs_;
  FakeFileSystem f1_fs_;
  FakeClock clock_;
  std::unique_ptr<InProcessTransport> transport_ = std::make_unique<InProcessTransport>();
  std::map<std::string, Member> members_;
};

// ---------------------------------------------------------------- handshake

TEST_F(ReplicationNodeTest, ALeaderStartsItsEpochOnceEveryFollowerAnswered) {
  Open("F1", Role::kReplica, NodeOptionsFor({}));
  transport_->SetReachable("F1", false);
  Member& leader = Open("L", Role::kLeader, NodeOptionsFor({"F1"}));
  const uint64_t epoch_before = leader.node->epoch();
  std::string name;
  const absl::Status waiting = leader.node->CheckWritable(&name);
  EXPECT_EQ(waiting.code(), absl::StatusCode::kUnavailable) << waiting;
  EXPECT_THAT(std::string(waiting.message()), HasSubstr("F1"));
  // The clock does not move: after its link has tried and failed to reach F1,
  // it still waits for F1.
  ASSERT_TRUE(Eventually([&] {
    const v1::StatusResponse s = StatusOf("L");
    return s.followers_size() == 1 && !s.followers(0).error().empty();
  })) << Describe("L");
  EXPECT_FALSE(Leads("L"));
  transport_->SetReachable("F1", true);
  ASSERT_TRUE(Eventually([&] { return Leads("L"); })) << Describe("L");
  EXPECT_EQ(leader.node->epoch(), epoch_before + 1);
  ASSERT_TRUE(Eventually([&] { return members_["F1"].node->epoch() == epoch_before + 1; }));
}

TEST_F(ReplicationNodeTest, AnAsyncLeaderLeadsWithoutAnAbsentFollowerOnceStartWaitPassed) {
  Open("F1", Role::kReplica, NodeOptionsFor({}));
  transport_->SetReachable("F1", false);
  Open("L", Role::kLeader, NodeOptionsFor({"F1"}));
  EXPECT_FALSE(Leads("L"));
  clock_.AdvanceMillis(2999);
  EXPECT_FALSE(Leads("L"));
  clock_.AdvanceMillis(2);
  ASSERT_TRUE(Eventually([&] { return Leads("L"); })) << Describe("L");
}

TEST_F(ReplicationNodeTest, ASyncLeaderNeverLeadsWithoutEnoughFollowers) {
  Open("F1", Role::kReplica, NodeOptionsFor({}));
  Open("F2", Role::kReplica, NodeOptionsFor({}));
  transport_->SetReachable("F1", false);
  transport_->SetReachable("F2", false);
  Open("L", Role::kLeader, NodeOptionsFor({"F1", "F2"}, /*sync_acks=*/1));
  clock_.AdvanceMillis(60'000);
  // Needs 2 - 1 + 1 = 2 answers: F1 alone is not enough.
  transport_->SetReachable("F1", true);
  ASSERT_TRUE(Eventually([&] { return transport_->connects("F1") > 0; }));
  clock_.AdvanceMillis(60'000);
  EXPECT_FALSE(Leads("L")) << Describe("L");
  transport_->SetReachable("F2", true);
  ASSERT_TRUE(Eventually([&] { return Leads("L"); })) << Describe("L");
}

TEST_F(ReplicationNodeTest, ARestartedLeaderBehindAFollowerRefusesToLead) {
  StartGroup(1, /*sync_acks=*/1);
  Member& leader = members_["L"];
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(Write(leader, absl::StrCat("k", i), "v").ok());
  ASSERT_TRUE(Eventually([&] { return CaughtUp("F1"); }));
  const uint64_t follower_last = members_["F1"].store->last_index();
  // The leader loses its data directory while its follower keeps everything.
  Close("L");
  absl::StatusOr<std::vector<std::string>> files = fs_.ListDir("/data/L");
  ASSERT_TRUE(files.ok()) << files.status();
  for (const std::string& name : *files) {
    ASSERT_TRUE(fs_.Remove(absl::StrCat("/data/L/", name)).ok());
  }
  Member& again = Open("L", Role::kLeader, NodeOptionsFor({"F1"}, 1));
  ASSERT_TRUE(Eventually([&] { return again.node->role() == Role::kDeposed; })) << Describe("L");
  std::string name;
  EXPECT_EQ(again.node->CheckWritable(&name).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(members_["F1"].store->last_index(), follower_last);
}

TEST_F(ReplicationNodeTest, AtAHandshakeOnlyWhatTheFollowerHoldsDurablyCountsAsAcknowledged) {
  StartGroup(1, 1);
  Member& leader = members_["L"];
  // The stream of L's epoch is up (accepting a leader fsyncs F1's EPOCH file).
  ASSERT_TRUE(Eventually([&] {
    const v1::StatusResponse s = StatusOf("L");
    return CaughtUp("F1") && s.followers_size() == 1 && s.followers(0).state() == "streaming" &&
           s.followers(0).acked_index() == leader.store->last_index();
  }));
  f1_fs_.HoldSyncs(true);  // F1 takes records but cannot make them durable.
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(Write(leader, absl::StrCat("k", i), "v").ok());
  ASSERT_TRUE(Eventually([&] { return CaughtUp("F1"); }));
  const uint64_t durable = members_["F1"].store->durable_index();
  ASSERT_LT(durable, members_["F1"].store->last_index());
  transport_->Cut("F1");  // A new stream: the leader learns F1's position again.
  ASSERT_TRUE(Eventually([&] { return transport_->connects("F1") >= 3; })) << Describe("L");
  ASSERT_TRUE(Eventually([&] { return StatusOf("L").followers(0).state() == "streaming"; }));
  EXPECT_LE(StatusOf("L").followers(0).acked_index(), durable)
      << "the leader counted records F1 holds but has not made durable";
  f1_fs_.HoldSyncs(false);
  ASSERT_TRUE(Eventually(
      [&] { return StatusOf("L").followers(0).acked_index() == leader.store->last_index(); }));
}

TEST_F(ReplicationNodeTest, APromotedNodeRestartsPushingToTheFollowersOfItsPromotion) {
  StartGroup(2);
  Member& leader = members_["L"];
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(Write(leader, absl::StrCat("k", i), "v").ok());
  ASSERT_TRUE(Eventually([&] { return CaughtUp("F1") && CaughtUp("F2"); }));
  Close("L");
  absl::StatusOr<ReplicationHooks::PromoteResult> promoted =
      members_["F1"].node->Promote(0, {"F2"}, false);
  ASSERT_TRUE(promoted.ok()) << promoted.status();
  ASSERT_TRUE(Eventually([&] { return StatusOf("F2").leader() == "F1"; }));
  // Restarted as a replica process with no --followers: its EPOCH says it leads, and to whom.
  Close("F1");
  Open("F1", Role::kReplica, NodeOptionsFor({}));
  ASSERT_TRUE(Eventually([&] { return Leads("F1"); })) << Describe("F1");
  const v1::StatusResponse status = StatusOf("F1");
  ASSERT_EQ(status.followers_size(), 1) << status.ShortDebugString();
  EXPECT_EQ(status.followers(0).address(), "F2");
  EXPECT_GT(status.epoch(), promoted->epoch);  // A restart is a new epoch.
}

// ---------------------------------------------------------------- resync

TEST_F(ReplicationNodeTest, AFollowerCutOffResumesFromItsPositionWithoutASnapshot) {
  StartGroup(1);
  Member& leader = members_["L"];
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(Write(leader, absl::StrCat("a", i), "v").ok());
  ASSERT_TRUE(Eventually([&] { return CaughtUp("F1"); }));
  transport_->SetReachable("F1", false);
  transport_->Cut("F1");
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(Write(leader, absl::StrCat("b", i), "v").ok());
  EXPECT_FALSE(CaughtUp("F1"));
  transport_->SetReachable("F1", true);
  ASSERT_TRUE(Eventually([&] { return CaughtUp("F1"); })) << Describe("L");
  const v1::StatusResponse status = StatusOf("L");
  ASSERT_EQ(status.followers_size(), 1);
  EXPECT_EQ(status.followers(0).snapshots_sent(), 0u);
  std::string value;
  uint64_t version = 0;
  EXPECT_TRUE(members_["F1"].store->Get("b49", &value, &version));
}

TEST_F(ReplicationNodeTest, AFollowerWhoseEntriesAreGoneGetsASnapshotThenTheLog) {
  StartGroup(1);
  Member& leader = members_["L"];
  transport_->SetReachable("F1", false);
  transport_->Cut("F1");
  for (int i = 0; i < 300; ++i) ASSERT_TRUE(Write(leader, absl::StrCat("k", i), "v").ok());
  ASSERT_TRUE(leader.store->TakeSnapshot().ok());  // Nobody connected: the log goes.
  ASSERT_GT(leader.store->GetStatus().log_first_index, 1u);
  transport_->SetReachable("F1", true);
  ASSERT_TRUE(Eventually([&] { return CaughtUp("F1"); })) << Describe("L");
  EXPECT_GE(StatusOf("L").followers(0).snapshots_sent(), 1u);
  for (int i = 0; i < 300; i += 37) {
    std::string value;
    uint64_t version = 0;
    EXPECT_TRUE(members_["F1"].store->Get(absl::StrCat("k", i), &value, &version)) << i;
  }
}

// ---------------------------------------------------------------- acks

TEST_F(ReplicationNodeTest, ASyncWaitEndsWhenTheFollowerHoldsTheWriteDurably) {
  StartGroup(1, 1);
  Member& leader = members_["L"];
  absl::StatusOr<MutationResult> r = Write(leader, "k", "v");
  ASSERT_TRUE(r.ok());
  // Shared with the callback: it may run after a failed assertion ends the test.
  auto outcome = std::make_shared<Outcome>();
  leader.node->AwaitReplicas(r->index, 1, [outcome](const absl::Status& s) { outcome->Set(s); });
  ASSERT_TRUE(Eventually([&] { return outcome->done(); }));
  EXPECT_TRUE(outcome->status().ok()) << outcome->status();
  EXPECT_GE(members_["F1"].store->durable_index(), r->index);
}

TEST_F(ReplicationNodeTest, ASyncWaitTimesOutOnTheInjectedClockWhenNoFollowerAcks) {
  StartGroup(1, 1);
  Member& leader = members_["L"];
  transport_->Hold("F1", true);
  absl::StatusOr<MutationResult> r = Write(leader, "k", "v");
  ASSERT_TRUE(r.ok());
  // Shared with the callback: it may run after a failed assertion ends the test.
  auto outcome = std::make_shared<Outcome>();
  leader.node->AwaitReplicas(r->index, 1, [outcome](const absl::Status& s) { outcome->Set(s); });
  clock_.AdvanceMillis(4999);
  EXPECT_FALSE(outcome->done());
  clock_.AdvanceMillis(2);
  ASSERT_TRUE(Eventually([&] { return outcome->done(); }));
  EXPECT_EQ(outcome->status().code(), absl::StatusCode::kDeadlineExceeded) << outcome->status();
  transport_->Hold("F1", false);
}

// Under sync acks a leader read shows a write only once the in-sync followers
// hold it: otherwise a read could return a write that the failover right after
// loses (never acknowledged, yet seen).
TEST_F(ReplicationNodeTest, UnderSyncAcksALeaderReadSeesAWriteOnlyOnceItsFollowerHoldsIt) {
  StartGroup(1, 1);
  Member& leader = members_["L"];
  transport_->Hold("F1", true);
  absl::StatusOr<MutationResult> r = Write(leader, "k", "v");  // Durable on L only.
  ASSERT_TRUE(r.ok());
  std::string value;
  uint64_t version = 0;
  EXPECT_FALSE(leader.store->Get("k", &value, &version))
      << "the leader showed a write its in-sync follower does not hold";
  auto outcome = std::make_shared<Outcome>();
  auto seen_when_acknowledged = std::make_shared<std::atomic<bool>>(false);
  Store* store = leader.store.get();
  leader.node->AwaitReplicas(r->index, 1,
                             [outcome, seen_when_acknowledged, store](const absl::Status& s) {
                               std::string v;
                               uint64_t ver = 0;
                               seen_when_acknowledged->store(store->Get("k", &v, &ver));
                               outcome->Set(s);
                             });
  transport_->Hold("F1", false);
  ASSERT_TRUE(Eventually([&] { return outcome->done(); }));
  ASSERT_TRUE(outcome->status().ok()) << outcome->status();
  EXPECT_TRUE(seen_when_acknowledged->load()) << "acknowledged before it was visible";
  EXPECT_TRUE(leader.store->Get("k", &value, &version));
}

// An ack says "this follower holds it durably" to the stream's leader. Once a
// newer leader's stream replaced the old one (this node may then truncate or
// replace its log for the new leader), the old stream's ack thread must say
// nothing more, even about records that become durable only now.
TEST_F(ReplicationNodeTest, AReplacedStreamIsNeverAckedAgain) {
  Member& f = Open("F1", Role::kReplica, NodeOptionsFor({}));
  ScriptedStream old_stream;
  ScriptedStream new_stream;
  std::thread old_session([&] { (void)RunFollowerSession(f.node.get(), &old_stream); });
  std::thread new_session;
  // The old leader's entries arrive but cannot be made durable yet (the log's
  // fsyncs wait; the EPOCH file's, which accepting a leader needs, do not).
  f1_fs_.HoldSyncs(true, "wal-");
  old_stream.Send(HelloFrom("A", 5));
  old_stream.Send(EntriesOf(1, 3, 5));
  ASSERT_TRUE(Eventually([&] { return f.store->last_index() == 3 && f1_fs_.syncs_waiting() > 0; }));
  // A leader of a newer epoch takes over the follower.
  new_stream.Send(HelloFrom("B", 6));
  new_session = std::thread([&] { (void)RunFollowerSession(f.node.get(), &new_stream); });
  ASSERT_TRUE(Eventually([&] { return new_stream.answered_position(); }));
  // Now they become durable: the new stream acks them (its leader counts only
  // what the position said); the old stream must not.
  f1_fs_.HoldSyncs(false);
  ASSERT_TRUE(Eventually([&] { return new_stream.acked() >= 3; }));
  // An ack thread that ignored the replacement writes its ack at the same
  // moment; give it a bounded chance to show up before closing the stream.
  const bool old_acked = ::kvstore::testing::PollUntil([&] { return old_stream.acked() >= 3; },
                                                       absl::Milliseconds(300));
  old_stream.Cancel();
  new_stream.Cancel();
  old_session.join();
  new_session.join();
  EXPECT_FALSE(old_acked) << "the replaced stream acked index " << old_stream.acked();
}

// ---------------------------------------------------------------- epochs, step-down

TEST_F(ReplicationNodeTest, ASecondLeaderOfTheSameEpochIsRefusedAndStops) {
  StartGroup(3);
  Member& leader = members_["L"];
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(Write(leader, absl::StrCat("k", i), "v").ok());
  for (const char* f : {"F1", "F2", "F3"}) ASSERT_TRUE(Eventually([&] { return CaughtUp(f); }));
  const uint64_t epoch = leader.node->epoch();
  Close("L");
  // F1 and F2 are both promoted to epoch + 1 with F3 as their follower; F2 is
  // forced, as a partition that hid F3 would make it.
  absl::StatusOr<ReplicationHooks::PromoteResult> first =
      members_["F1"].node->Promote(epoch + 1, {"F3"}, false);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(Eventually([&] { return StatusOf("F3").leader() == "F1"; }));
  // F3 cannot be asked (F2 is forced), so only F2's Hello meets F3's epoch.
  transport_->SetReachable("F3", false);
  absl::StatusOr<ReplicationHooks::PromoteResult> second =
      members_["F2"].node->Promote(epoch + 1, {"F3"}, true);
  ASSERT_TRUE(second.ok()) << second.status();
  transport_->SetReachable("F3", true);
  ASSERT_TRUE(Eventually([&] { return members_["F2"].node->role() == Role::kDeposed; }))
      << Describe("F2");
  EXPECT_EQ(StatusOf("F3").leader(), "F1");
  EXPECT_TRUE(Leads("F1"));
}

// A restarted leader and a promotion can pick the same epoch at once (static
// mode has no one to arbitrate; a fault run did exactly this). The node that
// wrote records of that epoch itself must never follow the other leader of it:
// their records at the same (index, epoch) differ, and a follower skips a
// record it holds at the same (index, epoch) as a resend.
TEST_F(ReplicationNodeTest, ANodeThatLedAnEpochNeverFollowsAnotherLeaderOfIt) {
  StartGroup(2);
  ASSERT_TRUE(Write(members_["L"], "k", "v0").ok());
  for (const char* f : {"F1", "F2"}) ASSERT_TRUE(Eventually([&] { return CaughtUp(f); }));
  const uint64_t epoch = members_["L"].node->epoch();
  // L restarts while F1 is cut off; after --start-wait it leads epoch + 1 with F2.
  Close("L");
  transport_->SetReachable("F1", false);
  Member& l = Open("L", Role::kLeader, NodeOptionsFor({"F1", "F2"}));
  clock_.AdvanceMillis(3100);
  ASSERT_TRUE(Eventually([&] { return Leads("L"); })) << Describe("L");
  ASSERT_EQ(l.node->epoch(), epoch + 1);
  ASSERT_TRUE(Write(l, "k", "from L").ok());
  // Meanwhile F1, which never heard of it, is promoted to the same epoch.
  transport_->SetReachable("L", false);
  absl::StatusOr<ReplicationHooks::PromoteResult> promoted =
      members_["F1"].node->Promote(epoch + 1, {"L"}, /*force=*/true);
  ASSERT_TRUE(promoted.ok()) << promoted.status();
  ASSERT_TRUE(Write(members_["F1"], "k", "from F1").ok());
  // L reaches F1 and is refused (F1 leads that epoch): L stops leading.
  transport_->SetReachable("F1", true);
  ASSERT_TRUE(Eventually([&] { return l.node->role() == Role::kDeposed; })) << Describe("L");
  // Then F1 reaches L.
  transport_->SetReachable("L", true);
  ASSERT_TRUE(Eventually([&] {
    const v1::StatusResponse f1 = StatusOf("F1");
    return members_["F1"].node->role() == Role::kDeposed ||
           (f1.followers_size() == 1 && f1.followers(0).state() == "streaming");
  })) << Describe("F1");
  EXPECT_NE(l.node->role(), Role::kReplica)
      << "L follows another leader of an epoch it led: " << Describe("L");
  std::string value;
  uint64_t version = 0;
  if (l.store->Get("k", &value, &version)) {
    EXPECT_EQ(value, "from L") << "L's own record of that epoch was replaced";
  }
}

v1::PromiseRequest PromiseOf(uint64_t epoch, const std::string& candidate) {
  v1::PromiseRequest request;
  request.set_epoch(epoch);
  request.set_candidate(candidate);
  request.set_candidate_id(candidate + "-id");  // As HelloFrom names it.
  return request;
}

// A promotion asks each follower to promise it the new epoch, and the
// follower states its position only once it has: from then on it takes and
// confirms nothing from an older epoch's stream, or the old leader could
// acknowledge sync writes with this follower's help that the new leader,
// which compared positions before they arrived, never has.
TEST_F(ReplicationNodeTest, AFollowerThatPromisedAnEpochTakesAndAcksNothingMoreFromAnOlderOne) {
  Member& f = Open("F1", Role::kReplica, NodeOptionsFor({}));
  ScriptedStream old_stream;
  std::thread old_session([&] { (void)RunFollowerSession(f.node.get(), &old_stream); });
  old_stream.Send(HelloFrom("A", 5));
  old_stream.Send(EntriesOf(1, 3, 5));
  ASSERT_TRUE(Eventually([&] { return old_stream.acked() == 3; }));

  absl::StatusOr<v1::Position> promised = f.node->PromiseEpoch(PromiseOf(6, "B"));
  ASSERT_TRUE(promised.ok()) << promised.status();
  EXPECT_EQ(promised->last_index(), 3u);
  EXPECT_EQ(promised->last_epoch(), 5u);
  EXPECT_EQ(promised->epoch(), 6u);
  // The old leader's stream goes on: nothing of it is taken or acked.
  old_stream.Send(EntriesOf(4, 5, 5));
  old_session.join();  // Ends at that message: a newer epoch replaced the stream.
  EXPECT_EQ(f.store->last_index(), 3u);
  EXPECT_EQ(old_stream.acked(), 3u);
  // Its next handshake is refused, naming the newer epoch and its candidate.
  ScriptedStream again;
  again.Send(HelloFrom("A", 5));
  (void)RunFollowerSession(f.node.get(), &again);
  ASSERT_TRUE(again.refused().has_value());
  EXPECT_EQ(again.refused()->reason(), "stale_epoch");
  EXPECT_EQ(again.refused()->epoch(), 6u);
  EXPECT_EQ(again.refused()->leader(), "B");

  // The promise is durable, like a vote: after a restart it still holds.
  Close("F1");
  Member& restarted = Open("F1", Role::kReplica, NodeOptionsFor({}));
  EXPECT_EQ(restarted.node->epoch(), 6u);
  // Another candidate for the same epoch is refused; the same one is answered again.
  absl::StatusOr<v1::Position> other = restarted.node->PromiseEpoch(PromiseOf(6, "C"));
  EXPECT_EQ(other.status().code(), absl::StatusCode::kFailedPrecondition) << other.status();
  EXPECT_THAT(other.status().message(), HasSubstr("B"));
  EXPECT_TRUE(restarted.node->PromiseEpoch(PromiseOf(6, "B")).ok());
  EXPECT_EQ(restarted.node->PromiseEpoch(PromiseOf(5, "C")).status().code(),
            absl::StatusCode::kFailedPrecondition);
  // And the candidate's own stream is followed.
  ScriptedStream from_b;
  from_b.Send(HelloFrom("B", 6));
  std::thread b_session([&] { (void)RunFollowerSession(restarted.node.get(), &from_b); });
  ASSERT_TRUE(Eventually([&] { return from_b.answered_position(); }));
  from_b.Cancel();
  b_session.join();
  EXPECT_FALSE(from_b.refused().has_value());
}

// The end-to-end case a soak found (docs/reliability.md, "Known anomalies"):
// L is cut off from F1 and its stream to F2 is slow. F1 is promoted after
// comparing positions with F2; then, before F1's own stream reaches F2, L's
// delayed entries do. F2 must not confirm them: L would acknowledge a sync
// write that the new leader F1 never has.
TEST_F(ReplicationNodeTest,
       ASyncWriteTheOldLeaderSendsAfterAPromotionAskedItsFollowerIsNotConfirmed) {
  StartGroup(2, 1);
  Member& leader = members_["L"];
  ASSERT_TRUE(Write(leader, "before", "v").ok());
  ASSERT_TRUE(Eventually([&] { return CaughtUp("F1") && CaughtUp("F2"); }));
  transport_->SetReachable("F1", false);  // L cannot reach F1 ...
  transport_->Cut("F1");
  transport_->Hold("F2", true);  // ... and what it sends F2 is delayed.
  absl::StatusOr<MutationResult> w = Write(leader, "w", "from L");
  ASSERT_TRUE(w.ok()) << w.status();
  auto outcome = std::make_shared<Outcome>();
  leader.node->AwaitReplicas(w->index, 1, [outcome](const absl::Status& s) { outcome->Set(s); });
  transport_->SetReachable("L", false);  // F1 cannot ask L (it is the old leader).
  // Just before F1's stream to F2 opens, L's delayed entries reach F2; L is
  // given a bounded chance to have them confirmed.
  // (F1's links connect on their own threads, after Promote may have returned.)
  auto released = std::make_shared<std::atomic<bool>>(false);
  transport_->SetConnectHook([this, outcome, released](const std::string& address) {
    if (address != "F2" || released->exchange(true)) return;
    transport_->Hold("F2", false);
    (void)::kvstore::testing::PollUntil([&] { return outcome->done(); }, absl::Milliseconds(300));
  });
  absl::StatusOr<ReplicationHooks::PromoteResult> promoted =
      members_["F1"].node->Promote(0, {"L", "F2"}, false);
  ASSERT_TRUE(promoted.ok()) << promoted.status();
  ASSERT_TRUE(Eventually([&] { return StatusOf("F2").leader() == "F1" && CaughtUp("F2", "F1"); }))
      << Describe("F2") << "\n"
      << Describe("F1");
  transport_->SetReachable("L", true);  // L learns of the new epoch.
  ASSERT_TRUE(Eventually([&] { return outcome->done(); })) << Describe("L");
  std::string value;
  uint64_t version = 0;
  const bool on_new_leader = members_["F1"].store->Get("w", &value, &version);
  EXPECT_TRUE(!outcome->status().ok() || on_new_leader)
      << "L acknowledged a sync write the new leader does not hold: lost";
  EXPECT_FALSE(outcome->status().ok()) << "the old leader confirmed a write after the promotion";
}

// Two promotions race for one epoch: the follower promised it to the first
// candidate refuses the second, which then leads nothing (even forced: a
// promise given elsewhere is not a position it may overrule).
TEST_F(ReplicationNodeTest, APromotionToAnEpochAFollowerPromisedAnotherCandidateIsRefused) {
  StartGroup(3);
  Member& leader = members_["L"];
  ASSERT_TRUE(Write(leader, "k", "v").ok());
  for (const char* f : {"F1", "F2", "F3"}) ASSERT_TRUE(Eventually([&] { return CaughtUp(f); }));
  const uint64_t epoch = leader.node->epoch();
  Close("L");
  ASSERT_TRUE(members_["F1"].node->Promote(epoch + 1, {"F3"}, false).ok());
  absl::StatusOr<ReplicationHooks::PromoteResult> second =
      members_["F2"].node->Promote(epoch + 1, {"F3"}, true);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition) << second.status();
  EXPECT_THAT(second.status().message(), HasSubstr("F3"));
  EXPECT_FALSE(Leads("F2"));
  EXPECT_NE(members_["F2"].node->role(), Role::kLeader);
  ASSERT_TRUE(Eventually([&] { return StatusOf("F3").leader() == "F1"; }));
  EXPECT_TRUE(Leads("F1"));
}

// Two promotions at once, each candidate a follower of the other: each is
// asked to promise the epoch it is itself campaigning for. The candidate whose
// node id sorts first wins and the other yields, so exactly one leads.
TEST_F(ReplicationNodeTest, TwoPromotionsAtOnceEndWithExactlyOneLeader) {
  StartGroup(2);
  ASSERT_TRUE(Write(members_["L"], "k", "v").ok());
  for (const char* f : {"F1", "F2"}) ASSERT_TRUE(Eventually([&] { return CaughtUp(f); }));
  Close("L");
  // Both campaign at once: no promise is answered before both have asked one
  // (L, closed, is not asked: the first round could not reach it).
  std::atomic<int> asked{0};
  transport_->SetPromiseHook([&asked](const std::string&) {
    ++asked;
    (void)::kvstore::testing::PollUntil([&] { return asked.load() >= 2; }, absl::Seconds(5));
  });
  absl::StatusOr<ReplicationHooks::PromoteResult> f1;
  absl::StatusOr<ReplicationHooks::PromoteResult> f2;
  std::thread t1([&] { f1 = members_["F1"].node->Promote(0, {"L", "F2"}, false); });
  std::thread t2([&] { f2 = members_["F2"].node->Promote(0, {"L", "F1"}, false); });
  t1.join();
  t2.join();
  transport_->SetPromiseHook(nullptr);
  EXPECT_NE(f1.ok(), f2.ok()) << "F1: " << f1.status() << "; F2: " << f2.status();
  const std::string winner = f1.ok() ? "F1" : "F2";
  const std::string loser = f1.ok() ? "F2" : "F1";
  EXPECT_LT(members_[winner].node->node_id(), members_[loser].node->node_id())
      << "F1: " << f1.status() << "; F2: " << f2.status();
  ASSERT_TRUE(Eventually([&] {
    return StatusOf(loser).leader() == winner && CaughtUp(loser, winner);
  })) << Describe(loser);
  EXPECT_TRUE(Leads(winner));
}

TEST_F(ReplicationNodeTest, ALeaderSteppingDownFailsItsWaitingWritesAndFencesItsStore) {
  StartGroup(1, 1);
  Member& leader = members_["L"];
  // F1 knows L's epoch first (else its promotion would claim that same epoch).
  ASSERT_TRUE(Eventually([&] { return CaughtUp("F1"); }));
  transport_->Hold("F1", true);
  absl::StatusOr<MutationResult> r = Write(leader, "k", "v");
  ASSERT_TRUE(r.ok());
  // Shared with the callback: it may run after a failed assertion ends the test.
  auto outcome = std::make_shared<Outcome>();
  leader.node->AwaitReplicas(r->index, 1, [outcome](const absl::Status& s) { outcome->Set(s); });
  // F1 is promoted past it (forced: it lacks the held write) and reaches L.
  absl::StatusOr<ReplicationHooks::PromoteResult> promoted =
      members_["F1"].node->Promote(0, {"L"}, true);
  ASSERT_TRUE(promoted.ok()) << promoted.status();
  ASSERT_TRUE(Eventually([&] { return outcome->done(); }));
  EXPECT_FALSE(outcome->status().ok())
      << "a write waiting for replicas was confirmed by a deposed leader";
  EXPECT_EQ(leader.node->role(), Role::kReplica);
  MutationResult late = Set(leader.store.get(), "late", "write");
  EXPECT_EQ(late.status.code(), absl::StatusCode::kUnavailable) << late.status;
  transport_->Hold("F1", false);
}

// ---------------------------------------------------------------- coordinated (etcd mode)

NodeOptions Coordinated(NodeOptions o) {
  o.coordinated = true;
  return o;
}

TEST_F(ReplicationNodeTest, ACoordinatedNodeLeadsExactlyTheEpochItIsGiven) {
  Open("F1", Role::kReplica, Coordinated(NodeOptionsFor({}, 1)));
  Member& l = Open("L", Role::kLeader, Coordinated(NodeOptionsFor({}, 1)));
  EXPECT_EQ(l.node->role(), Role::kReplica) << "etcd mode starts every node as a follower";
  ASSERT_TRUE(l.node->LeadEpoch(1000, {"F1"}, [] { return true; }).ok());
  EXPECT_EQ(l.node->epoch(), 1000u);
  ASSERT_TRUE(Eventually([&] { return Leads("L"); }));
  ASSERT_TRUE(Write(l, "k", "v").ok());
  ASSERT_TRUE(Eventually([&] { return CaughtUp("F1"); }));
  EXPECT_EQ(members_["F1"].node->epoch(), 1000u);
  // An epoch not above what F1 has seen is refused, and F1 keeps following.
  absl::Status refused = members_["F1"].node->LeadEpoch(1000, {"L"}, [] { return true; });
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition) << refused;
  EXPECT_EQ(members_["F1"].node->role(), Role::kReplica);
}

TEST_F(ReplicationNodeTest, ALeaderWhoseLeaseRanOutAcknowledgesNothingMore) {
  Open("F1", Role::kReplica, Coordinated(NodeOptionsFor({}, 1)));
  Member& l = Open("L", Role::kLeader, Coordinated(NodeOptionsFor({}, 1)));
  auto valid = std::make_shared<std::atomic<bool>>(true);
  ASSERT_TRUE(l.node->LeadEpoch(7, {"F1"}, [valid] { return valid->load(); }).ok());
  ASSERT_TRUE(Eventually([&] { return CaughtUp("F1"); }));
  transport_->Hold("F1", true);
  absl::StatusOr<MutationResult> r = Write(l, "k", "v");
  ASSERT_TRUE(r.ok()) << r.status();
  auto outcome = std::make_shared<Outcome>();
  l.node->AwaitReplicas(r->index, 1, [outcome](const absl::Status& s) { outcome->Set(s); });
  valid->store(false);  // valid_until passed; "lost" has not fired yet.
  std::string leader;
  absl::Status admitted = l.node->CheckWritable(&leader);
  EXPECT_EQ(admitted.code(), absl::StatusCode::kUnavailable) << admitted;
  EXPECT_THAT(std::string(admitted.message()), HasSubstr("leadership lost"));
  EXPECT_FALSE(l.node->CheckAcknowledge().ok());
  transport_->Hold("F1", false);  // F1's ack arrives: it must not confirm the write.
  ASSERT_TRUE(Eventually([&] { return outcome->done(); }));
  EXPECT_EQ(outcome->status().code(), absl::StatusCode::kUnavailable) << outcome->status();
  l.node->StepDown("lease lost");
  EXPECT_EQ(l.node->role(), Role::kReplica);
  MutationResult late = Set(l.store.get(), "late", "write");
  EXPECT_EQ(late.status.code(), absl::StatusCode::kUnavailable) << late.status;
  l.node->SetCoordinatorLeader("F1");
  EXPECT_THAT(std::string(l.node->CheckWritable(&leader).message()), HasSubstr("F1"));
  EXPECT_EQ(leader, "F1");
}

// A graceful transfer (docs/failover.md §8a): paused writes are refused
// unapplied and name no leader, the last index stays put while paused, the
// target's durable index is awaited, and a resume admits writes again.
TEST_F(ReplicationNodeTest, APausedLeaderRefusesWritesUnappliedUntilItResumes) {
  Open("F1", Role::kReplica, Coordinated(NodeOptionsFor({})));
  Member& l = Open("L", Role::kLeader, Coordinated(NodeOptionsFor({})));
  ASSERT_TRUE(l.node->LeadEpoch(7, {"F1"}, [] { return true; }).ok());
  ASSERT_TRUE(Write(l, "k", "v").ok());
  transport_->Hold("F1", true);  // F1's acks wait.
  ASSERT_TRUE(Write(l, "k2", "v").ok());

  absl::StatusOr<uint64_t> last = l.node->PauseWritesForTransfer("n2");
  ASSERT_TRUE(last.ok()) << last.status();
  EXPECT_EQ(*last, l.store->last_index());
  std::string leader;
  absl::Status refused = l.node->CheckWritable(&leader);
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnavailable) << refused;
  EXPECT_THAT(std::string(refused.message()), HasSubstr("leadership transfer to n2"));
  EXPECT_TRUE(leader.empty()) << leader;
  // A write admitted before the pause but not yet written is refused by the
  // store: the index the target must reach does not move.
  MutationResult late = Set(l.store.get(), "late", "write");
  EXPECT_EQ(late.status.code(), absl::StatusCode::kUnavailable) << late.status;
  EXPECT_EQ(l.store->last_index(), *last);
  // F1 does not hold the last entry while its acks are held back.
  EXPECT_LT(l.node->AwaitFollowerDurable("F1", *last, absl::Milliseconds(50)), *last);
  transport_->Hold("F1", false);
  EXPECT_EQ(l.node->AwaitFollowerDurable("F1", *last, absl::Seconds(10)), *last);
  EXPECT_EQ(l.node->AwaitFollowerDurable("nobody", *last, absl::Milliseconds(1)), 0u);

  l.node->ResumeWrites();
  absl::StatusOr<MutationResult> after = Write(l, "k3", "v");
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->index, *last + 1);
  // Paused, then stepped down: refusals as any replica's, never the pause's.
  ASSERT_TRUE(l.node->PauseWritesForTransfer("n2").ok());
  l.node->StepDown("leadership handed to n2");
  l.node->ResumeWrites();  // No-op: it does not lead.
  EXPECT_EQ(Set(l.store.get(), "late2", "write").status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(l.node->CheckWritable(&leader).message()),
              ::testing::Not(HasSubstr("transfer")));
  EXPECT_EQ(l.node->PauseWritesForTransfer("n2").status().code(),
            absl::StatusCode::kFailedPrecondition);
}

// Router epochs (docs/failover.md, "Router epochs"): a write whose router
// names a newer epoch than the leader's fences the leader at once (nothing
// admitted or acknowledged any more), and the coordinator is told; a lower or
// equal epoch is served. Confirmed by the coordinator, the leadership resumes.
TEST_F(ReplicationNodeTest, ARouterNamingANewerEpochFencesACoordinatedLeaderUntilEtcdAnswers) {
  Open("F1", Role::kReplica, Coordinated(NodeOptionsFor({}, 1)));
  Member& l = Open("L", Role::kLeader, Coordinated(NodeOptionsFor({}, 1)));
  auto told = std::make_shared<std::vector<uint64_t>>();
  l.node->SetRouterFenceHandler([told](uint64_t epoch) { told->push_back(epoch); });
  ASSERT_TRUE(l.node->LeadEpoch(7, {"F1"}, [] { return true; }).ok());
  ASSERT_TRUE(Eventually([&] { return Leads("L") && CaughtUp("F1"); }));
  std::string leader;
  EXPECT_TRUE(l.node->CheckRouterEpoch(0, &leader).ok()) << "0: unknown";
  EXPECT_TRUE(l.node->CheckRouterEpoch(6, &leader).ok()) << "a router behind is served";
  EXPECT_TRUE(l.node->CheckRouterEpoch(7, &leader).ok());
  EXPECT_TRUE(told->empty());

  transport_->Hold("F1", true);
  absl::StatusOr<MutationResult> r = Write(l, "k", "v");
  ASSERT_TRUE(r.ok()) << r.status();
  auto outcome = std::make_shared<Outcome>();
  l.node->AwaitReplicas(r->index, 1, [outcome](const absl::Status& s) { outcome->Set(s); });
  absl::Status refused = l.node->CheckRouterEpoch(9, &leader);
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition) << refused;
  EXPECT_THAT(std::string(refused.message()), HasSubstr("epoch 9"));
  EXPECT_TRUE(leader.empty()) << "names no leader: " << leader;
  EXPECT_EQ(*told, std::vector<uint64_t>{9});
  EXPECT_EQ(l.node->router_fenced_epoch(), 9u);
  // Fenced: nothing admitted, nothing acknowledged, not even a write whose
  // follower acks now.
  absl::Status admitted = l.node->CheckWritable(&leader);
  EXPECT_EQ(admitted.code(), absl::StatusCode::kUnavailable) << admitted;
  EXPECT_THAT(std::string(admitted.message()), HasSubstr("a router named epoch 9"));
  EXPECT_FALSE(l.node->CheckAcknowledge().ok());
  transport_->Hold("F1", false);
  ASSERT_TRUE(Eventually([&] { return outcome->done(); }));
  EXPECT_EQ(outcome->status().code(), absl::StatusCode::kUnavailable) << outcome->status();
  // Refused again while fenced; the coordinator is told once per fence.
  EXPECT_FALSE(l.node->CheckRouterEpoch(10, &leader).ok());
  EXPECT_EQ(told->size(), 1u);
  EXPECT_EQ(l.node->router_fenced_epoch(), 10u);

  // etcd still names L (a confused router): it leads again, same epoch.
  l.node->ResumeAfterRouterFence(6);  // Not its epoch: nothing changes.
  EXPECT_FALSE(l.node->CheckWritable(&leader).ok());
  l.node->ResumeAfterRouterFence(7);
  EXPECT_EQ(l.node->router_fenced_epoch(), 0u);
  ASSERT_TRUE(Write(l, "k2", "v").ok());
  EXPECT_EQ(l.node->epoch(), 7u);

  // Fenced again, and this time etcd names another leader: StepDown.
  EXPECT_FALSE(l.node->CheckRouterEpoch(12, &leader).ok());
  EXPECT_EQ(told->size(), 2u);
  l.node->StepDown("a router named epoch 12 and the leader key is gone");
  EXPECT_EQ(l.node->role(), Role::kReplica);
  EXPECT_EQ(l.node->router_fenced_epoch(), 0u);
  EXPECT_EQ(Set(l.store.get(), "late", "write").status.code(), absl::StatusCode::kUnavailable);
  // A replica that knows no epoch that new refuses as not the leader too,
  // and tells no one (it leads nothing).
  EXPECT_EQ(l.node->CheckRouterEpoch(12, &leader).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(told->size(), 2u);
}

// Static mode: nobody can confirm or deny the router, so the leader steps
// down (deposed, its waiting writes failed), without recording the epoch.
TEST_F(ReplicationNodeTest, ARouterNamingANewerEpochDeposesAStaticLeaderWithoutRecordingIt) {
  StartGroup(1);
  Member& l = members_["L"];
  const uint64_t mine = l.node->epoch();
  std::string leader;
  EXPECT_TRUE(l.node->CheckRouterEpoch(mine, &leader).ok());
  ASSERT_TRUE(Write(l, "k", "v").ok());
  absl::Status refused = l.node->CheckRouterEpoch(mine + 5, &leader);
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition) << refused;
  EXPECT_EQ(l.node->role(), Role::kDeposed);
  absl::Status admitted = l.node->CheckWritable(&leader);
  EXPECT_EQ(admitted.code(), absl::StatusCode::kFailedPrecondition) << admitted;
  EXPECT_THAT(std::string(admitted.message()), HasSubstr("promote"));
  EXPECT_EQ(Set(l.store.get(), "late", "write").status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(l.node->epoch(), mine) << "a router's epoch is not recorded";
}

TEST_F(ReplicationNodeTest, ACoordinatedNodeNeverResumesLeadershipFromItsEpochFile) {
  Open("F1", Role::kReplica, Coordinated(NodeOptionsFor({})));
  Member& l = Open("L", Role::kLeader, Coordinated(NodeOptionsFor({})));
  ASSERT_TRUE(l.node->LeadEpoch(9, {"F1"}, [] { return true; }).ok());
  ASSERT_TRUE(Eventually([&] { return Leads("L"); }));
  Close("L");
  Member& again = Open("L", Role::kLeader, Coordinated(NodeOptionsFor({"F1"})));
  EXPECT_EQ(again.node->role(), Role::kReplica);
  std::string leader;
  EXPECT_FALSE(again.node->CheckWritable(&leader).ok());
  // A new leadership needs a newer epoch than the one it led.
  EXPECT_EQ(again.node->LeadEpoch(9, {"F1"}, [] { return true; }).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(again.node->LeadEpoch(12, {"F1"}, [] { return true; }).ok());
}

// ---------------------------------------------------------------- the in-sync set (etcd mode, sync
// acks)

// Stands in for etcd: records each in-sync set written, in order with the
// acks, and can hold a write (the etcd call blocks) until released.
// Records what a leader writes as its in-sync set, as etcd would. The node
// keeps the recording function after the test body returns (its thread may
// still call it while the fixture stops the nodes), so the state it writes to
// is shared with that function rather than owned by this object.
class FakeIsrStore {
 public:
  InSyncRecording Recording(std::vector<std::string> initial) {
    InSyncRecording r;
    r.initial = std::move(initial);
    r.record = [state = state_](uint64_t, const std::vector<std::string>& followers) {
      absl::MutexLock l(&state->mu);
      ++state->entered;
      state->mu.Await(absl::Condition(
          +[](bool* held) { return !*held; }, &state->held));
      state->events.push_back(absl::StrCat("isr=", absl::StrJoin(followers, ",")));
      return absl::OkStatus();
    };
    return r;
  }
  void Hold(bool held) {
    absl::MutexLock l(&state_->mu);
    state_->held = held;
  }
  int entered() const {
    absl::MutexLock l(&state_->mu);
    return state_->entered;
  }
  void Note(const std::string& event) const {
    absl::MutexLock l(&state_->mu);
    state_->events.push_back(event);
  }
  std::vector<std::string> events() const {
    absl::MutexLock l(&state_->mu);
    return state_->events;
  }

 private:
  struct State {
    absl::Mutex mu;
    bool held ABSL_GUARDED_BY(mu) = false;
    int entered ABSL_GUARDED_BY(mu) = 0;
    std::vector<std::string> events ABSL_GUARDED_BY(mu);
  };
  std::shared_ptr<State> state_ = std::make_shared<State>();
};

NodeOptions WithIsr(NodeOptions o) {
  o.coordinated = true;
  o.isr_timeout = absl::Seconds(1);
  return o;
}

TEST_F(ReplicationNodeTest,
       AFollowerLeavesTheRecordedInSyncSetBeforeAWriteIsAcknowledgedWithoutIt) {
  Open("F1", Role::kReplica, WithIsr(NodeOptionsFor({}, 1)));
  Open("F2", Role::kReplica, WithIsr(NodeOptionsFor({}, 1)));
  Member& l = Open("L", Role::kLeader, WithIsr(NodeOptionsFor({}, 1)));
  FakeIsrStore etcd;
  ASSERT_TRUE(l.node
                  ->LeadEpoch(
                      100, {"F1", "F2"}, [] { return true; }, etcd.Recording({"F1", "F2"}))
                  .ok());
  ASSERT_TRUE(Eventually([&] { return etcd.events().size() == 1; }));
  EXPECT_EQ(etcd.events()[0], "isr=F1,F2");
  ASSERT_TRUE(Eventually([&] { return CaughtUp("F1") && CaughtUp("F2"); }));

  transport_->Hold("F2", true);  // F2 stops acknowledging (SIGSTOP).
  absl::StatusOr<MutationResult> r = Write(l, "k", "v");
  ASSERT_TRUE(r.ok()) << r.status();
  auto outcome = std::make_shared<Outcome>();
  l.node->AwaitReplicas(r->index, 1, [outcome, etcd](const absl::Status& s) {
    etcd.Note(absl::StrCat("ack ", s.ToString()));
    outcome->Set(s);
  });
  ASSERT_TRUE(Eventually([&] { return CaughtUp("F1"); }));
  EXPECT_FALSE(outcome->done()) << "acknowledged while F2, in the set, lacks the write";

  etcd.Hold(true);
  // F2 is behind for the timeout: it leaves. The clock moves in steps the
  // timer sees (it notes when F2 fell behind on one of its ticks).
  ASSERT_TRUE(Eventually([&] {
    clock_.AdvanceMillis(100);
    return etcd.entered() == 2;
  }));
  EXPECT_FALSE(outcome->done()) << "acknowledged before the set without F2 was recorded";
  etcd.Hold(false);
  ASSERT_TRUE(Eventually([&] { return outcome->done(); }));
  EXPECT_TRUE(outcome->status().ok()) << outcome->status();
  std::vector<std::string> events = etcd.events();
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[1], "isr=F1");
  EXPECT_EQ(events[2], "ack OK");
  std::vector<std::string> in_sync;
  EXPECT_TRUE(l.node->InSyncFollowers(&in_sync));
  EXPECT_THAT(in_sync, ::testing::ElementsAre("F1"));

  // F2 comes back, catches up, and rejoins (recorded again).
  transport_->Hold("F2", false);
  ASSERT_TRUE(Eventually([&] {
    clock_.AdvanceMillis(100);
    std::vector<std::string> now;
    return l.node->InSyncFollowers(&now) && now.size() == 2;
  }));
  EXPECT_EQ(etcd.events().back(), "isr=F1,F2");
}

TEST_F(ReplicationNodeTest, WritesAreRefusedWhileFewerThanSyncAcksFollowersAreInSync) {
  Open("F1", Role::kReplica, WithIsr(NodeOptionsFor({}, 2)));
  Open("F2", Role::kReplica, WithIsr(NodeOptionsFor({}, 2)));
  Member& l = Open("L", Role::kLeader, WithIsr(NodeOptionsFor({}, 2)));
  FakeIsrStore etcd;
  ASSERT_TRUE(l.node
                  ->LeadEpoch(
                      100, {"F1", "F2"}, [] { return true; }, etcd.Recording({"F1", "F2"}))
                  .ok());
  ASSERT_TRUE(Eventually([&] { return CaughtUp("F1") && CaughtUp("F2"); }));
  transport_->Hold("F2", true);
  absl::StatusOr<MutationResult> r = Write(l, "k", "v");
  ASSERT_TRUE(r.ok()) << r.status();
  auto outcome = std::make_shared<Outcome>();
  l.node->AwaitReplicas(r->index, 2, [outcome](const absl::Status& s) { outcome->Set(s); });
  // F2 is behind for the timeout (the clock moves in steps the timer sees).
  ASSERT_TRUE(Eventually([&] {
    clock_.AdvanceMillis(100);
    return outcome->done();
  }));
  EXPECT_EQ(outcome->status().code(), absl::StatusCode::kUnavailable) << outcome->status();
  EXPECT_THAT(std::string(outcome->status().message()), HasSubstr("not enough in-sync replicas"));
  std::string leader;
  absl::Status refused = l.node->CheckWritable(&leader);
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnavailable) << refused;
  EXPECT_THAT(std::string(refused.message()), HasSubstr("not enough in-sync replicas"));
  transport_->Hold("F2", false);
}

TEST_F(ReplicationNodeTest, AFollowerRefusesAnEpochWhoseLeaderKeyIsGone) {
  Member& f = Open("F1", Role::kReplica, Coordinated(NodeOptionsFor({})));
  Member& l = Open("L", Role::kLeader, Coordinated(NodeOptionsFor({})));
  ASSERT_TRUE(l.node->LeadEpoch(100, {"F1"}, [] { return true; }).ok());
  ASSERT_TRUE(Write(l, "before", "v").ok());
  ASSERT_TRUE(Eventually([&] { return CaughtUp("F1"); }));
  const uint64_t held = f.store->last_index();

  f.node->FenceEpochsThrough(105);  // etcd shows no leader key at epoch_base + rev = 105.
  ASSERT_TRUE(Write(l, "after", "v").ok());
  ASSERT_TRUE(Eventually([&] {
    const v1::StatusResponse s = StatusOf("L");
    return s.followers_size() == 1 && s.followers(0).state() == "refused";
  })) << Describe("L");
  EXPECT_EQ(f.store->last_index(), held) << "applied an entry of an epoch whose key is gone";

  // A later leadership (a key created after that revision) is followed.
  Close("L");
  Member& next = Open("L2", Role::kLeader, Coordinated(NodeOptionsFor({})));
  ASSERT_TRUE(next.node->LeadEpoch(106, {"F1"}, [] { return true; }).ok());
  ASSERT_TRUE(Eventually([&] { return CaughtUp("F1", "L2"); }));
  EXPECT_EQ(f.node->epoch(), 106u);
}

// ---------------------------------------------------------------- retention

TEST_F(ReplicationNodeTest, TheLogAFollowerStillNeedsIsKept) {
  StoreOptions o = StoreOptionsFor("L");
  o.retain_log_bytes = 1 << 30;
  Open("F1", Role::kReplica, NodeOptionsFor({}));
  Open("L", Role::kLeader, NodeOptionsFor({"F1"}), o);
  ASSERT_TRUE(Eventually([&] { return Leads("L"); }));
  Member& leader = members_["L"];
  ASSERT_TRUE(Eventually([&] {
    const v1::StatusResponse s = StatusOf("L");
    return CaughtUp("F1") && s.followers_size() == 1 && s.followers(0).state() == "streaming" &&
           s.followers(0).acked_index() == members_["F1"].store->last_index();
  }));
  const uint64_t needed = members_["F1"].store->last_index() + 1;
  transport_->Hold("F1", true);  // Connected, but receives nothing more.
  for (int i = 0; i < 300; ++i) ASSERT_TRUE(Write(leader, absl::StrCat("k", i), "v").ok());
  ASSERT_TRUE(leader.store->TakeSnapshot().ok());
  EXPECT_LE(leader.store->GetStatus().log_first_index, needed)
      << "the snapshot removed log segments a connected follower still needs";
  transport_->Hold("F1", false);
  ASSERT_TRUE(Eventually([&] { return CaughtUp("F1"); }));
  EXPECT_EQ(StatusOf("L").followers(0).snapshots_sent(), 0u);
}

}  // namespace
}  // namespace kvstore
