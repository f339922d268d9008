#include "common/replication/node.h"

#include <algorithm>
#include <optional>
#include <thread>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "common/replication/follower_link.h"
#include "common/storage/storage_failpoints.h"
#include "glog/logging.h"

namespace kvstore {
namespace {

// (last epoch, last index) of a log: the one with the higher pair holds every
// entry the other may have had acknowledged (the leader of the later epoch
// started it from a log holding every acknowledged entry before it).
bool LogIsAhead(uint64_t epoch_a, uint64_t index_a, uint64_t epoch_b, uint64_t index_b) {
  return epoch_a > epoch_b || (epoch_a == epoch_b && index_a > index_b);
}

std::string OrUnknown(const std::string& s) { return s.empty() ? "another node" : s; }

}  // namespace

const char* RoleName(Role role) {
  switch (role) {
    case Role::kLeader:
      return "leader";
    case Role::kReplica:
      return "replica";
    case Role::kDeposed:
      return "deposed";
  }
  return "unknown";
}

ReplicationNode::ReplicationNode(Store* store, NodeOptions options, Role role)
    : store_(store), options_(std::move(options)), role_(role) {}

absl::StatusOr<std::unique_ptr<ReplicationNode>> ReplicationNode::Create(Store* store,
                                                                         NodeOptions options,
                                                                         Role role) {
  absl::StatusOr<EpochRecord> file = ReadEpochFile(store->fs(), store->dir());
  if (!file.ok()) return file.status();
  std::string node_id = options.node_id;
  if (node_id.empty()) {
    absl::StatusOr<std::string> kept = LoadOrCreateNodeId(store->fs(), store->dir());
    if (!kept.ok()) return kept.status();
    node_id = *kept;
  }
  // A node writes only as the leader of an epoch it started: until then the
  // store is fenced (Store::Fence), whatever role the flags gave it.
  store->Fence();
  std::unique_ptr<ReplicationNode> node(new ReplicationNode(store, std::move(options), role));
  node->node_id_ = node_id;
  node->file_ = *file;
  absl::MutexLock l(&node->mu_);
  node->promised_epoch_ = std::max(file->epoch, store->epoch());
  node->caught_up_at_ = node->Now();
  node->advertise_ = node->options_.advertise;
  node->shard_ = !node->options_.shard.empty() ? node->options_.shard : file->shard;
  node->cluster_ = !node->options_.cluster.empty() ? node->options_.cluster : file->cluster;
  if (!node->options_.shard.empty() && !file->shard.empty() &&
      file->shard != node->options_.shard) {
    return absl::FailedPreconditionError(absl::StrCat("the data directory ", store->dir(),
                                                      " belongs to shard ", file->shard,
                                                      " but --shard is ", node->options_.shard));
  }
  store->SetLogRetentionFloor([n = node.get()] {
    absl::MutexLock l(&n->mu_);
    uint64_t floor = 0;
    for (const auto& link : n->links_) {
      const uint64_t needed = link->needed_index();
      if (needed > 0 && (floor == 0 || needed < floor)) floor = needed;
    }
    return floor;
  });
  node->timer_ = std::thread([n = node.get()] { n->TimerThread(); });
  node->isr_thread_ = std::thread([n = node.get()] { n->InSyncThread(); });
  return node;
}

void ReplicationNode::Start(const std::string& advertise) {
  SettleRoleAndStartLinks(advertise);
  MaybeBeginEpoch();  // At once when there are no followers to ask.
  PublishReadiness();
}

void ReplicationNode::SettleRoleAndStartLinks(const std::string& advertise) {
  absl::MutexLock l(&mu_);
  if (started_ || stopping_) return;
  started_ = true;
  if (advertise_.empty()) advertise_ = advertise;
  const uint64_t log_epoch = store_->epoch();
  const bool led_last = file_.leader_id.empty()
                            ? (!file_.leader.empty() && file_.leader == advertise_)
                            : file_.leader_id == node_id_;
  if (led_last && log_epoch == file_.epoch) self_led_epoch_ = log_epoch;
  if (options_.coordinated) {
    // Leadership comes only from the coordinator's leader key, never from
    // this directory: a node that led before waits for the election too.
    role_ = Role::kReplica;
    if (!led_last) {
      leader_ = file_.leader;
      leader_id_ = file_.leader_id;
    }
    LOG(INFO) << "Coordinated (etcd) mode: starting as a replica at epoch "
              << std::max(promised_epoch_, log_epoch) << "; leadership comes from the leader key";
    return;
  }
  if (led_last) {
    // This node led the newest epoch it knows: it leads again (a new epoch,
    // once its followers have answered).
    if (role_ != Role::kLeader) LOG(INFO) << "Led epoch " << file_.epoch << " before: leading";
    role_ = Role::kLeader;
  } else if (role_ == Role::kLeader && ((!file_.leader_id.empty() && file_.leader_id != node_id_) ||
                                        file_.epoch > log_epoch)) {
    // Another node leads the newest epoch this data directory knows (it was
    // deposed, or followed that node): leading again would usurp it.
    role_ = Role::kDeposed;
    leader_ = file_.leader;
    leader_id_ = file_.leader_id;
    LOG(WARNING) << "Starting deposed: epoch " << file_.epoch << " is led by " << file_.leader
                 << " (this log's epoch is " << log_epoch
                 << "); writes are refused. Run this data directory as a replica to rejoin, or "
                    "promote it.";
  } else if (role_ == Role::kReplica) {
    leader_ = file_.leader;
    leader_id_ = file_.leader_id;
  }
  if (role_ == Role::kLeader) {
    // The --followers flag when given; else those this node led last (a
    // promoted replica started without the flag keeps its promotion's).
    followers_ = !options_.followers.empty() || !led_last ? options_.followers : file_.followers;
    if (options_.followers.empty() && !followers_.empty()) {
      LOG(INFO) << "Pushing to the followers it led before (EPOCH): "
                << absl::StrJoin(followers_, ",");
    }
    leading_ = false;
    contacted_.clear();
    leading_attempt_since_ = Now();
    StartLinks(followers_, std::max(promised_epoch_, log_epoch));
    if (!followers_.empty()) {
      LOG(INFO) << "Asking " << followers_.size()
                << " followers for their positions before taking writes";
    }
  }
}

void ReplicationNode::SetReadinessCallback(std::function<void(bool ready)> on_change) {
  {
    absl::MutexLock r(&readiness_mu_);
    on_readiness_ = std::move(on_change);
    published_ready_ = false;
  }
  PublishReadiness();
}

bool ReplicationNode::ready() const {
  absl::MutexLock l(&mu_);
  return ready_;
}

void ReplicationNode::PublishReadiness() {
  absl::MutexLock r(&readiness_mu_);
  bool ready = false;
  {
    absl::MutexLock l(&mu_);
    ready = ready_;
  }
  if (ready == published_ready_) return;
  published_ready_ = ready;
  LOG(INFO) << (ready ? "Ready: serving current data" : "Not ready");
  if (on_readiness_) on_readiness_(ready);
}

std::string ReplicationNode::advertise() const {
  absl::MutexLock l(&mu_);
  return advertise_;
}

ReplicationNode::~ReplicationNode() { Stop(); }

void ReplicationNode::Stop() {
  std::vector<std::unique_ptr<FollowerLink>> links;
  std::vector<Waiter> waiters;
  {
    absl::MutexLock l(&mu_);
    if (stopping_ && !timer_.joinable()) return;
    stopping_ = true;
    ++stream_generation_;  // Ends the follower-side stream too.
    RetireLinks();
    links.swap(retired_links_);
    waiters.swap(waiters_);
  }
  store_->SetLogRetentionFloor(nullptr);
  if (timer_.joinable()) timer_.join();
  if (isr_thread_.joinable()) isr_thread_.join();
  {
    absl::MutexLock l(&mu_);  // The timer may have left some behind.
    for (auto& link : retired_links_) links.push_back(std::move(link));
    retired_links_.clear();
  }
  links.clear();  // Joins each link's thread.
  for (Waiter& w : waiters) {
    w.done(absl::UnavailableError("the server is shutting down; the write is on the leader"));
  }
}

void ReplicationNode::StartLinks(const std::vector<std::string>& followers, uint64_t epoch,
                                 const std::map<std::string, uint64_t>& needed) {
  for (const std::string& address : followers) {
    auto it = needed.find(address);
    links_.push_back(
        std::make_unique<FollowerLink>(this, address, epoch, it == needed.end() ? 0 : it->second));
  }
}

void ReplicationNode::RetireLinks() {
  for (auto& link : links_) {
    link->Stop();
    retired_links_.push_back(std::move(link));
  }
  links_.clear();
}

std::vector<std::function<void(const absl::Status&)>> ReplicationNode::StepDownLocked() {
  store_->Fence();  // First: no write admitted before this takes an index after it.
  leading_ = false;
  router_fenced_epoch_ = 0;
  transfer_to_.clear();
  ready_ = false;
  isr_.reset();  // A recording in flight finds no set to report to.
  RetireLinks();
  std::vector<std::function<void(const absl::Status&)>> pending;
  for (Waiter& w : waiters_) pending.push_back(std::move(w.done));
  waiters_.clear();
  return pending;
}

Role ReplicationNode::role() const {
  absl::MutexLock l(&mu_);
  return role_;
}

uint64_t ReplicationNode::epoch() const {
  absl::MutexLock l(&mu_);
  return std::max(promised_epoch_, store_->epoch());
}

uint64_t ReplicationNode::promised_epoch() const { return epoch(); }

std::string ReplicationNode::leader() const {
  absl::MutexLock l(&mu_);
  return role_ == Role::kLeader ? advertise_ : leader_;
}

int ReplicationNode::FollowerCount() {
  absl::MutexLock l(&mu_);
  return static_cast<int>(links_.size());
}

absl::Status ReplicationNode::CheckWritable(std::string* leader) {
  absl::MutexLock l(&mu_);
  leader->clear();
  if (!started_) return absl::UnavailableError("the node is starting; retry shortly");
  switch (role_) {
    case Role::kReplica:
      *leader = NamedLeaderLocked();
      if (options_.coordinated && !coordination_problem_.empty()) {
        return absl::UnavailableError(
            absl::StrCat(coordination_problem_,
                         "; no leader can be elected or confirmed until it is back, "
                         "retry shortly"));
      }
      if (options_.coordinated && !coordinator_leader_.empty() && *leader == advertise_) {
        leader->clear();
        return absl::UnavailableError(
            "this node won the election and is starting its epoch; retry shortly");
      }
      if (!leader->empty() && leader_.empty()) {
        return absl::FailedPreconditionError(
            absl::StrCat("this node is a replica; the leader is ", *leader));
      }
      return absl::FailedPreconditionError(
          leader_.empty()
              ? std::string("this node is a replica and no leader has contacted it yet; send "
                            "writes to the shard's leader")
              : absl::StrCat("this node is a replica; the leader is ", *leader));
    case Role::kDeposed:
      *leader = NamedLeaderLocked();
      if (!deposed_reason_.empty()) return absl::FailedPreconditionError(deposed_reason_);
      return absl::FailedPreconditionError(absl::StrCat("this node is no longer the leader: epoch ",
                                                        promised_epoch_, " is led by ",
                                                        OrUnknown(leader_)));
    case Role::kLeader:
      break;
  }
  if (!leading_) {
    std::vector<std::string> waiting;
    for (const std::string& f : followers_) {
      if (std::find(contacted_.begin(), contacted_.end(), f) == contacted_.end()) {
        waiting.push_back(f);
      }
    }
    return absl::UnavailableError(absl::StrCat(
        "the leader is confirming its followers' positions before it takes writes",
        waiting.empty() ? std::string()
                        : absl::StrCat(" (waiting for ", absl::StrJoin(waiting, ", "), ")"),
        "; retry shortly"));
  }
  if (!transfer_to_.empty()) {
    return absl::UnavailableError(absl::StrCat(
        "leadership transfer to ", transfer_to_,
        " in progress: writes are paused (at most 2s); nothing was written, retry shortly"));
  }
  if (router_fenced_epoch_ != 0) {
    return absl::UnavailableError(absl::StrCat(
        "a router named epoch ", router_fenced_epoch_, ", newer than this leader's ",
        std::max(promised_epoch_, store_->epoch()),
        ": this node is checking in etcd whether a newer leader exists; nothing was written, "
        "retry shortly"));
  }
  if (!GuardHoldsLocked()) {
    return absl::UnavailableError(
        absl::StrCat("leadership lost: etcd did not renew this node's lease in time (",
                     coordination_problem_.empty()
                         ? std::string("a coordination outage, or this node is cut off from etcd")
                         : coordination_problem_,
                     "); the shard elects a new leader once etcd answers, retry shortly"));
  }
  if (isr_ && !isr_->Enough(options_.sync_acks)) {
    return absl::UnavailableError(
        absl::StrCat("not enough in-sync replicas: ", isr_->wanted().size(), " of the ",
                     links_.size(), " followers are in sync, --sync-acks needs ",
                     options_.sync_acks, "; nothing was written, retry once a follower caught up"));
  }
  return absl::OkStatus();
}

absl::Status ReplicationNode::CheckRouterEpoch(uint64_t epoch, std::string* leader) {
  leader->clear();
  if (epoch == 0) return absl::OkStatus();
  std::function<void(uint64_t)> tell_coordinator;
  std::vector<std::function<void(const absl::Status&)>> waiters;
  bool deposed = false;
  uint64_t known = 0;
  {
    absl::MutexLock l(&mu_);
    known = std::max(promised_epoch_, store_->epoch());
    // Not newer: the router is behind (or right); CheckWritable decides.
    if (epoch <= known) return absl::OkStatus();
    // This node won the leader key and is recording the epoch: it refuses
    // with "starting its epoch" (CheckWritable), which a client retries. Not
    // a node cut off from etcd: its view may name itself long after it
    // stopped leading.
    if (role_ != Role::kLeader && options_.coordinated && coordinator_leader_ == advertise_ &&
        coordination_problem_.empty()) {
      return absl::OkStatus();
    }
    if (role_ == Role::kLeader && started_) {
      if (options_.coordinated) {
        // The guard fails from now on, as when the lease runs out: nothing
        // more is admitted, acknowledged or published until the coordinator
        // has looked at the leader key.
        if (router_fenced_epoch_ == 0) {
          LOG(WARNING) << "A router named epoch " << epoch << ", newer than this leader's " << known
                       << ": fencing until etcd says whether a newer leader exists";
          tell_coordinator = router_fence_handler_;
        }
        router_fenced_epoch_ = std::max(router_fenced_epoch_, epoch);
      } else {
        // Static mode: nobody can confirm or deny it, so step down. The epoch
        // is not recorded: a confused router may have named it.
        LOG(ERROR) << "A router named epoch " << epoch << ", newer than this leader's " << known
                   << ": a newer leader exists; stepping down (deposed until a newer leader's "
                      "Hello, a promote or a restart)";
        waiters = StepDownLocked();
        role_ = Role::kDeposed;
        deposed_reason_ = absl::StrCat(
            "this node stepped down: a router named epoch ", epoch, ", newer than its own ", known,
            ", so a newer leader exists; if none does (kvctl status of every node of the "
            "shard), restart this node or promote it (kvctl --addr=NODE promote)");
        deposed = true;
      }
    }
  }
  if (deposed) {
    PublishReadiness();
    for (auto& done : waiters) {
      done(absl::UnavailableError(
          absl::StrCat("this node stepped down (a router named epoch ", epoch,
                       ") before the write was confirmed on replicas; it may or may not survive")));
    }
  }
  if (tell_coordinator) tell_coordinator(epoch);
  // Names no leader: the one this node would name is older than the router's.
  return absl::FailedPreconditionError(absl::StrCat(
      "the router sent this write for epoch ", epoch, ", newer than any this node knows (", known,
      "): a newer leader exists and this node does not lead; nothing was written"));
}

void ReplicationNode::SetRouterFenceHandler(std::function<void(uint64_t epoch)> handler) {
  router_fence_handler_ = std::move(handler);
}

void ReplicationNode::ResumeAfterRouterFence(uint64_t epoch) {
  absl::MutexLock l(&mu_);
  if (router_fenced_epoch_ == 0 || role_ != Role::kLeader ||
      std::max(promised_epoch_, store_->epoch()) != epoch) {
    return;
  }
  LOG(WARNING) << "Resuming leadership of epoch " << epoch << ": etcd still names this node, so "
               << "the router that named epoch " << router_fenced_epoch_ << " was wrong";
  router_fenced_epoch_ = 0;
}

uint64_t ReplicationNode::router_fenced_epoch() const {
  absl::MutexLock l(&mu_);
  return router_fenced_epoch_;
}

std::string ReplicationNode::NamedLeaderLocked() const {
  return options_.coordinated && !coordinator_leader_.empty() ? coordinator_leader_ : leader_;
}

absl::Status ReplicationNode::CheckAcknowledge() {
  if (!options_.coordinated) return absl::OkStatus();
  absl::MutexLock l(&mu_);
  if (role_ == Role::kLeader && leading_ && GuardHoldsLocked()) return absl::OkStatus();
  return absl::UnavailableError(
      "leadership lost before the write was acknowledged: it may or may not survive on the "
      "shard's new leader");
}

absl::Status ReplicationNode::CheckReadable(bool leader_read, std::string* leader) {
  {
    absl::MutexLock l(&mu_);
    leader->clear();
    if (!started_) return absl::UnavailableError("the node is starting; retry shortly");
    switch (role_) {
      case Role::kLeader:
        if (leading_ && !GuardHoldsLocked()) {
          return absl::UnavailableError(
              "leadership lost: this node's lease in etcd ran out; retry shortly");
        }
        if (leading_) return absl::OkStatus();
        return absl::UnavailableError(
            "the leader is confirming its followers' positions before it serves; retry shortly");
      case Role::kDeposed:
        *leader = NamedLeaderLocked();
        if (leader_read) {
          return absl::FailedPreconditionError(
              !deposed_reason_.empty()
                  ? deposed_reason_
                  : absl::StrCat("this node is no longer the leader; the leader is ",
                                 OrUnknown(leader_)));
        }
        return absl::UnavailableError(
            "this node stepped down as leader; its data may differ from the shard's until it "
            "rejoins as a replica");
      case Role::kReplica:
        *leader = NamedLeaderLocked();
        if (leader_read) {
          return absl::FailedPreconditionError(absl::StrCat(
              "this node is a replica", leader->empty() ? "" : "; the leader is ", *leader,
              "; a READ_MODE_LEADER read must go to the leader (READ_MODE_ANY_REPLICA reads "
              "here, possibly stale)"));
        }
        // Stale reads are allowed, wrong ones are not: a replica serves what
        // its whole log holds, but not a diverged log, nor the emptiness of a
        // node no leader ever reached.
        if (!not_ready_reason_.empty()) return absl::UnavailableError(not_ready_reason_);
        if (!ready_ && leader_.empty() && store_->last_index() == 0) {
          return absl::UnavailableError(
              "this replica holds nothing yet: no leader has reached it since it started");
        }
        break;
    }
  }
  return store_->CheckReadable();
}

int ReplicationNode::CountAcked(uint64_t index) const {
  int n = 0;
  for (const auto& link : links_) n += link->acked_index() >= index ? 1 : 0;
  return n;
}

void ReplicationNode::AwaitReplicas(uint64_t index, int replicas,
                                    std::function<void(const absl::Status&)> done) {
  absl::Status now_status;
  {
    absl::MutexLock l(&mu_);
    if (stopping_) {
      now_status =
          absl::UnavailableError("the server is shutting down; the write is on the leader");
    } else if (role_ != Role::kLeader || !leading_) {
      now_status = absl::UnavailableError(absl::StrCat(
          "this node stopped leading before the write (index ", index,
          ") was confirmed on replicas; it may or may not survive on the shard's new leader"));
    } else if (isr_ && !isr_->Enough(options_.sync_acks)) {
      now_status = absl::UnavailableError(
          absl::StrCat("not enough in-sync replicas: the write is on the leader (index ", index,
                       ") but fewer than ", options_.sync_acks,
                       " followers are in sync; it may or may not survive"));
    } else if (isr_ || CountAcked(index) < replicas) {
      waiters_.push_back(Waiter{index, replicas, Now() + options_.sync_timeout, std::move(done)});
      return;
    }
  }
  done(now_status);
}

void ReplicationNode::OnAck() {
  std::vector<std::pair<std::function<void(const absl::Status&)>, absl::Status>> ready;
  uint64_t commit = 0;
  {
    absl::MutexLock l(&mu_);
    ++ack_events_;
    ObserveInSyncLocked();
    CollectReady(Now(), &ready);
    commit = CommitIndexLocked();
  }
  FireReady(commit, &ready);
}

InSyncSet::AckedIndexes ReplicationNode::AckedIndexesLocked() const {
  InSyncSet::AckedIndexes acked;
  for (const auto& link : links_) acked[link->address()] = link->acked_index();
  return acked;
}

void ReplicationNode::ObserveInSyncLocked() {
  if (!isr_ || !leading_) return;
  if (isr_->Observe(AckedIndexesLocked(), store_->last_index(), Now())) {
    LOG(INFO) << "In-sync set wanted: [" << absl::StrJoin(isr_->wanted(), ",") << "] (recorded ["
              << absl::StrJoin(isr_->recorded(), ",") << "])";
  }
}

void ReplicationNode::InSyncThread() {
  for (;;) {
    std::optional<InSyncSet::Proposal> proposal;
    uint64_t epoch = 0;
    std::function<absl::Status(uint64_t, const std::vector<std::string>&)> record;
    {
      absl::MutexLock l(&mu_);
      const auto work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || (isr_ && leading_ && isr_->HasProposal());
      };
      mu_.Await(absl::Condition(&work));
      if (stopping_) return;
      proposal = isr_->TakeProposal();
      epoch = isr_epoch_;
      record = isr_record_;
    }
    // Outside the lock: an etcd call. Until it succeeds the proposal and the
    // previous recorded set both count for acks (InSyncSet::CommitIndex).
    const absl::Status s = record(epoch, proposal->followers);
    if (!s.ok()) {
      LOG(WARNING) << "Cannot record the in-sync set [" << absl::StrJoin(proposal->followers, ",")
                   << "] of epoch " << epoch << ": " << s << "; acks wait, retrying";
    }
    std::vector<std::pair<std::function<void(const absl::Status&)>, absl::Status>> ready;
    uint64_t commit = 0;
    {
      absl::MutexLock l(&mu_);
      if (isr_ && isr_epoch_ == epoch) {
        isr_->Recorded(proposal->generation, s.ok());
        if (s.ok()) {
          LOG(INFO) << "In-sync set of epoch " << epoch << " recorded: ["
                    << absl::StrJoin(proposal->followers, ",") << "]";
        }
      }
      CollectReady(Now(), &ready);
      commit = CommitIndexLocked();
      if (!s.ok()) {
        // A short pause before the retry (the etcd client has its own deadline).
        mu_.AwaitWithTimeout(absl::Condition(&stopping_), absl::Milliseconds(100));
      }
    }
    FireReady(commit, &ready);
  }
}

