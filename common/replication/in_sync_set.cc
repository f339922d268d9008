#include "common/replication/in_sync_set.h"

#include <algorithm>

namespace kvstore {
namespace {

uint64_t AckedOf(const InSyncSet::AckedIndexes& acked, const std::string& follower) {
  auto it = acked.find(follower);
  return it == acked.end() ? 0 : it->second;
}

}  // namespace

InSyncSet::InSyncSet(absl::Duration timeout, std::vector<std::string> initial, uint64_t floor,
                     absl::Time now)
    : timeout_(timeout), floor_(floor), wanted_(initial.begin(), initial.end()) {
  history_.emplace_back(now, floor);
}

uint64_t InSyncSet::LeaderIndexAsOf(absl::Time t) const {
  uint64_t index = 0;
  for (const auto& [when, last] : history_) {
    if (when > t) break;
    index = last;
  }
  return index;
}

bool InSyncSet::Observe(const AckedIndexes& acked, uint64_t leader_last, absl::Time now) {
  if (history_.empty() || history_.back().second != leader_last) {
    history_.emplace_back(now, leader_last);
  }
  const absl::Time cutoff = now - timeout_;
  // Keep the newest sample at or before the cutoff: it is what the leader
  // held `timeout` ago.
  while (history_.size() >= 2 && history_[1].first <= cutoff) history_.pop_front();
  const uint64_t required = LeaderIndexAsOf(cutoff);
  // Joining takes more than not being removed (no flapping at the edge): all
  // that may have been acknowledged, and what the leader had half a timeout ago.
  const uint64_t to_join = std::max({floor_, commit_, LeaderIndexAsOf(now - timeout_ / 2)});
  bool changed = false;
  for (auto it = wanted_.begin(); it != wanted_.end();) {
    if (AckedOf(acked, *it) < required) {
      it = wanted_.erase(it);
      changed = true;
    } else {
      ++it;
    }
  }
  for (const auto& [follower, index] : acked) {
    if (wanted_.count(follower) == 0 && index >= to_join && index > 0) {
      wanted_.insert(follower);
      changed = true;
    }
  }
  return changed;
}

uint64_t InSyncSet::CommitIndex(const AckedIndexes& acked, int min_members) {
  if (!any_recorded_ || static_cast<int>(recorded_.size()) < min_members) return 0;
  uint64_t commit = UINT64_MAX;
  for (const std::string& f : possible_) commit = std::min(commit, AckedOf(acked, f));
  for (const std::string& f : wanted_) commit = std::min(commit, AckedOf(acked, f));
  if (commit == UINT64_MAX) return 0;  // No follower at all (min_members 0).
  commit_ = std::max(commit_, commit);
  return commit;
}

bool InSyncSet::Enough(int min_members) const {
  return static_cast<int>(wanted_.size()) >= min_members;
}

bool InSyncSet::HasProposal() const {
  return !in_flight_ && (!any_recorded_ || wanted_ != recorded_);
}

std::optional<InSyncSet::Proposal> InSyncSet::TakeProposal() {
  if (!HasProposal()) return std::nullopt;
  Proposal p;
  p.generation = ++generation_;
  p.followers.assign(wanted_.begin(), wanted_.end());
  possible_.insert(wanted_.begin(), wanted_.end());
  in_flight_ = p;
  return p;
}

void InSyncSet::Recorded(uint64_t generation, bool ok) {
  if (!in_flight_ || in_flight_->generation != generation) return;
  const Proposal done = *std::move(in_flight_);
  in_flight_.reset();
  if (!ok) return;  // Unknown outcome: it stays possible, with the last recorded set.
  // etcd holds exactly this set now; a delayed earlier write cannot land
  // after it (the recorder compares the key's revision).
  recorded_ = std::set<std::string>(done.followers.begin(), done.followers.end());
  possible_ = recorded_;
  any_recorded_ = true;
}

}  // namespace kvstore
