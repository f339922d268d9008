// Who may campaign for a shard's leader key: the rule every member applies to
// the live members (those whose member key is on a live lease) before it
// campaigns, and `kvctl cluster status` shows. Pure: no I/O.
//
//   1. A member whose store is not whole ("installing") never runs, nor does
//      an "empty" one while any live member holds data.
//   2. The position of a member is (last_epoch, durable_index), compared in
//      that order. Only a member at the highest position of ALL live members
//      (whole or not) may run: a more advanced member that cannot run blocks
//      the election rather than letting a less advanced one lose its writes.
//   3. Among the members at that position, the smallest id runs.
// So at most one member is chosen for a given set of records.
//
// With the in-sync set of the last sync-mode leadership (`isr`, the record
// <P>/shards/<s>/isr), the election is among its members only:
//   - a member not in the set never runs (it may lack acknowledged writes);
//   - an "empty" member never runs, even in the set (its data directory was
//     emptied: it holds none of the writes the set promises);
//   - rule 2 compares the live members of the set only.
// Nobody in the set alive and able to run: nobody is chosen, and why_none
// says so.
//
// Without an in-sync set (async mode), `last_leader` (the position the last
// leader recorded, <P>/shards/<s>/position) with a non-zero max_lag adds one
// rule: a member more than max_lag entries behind the recorded index (and not
// of a newer epoch than it) never runs, since every acknowledged write it
// lacks would be lost (Patroni's maximum_lag_on_failover).
//
// A pending graceful transfer (`handoff`, <P>/shards/<s>/handoff, not past its
// deadline at `now_unix_ms`) names the member that runs instead of the
// smallest id: its `to`, when that member is live and eligible by the rules
// above, or, with the handoff's `force`, whenever it is live and its store
// is whole. Otherwise the handoff is ignored (`handoff_ignored` says why) and
// the rules above decide.
#ifndef KVSTORE_COMMON_COORD_ELIGIBILITY_H_
#define KVSTORE_COMMON_COORD_ELIGIBILITY_H_

#include <string>
#include <vector>

#include "common/coord/schema.h"

namespace kvstore::coord {

struct MemberVerdict {
  std::string id;
  bool eligible = false;  // May win (rules 1 and 2); the chosen one is `candidate`.
  std::string reason;     // Why not, when not eligible.
};

struct Election {
  std::string candidate;                // The member that should campaign; "" when none.
  std::string why_none;                 // When candidate is empty.
  std::vector<MemberVerdict> verdicts;  // One per member, in the order given.
  bool by_handoff = false;              // The candidate is the handoff's target.
  std::string handoff_ignored;          // Why a given handoff did not decide ("" if it did).
};

// `isr`: nullptr when no in-sync set applies (async mode, or none recorded).
// `last_leader`: nullptr when none is recorded (or with an in-sync set, where
// it is ignored).
// `handoff`: nullptr when none is pending; `now_unix_ms` is compared with its
// deadline.
Election ChooseCandidate(const std::vector<MemberRecord>& members, const IsrRecord* isr = nullptr,
                         const PositionRecord* last_leader = nullptr,
                         const HandoffRecord* handoff = nullptr, int64_t now_unix_ms = 0);

// How many entries `member` is behind `last_leader` (0 when it is not, or
// when it holds a newer epoch than the one recorded).
uint64_t LagBehind(const MemberRecord& member, const PositionRecord& last_leader);

}  // namespace kvstore::coord

#endif  // KVSTORE_COMMON_COORD_ELIGIBILITY_H_