uint64_t ReplicationNode::CommitIndexLocked() {
  const int k = options_.sync_acks;
  if (k <= 0 || !leading_) return 0;
  if (!GuardHoldsLocked()) return 0;  // A lost lease publishes nothing more.
  if (isr_) return isr_->CommitIndex(AckedIndexesLocked(), k);
  if (static_cast<int>(links_.size()) < k) return 0;
  std::vector<uint64_t> acked;
  acked.reserve(links_.size());
  for (const auto& link : links_) acked.push_back(link->acked_index());
  std::nth_element(acked.begin(), acked.begin() + (k - 1), acked.end(), std::greater<>());
  return acked[k - 1];
}

void ReplicationNode::FireReady(
    uint64_t commit,
    std::vector<std::pair<std::function<void(const absl::Status&)>, absl::Status>>* ready) {
  // Published before any of them is acknowledged: an acknowledged write is
  // visible to the next read (Store::CommitThrough).
  if (commit > 0) store_->CommitThrough(commit);
  for (auto& [done, status] : *ready) done(status);
}

void ReplicationNode::CollectReady(
    absl::Time now,
    std::vector<std::pair<std::function<void(const absl::Status&)>, absl::Status>>* ready) {
  if (!GuardHoldsLocked()) {
    // The lease ran out: StepDown is on its way; acknowledge nothing meanwhile.
    for (Waiter& w : waiters_) {
      ready->emplace_back(std::move(w.done),
                          absl::UnavailableError(absl::StrCat(
                              "leadership lost before the write (index ", w.index,
                              ") was acknowledged: it may or may not survive on the shard's "
                              "new leader")));
    }
    waiters_.clear();
    return;
  }
  // With an in-sync set, a write is acknowledged once every follower of every
  // set etcd may hold has it (and the per-request count, if larger).
  const uint64_t isr_commit = isr_ ? CommitIndexLocked() : 0;
  const bool isr_enough = !isr_ || isr_->Enough(options_.sync_acks);
  auto it = waiters_.begin();
  while (it != waiters_.end()) {
    if ((!isr_ || isr_commit >= it->index) && CountAcked(it->index) >= it->replicas) {
      ready->emplace_back(std::move(it->done), absl::OkStatus());
    } else if (!isr_enough) {
      ready->emplace_back(std::move(it->done),
                          absl::UnavailableError(absl::StrCat(
                              "not enough in-sync replicas: the write is on the leader (index ",
                              it->index, ") but fewer than ", options_.sync_acks,
                              " followers are in sync now; it may or may not survive")));
    } else if (now >= it->deadline) {
      ready->emplace_back(
          std::move(it->done),
          absl::DeadlineExceededError(absl::StrCat(
              "the write is on the leader (index ", it->index, ") but was not confirmed on ",
              it->replicas, it->replicas == 1 ? " replica" : " replicas", " within ",
              absl::ToInt64Milliseconds(options_.sync_timeout), " ms; it may still reach them")));
    } else {
      ++it;
      continue;
    }
    it = waiters_.erase(it);
  }
}

