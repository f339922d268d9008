#include "tools/kvctl/promote_transfer.h"

#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/coord/eligibility.h"
#include "common/coord/leader_key.h"
#include "common/coord/schema.h"
#include "common/coord/txn.h"

namespace kvstore {
namespace {

// How often the outcome is looked for: a transfer takes a few hundred ms.
constexpr absl::Duration kPoll = absl::Milliseconds(50);

absl::StatusOr<std::optional<mvccpb::KeyValue>> ReadOne(coord::EtcdClient* etcd,
                                                        const std::string& key) {
  absl::StatusOr<coord::RangeResult> range = etcd->Range(key);
  if (!range.ok()) return range.status();
  if (range->kvs.empty()) return std::optional<mvccpb::KeyValue>();
  return std::optional<mvccpb::KeyValue>(range->kvs[0]);
}

// The holder with its revisions, and the epoch its value confirms (0 until
// the winner wrote it).
absl::Status ParseLeader(const mvccpb::KeyValue& kv, coord::LeaderRecord* record) {
  if (absl::Status s = coord::ParseLeaderValue(kv, record); !s.ok()) return s;
  absl::StatusOr<coord::LeaderValueRecord> value = coord::ParseLeaderJson(kv.value());
  record->epoch = value.ok() ? value->epoch : 0;
  return absl::OkStatus();
}

std::string Names(const std::vector<coord::MemberRecord>& members) {
  std::vector<std::string> ids;
  for (const coord::MemberRecord& m : members) ids.push_back(m.id);
  return ids.empty() ? std::string("none") : absl::StrJoin(ids, ", ");
}

}  // namespace

absl::StatusOr<std::string> PromoteTransfer(
    coord::EtcdClient* etcd, const TransferRequest& request,
    const std::function<void(const std::string&)>& progress) {
  const std::string prefix = coord::NormalizePrefix(request.prefix);
  const std::string& shard = request.shard;
  const std::string leader_key = coord::ShardLeaderKey(prefix, shard);
  const std::string handoff_key = coord::HandoffKey(prefix, shard);

  absl::StatusOr<std::optional<mvccpb::KeyValue>> leader_kv = ReadOne(etcd, leader_key);
  if (!leader_kv.ok()) return leader_kv.status();
  if (!leader_kv->has_value()) {
    return absl::FailedPreconditionError(
        absl::StrCat("shard ", shard,
                     " has no leader: nothing to transfer (an election is due; kvctl cluster "
                     "status shows who may win)"));
  }
  coord::LeaderRecord leader;
  if (absl::Status s = ParseLeader(**leader_kv, &leader); !s.ok()) return s;
  if (leader.epoch == 0) {
    return absl::FailedPreconditionError(absl::StrCat("shard ", shard, "'s leader ", leader.id,
                                                      " has not confirmed its epoch yet; retry"));
  }

  const std::string members_prefix = coord::MembersPrefix(prefix, shard);
  coord::RangeOptions all;
  all.prefix = true;
  absl::StatusOr<coord::RangeResult> range = etcd->Range(members_prefix, all);
  if (!range.ok()) return range.status();
  std::vector<coord::MemberRecord> others;  // The live members but the leader.
  for (const mvccpb::KeyValue& kv : range->kvs) {
    const std::string id = kv.key().substr(members_prefix.size());
    absl::StatusOr<coord::MemberRecord> member = coord::ParseMemberValue(id, kv.value());
    if (member.ok() && id != leader.id) others.push_back(*std::move(member));
  }

  absl::StatusOr<std::optional<mvccpb::KeyValue>> pending = ReadOne(etcd, handoff_key);
  if (!pending.ok()) return pending.status();
  const int64_t now_ms = absl::ToUnixMillis(absl::Now());
  if (pending->has_value()) {
    absl::StatusOr<coord::HandoffRecord> old = coord::ParseHandoffValue((*pending)->value());
    if (old.ok() && old->deadline_unix_ms >= now_ms) {
      return absl::FailedPreconditionError(
          absl::StrCat("a transfer of shard ", shard, " from ", old->from, " to ", old->to,
                       " is already pending (request ", old->id, ", ",
                       old->deadline_unix_ms - now_ms, " ms left)"));
    }
  }

  std::optional<coord::IsrRecord> isr;
  absl::StatusOr<std::optional<mvccpb::KeyValue>> isr_kv =
      ReadOne(etcd, coord::IsrKey(prefix, shard));
  if (!isr_kv.ok()) return isr_kv.status();
  if (isr_kv->has_value()) {
    absl::StatusOr<coord::IsrRecord> parsed = coord::ParseIsrValue((*isr_kv)->value());
    if (parsed.ok()) isr = *std::move(parsed);
  }

  std::string to = request.to;
  if (to.empty()) {
    // The leader is ahead of everyone; among the others the usual rule.
    const coord::Election election = coord::ChooseCandidate(others, isr ? &*isr : nullptr);
    if (election.candidate.empty()) {
      return absl::FailedPreconditionError(absl::StrCat("no member of shard ", shard,
                                                        " may take over from ", leader.id, ": ",
                                                        election.why_none));
    }
    to = election.candidate;
  }
  if (to == leader.id) {
    return absl::FailedPreconditionError(
        absl::StrCat(to, " leads shard ", shard, " already (epoch ", leader.epoch, ")"));
  }
  const coord::MemberRecord* target = nullptr;
  for (const coord::MemberRecord& m : others) {
    if (m.id == to) target = &m;
  }
  if (target == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        to, " is not a live member of shard ", shard, " (live: ", leader.id, " (leader)",
        others.empty() ? std::string() : absl::StrCat(", ", Names(others)), ")"));
  }
  if (target->state == "installing") {
    return absl::FailedPreconditionError(
        absl::StrCat(to, "'s store is not whole (installing a snapshot): it cannot lead"));
  }
  if (!request.force && target->state == "empty") {
    return absl::FailedPreconditionError(
        absl::StrCat(to, " holds no data; --force hands over anyway and loses what it lacks"));
  }
  if (!request.force && isr && !isr->Contains(to)) {
    return absl::FailedPreconditionError(absl::StrCat(
        to, " is not in the in-sync set of epoch ", isr->epoch, " [",
        absl::StrJoin(isr->members, ","), "]; --force hands over anyway and loses what it lacks"));
  }

  coord::HandoffRecord handoff;
  handoff.id = absl::StrCat(leader.id, "-", to, "-", now_ms);
  handoff.from = leader.id;
  handoff.to = to;
  handoff.leader_create_revision = leader.create_revision;
  handoff.deadline_unix_ms = now_ms + absl::ToInt64Milliseconds(request.timeout);
  handoff.force = request.force;
  etcdserverpb::TxnRequest txn;
  *txn.add_compare() = coord::ModRevisionIs(leader_key, leader.mod_revision);
  *txn.add_compare() = pending->has_value()
                           ? coord::ModRevisionIs(handoff_key, (*pending)->mod_revision())
                           : coord::CreateRevisionIs(handoff_key, 0);
  *txn.add_success() = coord::PutOp(handoff_key, coord::HandoffValue(handoff));
  absl::StatusOr<etcdserverpb::TxnResponse> written = etcd->Txn(txn);
  if (!written.ok()) return written.status();
  if (!written->succeeded()) {
    return absl::FailedPreconditionError(
        absl::StrCat("shard ", shard,
                     "'s leader or a transfer request changed meanwhile; nothing was "
                     "requested, retry"));
  }
  progress(absl::StrCat("asked ", leader.id, " (epoch ", leader.epoch, ") to hand shard ", shard,
                        " over to ", to, "; waiting up to ", absl::FormatDuration(request.timeout),
                        " ..."));

  const absl::Time until = absl::Now() + request.timeout;
  for (;;) {
    std::optional<coord::HandoffOutcome> outcome;
    absl::StatusOr<std::optional<mvccpb::KeyValue>> outcome_kv =
        ReadOne(etcd, coord::LastHandoffKey(prefix, shard));
    if (outcome_kv.ok() && outcome_kv->has_value()) {
      absl::StatusOr<coord::HandoffOutcome> parsed =
          coord::ParseHandoffOutcomeValue((*outcome_kv)->value());
      if (parsed.ok() && parsed->id == handoff.id) outcome = *std::move(parsed);
    }
    if (outcome && outcome->result == coord::kHandoffNotCaughtUp) {
      return absl::UnavailableError(absl::StrCat(
          "target ", to, " did not catch up within 2s (it lacked ", outcome->lacked,
          " of the leader's ", outcome->leader_index, " entries); nothing changed: ", leader.id,
          " leads and takes writes again (paused ", outcome->pause_ms, " ms)"));
    }
    absl::StatusOr<std::optional<mvccpb::KeyValue>> now_kv = ReadOne(etcd, leader_key);
    if (now_kv.ok() && now_kv->has_value()) {
      coord::LeaderRecord now;
      if (ParseLeader(**now_kv, &now).ok() && now.epoch > leader.epoch) {
        if (now.id == to) {
          std::string line = absl::StrCat(
              "transferred shard ", shard, " from ", leader.id, " to ", to, " at epoch ", now.epoch,
              "; writes paused ",
              outcome ? absl::StrCat(outcome->pause_ms, " ms") : std::string("(not recorded)"));
          if (outcome && outcome->lacked > 0) {
            absl::StrAppend(&line, "; ", to, " lacked ", outcome->lacked,
                            " entries, which may be lost (--force)");
          }
          return absl::StrCat(line, "\n");
        }
        return absl::AbortedError(absl::StrCat(leader.id, " stepped down but ", now.id,
                                               " won shard ", shard, " at epoch ", now.epoch,
                                               ", not ", to, " (kvctl cluster status says why)"));
      }
    }
    if (absl::Now() >= until) {
      return absl::DeadlineExceededError(absl::StrCat(
          to, " did not take over shard ", shard, " within ", absl::FormatDuration(request.timeout),
          outcome
              ? absl::StrCat(" (", leader.id, " resigned after a ", outcome->pause_ms, " ms pause)")
              : absl::StrCat(" (", leader.id, " has not acted on the request)"),
          "; kvctl cluster status shows the shard now"));
    }
    absl::SleepFor(kPoll);
  }
}

}  // namespace kvstore
