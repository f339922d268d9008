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
  std::string candidate;  // The member that should campaign; "" when none.
  std::string why_none;   // When candidate is empty.
  std::vector<MemberVerdict> verdicts;  // One per member, in the order given.
};

Election ChooseCandidate(const std::vector<MemberRecord>& members);

}  // namespace kvstore::coord

#endif  // KVSTORE_COMMON_COORD_ELIGIBILITY_H_