void ReplicationNode::TimerThread() {
  for (;;) {
    std::vector<std::pair<std::function<void(const absl::Status&)>, absl::Status>> ready;
    std::vector<std::unique_ptr<FollowerLink>> retired;
    bool may_begin = false;
    uint64_t commit = 0;
    {
      absl::MutexLock l(&mu_);
      if (stopping_) return;
      // Deadlines are on the injected clock; the wait is real time, at most a tick.
      absl::Duration wait = options_.tick;
      const absl::Time now = Now();
      for (const Waiter& w : waiters_) wait = std::min(wait, w.deadline - now);
      const auto wake = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || begin_wanted_ || !retired_links_.empty();
      };
      mu_.AwaitWithTimeout(absl::Condition(&wake), std::max(wait, absl::ZeroDuration()));
      if (stopping_) return;
      begin_wanted_ = false;
      ObserveInSyncLocked();
      CollectReady(Now(), &ready);
      commit = CommitIndexLocked();
      retired.swap(retired_links_);
      may_begin = role_ == Role::kLeader && !leading_ && !beginning_epoch_;
    }
    FireReady(commit, &ready);
    retired.clear();  // Joins links that stopped (never this thread's own).
    if (may_begin) MaybeBeginEpoch();
  }
}

absl::Status ReplicationNode::PersistEpoch(uint64_t epoch, const std::string& leader,
                                           const std::string& leader_id,
                                           const std::vector<std::string>& followers) {
  EpochRecord record;
  record.epoch = epoch;
  record.leader = leader;
  record.leader_id = leader_id;
  record.followers = followers;
  record.cluster = cluster_;
  record.shard = shard_;
  if (absl::Status s = WriteEpochFile(store_->fs(), store_->dir(), record); !s.ok()) {
    return absl::InternalError(
        absl::StrCat("cannot record epoch ", epoch, " in ", store_->dir(), ": ", s.message()));
  }
  promised_epoch_ = std::max(promised_epoch_, epoch);
  return absl::OkStatus();
}

