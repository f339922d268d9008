#include "common/coord/eligibility.h"

#include <algorithm>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace kvstore::coord {
namespace {

bool Whole(const MemberRecord& m) { return m.state != "installing"; }
bool Empty(const MemberRecord& m) { return m.state == "empty"; }
std::tuple<uint64_t, uint64_t> Position(const MemberRecord& m) {
  return {m.last_epoch, m.durable_index};
}
std::string Describe(const MemberRecord& m) {
  return absl::StrCat(m.id, " (epoch ", m.last_epoch, ", index ", m.durable_index, ", ", m.state,
                      ")");
}

// The handoff's target replaces the rules' choice when it may (see the header).
void ApplyHandoff(const std::vector<MemberRecord>& members, const HandoffRecord& handoff,
                  int64_t now_unix_ms, Election* election) {
  if (now_unix_ms > handoff.deadline_unix_ms) {
    election->handoff_ignored =
        absl::StrCat("the handoff to ", handoff.to, " is past its deadline");
    return;
  }
  for (size_t i = 0; i < members.size(); ++i) {
    if (members[i].id != handoff.to) continue;
    const MemberVerdict& verdict = election->verdicts[i];
    if (verdict.eligible || (handoff.force && Whole(members[i]))) {
      election->candidate = handoff.to;
      election->why_none.clear();
      election->by_handoff = true;
      return;
    }
    election->handoff_ignored = absl::StrCat(
        "the handoff's target ", handoff.to, " may not lead: ",
        Whole(members[i]) ? verdict.reason : "its store is not whole (" + members[i].state + ")");
    return;
  }
  election->handoff_ignored =
      absl::StrCat("the handoff's target ", handoff.to, " is not a live member");
}

}  // namespace

uint64_t LagBehind(const MemberRecord& member, const PositionRecord& last_leader) {
  if (member.last_epoch > static_cast<uint64_t>(std::max<int64_t>(last_leader.epoch, 0))) return 0;
  return last_leader.index > member.durable_index ? last_leader.index - member.durable_index : 0;
}

Election ChooseCandidate(const std::vector<MemberRecord>& members, const IsrRecord* isr,
                         const PositionRecord* last_leader, const HandoffRecord* handoff,
                         int64_t now_unix_ms) {
  // The lag rule applies in async mode only: an in-sync set already says who
  // holds every acknowledged write.
  const PositionRecord* lag_rule =
      isr == nullptr && last_leader != nullptr && last_leader->max_lag > 0 ? last_leader : nullptr;
  const auto too_far = [lag_rule](const MemberRecord& m) {
    return lag_rule != nullptr && LagBehind(m, *lag_rule) > lag_rule->max_lag;
  };
  Election election;
  if (members.empty()) {
    election.why_none = "no live member";
    return election;
  }
  // Who counts for the position rule: with an in-sync set, its live members
  // only (the others may lack acknowledged writes, and may hold unacknowledged
  // ones, which are no reason to block an election).
  const auto counts = [isr](const MemberRecord& m) {
    return isr == nullptr || isr->Contains(m.id);
  };
  bool someone_holds_data = false;
  const MemberRecord* top = nullptr;
  for (const MemberRecord& m : members) {
    someone_holds_data = someone_holds_data || !Empty(m);
    if (counts(m) && (top == nullptr || Position(m) > Position(*top))) top = &m;
  }
  for (const MemberRecord& m : members) {
    MemberVerdict verdict;
    verdict.id = m.id;
    if (isr != nullptr && !isr->Contains(m.id)) {
      verdict.reason =
          absl::StrCat("not in the in-sync set of epoch ", isr->epoch, " [",
                       absl::StrJoin(isr->members, ","), "]: it may lack acknowledged writes");
    } else if (!Whole(m)) {
      verdict.reason = "its store is not whole (" + m.state + ")";
    } else if (Empty(m) && isr != nullptr) {
      verdict.reason =
          "it holds no data (its data directory was emptied), so not the "
          "acknowledged writes of the in-sync set";
    } else if (Empty(m) && someone_holds_data) {
      verdict.reason = "it holds no data while other members do";
    } else if (Position(m) < Position(*top)) {
      verdict.reason = absl::StrCat("behind ", Describe(*top));
    } else if (too_far(m)) {
      verdict.reason = absl::StrCat(LagBehind(m, *lag_rule),
                                    " entries behind the last leader's position (epoch ",
                                    lag_rule->epoch, ", index ", lag_rule->index,
                                    "), more than --max-lag-on-failover=", lag_rule->max_lag);
    } else {
      verdict.eligible = true;
      if (election.candidate.empty() || m.id < election.candidate) election.candidate = m.id;
    }
    election.verdicts.push_back(std::move(verdict));
  }
  if (handoff != nullptr) ApplyHandoff(members, *handoff, now_unix_ms, &election);
  if (election.candidate.empty()) {
    if (top == nullptr) {
      election.why_none = absl::StrCat(
          "no live member of the in-sync set of epoch ", isr->epoch, " [",
          absl::StrJoin(isr->members, ","),
          "]: only they hold every acknowledged write; bring one back, or kvctl promote --force "
          "a member and accept losing what only they hold");
    } else if (too_far(*top)) {
      election.why_none = absl::StrCat(
          "the most advanced member, ", Describe(*top), ", is ", LagBehind(*top, *lag_rule),
          " entries behind the last leader's position (epoch ", lag_rule->epoch, ", index ",
          lag_rule->index, "), more than --max-lag-on-failover=", lag_rule->max_lag,
          ": a failover would lose those acknowledged writes; bring the leader back, or "
          "kvctl promote --force a member and accept the loss");
    } else {
      election.why_none = absl::StrCat(
          "the most advanced ", isr != nullptr ? "in-sync " : "", "member, ", Describe(*top),
          ", cannot lead (its store is not whole or holds no data); nobody else may lead "
          "without losing what it should hold");
    }
  }
  return election;
}

}  // namespace kvstore::coord
