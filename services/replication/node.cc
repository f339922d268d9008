#include "services/replication/node.h"

#include <algorithm>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "glog/logging.h"
#include "services/replication/follower_link.h"

namespace kvstore {
namespace {

constexpr char kEpochFile[] = "EPOCH";

// EPOCH holds "<epoch> <leader address>\n": the highest epoch this node has
// seen and who led it. Written atomically (temporary file, fsync, rename, fsync
// of the directory) before the node acts on a new epoch.
absl::Status WriteEpochFile(FileSystem* fs, const std::string& dir, uint64_t epoch,
                            const std::string& leader) {
  const std::string path = JoinPath(dir, kEpochFile);
  const std::string tmp = path + ".tmp";
  absl::StatusOr<std::unique_ptr<WritableFile>> file = fs->CreateFile(tmp);
  if (!file.ok()) return file.status();
  absl::Status s = (*file)->Append(absl::StrCat(epoch, " ", leader, "\n"));
  if (s.ok()) s = (*file)->Sync();
  if (absl::Status c = (*file)->Close(); s.ok()) s = c;
  if (s.ok()) s = fs->Rename(tmp, path);
  if (s.ok()) s = fs->SyncDir(dir);
  return s;
}

absl::Status ReadEpochFile(FileSystem* fs, const std::string& dir, uint64_t* epoch,
                           std::string* leader) {
  const std::string path = JoinPath(dir, kEpochFile);
  *epoch = 0;
  leader->clear();
  if (!fs->Exists(path)) return absl::OkStatus();
  absl::StatusOr<std::string> contents = fs->ReadFile(path);
  if (!contents.ok()) return contents.status();
  std::vector<std::string> parts =
      absl::StrSplit(absl::StripTrailingAsciiWhitespace(*contents), absl::MaxSplits(' ', 1));
  if (parts.empty() || !absl::SimpleAtoi(parts[0], epoch)) {
    return absl::DataLossError(absl::StrCat(path, " is not \"<epoch> <leader>\""));
  }
  if (parts.size() > 1) *leader = parts[1];
  return absl::OkStatus();
}

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
  uint64_t file_epoch = 0;
  std::string file_leader;
  if (absl::Status s = ReadEpochFile(store->fs(), store->dir(), &file_epoch, &file_leader);
      !s.ok()) {
    return s;
  }
  std::unique_ptr<ReplicationNode> node(new ReplicationNode(store, std::move(options), role));
  node->file_epoch_ = file_epoch;
  node->file_leader_ = file_leader;
  absl::MutexLock l(&node->mu_);
  node->promised_epoch_ = std::max(file_epoch, store->epoch());
  node->caught_up_at_ = absl::Now();
  node->advertise_ = node->options_.advertise;
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
  return node;
}

void ReplicationNode::Start(const std::string& advertise) {
  SettleRoleAndStartLinks(advertise);
  PublishReadiness();
}

void ReplicationNode::SettleRoleAndStartLinks(const std::string& advertise) {
  absl::MutexLock l(&mu_);
  if (started_ || stopping_) return;
  started_ = true;
  if (advertise_.empty()) advertise_ = advertise;
  const uint64_t log_epoch = store_->epoch();
  if (!file_leader_.empty() && file_leader_ == advertise_ && file_epoch_ <= log_epoch) {
    // This node was promoted and led the newest epoch it knows: it leads again.
    if (role_ != Role::kLeader) LOG(INFO) << "Led epoch " << file_epoch_ << " before: leading";
    role_ = Role::kLeader;
  } else if (role_ == Role::kLeader && file_epoch_ > log_epoch) {
    role_ = Role::kDeposed;
    leader_ = file_leader_;
    LOG(WARNING) << "Starting deposed: epoch " << file_epoch_ << " (leader " << file_leader_
                 << ") is newer than this log's epoch " << log_epoch
                 << "; writes are refused. Run this data directory as a replica to rejoin.";
  } else if (role_ == Role::kReplica) {
    leader_ = file_leader_;
  }
  if (role_ == Role::kLeader) {
    leading_since_ = absl::Now();
    // A leader that restarts may have been replaced meanwhile: it asks its
    // followers before it takes a write. (A promotion needs no such wait: it
    // raised the epoch itself.)
    await_first_contact_ = true;
    StartLinks(options_.followers);
    ready_ = true;
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
    links = TakeLinks();
    waiters.swap(waiters_);
  }
  store_->SetLogRetentionFloor(nullptr);
  links.clear();  // Stops and joins each.
  for (Waiter& w : waiters) {
    w.done(absl::UnavailableError("the server is shutting down; the write is on the leader"));
  }
  if (timer_.joinable()) timer_.join();
}

void ReplicationNode::StartLinks(const std::vector<std::string>& followers) {
  links_contacted_ = 0;
  const uint64_t epoch = store_->epoch();
  for (const std::string& address : followers) {
    links_.push_back(std::make_unique<FollowerLink>(this, address, epoch));
  }
}

std::vector<std::unique_ptr<FollowerLink>> ReplicationNode::TakeLinks() {
  std::vector<std::unique_ptr<FollowerLink>> links;
  links.swap(links_);
  for (auto& link : links) link->Stop();
  return links;
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
      *leader = leader_;
      return absl::FailedPreconditionError(
          leader_.empty()
              ? std::string("this node is a replica and no leader has contacted it yet; send "
                            "writes to the shard's leader")
              : absl::StrCat("this node is a replica; the leader is ", leader_));
    case Role::kDeposed:
      *leader = leader_;
      if (!deposed_reason_.empty()) return absl::FailedPreconditionError(deposed_reason_);
      return absl::FailedPreconditionError(
          absl::StrCat("this node is no longer the leader: epoch ", promised_epoch_, " is led by ",
                       leader_.empty() ? std::string("another node") : leader_));
    case Role::kLeader:
      break;
  }
  if (await_first_contact_ && links_contacted_ < static_cast<int>(links_.size()) &&
      absl::Now() - leading_since_ < options_.first_contact_timeout) {
    return absl::UnavailableError(
        "the leader is contacting its followers before taking writes; retry shortly");
  }
  return absl::OkStatus();
}