void ReplicationNode::Depose(uint64_t epoch, const std::string& leader) {
  std::vector<std::function<void(const absl::Status&)>> waiters;
  {
    absl::MutexLock l(&mu_);
    if (role_ != Role::kLeader || epoch <= std::max(promised_epoch_, store_->epoch())) return;
    LOG(ERROR) << "Deposed: epoch " << epoch << " is led by " << OrUnknown(leader)
               << "; this node refuses writes from now on";
    waiters = StepDownLocked();
    role_ = Role::kDeposed;
    if (leader == advertise_) {
      // Its followers saw this very address lead a newer epoch than this
      // data directory knows: the directory lost what it had.
      deposed_reason_ = absl::StrCat(
          "the followers know epoch ", epoch,
          " led from this address, but this data directory "
          "does not: it lost its log tail or its data, with writes it may have acknowledged, "
          "and refuses to lead; promote a follower and run this data directory as a replica");
    }
    leader_ = leader;
    leader_id_.clear();
    if (absl::Status s = PersistEpoch(epoch, leader, ""); !s.ok()) LOG(ERROR) << s;
  }
  PublishReadiness();
  for (auto& done : waiters) {
    done(absl::FailedPreconditionError(absl::StrCat(
        "this node was deposed before the write was confirmed on replicas; the leader is ",
        OrUnknown(leader))));
  }
}

void ReplicationNode::RefuseToLead(const std::string& reason) {
  std::vector<std::function<void(const absl::Status&)>> waiters;
  {
    absl::MutexLock l(&mu_);
    if (role_ != Role::kLeader) return;
    LOG(ERROR) << "Refusing to lead: " << reason;
    waiters = StepDownLocked();
    role_ = Role::kDeposed;
    deposed_reason_ = reason;
  }
  PublishReadiness();
  for (auto& done : waiters) done(absl::FailedPreconditionError(reason));
}

bool ReplicationNode::OnHandshake(const std::string& address, const v1::Position& position) {
  std::string refusal;
  {
    absl::MutexLock l(&mu_);
    if (role_ != Role::kLeader) return false;
    if (leading_) return true;  // A follower behind, or diverged: it is resynced.
    const StoreStatus st = store_->GetStatus();
    if (LogIsAhead(position.last_epoch(), position.last_index(), st.last_epoch, st.last_index)) {
      refusal = absl::StrCat(
          "follower ", address, " holds entries through index ", position.last_index(), " (epoch ",
          position.last_epoch(), ") but this node's log ends at index ", st.last_index, " (epoch ",
          st.last_epoch,
          "): this node lost its log tail (or its data directory), with writes it may have "
          "acknowledged, and refuses to lead; promote that follower (kvctl promote) and run this "
          "data directory as a replica");
    } else {
      highest_follower_epoch_ = std::max(highest_follower_epoch_, position.epoch());
      if (std::find(contacted_.begin(), contacted_.end(), address) == contacted_.end()) {
        contacted_.push_back(address);
      }
      begin_wanted_ = true;  // The timer thread starts the epoch if that was the last one.
      return true;
    }
  }
  RefuseToLead(refusal);
  return false;
}

