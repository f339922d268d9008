#include "common/failover/failover_agent.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/coord/eligibility.h"
#include "common/coord/txn.h"
#include "common/failover/member_report.h"
#include "glog/logging.h"

namespace kvstore {
namespace {

constexpr char kMembers[] = "members/";
constexpr char kHandoff[] = "handoff";

int64_t Nanos(absl::Duration d) { return absl::ToInt64Nanoseconds(d); }

coord::RangeOptions MembersRange() {
  coord::RangeOptions options;
  options.prefix = true;
  return options;
}

}  // namespace

absl::StatusOr<std::unique_ptr<FailoverAgent>> FailoverAgent::Create(coord::EtcdClient* client,
                                                                     ReplicationNode* node,
                                                                     FailoverOptions options) {
  if (options.shard.empty()) {
    return absl::InvalidArgumentError("etcd mode needs the node's shard (--shard)");
  }
  if (options.advertise.empty()) {
    return absl::InvalidArgumentError("etcd mode needs the node's address");
  }
  if (options.lease_ttl < coord::Lease::kMinTtl) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--lease-ttl ", absl::FormatDuration(options.lease_ttl), " is below the minimum of ",
        absl::FormatDuration(coord::Lease::kMinTtl), " (etcd 3.4 grants no shorter lease)"));
  }
  options.prefix = coord::NormalizePrefix(options.prefix);
  return std::unique_ptr<FailoverAgent>(new FailoverAgent(client, node, std::move(options)));
}

FailoverAgent::FailoverAgent(coord::EtcdClient* client, ReplicationNode* node,
                             FailoverOptions options)
    : client_(client), node_(node), options_(std::move(options)) {
  id_ = node_->node_id();
  member_key_ = coord::MemberKey(options_.prefix, options_.shard, id_);
  isr_key_ = coord::IsrKey(options_.prefix, options_.shard);
  coord::TopologyViewOptions view;
  view.prefix = coord::ShardPrefix(options_.prefix, options_.shard);
  view.on_snapshot = [this](std::shared_ptr<const coord::TopologySnapshot>) { Wake(); };
  view_ = std::make_unique<coord::TopologyView>(client_, std::move(view));
  node_->SetRouterFenceHandler([this](uint64_t epoch) { OnRouterFence(epoch); });
}

FailoverAgent::~FailoverAgent() { Stop(); }

void FailoverAgent::Start() {
  LOG(INFO) << "Failover agent for shard " << options_.shard << " as " << id_ << " ("
            << options_.advertise << "), " << (options_.automatic ? "automatic" : "manual")
            << " failover, lease TTL " << absl::FormatDuration(options_.lease_ttl)
            << ", election wait " << absl::FormatDuration(options_.election_wait) << ", keys under "
            << options_.prefix;
  view_->Start();
  thread_ = std::thread([this] { Run(); });
}