void ReplicationNode::OnFirstContact() {
  absl::MutexLock l(&mu_);
  ++links_contacted_;
}

int ReplicationNode::CountAcked(uint64_t index) const {
  int n = 0;
  for (const auto& link : links_) n += link->acked_index() >= index ? 1 : 0;
  return n;
}

void ReplicationNode::AwaitReplicas(uint64_t index, int replicas,
                                    std::function<void(const absl::Status&)> done) {
  absl::Status now_status;
  bool ready = false;
  {
    absl::MutexLock l(&mu_);
    if (stopping_) {
      now_status =
          absl::UnavailableError("the server is shutting down; the write is on the leader");
      ready = true;
    } else if (CountAcked(index) >= replicas) {
      ready = true;
    } else {
      waiters_.push_back(
          Waiter{index, replicas, absl::Now() + options_.sync_timeout, std::move(done)});
      return;
    }
  }
  if (ready) done(now_status);
}

void ReplicationNode::OnAck() {
  std::vector<std::pair<std::function<void(const absl::Status&)>, absl::Status>> ready;
  {
    absl::MutexLock l(&mu_);
    ++ack_events_;
    CollectReady(absl::Now(), &ready);
  }
  for (auto& [done, status] : ready) done(status);
}

void ReplicationNode::CollectReady(
    absl::Time now,
    std::vector<std::pair<std::function<void(const absl::Status&)>, absl::Status>>* ready) {
  auto it = waiters_.begin();
  while (it != waiters_.end()) {
    if (CountAcked(it->index) >= it->replicas) {
      ready->emplace_back(std::move(it->done), absl::OkStatus());
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
    {
      absl::MutexLock l(&mu_);
      if (stopping_) return;
      absl::Time next = absl::Now() + absl::Milliseconds(100);
      for (const Waiter& w : waiters_) next = std::min(next, w.deadline);
      const auto stop = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
      mu_.AwaitWithDeadline(absl::Condition(&stop), next);
      if (stopping_) return;
      CollectReady(absl::Now(), &ready);
    }
    for (auto& [done, status] : ready) done(status);
  }
}

absl::Status ReplicationNode::PersistEpoch(uint64_t epoch, const std::string& leader) {
  if (absl::Status s = WriteEpochFile(store_->fs(), store_->dir(), epoch, leader); !s.ok()) {
    return absl::InternalError(
        absl::StrCat("cannot record epoch ", epoch, " in ", store_->dir(), ": ", s.message()));
  }
  promised_epoch_ = std::max(promised_epoch_, epoch);
  return absl::OkStatus();
}

void ReplicationNode::Depose(uint64_t epoch, const std::string& leader) {
  std::vector<std::unique_ptr<FollowerLink>> links;
  std::vector<Waiter> waiters;
  {
    absl::MutexLock l(&mu_);
    if (role_ != Role::kLeader || epoch <= std::max(promised_epoch_, store_->epoch())) return;
    LOG(ERROR) << "Deposed: epoch " << epoch << " is led by "
               << (leader.empty() ? std::string("another node") : leader)
               << "; this node refuses writes from now on";
    role_ = Role::kDeposed;
    leader_ = leader;
    ready_ = false;
    if (absl::Status s = PersistEpoch(epoch, leader); !s.ok()) LOG(ERROR) << s;
    links = TakeLinks();
    waiters.swap(waiters_);
  }
  PublishReadiness();
  // The calling link is among them: let it finish on its own thread.
  for (auto& link : links) link->Stop();
  std::thread([links = std::move(links)]() mutable { links.clear(); }).detach();
  for (Waiter& w : waiters) {
    w.done(absl::FailedPreconditionError(absl::StrCat(
        "this node was deposed before the write was confirmed on replicas; the leader is ",
        leader.empty() ? std::string("another node") : leader)));
  }
}

void ReplicationNode::RefuseToLead(const std::string& reason) {
  std::vector<std::unique_ptr<FollowerLink>> links;
  std::vector<Waiter> waiters;
  {
    absl::MutexLock l(&mu_);
    if (role_ != Role::kLeader) return;
    LOG(ERROR) << "Refusing to lead: " << reason;
    role_ = Role::kDeposed;
    deposed_reason_ = reason;
    ready_ = false;
    links = TakeLinks();
    waiters.swap(waiters_);
  }
  PublishReadiness();
  for (auto& link : links) link->Stop();
  std::thread([links = std::move(links)]() mutable { links.clear(); }).detach();
  for (Waiter& w : waiters) w.done(absl::FailedPreconditionError(reason));
}

absl::Status ReplicationNode::AcceptLeader(uint64_t epoch, const std::string& leader,
                                           uint64_t* generation) {
  absl::MutexLock l(&mu_);
  if (stopping_) return absl::UnavailableError("shutting down");
  const uint64_t known = std::max(promised_epoch_, store_->epoch());
  if (epoch < known) {
    return absl::FailedPreconditionError(
        absl::StrCat("epoch ", epoch, " is stale: this node has seen epoch ", known,
                     leader_.empty() ? std::string() : absl::StrCat(" led by ", leader_)));
  }
  if (role_ == Role::kLeader) {
    if (epoch == known) {
      return absl::FailedPreconditionError(
          absl::StrCat("this node leads epoch ", known, " itself"));
    }
    // A newer leader exists: step down and follow it.
    LOG(WARNING) << "Leader " << leader << " has epoch " << epoch << " > " << known
                 << ": stepping down to replica";
    std::vector<std::unique_ptr<FollowerLink>> links = TakeLinks();
    std::thread([links = std::move(links)]() mutable { links.clear(); }).detach();
  }
  if (epoch > promised_epoch_ || leader != leader_) {
    if (absl::Status s = PersistEpoch(epoch, leader); !s.ok()) return s;
  }
  if (role_ != Role::kReplica || leader_ != leader) {
    LOG(INFO) << "Following " << leader << " at epoch " << epoch;
  }
  role_ = Role::kReplica;
  leader_ = leader;
  *generation = ++stream_generation_;
  catch_up_target_known_ = false;  // The next NoteLeaderIndex is this stream's Hello.
  return absl::OkStatus();
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
    if (mine >= leader_last_index_) caught_up_at_ = absl::Now();
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
  }
  PublishReadiness();
}

