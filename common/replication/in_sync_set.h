// The in-sync set of one leadership under sync acks in etcd mode
// (docs/failover.md, "The in-sync set"): the followers that hold every
// acknowledged write durably, and the bookkeeping that lets a write be
// acknowledged without a follower only once the set without it is recorded
// outside the node (etcd).
//
// Three sets:
//   wanted    what the leader wants now: members that keep up, plus followers
//             that caught up with everything acknowledged;
//   recorded  what the recorder last confirmed (etcd holds exactly it);
//   possible  every set etcd may hold: the recorded one and every proposal
//             sent since whose outcome is not known (a write that timed out
//             may still have landed).
// A write is acknowledged only once every follower of `possible` and of
// `wanted` holds it durably (CommitIndex), and only while at least
// `min_members` followers are recorded. So a follower leaves the set of acks
// only after a set without it is recorded: the ordering the design requires,
// whatever the recorder's timing.
//
// Membership rules (Observe):
//   - a member leaves `wanted` when its durable index is below the leader's
//     last index as it was `timeout` ago (silent or behind for `timeout`);
//   - a follower joins `wanted` once its durable index reaches everything
//     that may have been acknowledged (the highest commit index so far, and
//     at least the leader's last index when the leadership began) and the
//     leader's last index as it was timeout/2 ago (so that a follower at the
//     edge does not flap in and out).
//
// Pure and not thread-safe: the node calls it under its mutex.
#ifndef KVSTORE_COMMON_REPLICATION_IN_SYNC_SET_H_
#define KVSTORE_COMMON_REPLICATION_IN_SYNC_SET_H_

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"

namespace kvstore {

class InSyncSet {
 public:
  // A follower's address -> the highest index it confirmed durable (absent: 0).
  using AckedIndexes = std::map<std::string, uint64_t>;

  struct Proposal {
    uint64_t generation = 0;
    std::vector<std::string> followers;  // Sorted.
  };

  // A leadership that began at `now` with `initial` followers in sync (the
  // previous leader's set) and its log at `floor` (any index up to it may have
  // been acknowledged by an earlier leader). Nothing is recorded yet: the
  // first proposal is `initial` itself.
  InSyncSet(absl::Duration timeout, std::vector<std::string> initial, uint64_t floor,
            absl::Time now);

  // Applies the membership rules at `now`. True when `wanted` changed.
  bool Observe(const AckedIndexes& acked, uint64_t leader_last, absl::Time now);

  // The highest index that may be acknowledged and published: every follower
  // of `possible` and `wanted` holds it; 0 before the first record, and while
  // fewer than `min_members` followers are recorded.
  uint64_t CommitIndex(const AckedIndexes& acked, int min_members);

  // Whether sync writes can be acknowledged at all: `wanted` has at least
  // `min_members` followers (a join waits to be recorded; after a removal
  // below the minimum, nothing more can be, so the writes fail at once).
  bool Enough(int min_members) const;

  // The set to record next: `wanted` when it differs from `recorded` (or
  // nothing was recorded yet) and no proposal is in flight. It counts as
  // possible from now on.
  std::optional<Proposal> TakeProposal();
  bool HasProposal() const;
  // The proposal of `generation` finished: `ok` means etcd holds exactly it;
  // otherwise the outcome is unknown and it stays possible.
  void Recorded(uint64_t generation, bool ok);

  const std::set<std::string>& wanted() const { return wanted_; }
  const std::set<std::string>& recorded() const { return recorded_; }
  bool any_recorded() const { return any_recorded_; }

 private:
  uint64_t LeaderIndexAsOf(absl::Time t) const;

  const absl::Duration timeout_;
  uint64_t floor_;
  uint64_t commit_ = 0;  // Highest CommitIndex returned.
  std::set<std::string> wanted_;
  std::set<std::string> recorded_;
  std::set<std::string> possible_;
  bool any_recorded_ = false;
  uint64_t generation_ = 0;
  std::optional<Proposal> in_flight_;  // The proposal being recorded.
  // (time, leader's last index) samples, oldest first, reaching back past
  // now - timeout.
  std::deque<std::pair<absl::Time, uint64_t>> history_;
};

}  // namespace kvstore

#endif  // KVSTORE_COMMON_REPLICATION_IN_SYNC_SET_H_