void FailoverAgent::Stop() {
  {
    absl::MutexLock w(&wake_mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
  view_->Stop();
  absl::MutexLock l(&mu_);
  if (leadership_) {
    node_->StepDown("shutting down");
    EndLeadership("shutting down", /*resign=*/true);
  }
  if (lease_) {
    // Deletes the member key with it: the others need not wait out the TTL.
    if (absl::Status s = lease_->Revoke(); !s.ok()) LOG(WARNING) << "Revoking the lease: " << s;
    lease_.reset();
  }
}

void FailoverAgent::Wake() {
  absl::MutexLock w(&wake_mu_);
  wake_ = true;
}

void FailoverAgent::OnLeaseLost(const absl::Status& why) {
  // At once, on the lease's thread: the guard already refuses writes since
  // valid_until passed; this fences the store and fails the waiting writes.
  LOG(WARNING) << "Lease lost: " << why;
  if (options_.metrics != nullptr) {
    options_.metrics->SetLeaseValidUntil(0);
    if (node_->role() == Role::kLeader) options_.metrics->SelfFenced("lease_lost");
  }
  if (why.code() == absl::StatusCode::kUnavailable) {
    node_->SetCoordinationProblem(absl::StrCat("coordination outage: etcd (",
                                               client_->CurrentEndpoint(),
                                               ") did not answer this node's lease keepalives"));
  }
  node_->StepDown(absl::StrCat("lease lost: ", why.message()));
  Wake();
}

void FailoverAgent::OnRouterFence(uint64_t epoch) {
  if (options_.metrics != nullptr) options_.metrics->SelfFenced("router_epoch");
  uint64_t seen = router_fence_.load();
  while (seen < epoch && !router_fence_.compare_exchange_weak(seen, epoch)) {
  }
  Wake();
}

void FailoverAgent::CheckRouterFence() {
  const uint64_t named = router_fence_.load();
  if (named == 0) return;
  if (!leadership_ || node_->router_fenced_epoch() == 0) {
    router_fence_.store(0);  // Stepped down meanwhile, or already resumed.
    return;
  }
  absl::StatusOr<std::optional<coord::LeaderRecord>> holder = leader_key_->Holder();
  if (!holder.ok()) {
    // Stays fenced; tried again next tick while the lease lasts.
    LOG_EVERY_N(WARNING, 10) << "A router named epoch " << named
                             << "; cannot read the leader key to check it: " << holder.status();
    return;
  }
  router_fence_.store(0);
  if (holder->has_value() && (*holder)->create_revision == leadership_->create_revision) {
    LOG(WARNING) << "A router named epoch " << named << " for shard " << options_.shard
                 << ", but etcd still names this node (epoch " << leadership_->epoch
                 << "): a confused router; resuming leadership";
    node_->ResumeAfterRouterFence(static_cast<uint64_t>(leadership_->epoch));
    return;
  }
  const std::string why = absl::StrCat(
      "a router named epoch ", named, " and the leader key is ",
      holder->has_value() ? absl::StrCat((*holder)->id, "'s at epoch ", (*holder)->epoch)
                          : std::string("gone"));
  node_->StepDown(why);
  EndLeadership(why, /*resign=*/true);
}

void FailoverAgent::Run() {
  for (;;) {
    {
      absl::MutexLock l(&mu_);
      Step();
    }
    absl::MutexLock w(&wake_mu_);
    const auto woken = [this]()
                           ABSL_EXCLUSIVE_LOCKS_REQUIRED(wake_mu_) { return wake_ || stopping_; };
    wake_mu_.AwaitWithTimeout(absl::Condition(&woken), options_.tick);
    if (stopping_) return;
    wake_ = false;
  }
}

bool FailoverAgent::EnsureClusterRecord() {
  if (leader_key_) return true;
  absl::StatusOr<coord::RangeResult> range = client_->Range(coord::ClusterKey(options_.prefix));
  if (!range.ok()) return false;
  if (range->kvs.empty()) {
    if (!cluster_missing_logged_) {
      LOG(WARNING) << coord::ClusterKey(options_.prefix)
                   << " is missing: no election until the cluster is initialised (kvctl "
                      "--etcd=... cluster init --config FILE)";
      cluster_missing_logged_ = true;
    }
    return false;
  }
  absl::StatusOr<coord::ClusterRecord> record = coord::ParseClusterValue(range->kvs[0].value());
  if (!record.ok()) {
    LOG(ERROR) << record.status();
    return false;
  }
  leader_key_ = std::make_unique<coord::LeaderKey>(
      client_, coord::ShardLeaderKey(options_.prefix, options_.shard), record->epoch_base);
  return true;
}

bool FailoverAgent::EnsureLease() {
  if (lease_ && !lease_->lost()) return true;
  if (leadership_) {
    node_->StepDown("lease lost");
    // etcd deletes the key with the lease; a resign call could only wait.
    EndLeadership("lease lost", /*resign=*/false);
  }
  const int64_t old_lease = lease_ ? lease_->id() : 0;
  lease_.reset();
  published_.reset();
  if (Now() < next_lease_attempt_) return false;
  coord::LeaseOptions lease_options;
  lease_options.ttl = options_.lease_ttl;
  lease_options.margin = options_.lease_margin;
  lease_options.clock = options_.clock;
  lease_options.on_lost = [this](const absl::Status& why) { OnLeaseLost(why); };
  absl::StatusOr<std::unique_ptr<coord::Lease>> granted =
      coord::Lease::Grant(client_, std::move(lease_options));
  if (!granted.ok()) {
    LOG(WARNING) << "Cannot take a lease in etcd (" << client_->CurrentEndpoint()
                 << "): " << granted.status() << "; retrying";
    node_->SetCoordinationProblem(absl::StrCat("coordination outage: etcd (",
                                               client_->CurrentEndpoint(),
                                               ") is unreachable: ", granted.status().message()));
    next_lease_attempt_ = Now() + Nanos(absl::Seconds(1));
    return false;
  }
  lease_ = std::shared_ptr<coord::Lease>(std::move(*granted));
  node_->SetCoordinationProblem("");
  if (old_lease != 0) {
    // The lost lease may still hold keys (etcd renews every lease when it
    // restarts): revoking it frees a leader key this node no longer uses, so
    // the election need not wait for its TTL.
    if (absl::Status s = client_->LeaseRevoke(old_lease); !s.ok() && !absl::IsNotFound(s)) {
      LOG(INFO) << "Revoking the lost lease " << old_lease << ": " << s;
    }
  }
  LOG(INFO) << "Lease " << lease_->id() << " granted, TTL " << absl::FormatDuration(lease_->ttl());
  return true;
}

void FailoverAgent::PublishMember(bool now) {
  if (!lease_) return;
  const coord::MemberRecord record = ReportMember(node_, id_, options_.advertise);
  if (published_ && *published_ == record) return;
  if (!now && Now() - published_at_ < Nanos(options_.refresh)) return;
  published_at_ = Now();
  absl::StatusOr<int64_t> put = client_->Put(member_key_, coord::MemberValue(record), lease_->id());
  if (!put.ok()) {
    LOG(WARNING) << "Cannot write " << member_key_ << ": " << put.status();
    return;
  }
  published_ = record;
}

void FailoverAgent::PublishPosition() {
  if (!leadership_ || node_->DefaultSyncAcks() > 0) return;
  const coord::MemberRecord me = ReportMember(node_, id_, options_.advertise);
  coord::PositionRecord record;
  record.epoch = leadership_->epoch;
  record.index = me.durable_index;
  record.max_lag = options_.max_lag_on_failover;
  if (position_published_ && *position_published_ == record) return;
  if (Now() - position_published_at_ < Nanos(options_.refresh)) return;
  position_published_at_ = Now();
  record.unix_ms = absl::ToUnixMillis(absl::Now());
  absl::StatusOr<etcdserverpb::TxnResponse> put =
      leader_key_->GuardedTxn(*leadership_, {},
                              {coord::PutOp(coord::PositionKey(options_.prefix, options_.shard),
                                            coord::PositionValue(record))});
  if (!put.ok()) {
    LOG(WARNING) << "Cannot record this leader's position: " << put.status();
    return;
  }
  if (put->succeeded()) position_published_ = record;
}

absl::StatusOr<std::optional<coord::PositionRecord>> FailoverAgent::ReadPosition() {
  absl::StatusOr<coord::RangeResult> range =
      client_->Range(coord::PositionKey(options_.prefix, options_.shard));
  if (!range.ok()) return range.status();
  if (range->kvs.empty()) return std::optional<coord::PositionRecord>();
  absl::StatusOr<coord::PositionRecord> record = coord::ParsePositionValue(range->kvs[0].value());
  if (!record.ok()) {
    // Unreadable: no limit rather than no election.
    LOG(ERROR) << coord::PositionKey(options_.prefix, options_.shard) << ": " << record.status();
    return std::optional<coord::PositionRecord>();
  }
  return std::optional<coord::PositionRecord>(*record);
}

void FailoverAgent::Step() {
  if (!EnsureLease()) return;
  if (options_.metrics != nullptr) options_.metrics->SetLeaseValidUntil(lease_->valid_until());
  PublishMember(/*now=*/false);
  const std::shared_ptr<const coord::TopologySnapshot> snapshot = view_->Current();
  if (!snapshot) return;
  std::optional<coord::LeaderValueRecord> holder;
  std::vector<std::string> others;  // The other members' addresses.
  std::map<std::string, std::string> addr_of_id;
  std::optional<coord::HandoffRecord> handoff;
  std::string handoff_value;
  for (const auto& [key, value] : *snapshot->entries) {
    if (key == "leader") {
      absl::StatusOr<coord::LeaderValueRecord> parsed = coord::ParseLeaderJson(value);
      if (parsed.ok()) holder = *parsed;
    } else if (key == kHandoff) {
      absl::StatusOr<coord::HandoffRecord> parsed = coord::ParseHandoffValue(value);
      if (parsed.ok()) {
        handoff = *parsed;
        handoff_value = value;
      } else {
        LOG_EVERY_N(WARNING, 100) << parsed.status();
      }
    } else if (absl::StartsWith(key, kMembers)) {
      const std::string id = key.substr(sizeof(kMembers) - 1);
      absl::StatusOr<coord::MemberRecord> member = coord::ParseMemberValue(id, value);
      if (member.ok() && id != id_) others.push_back(member->addr);
      if (member.ok()) addr_of_id[id] = member->addr;
      if (member.ok()) {
        absl::MutexLock ids(&ids_mu_);
        id_of_addr_[member->addr] = id;
      }
    }
  }
  node_->SetCoordinatorLeader(holder ? holder->addr : "");
  if (leader_key_) {
    // No leader key at this revision: every leadership created up to it is
    // over, and its leader's stream is refused from now on. A holder with a
    // confirmed epoch ends every epoch before it.
    if (!holder) {
      node_->FenceEpochsThrough(static_cast<uint64_t>(leader_key_->EpochOf(snapshot->revision)));
    } else if (holder->epoch > 0) {
      node_->FenceEpochsThrough(static_cast<uint64_t>(holder->epoch - 1));
    }
  }

  if (leadership_) {
    CheckRouterFence();
    if (!leadership_) return;
    if (node_->role() != Role::kLeader) {
      EndLeadership("the node stopped leading (a follower knows a newer epoch)", true);
      return;
    }
    // The view may not show our own key yet: only a snapshot at least as new
    // as the key's creation can tell that it is gone.
    if (snapshot->revision >= leadership_->create_revision && (!holder || holder->id != id_)) {
      node_->StepDown("the leader key is gone");
      EndLeadership("the leader key is gone", true);
      return;
    }
    node_->AddFollowers(others);
    if (handoff) {
      auto to = addr_of_id.find(handoff->to);
      HandOver(*handoff, handoff_value, to == addr_of_id.end() ? std::string() : to->second);
      if (!leadership_) return;
    }
    PublishPosition();
    return;
  }
  if (holder) {
    absent_since_ = 0;
    last_refusal_.clear();
    return;
  }
  const int64_t now = Now();
  if (handoff && handoff->to == id_ &&
      absl::ToUnixMillis(absl::Now()) <= handoff->deadline_unix_ms) {
    // The leader handed over to this node: campaign at once, without
    // --election-wait (the others defer to the handoff's target meanwhile),
    // then again every --election-wait while the request stands. Also in
    // manual mode: an operator asked for it.
    if (handoff->id == campaigned_for_handoff_ && now < next_attempt_) return;
    campaigned_for_handoff_ = handoff->id;
    if (absent_since_ == 0) absent_since_ = now;
    next_attempt_ = now + Nanos(options_.election_wait);
    absl::StatusOr<ReplicationHooks::PromoteResult> result = Campaign(/*force=*/false);
    if (!result.ok()) {
      LOG(WARNING) << "Shard " << options_.shard
                   << " was handed to this node but it did not win: " << result.status().message();
    }
    return;
  }
  if (handoff && handoff->to != id_ &&
      absl::ToUnixMillis(absl::Now()) <= handoff->deadline_unix_ms) {
    // A transfer names another member: it campaigns at once, and the rest
    // (the old leader included) wait for it until the request's deadline,
    // whatever their possibly older view of its position says.
    const std::string why = absl::StrCat("a leadership transfer to ", handoff->to, " is pending");
    if (why != last_refusal_) {
      last_refusal_ = why;
      LOG(INFO) << "Not campaigning for shard " << options_.shard << ": " << why;
    }
    return;
  }
  if (!options_.automatic) return;
  if (absent_since_ == 0) {
    // Every member publishes its final position before anyone decides.
    absent_since_ = now;
    next_attempt_ = now + Nanos(options_.election_wait);
    LOG(INFO) << "Shard " << options_.shard << " has no leader: electing in "
              << absl::FormatDuration(options_.election_wait);
    PublishMember(/*now=*/true);
    return;
  }
  if (now < next_attempt_) return;
  next_attempt_ = now + Nanos(options_.election_wait);
  absl::StatusOr<ReplicationHooks::PromoteResult> result = Campaign(/*force=*/false);
  if (!result.ok() && result.status().message() != last_refusal_) {
    last_refusal_ = std::string(result.status().message());
    LOG(INFO) << "Not leading shard " << options_.shard << ": " << result.status().message();
  }
}

absl::StatusOr<ReplicationHooks::PromoteResult> FailoverAgent::CampaignNow(bool force) {
  absl::MutexLock l(&mu_);
  return Campaign(force);
}

absl::StatusOr<ReplicationHooks::PromoteResult> FailoverAgent::Campaign(bool force) {
  if (leadership_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "this node already leads shard ", options_.shard, " at epoch ", leadership_->epoch));
  }
  if (!EnsureClusterRecord()) {
    return absl::FailedPreconditionError(
        absl::StrCat("no election: ", coord::ClusterKey(options_.prefix),
                     " is missing or unreadable (kvctl cluster init)"));
  }
  if (!lease_ || !lease_->Valid()) {
    return absl::UnavailableError("this node holds no valid lease in etcd");
  }
  absl::StatusOr<coord::RangeResult> range =
      client_->Range(coord::MembersPrefix(options_.prefix, options_.shard), MembersRange());
  if (!range.ok()) return range.status();
  const std::string members_prefix = coord::MembersPrefix(options_.prefix, options_.shard);
  std::vector<coord::MemberRecord> members;
  std::vector<std::string> followers;
  for (const mvccpb::KeyValue& kv : range->kvs) {
    const std::string id = kv.key().substr(members_prefix.size());
    if (id == id_) continue;  // Our own record is taken fresh below.
    absl::StatusOr<coord::MemberRecord> member = coord::ParseMemberValue(id, kv.value());
    if (!member.ok()) {
      LOG(WARNING) << member.status();
      continue;
    }
    followers.push_back(member->addr);
    members.push_back(*std::move(member));
  }
  members.push_back(ReportMember(node_, id_, options_.advertise));
  int64_t isr_revision = 0;
  absl::StatusOr<std::optional<coord::IsrRecord>> isr = ReadIsr(&isr_revision);
  if (!isr.ok()) return isr.status();
  std::optional<coord::PositionRecord> last_leader;
  if (!isr->has_value()) {
    absl::StatusOr<std::optional<coord::PositionRecord>> position = ReadPosition();
    if (!position.ok()) return position.status();
    last_leader = *position;
  }
  absl::StatusOr<std::optional<coord::HandoffRecord>> handoff = ReadHandoff();
  if (!handoff.ok()) return handoff.status();
  const coord::Election election = coord::ChooseCandidate(
      members, isr->has_value() ? &**isr : nullptr, last_leader ? &*last_leader : nullptr,
      handoff->has_value() ? &**handoff : nullptr, absl::ToUnixMillis(absl::Now()));
  if (!election.handoff_ignored.empty() && election.handoff_ignored != last_refusal_) {
    LOG(INFO) << "Handoff ignored by this election: " << election.handoff_ignored;
  }
  std::string warning;
  if (election.candidate != id_) {
    std::string mine;
    for (const coord::MemberVerdict& v : election.verdicts) {
      if (v.id == id_) {
        mine = !v.eligible ? v.reason
               : election.by_handoff
                   ? "eligible, but a leadership transfer names " + election.candidate
                   : "eligible, but a smaller id is too";
      }
    }
    const std::string why =
        election.candidate.empty()
            ? absl::StrCat("nobody may lead: ", election.why_none)
            : absl::StrCat(election.candidate, " is the member to lead; this node: ", mine);
    if (!force) return absl::FailedPreconditionError(why);
    warning = absl::StrCat("campaigned with --force although ", why,
                           "; writes only the more advanced members hold may be lost");
    LOG(WARNING) << warning;
  }

  absl::StatusOr<coord::CampaignResult> result =
      leader_key_->Campaign(lease_->id(), id_, options_.advertise);
  if (!result.ok()) return result.status();
  if (!result->won) {
    return absl::FailedPreconditionError(
        absl::StrCat("shard ", options_.shard, " is led by ",
                     result->holder ? absl::StrCat(result->holder->id, " at ", result->holder->addr,
                                                   " (epoch ", result->holder->epoch, ")")
                                    : std::string("another member")));
  }
  const coord::Leadership& won = result->leadership;
  node_->SetCoordinatorLeader(options_.advertise);  // Refusals say "starting" meanwhile.
  std::weak_ptr<coord::Lease> lease = lease_;
  InSyncRecording in_sync;
  if (node_->DefaultSyncAcks() > 0) {
    // The new set starts as the previous one's followers that are live
    // members (they hold every acknowledged write); nothing is acknowledged
    // before it is recorded.
    absl::MutexLock ids(&ids_mu_);
    isr_mod_revision_ = isr_revision;
    for (const coord::MemberRecord& m : members) {
      id_of_addr_[m.addr] = m.id;
      if (m.id != id_ && isr->has_value() && (*isr)->Contains(m.id)) {
        in_sync.initial.push_back(m.addr);
      }
    }
    in_sync.record = [this, key = leader_key_.get(), won](
                         uint64_t epoch, const std::vector<std::string>& in_sync_followers) {
      return RecordInSync(key, won, epoch, in_sync_followers);
    };
  } else if (isr->has_value()) {
    // Async mode: no set is kept, so none may restrict later elections.
    absl::StatusOr<etcdserverpb::TxnResponse> removed =
        leader_key_->GuardedTxn(won, {}, {coord::DeleteOp(isr_key_)});
    if (!removed.ok()) LOG(WARNING) << "Removing " << isr_key_ << ": " << removed.status();
  }
  absl::Status led = node_->LeadEpoch(
      static_cast<uint64_t>(won.epoch), followers,
      [lease] {
        std::shared_ptr<coord::Lease> held = lease.lock();
        return held != nullptr && held->Valid();
      },
      std::move(in_sync));
  if (!led.ok()) {
    LOG(ERROR) << "Won the leader key of shard " << options_.shard << " at epoch " << won.epoch
               << " but cannot lead it: " << led << "; resigning";
    node_->SetCoordinatorLeader("");
    if (absl::Status s = leader_key_->Resign(won); !s.ok()) LOG(WARNING) << "Resign: " << s;
    next_attempt_ = Now() + 4 * Nanos(options_.election_wait);
    return led;
  }
  leadership_ = won;
  if (handoff->has_value()) {
    // Done with (or, if it named another member, overtaken by this election).
    absl::StatusOr<etcdserverpb::TxnResponse> removed = leader_key_->GuardedTxn(
        won, {}, {coord::DeleteOp(coord::HandoffKey(options_.prefix, options_.shard))});
    if (!removed.ok()) LOG(WARNING) << "Removing the handoff request: " << removed.status();
    if (election.by_handoff) {
      LOG(INFO) << "Leadership of shard " << options_.shard << " handed over from "
                << (*handoff)->from << " (request " << (*handoff)->id << ")";
    }
  }
  if (options_.metrics != nullptr) {
    const bool automatic = absent_since_ != 0 && !force;
    options_.metrics->Elected(
        election.by_handoff ? "handoff"
        : automatic         ? "leader_gone"
        : force             ? "promote_forced"
                            : "promote",
        automatic ? absl::Nanoseconds(Now() - absent_since_) : absl::ZeroDuration());
  }
  LOG(INFO) << "Elected leader of shard " << options_.shard << " at epoch " << won.epoch
            << (absent_since_ != 0 ? absl::StrCat(", ", (Now() - absent_since_) / 1000000,
                                                  " ms after the key was seen gone")
                                   : std::string())
            << "; followers [" << absl::StrJoin(followers, ",") << "]";
  ReplicationHooks::PromoteResult promoted;
  promoted.epoch = static_cast<uint64_t>(won.epoch);
  promoted.warning = warning;
  return promoted;
}