void ReplicationNode::MaybeBeginEpoch() {
  uint64_t new_epoch = 0;
  std::string self;
  {
    absl::MutexLock streams(&stream_mu_);
    {
      absl::MutexLock l(&mu_);
      if (stopping_ || !started_ || role_ != Role::kLeader || leading_ || beginning_epoch_) return;
      size_t answered = 0;
      for (const std::string& f : followers_) {
        answered += std::find(contacted_.begin(), contacted_.end(), f) != contacted_.end() ? 1 : 0;
      }
      if (answered < followers_.size() && !lead_now_) {
        // Not everyone answered. After start_wait, enough is: every follower a
        // sync-acknowledged write may be on has been seen.
        const size_t k = static_cast<size_t>(std::max(0, options_.sync_acks));
        const size_t needed = k == 0 ? 0 : followers_.size() - std::min(k, followers_.size()) + 1;
        if (Now() - leading_attempt_since_ < options_.start_wait || answered < needed) {
          return;
        }
        LOG(WARNING) << "Leading without " << followers_.size() - answered << " of "
                     << followers_.size() << " followers, which did not answer within "
                     << absl::FormatDuration(options_.start_wait)
                     << "; they are checked when they connect";
      }
      lead_now_ = false;
      new_epoch = std::max({promised_epoch_, store_->epoch(), highest_follower_epoch_}) + 1;
      self = advertise_;
      if (absl::Status s = PersistEpoch(new_epoch, self, node_id_, followers_); !s.ok()) {
        LOG(ERROR) << s;
        return;
      }
      beginning_epoch_ = true;
    }
    // Under sync acks a write is published once its in-sync followers hold it.
    store_->SetCommitGate(options_.sync_acks > 0);
    const absl::Status started = store_->StartEpoch(new_epoch, self);
    absl::MutexLock l(&mu_);
    beginning_epoch_ = false;
    if (!started.ok()) {
      LOG(ERROR) << "Cannot start epoch " << new_epoch << ": " << started;
      store_->Fence();
      return;
    }
    self_led_epoch_ = new_epoch;   // Its record is in the log, whatever happens next.
    if (role_ != Role::kLeader) {  // Deposed meanwhile: the epoch is not ours to use.
      store_->Fence();
      return;
    }
    // The links greeted the followers with the old epoch: greet them again,
    // keeping the log each follower needs while the new link connects.
    std::map<std::string, uint64_t> needed;
    for (const auto& link : links_) needed[link->address()] = link->needed_index();
    RetireLinks();
    StartLinks(followers_, new_epoch, needed);
    leading_ = true;
    ready_ = true;
    LOG(INFO) << "Leading epoch " << new_epoch << " from index " << store_->last_index() << " ("
              << followers_.size() << " followers confirmed their positions)";
  }
  PublishReadiness();
}

absl::Status ReplicationNode::AcceptLeader(const v1::Hello& hello, uint64_t* generation,
                                           std::string* reason) {
  std::vector<std::function<void(const absl::Status&)>> waiters;
  {
    absl::MutexLock l(&mu_);
    *reason = "unavailable";
    if (stopping_) return absl::UnavailableError("shutting down");
    *reason = "other_shard";
    if (!hello.shard().empty() && !shard_.empty() && hello.shard() != shard_) {
      return absl::FailedPreconditionError(absl::StrCat(
          "leader ", hello.leader(), " replicates shard ", hello.shard(),
          " but this node belongs to shard ", shard_, "; check the leader's --followers"));
    }
    *reason = "other_cluster";
    if (!hello.cluster().empty() && !cluster_.empty() && hello.cluster() != cluster_) {
      return absl::FailedPreconditionError(
          absl::StrCat("leader ", hello.leader(), " belongs to cluster ", hello.cluster(),
                       " but this node belongs to cluster ", cluster_));
    }
    const uint64_t epoch = hello.epoch();
    const uint64_t known = std::max(promised_epoch_, store_->epoch());
    *reason = "stale_epoch";
    if (epoch <= fenced_through_) {
      return absl::FailedPreconditionError(absl::StrCat(
          "epoch ", epoch, " has ended: its leader key in etcd is gone (every epoch through ",
          fenced_through_, " is over)"));
    }
    if (epoch < known) {
      return absl::FailedPreconditionError(
          absl::StrCat("epoch ", epoch, " is stale: this node has seen epoch ", known,
                       leader_.empty() ? std::string() : absl::StrCat(" led by ", leader_)));
    }
    *reason = "epoch_taken";
    if (epoch == known) {
      if (role_ == Role::kLeader) {
        return absl::FailedPreconditionError(
            absl::StrCat("this node leads epoch ", known, " itself"));
      }
      // One epoch, one leader: a second leader of the same epoch (two
      // promotions raced) is refused, never followed; so is any leader of
      // an epoch this node wrote records of itself.
      if (self_led_epoch_ == epoch) {
        return absl::FailedPreconditionError(
            absl::StrCat("this node led epoch ", epoch,
                         " itself and its log holds records of it, so ", hello.leader(),
                         " cannot lead that epoch too (did two promotions race?); promote "
                         "one node with a higher epoch"));
      }
      const bool other_id =
          !hello.leader_id().empty() && !leader_id_.empty() && hello.leader_id() != leader_id_;
      const bool other_address = (hello.leader_id().empty() || leader_id_.empty()) &&
                                 !leader_.empty() && hello.leader() != leader_;
      if (other_id || other_address) {
        return absl::FailedPreconditionError(absl::StrCat(
            "epoch ", epoch, " is led by ", OrUnknown(leader_), ", not by ", hello.leader(),
            ": one epoch has one leader (did two promotions race?); promote one node with a "
            "higher epoch"));
      }
    }
    if (role_ == Role::kLeader) {
      // A newer leader exists: step down (fenced first) and follow it.
      LOG(WARNING) << "Leader " << hello.leader() << " has epoch " << epoch << " > " << known
                   << ": stepping down to replica";
      waiters = StepDownLocked();
    }
    store_->Fence();
    if (epoch > promised_epoch_ || hello.leader() != leader_ || hello.leader_id() != leader_id_ ||
        (shard_.empty() && !hello.shard().empty())) {
      if (shard_.empty()) shard_ = hello.shard();
      if (cluster_.empty()) cluster_ = hello.cluster();
      if (absl::Status s = PersistEpoch(epoch, hello.leader(), hello.leader_id()); !s.ok()) {
        return s;
      }
    }
    if (role_ != Role::kReplica || leader_ != hello.leader()) {
      LOG(INFO) << "Following " << hello.leader() << " at epoch " << epoch;
    }
    reason->clear();
    role_ = Role::kReplica;
    leader_ = hello.leader();
    leader_id_ = hello.leader_id();
    *generation = ++stream_generation_;
    catch_up_target_known_ = false;  // The next NoteLeaderIndex is this stream's Hello.
  }
  PublishReadiness();
  for (auto& done : waiters) {
    done(absl::UnavailableError(
        absl::StrCat("this node stepped down (", hello.leader(), " leads epoch ", hello.epoch(),
                     ") before the write was confirmed on replicas; it may or may not survive")));
  }
  return absl::OkStatus();
}

v1::Position LogPosition(Store* store, uint64_t epoch) {
  v1::Position position;
  position.set_durable_index(store->durable_index());
  const StoreStatus st = store->GetStatus();
  position.set_last_index(st.last_index);
  position.set_last_epoch(st.last_epoch);
  position.set_epoch(epoch);
  return position;
}