absl::StatusOr<uint64_t> ReplicationNode::Promote(uint64_t epoch,
                                                  std::vector<std::string> followers) {
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
    if (absl::Status s = PersistEpoch(new_epoch, advertise_); !s.ok()) return s;
    ++stream_generation_;    // Ends the stream from the old leader.
    role_ = Role::kDeposed;  // Takes no writes until the epoch record is durable.
    leader_ = "";
  }
  absl::Status started = store_->StartEpoch(new_epoch, self);
  {
    absl::MutexLock l(&mu_);
    if (!started.ok()) {
      role_ = Role::kReplica;
      return started;
    }
    role_ = Role::kLeader;
    leader_.clear();
    leading_since_ = absl::Now();
    await_first_contact_ = false;
    ready_ = true;
    StartLinks(followers.empty() ? options_.followers : followers);
    LOG(INFO) << "Promoted to leader at epoch " << new_epoch << ", last index "
              << store_->last_index() << ", " << links_.size() << " followers";
  }
  PublishReadiness();
  return new_epoch;
}

void ReplicationNode::FillStatus(v1::StatusResponse* response) {
  const uint64_t mine = store_->last_index();
  absl::MutexLock l(&mu_);
  response->set_role(RoleName(role_));
  response->set_epoch(std::max(promised_epoch_, store_->epoch()));
  response->set_address(advertise_);
  response->set_ack(options_.sync_acks == 0 ? "async" : absl::StrCat("sync:", options_.sync_acks));
  if (role_ == Role::kLeader) {
    response->set_leader(advertise_);
    for (const auto& link : links_) link->FillStatus(response->add_followers());
    return;
  }
  response->set_leader(leader_);
  if (role_ == Role::kReplica) {
    const uint64_t lag = leader_last_index_ > mine ? leader_last_index_ - mine : 0;
    if (lag == 0) caught_up_at_ = absl::Now();
    response->set_lag_entries(lag);
    response->set_lag_seconds(lag == 0 ? 0.0 : absl::ToDoubleSeconds(absl::Now() - caught_up_at_));
  }
}

}  // namespace kvstore