absl::StatusOr<std::optional<coord::HandoffRecord>> FailoverAgent::ReadHandoff() {
  absl::StatusOr<coord::RangeResult> range =
      client_->Range(coord::HandoffKey(options_.prefix, options_.shard));
  if (!range.ok()) return range.status();
  if (range->kvs.empty()) return std::optional<coord::HandoffRecord>();
  absl::StatusOr<coord::HandoffRecord> record = coord::ParseHandoffValue(range->kvs[0].value());
  if (!record.ok()) {
    // Unreadable: the rules decide, as without one.
    LOG(ERROR) << coord::HandoffKey(options_.prefix, options_.shard) << ": " << record.status();
    return std::optional<coord::HandoffRecord>();
  }
  return std::optional<coord::HandoffRecord>(*std::move(record));
}

void FailoverAgent::HandOver(const coord::HandoffRecord& handoff, const std::string& value,
                             const std::string& to_addr) {
  if (handoff.id == handled_handoff_) return;
  handled_handoff_ = handoff.id;
  const std::string handoff_key = coord::HandoffKey(options_.prefix, options_.shard);
  coord::HandoffOutcome outcome;
  outcome.id = handoff.id;
  outcome.from = handoff.from;
  outcome.to = handoff.to;
  outcome.epoch = leadership_->epoch;
  // Deletes the request (only the one we read), recording `outcome` when it
  // has a result.
  const auto close_request = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::vector<etcdserverpb::RequestOp> ops = {coord::DeleteOp(handoff_key)};
    if (!outcome.result.empty()) {
      ops.push_back(coord::PutOp(coord::LastHandoffKey(options_.prefix, options_.shard),
                                 coord::HandoffOutcomeValue(outcome)));
    }
    absl::StatusOr<etcdserverpb::TxnResponse> txn =
        leader_key_->GuardedTxn(*leadership_, {coord::ValueIs(handoff_key, value)}, ops);
    if (!txn.ok())
      LOG(WARNING) << "Closing the handoff request " << handoff.id << ": " << txn.status();
  };
  if (handoff.from != id_ || handoff.leader_create_revision != leadership_->create_revision) {
    LOG(WARNING) << "Deleting a handoff request " << handoff.id << " from " << handoff.from
                 << " (leadership created at revision " << handoff.leader_create_revision
                 << "): this node leads at revision " << leadership_->create_revision;
    return close_request();
  }
  if (absl::ToUnixMillis(absl::Now()) > handoff.deadline_unix_ms) {
    LOG(WARNING) << "Deleting the handoff request " << handoff.id << " to " << handoff.to
                 << ": past its deadline";
    return close_request();
  }
  const int64_t started = Now();
  absl::StatusOr<uint64_t> last = node_->PauseWritesForTransfer(handoff.to);
  if (!last.ok()) {
    LOG(WARNING) << "Cannot hand over to " << handoff.to << ": " << last.status();
    return close_request();
  }
  LOG(INFO) << "Handing shard " << options_.shard << " over to " << handoff.to << " ("
            << (to_addr.empty() ? std::string("not a live member") : to_addr)
            << "): writes paused at index " << *last << ", waiting at most "
            << absl::FormatDuration(kMaxTransferPause) << " for it to hold them";
  const uint64_t held =
      to_addr.empty() ? 0 : node_->AwaitFollowerDurable(to_addr, *last, kMaxTransferPause);
  outcome.leader_index = *last;
  outcome.lacked = held >= *last ? 0 : *last - held;
  const bool caught_up = held >= *last;
  if (!to_addr.empty() && (caught_up || handoff.force)) {
    const std::string why = absl::StrCat("leadership handed to ", handoff.to);
    node_->StepDown(why);
    node_->SetCoordinatorLeader("");  // Not ourselves: refusals name no leader until one wins.
    outcome.result = coord::kHandoffTransferred;
    outcome.pause_ms = (Now() - started) / 1000000;
    // The outcome and the resignation in one guarded Txn; the request stays
    // for the election and its winner deletes it.
    absl::StatusOr<etcdserverpb::TxnResponse> txn = leader_key_->GuardedTxn(
        *leadership_, {},
        {coord::PutOp(coord::LastHandoffKey(options_.prefix, options_.shard),
                      coord::HandoffOutcomeValue(outcome)),
         coord::DeleteOp(coord::ShardLeaderKey(options_.prefix, options_.shard))});
    const bool resigned = txn.ok() && txn->succeeded();
    if (!txn.ok()) LOG(WARNING) << "Resigning for the handoff: " << txn.status();
    LOG(INFO) << "Handed shard " << options_.shard << " over to " << handoff.to
              << (caught_up ? std::string(" (it holds every entry)")
                            : absl::StrCat(" with --force: it lacked ", outcome.lacked,
                                           " entries, which may be lost"))
              << "; writes paused " << outcome.pause_ms << " ms";
    if (options_.metrics != nullptr) {
      options_.metrics->Handoff(caught_up ? "transferred" : "forced",
                                absl::Milliseconds(outcome.pause_ms));
    }
    // Not resigned (etcd did not answer): Resign tries once more.
    EndLeadership(why, /*resign=*/!resigned);
    Wake();
    return;
  }
  node_->ResumeWrites();
  outcome.result = coord::kHandoffNotCaughtUp;
  outcome.pause_ms = (Now() - started) / 1000000;
  LOG(WARNING) << "Not handing shard " << options_.shard << " over to " << handoff.to << ": "
               << (to_addr.empty() ? std::string("it is not a live member")
                                   : absl::StrCat("it did not catch up within ",
                                                  absl::FormatDuration(kMaxTransferPause),
                                                  " (it lacked ", outcome.lacked, " entries)"))
               << "; writes resumed after " << outcome.pause_ms << " ms";
  if (options_.metrics != nullptr) {
    options_.metrics->Handoff("not_caught_up", absl::Milliseconds(outcome.pause_ms));
  }
  close_request();
}