absl::StatusOr<v1::Position> ReplicationNode::PromiseEpoch(const v1::PromiseRequest& request) {
  const uint64_t epoch = request.epoch();
  const std::string& candidate = request.candidate();
  if (epoch == 0 || candidate.empty()) {
    return absl::InvalidArgumentError("a promise needs an epoch and a candidate address");
  }
  std::vector<std::function<void(const absl::Status&)>> waiters;
  v1::Position position;
  {
    absl::MutexLock streams(&stream_mu_);  // No older stream applies anything after this.
    absl::MutexLock l(&mu_);
    if (stopping_ || !started_) return absl::UnavailableError("not serving; retry shortly");
    if (options_.coordinated) {
      return absl::FailedPreconditionError(
          "this node runs in etcd mode: leadership comes from the leader key, not from promises");
    }
    if (!request.shard().empty() && !shard_.empty() && request.shard() != shard_) {
      return absl::FailedPreconditionError(absl::StrCat(
          candidate, " belongs to shard ", request.shard(), " but this node to shard ", shard_));
    }
    if (!request.cluster().empty() && !cluster_.empty() && request.cluster() != cluster_) {
      return absl::FailedPreconditionError(absl::StrCat(
          candidate, " belongs to cluster ", request.cluster(), " but this node to ", cluster_));
    }
    if (campaign_epoch_ != 0 && epoch <= campaign_epoch_) {
      // Two promotions race for one epoch, each asking the other: the
      // candidate whose node id sorts first wins, the other yields (its own
      // promotion then fails), so that one of them can lead.
      const bool yield = epoch == campaign_epoch_ && !request.candidate_id().empty() &&
                         request.candidate_id() < node_id_;
      if (!yield) {
        return absl::FailedPreconditionError(
            absl::StrCat("this node is itself being promoted to epoch ", campaign_epoch_,
                         " (did two promotions race?)"));
      }
      LOG(WARNING) << "Yielding epoch " << epoch << " to " << candidate
                   << ", promoted at the same time as this node";
    }
    const uint64_t known = std::max(promised_epoch_, store_->epoch());
    if (epoch < known) {
      return absl::FailedPreconditionError(
          absl::StrCat("epoch ", epoch, " is stale: this node has seen epoch ", known,
                       leader_.empty() ? std::string() : absl::StrCat(" (", leader_, ")")));
    }
    bool promise = epoch > known || (leader_.empty() && leader_id_.empty());
    if (epoch == known) {
      if (role_ == Role::kLeader || self_led_epoch_ == epoch) {
        return absl::FailedPreconditionError(
            absl::StrCat("this node led epoch ", epoch, " itself; promote with a higher epoch"));
      }
      const std::string& id = request.candidate_id();
      const bool other_id = !id.empty() && !leader_id_.empty() && id != leader_id_;
      const bool other_address =
          (id.empty() || leader_id_.empty()) && !leader_.empty() && candidate != leader_;
      if (other_id || other_address) {
        return absl::FailedPreconditionError(
            absl::StrCat("epoch ", epoch, " is already promised to or led by ", OrUnknown(leader_),
                         ", not ", candidate, " (did two promotions race?)"));
      }
    }
    if (promise) {
      if (role_ == Role::kLeader) {
        LOG(WARNING) << candidate << " is being promoted to epoch " << epoch << " > " << known
                     << ": stepping down";
        waiters = StepDownLocked();
      }
      store_->Fence();
      if (absl::Status s = PersistEpoch(epoch, candidate, request.candidate_id()); !s.ok()) {
        return s;
      }
      LOG(INFO) << "Promised epoch " << epoch << " to " << candidate
                << ": refusing older epochs' streams from now on";
      role_ = Role::kReplica;
      leader_ = candidate;
      leader_id_ = request.candidate_id();
      ++stream_generation_;  // The current stream, an older epoch's, ends.
    }
    position = LogPosition(store_, std::max(promised_epoch_, store_->epoch()));
  }
  PublishReadiness();
  for (auto& done : waiters) {
    done(absl::UnavailableError(
        absl::StrCat("this node stepped down (", candidate, " is being promoted to epoch ", epoch,
                     ") before the write was confirmed on replicas; it may or may not survive")));
  }
  return position;
}

void ReplicationNode::MarkDiverged(const std::string& why) {
  {
    absl::MutexLock l(&mu_);
    if (role_ != Role::kReplica) return;
    ready_ = false;
    catch_up_target_known_ = false;
    not_ready_reason_ = absl::StrCat("this replica's log diverged from its leader's (", why,
                                     "); it is being resynced");
  }
  PublishReadiness();
}

bool ReplicationNode::IsCurrentStream(uint64_t generation) const {
  absl::MutexLock l(&mu_);
  return !stopping_ && generation == stream_generation_ && role_ == Role::kReplica;
}

void ReplicationNode::NoteLeaderIndex(uint64_t leader_last_index) {
  const uint64_t mine = store_->last_index();
  {
    absl::MutexLock l(&mu_);
    leader_last_index_ = std::max(leader_last_index_, leader_last_index);
    if (mine >= leader_last_index_) caught_up_at_ = Now();
    if (ready_ || role_ != Role::kReplica) return;
    if (!catch_up_target_known_) {
      catch_up_target_ = leader_last_index;
      catch_up_target_known_ = true;
    }
    // `mine` precedes the batch this call announces, so the last batch of the
    // catch-up is seen by the next message (entries or a heartbeat).
    const StoreStatus st = store_->GetStatus();
    if (mine < catch_up_target_ || st.last_index < st.complete_index) return;
    LOG(INFO) << "Caught up with " << leader_ << ": index " << mine << " (the leader had "
              << catch_up_target_ << " when the stream began)";
    ready_ = true;
    not_ready_reason_.clear();
  }
  PublishReadiness();
}

absl::StatusOr<ReplicationHooks::PromoteResult> ReplicationNode::Promote(
    uint64_t epoch, std::vector<std::string> followers, bool force) {
  if (options_.coordinated) {
    if (!promote_handler_) {
      return absl::FailedPreconditionError(
          "this node runs in etcd mode: leadership comes from the leader key only");
    }
    return promote_handler_(force);
  }
  PromoteResult result;
  {
    absl::MutexLock l(&mu_);
    if (stopping_ || !started_) return absl::UnavailableError("not serving; retry shortly");
    if (role_ == Role::kLeader && !leading_ && force && epoch == 0) {
      // A (re)starting leader still waiting for followers that are gone for
      // good: the operator says lead without them.
      lead_now_ = true;
      begin_wanted_ = true;
      result.warning = "leading without waiting for the followers that have not answered";
      result.epoch = 0;
    }
  }
  if (!result.warning.empty()) {
    MaybeBeginEpoch();
    absl::MutexLock l(&mu_);
    if (!leading_)
      return absl::UnavailableError("the leader could not start its epoch; see its log");
    result.epoch = std::max(promised_epoch_, store_->epoch());
    return result;
  }
  {
    absl::MutexLock l(&mu_);
    if (role_ == Role::kLeader) {
      return absl::FailedPreconditionError(absl::StrCat(
          "this node already leads epoch ", std::max(promised_epoch_, store_->epoch())));
    }
  }
  if (followers.empty()) followers = options_.followers;
  std::string old_leader;
  {
    absl::MutexLock l(&mu_);
    old_leader = leader_;
  }
  // Only a node that holds every write its followers hold may lead them. Two
  // rounds. First each follower is asked for its position, which promises
  // nothing: a promotion refused here changes nothing anywhere. Then each is
  // asked to promise the new epoch (PromiseEpoch) and states its position
  // again, now final: a follower that answered a plain question could still
  // confirm the old leader's writes afterwards, and the old leader acknowledge
  // them under sync acks, while this node never has them (a soak lost writes
  // so). A sync-acknowledged write is on at least one follower, so comparing
  // with every follower finds it. The old leader being gone is why one
  // promotes: its silence proves nothing lost beyond what async acks allow
  // (writes only it held); it is asked in the first round, and in the second
  // only if the first reached it.
  struct Answers {
    std::vector<std::string> ahead;
    std::vector<std::string> unreachable;
    std::vector<std::string> refused;  // Promises refused: a newer or a raced epoch.
    std::string note;
    uint64_t highest_epoch = 0;
  };
  // Asks every follower (promise: for `request`), compares with this log, and
  // says whether the promotion may go on (recording --force's warning).
  // `skip`: not asked (the old leader, when the first round could not reach
  // it: its promise is not needed, since every write it could acknowledge
  // needs a follower's, and asking again costs another timeout).
  const auto ask_all = [&](const v1::PromiseRequest* request, const std::string& skip,
                           Answers* answers) {
    // All at once: an unreachable follower costs one timeout, not one each.
    std::vector<absl::StatusOr<v1::Position>> positions(followers.size(),
                                                        absl::UnknownError("not asked"));
    {
      std::vector<std::thread> askers;
      for (size_t i = 0; i < followers.size(); ++i) {
        if (followers[i] == skip) continue;
        askers.emplace_back([&, i] {
          positions[i] =
              request != nullptr
                  ? options_.transport->Promise(followers[i], *request, options_.position_timeout)
                  : options_.transport->AskPosition(followers[i], options_.position_timeout);
        });
      }
      for (std::thread& t : askers) t.join();
    }
    // This node may still take the old leader's entries: its log only grows.
    const StoreStatus mine = store_->GetStatus();
    for (size_t i = 0; i < followers.size(); ++i) {
      const std::string& address = followers[i];
      if (address == skip) continue;
      const absl::StatusOr<v1::Position>& position = positions[i];
      if (request != nullptr && absl::IsFailedPrecondition(position.status())) {
        const std::string why(position.status().message());
        answers->refused.push_back(
            absl::StartsWith(why, address) ? why : absl::StrCat(address, ": ", why));
      } else if (!position.ok() && !old_leader.empty() && address == old_leader) {
        answers->note = absl::StrCat("the old leader ", address,
                                     " could not be asked for its position; writes only it held "
                                     "(acknowledged without replicas) are lost");
      } else if (!position.ok()) {
        answers->unreachable.push_back(
            absl::StrCat(address, " (", position.status().message(), ")"));
      } else {
        answers->highest_epoch = std::max(answers->highest_epoch, position->epoch());
        if (LogIsAhead(position->last_epoch(), position->last_index(), mine.last_epoch,
                       mine.last_index)) {
          answers->ahead.push_back(absl::StrCat(address, " holds index ", position->last_index(),
                                                " of epoch ", position->last_epoch()));
          result.entries_may_be_lost = std::max<uint64_t>(
              result.entries_may_be_lost, position->last_index() > mine.last_index
                                              ? position->last_index() - mine.last_index
                                              : 1);
        }
      }
    }
    if (answers->ahead.empty() && answers->unreachable.empty()) return absl::OkStatus();
    const std::string problem = absl::StrCat(
        "this node's log ends at index ", mine.last_index, " (epoch ", mine.last_epoch, ")",
        answers->ahead.empty() ? "" : absl::StrCat("; ", absl::StrJoin(answers->ahead, "; ")),
        answers->unreachable.empty()
            ? ""
            : absl::StrCat("; cannot ask ", absl::StrJoin(answers->unreachable, ", "),
                           " for its position"));
    if (!force) {
      return absl::FailedPreconditionError(absl::StrCat(
          "refusing to promote: ", problem,
          ". Promote the most advanced replica, or pass --force to accept losing what only "
          "the others hold",
          result.entries_may_be_lost > 0
              ? absl::StrCat(" (up to ", result.entries_may_be_lost, " entries)")
              : ""));
    }
    result.warning = absl::StrCat("promoted with --force: ", problem);
    return absl::OkStatus();
  };

  Answers asked;
  if (absl::Status s = ask_all(nullptr, "", &asked); !s.ok()) return s;
  v1::PromiseRequest request;
  {
    absl::MutexLock l(&mu_);
    const uint64_t known = std::max(promised_epoch_, store_->epoch());
    // Above every epoch this node and its followers have seen, so that a
    // promotion after one that stopped half way does not collide with it.
    request.set_epoch(epoch != 0 ? epoch : std::max(known, asked.highest_epoch) + 1);
    if (request.epoch() <= known || campaign_epoch_ != 0) {
      return absl::FailedPreconditionError(
          campaign_epoch_ != 0
              ? absl::StrCat("a promotion of this node to epoch ", campaign_epoch_,
                             " is in progress")
              : absl::StrCat("epoch ", request.epoch(),
                             " is not above the highest epoch this node has seen, ", known));
    }
    campaign_epoch_ = request.epoch();
    request.set_candidate(advertise_);
    request.set_candidate_id(node_id_);
    request.set_cluster(cluster_);
    request.set_shard(shard_);
  }
  absl::Cleanup end_campaign = [this] {
    absl::MutexLock l(&mu_);
    campaign_epoch_ = 0;
  };
  Answers promised;
  absl::Status final_round =
      ask_all(&request, asked.note.empty() ? std::string() : old_leader, &promised);
  if (!promised.refused.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "refusing to promote: a follower refused to promise epoch ", request.epoch(), ": ",
        absl::StrJoin(promised.refused, "; "),
        ". Another promotion may have raced this one: check kvctl status of every node of the "
        "shard, then promote one node"));
  }
  if (!final_round.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat(final_round.message(), ". The followers that answered promised epoch ",
                     request.epoch(), " and no longer follow the old leader"));
  }
  if (!result.warning.empty()) LOG(WARNING) << result.warning;
  const std::string note = !promised.note.empty() ? promised.note : asked.note;
  if (!note.empty()) {
    result.warning = result.warning.empty() ? note : absl::StrCat(result.warning, "; ", note);
    LOG(WARNING) << note;
  }

  absl::StatusOr<uint64_t> led = BeginLeading(request.epoch(), std::move(followers), nullptr);
  if (!led.ok()) return led.status();
  result.epoch = *led;
  return result;
}

absl::StatusOr<uint64_t> ReplicationNode::BeginLeading(uint64_t epoch,
                                                       std::vector<std::string> followers,
                                                       LeadershipGuard guard,
                                                       InSyncRecording in_sync) {
  uint64_t new_epoch = 0;
  std::string self;
  {
    absl::MutexLock streams(&stream_mu_);  // No old-stream append after this.
    absl::MutexLock l(&mu_);
    if (stopping_ || !started_) return absl::UnavailableError("not serving; retry shortly");
    self = advertise_;
    const uint64_t known = std::max(promised_epoch_, store_->epoch());
    if (role_ == Role::kLeader) {
      return absl::FailedPreconditionError(absl::StrCat("this node already leads epoch ", known));
    }
    const StoreStatus st = store_->GetStatus();
    if (st.last_index < st.complete_index) {
      return absl::FailedPreconditionError(
          absl::StrCat("this replica is still installing a snapshot (log at index ", st.last_index,
                       ", needs ", st.complete_index, "); promote another one or wait"));
    }
    new_epoch = epoch == 0 ? known + 1 : epoch;
    if (new_epoch <= known) {
      return absl::FailedPreconditionError(absl::StrCat(
          "epoch ", new_epoch, " is not above the highest epoch this node has seen, ", known));
    }
    // Record the epoch first: from now on this node refuses the old leader.
    if (absl::Status s = PersistEpoch(new_epoch, advertise_, node_id_, followers); !s.ok()) {
      return s;
    }
    KV_FAILPOINT_CRASH(storage_failpoints::kPromoteAfterEpoch);
    ++stream_generation_;    // Ends the stream from the old leader.
    role_ = Role::kDeposed;  // Takes no writes until the epoch record is durable.
    leader_ = "";
    leader_id_ = node_id_;
  }
  store_->SetCommitGate(options_.sync_acks > 0);
  absl::Status started = store_->StartEpoch(new_epoch, self);
  {
    absl::MutexLock l(&mu_);
    if (started.ok() && guard && !guard()) {
      started =
          absl::UnavailableError(absl::StrCat("leadership lost while starting epoch ", new_epoch));
    }
    if (!started.ok()) {
      store_->Fence();
      role_ = Role::kReplica;
      if (started.code() == absl::StatusCode::kUnavailable) self_led_epoch_ = new_epoch;
      return started;
    }
    self_led_epoch_ = new_epoch;
    role_ = Role::kLeader;
    leader_.clear();
    leading_ = true;
    ready_ = true;
    guard_ = std::move(guard);
    router_fenced_epoch_ = 0;
    followers_ = followers;
    if (in_sync.record && options_.sync_acks > 0) {
      // Nothing is acknowledged before this leadership's set is recorded:
      // until then etcd names the previous leadership's set.
      isr_ = std::make_unique<InSyncSet>(options_.isr_timeout, in_sync.initial,
                                         store_->last_index(), Now());
      isr_epoch_ = new_epoch;
      isr_record_ = std::move(in_sync.record);
      LOG(INFO) << "In-sync set of epoch " << new_epoch << " starts as ["
                << absl::StrJoin(in_sync.initial, ",") << "]";
    }
    StartLinks(followers_, new_epoch);
    LOG(INFO) << (guard_ ? "Leading" : "Promoted to leader at") << " epoch " << new_epoch
              << ", last index " << store_->last_index() << ", " << links_.size() << " followers";
  }
  PublishReadiness();
  return new_epoch;
}