absl::StatusOr<std::optional<coord::IsrRecord>> FailoverAgent::ReadIsr(int64_t* mod_revision) {
  *mod_revision = 0;
  absl::StatusOr<coord::RangeResult> range = client_->Range(isr_key_);
  if (!range.ok()) return range.status();
  if (range->kvs.empty()) return std::optional<coord::IsrRecord>();
  *mod_revision = range->kvs[0].mod_revision();
  absl::StatusOr<coord::IsrRecord> record = coord::ParseIsrValue(range->kvs[0].value());
  if (!record.ok()) {
    // Unreadable: trust no one rather than everyone.
    LOG(ERROR) << isr_key_ << ": " << record.status();
    return std::optional<coord::IsrRecord>(coord::IsrRecord{});
  }
  return std::optional<coord::IsrRecord>(*std::move(record));
}

absl::Status FailoverAgent::RecordInSync(coord::LeaderKey* key, const coord::Leadership& leadership,
                                         uint64_t epoch,
                                         const std::vector<std::string>& followers) {
  coord::IsrRecord record;
  record.epoch = static_cast<int64_t>(epoch);
  record.members.push_back(id_);
  int64_t expected = 0;
  {
    absl::MutexLock ids(&ids_mu_);
    for (const std::string& addr : followers) {
      auto it = id_of_addr_.find(addr);
      if (it == id_of_addr_.end()) {
        return absl::FailedPreconditionError(absl::StrCat("no member id known for ", addr));
      }
      record.members.push_back(it->second);
    }
    expected = isr_mod_revision_;
  }
  std::sort(record.members.begin() + 1, record.members.end());
  // Guarded by the leader key, and by the isr key's revision: a write of ours
  // whose answer was lost cannot land after a later one.
  absl::StatusOr<etcdserverpb::TxnResponse> txn =
      key->GuardedTxn(leadership, {coord::ModRevisionIs(isr_key_, expected)},
                      {coord::PutOp(isr_key_, coord::IsrValue(record))});
  if (txn.ok() && txn->succeeded()) {
    absl::MutexLock ids(&ids_mu_);
    isr_mod_revision_ = txn->header().revision();
    int removed = 0;
    int added = 0;
    if (isr_recorded_epoch_ == record.epoch) {
      for (const std::string& m : isr_recorded_) {
        removed += std::count(record.members.begin(), record.members.end(), m) == 0 ? 1 : 0;
      }
      for (const std::string& m : record.members) {
        added += std::count(isr_recorded_.begin(), isr_recorded_.end(), m) == 0 ? 1 : 0;
      }
    }
    isr_recorded_ = record.members;
    isr_recorded_epoch_ = record.epoch;
    if (options_.metrics != nullptr) {
      options_.metrics->InSyncRecorded(static_cast<int>(record.members.size()), removed, added);
    }
    return absl::OkStatus();
  }
  // Unknown or refused: learn the key's revision before the next attempt.
  int64_t now_revision = 0;
  if (ReadIsr(&now_revision).ok()) {
    absl::MutexLock ids(&ids_mu_);
    isr_mod_revision_ = now_revision;
  }
  if (!txn.ok()) return txn.status();
  return absl::AbortedError(absl::StrCat(isr_key_, " changed since revision ", expected));
}

absl::Status FailoverAgent::Reelect(const std::string& why) {
  {
    absl::MutexLock l(&mu_);
    if (!leadership_) {
      return absl::FailedPreconditionError("this node does not lead its shard: nothing to renew");
    }
    node_->StepDown(why);
    EndLeadership(why, /*resign=*/true);
  }
  Wake();
  return absl::OkStatus();
}

void FailoverAgent::EndLeadership(const std::string& why, bool resign) {
  if (!leadership_) return;
  LOG(WARNING) << "Leadership of shard " << options_.shard << " at epoch " << leadership_->epoch
               << " ended: " << why;
  if (resign && leader_key_) {
    // Guarded: never deletes a key someone else created since.
    if (absl::Status s = leader_key_->Resign(*leadership_); !s.ok()) {
      LOG(WARNING) << "Resigning the leader key: " << s;
    }
  }
  leadership_.reset();
  if (options_.metrics != nullptr) options_.metrics->EndInSync();
  // The next election starts when this node sees the key gone, and waits
  // --election-wait like every member's.
  absent_since_ = 0;
}

}  // namespace kvstore