absl::Status ReplicationNode::LeadEpoch(uint64_t epoch, std::vector<std::string> followers,
                                        LeadershipGuard guard, InSyncRecording in_sync) {
  if (epoch == 0 || !guard) {
    return absl::InvalidArgumentError("LeadEpoch needs an epoch and a leadership guard");
  }
  absl::StatusOr<uint64_t> led =
      BeginLeading(epoch, std::move(followers), std::move(guard), std::move(in_sync));
  return led.status();
}

void ReplicationNode::FenceEpochsThrough(uint64_t epoch) {
  absl::MutexLock streams(&stream_mu_);  // No append of the fenced stream after this.
  absl::MutexLock l(&mu_);
  if (epoch <= fenced_through_) return;
  fenced_through_ = epoch;
  if (role_ != Role::kReplica) return;
  const uint64_t following = std::max(promised_epoch_, store_->epoch());
  if (following <= epoch && !leader_.empty()) {
    LOG(WARNING) << "The leader key of epoch " << following << " (" << leader_
                 << ") is gone: refusing its stream from now on";
    ++stream_generation_;  // Ends the current stream: nothing more is applied from it.
  }
}

void ReplicationNode::SetCoordinationProblem(const std::string& problem) {
  absl::MutexLock l(&mu_);
  coordination_problem_ = problem;
}

bool ReplicationNode::InSyncFollowers(std::vector<std::string>* followers) const {
  absl::MutexLock l(&mu_);
  followers->clear();
  if (!isr_) return false;
  followers->assign(isr_->recorded().begin(), isr_->recorded().end());
  return true;
}

void ReplicationNode::StepDown(const std::string& reason) {
  std::vector<std::function<void(const absl::Status&)>> waiters;
  {
    absl::MutexLock l(&mu_);
    if (role_ != Role::kLeader) return;
    LOG(WARNING) << "Stepping down from epoch " << std::max(promised_epoch_, store_->epoch())
                 << ": " << reason << "; refusing writes, waiting for the next leader";
    waiters = StepDownLocked();
    role_ = Role::kReplica;
    guard_ = nullptr;
    leader_.clear();
    leader_id_.clear();
  }
  PublishReadiness();
  for (auto& done : waiters) {
    done(absl::UnavailableError(absl::StrCat(
        "leadership lost (", reason,
        ") before the write was confirmed on replicas; it may or may not survive on the shard's "
        "new leader")));
  }
}

absl::StatusOr<uint64_t> ReplicationNode::PauseWritesForTransfer(const std::string& to) {
  absl::MutexLock l(&mu_);
  if (role_ != Role::kLeader || !leading_) {
    return absl::FailedPreconditionError("this node does not lead: nothing to hand over");
  }
  transfer_to_ = to.empty() ? std::string("another member") : to;
  // Under mu_, as StepDownLocked: a write that passed CheckWritable before
  // the pause either took its index already or is refused by the store.
  store_->Fence();
  return store_->last_index();
}

void ReplicationNode::ResumeWrites() {
  absl::MutexLock l(&mu_);
  if (transfer_to_.empty()) return;
  transfer_to_.clear();
  if (role_ == Role::kLeader && leading_) store_->Unfence();
}

uint64_t ReplicationNode::AwaitFollowerDurable(const std::string& address, uint64_t index,
                                               absl::Duration timeout) {
  absl::MutexLock l(&mu_);
  const auto acked = [this, &address]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> uint64_t {
    if (role_ != Role::kLeader) return 0;
    for (const auto& link : links_) {
      if (link->address() == address) return link->acked_index();
    }
    return 0;
  };
  // OnAck takes mu_, so the condition is looked at again after each ack.
  const auto done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return role_ != Role::kLeader || stopping_ || acked() >= index;
  };
  mu_.AwaitWithTimeout(absl::Condition(&done), timeout);
  return acked();
}

void ReplicationNode::AddFollowers(const std::vector<std::string>& followers) {
  absl::MutexLock l(&mu_);
  if (role_ != Role::kLeader || !leading_ || stopping_) return;
  for (const std::string& f : followers) {
    if (f.empty() || f == advertise_) continue;
    if (std::find(followers_.begin(), followers_.end(), f) != followers_.end()) continue;
    LOG(INFO) << "Pushing to a new follower " << f;
    followers_.push_back(f);
    StartLinks({f}, store_->epoch());
  }
}

void ReplicationNode::SetCoordinatorLeader(const std::string& address) {
  absl::MutexLock l(&mu_);
  coordinator_leader_ = address;
}

void ReplicationNode::SetPromoteHandler(
    std::function<absl::StatusOr<PromoteResult>(bool force)> handler) {
  promote_handler_ = std::move(handler);
}

void ReplicationNode::FillStatus(v1::StatusResponse* response) {
  const StoreStatus st = store_->GetStatus();
  const uint64_t mine = st.last_index;
  absl::MutexLock l(&mu_);
  response->set_role(RoleName(role_));
  response->set_epoch(std::max(promised_epoch_, store_->epoch()));
  response->set_address(advertise_);
  response->set_ack(options_.sync_acks == 0 ? "async" : absl::StrCat("sync:", options_.sync_acks));
  response->set_last_epoch(st.last_epoch);
  response->set_durable_index(store_->durable_index());
  response->set_node_id(node_id_);
  response->set_shard(shard_);
  response->set_ready(ready_);
  if (!ready_) {
    response->set_not_ready_reason(
        role_ == Role::kDeposed
            ? (deposed_reason_.empty() ? std::string("deposed") : deposed_reason_)
        : role_ == Role::kLeader    ? std::string("confirming the followers' positions")
        : not_ready_reason_.empty() ? std::string("not caught up with a leader since it started")
                                    : not_ready_reason_);
  }
  if (role_ == Role::kLeader) {
    response->set_leader(advertise_);
    for (const auto& link : links_) link->FillStatus(response->add_followers());
    return;
  }
  response->set_leader(leader_);
  if (role_ == Role::kReplica) {
    const uint64_t lag = leader_last_index_ > mine ? leader_last_index_ - mine : 0;
    if (lag == 0) caught_up_at_ = Now();
    response->set_lag_entries(lag);
    response->set_lag_seconds(lag == 0 ? 0.0 : absl::ToDoubleSeconds(Now() - caught_up_at_));
  }
}

}  // namespace kvstore
