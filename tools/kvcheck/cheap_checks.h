// Checks that need no search, one pass each, run before linearizability so a
// broken history is named precisely even when the search gives up:
//   invented-read       a get returned a value no write of that key wrote, or
//                       whose write was invoked only after the get completed;
//   phantom             a get returned the value of a `fail` write;
//   double-apply        one written value seen with two versions (its write's
//                       answer and the reads of it);
//   version-reuse       two different values (or a value and a delete) of one
//                       key carrying the same version;
//   version-regression  an ok write's version is not above the version of an
//                       ok write of the same key that completed before it was
//                       invoked;
//   epoch-two-nodes     ok writes of one epoch (the version's high bits,
//                       common/storage/version.h) answered by two different
//                       nodes (the history's "node"): two leaders in one epoch;
//   stale-epoch-ack     an ok write of epoch E invoked after an ok write of a
//                       newer epoch completed (any key): a replaced leader
//                       still acknowledging;
//   stale-read          a leader read showed its key older than an ok write
//                       that completed before the read was invoked (one
//                       violation per such read, so their count is the
//                       "stale leader reads" figure). A read shows a version
//                       (0 = absent): an ok get (its version, or 0 when not
//                       found), an ok CAS or conditional delete (its
//                       if_version), an ok delete that deleted nothing (0),
//                       a mismatch (its current_version). Against W, the ok
//                       write of the key with the highest version among those
//                       completed before the read's invoke, it is stale when
//                       it shows a version below W's, or shows the key absent
//                       while W is a set and no delete can explain it (an ok
//                       delete with a version above W's, or an info delete
//                       whose if_version is absent or at least W's, invoked
//                       before the read completed). Replica reads are not in
//                       History::ops and are never checked here.
// The history must be one shard's: epochs are per shard.
#ifndef KVSTORE_TOOLS_KVCHECK_CHEAP_CHECKS_H_
#define KVSTORE_TOOLS_KVCHECK_CHEAP_CHECKS_H_

#include <vector>

#include "tools/kvcheck/history.h"
#include "tools/kvcheck/violation.h"

namespace kvstore::check {

// Violations in history order per check, checks in the order above.
std::vector<Violation> RunCheapChecks(const History& h);

// Turns each stale-read of `violations` into a read-behind-lost-write when
// every write it missed was lost. The writes it missed: the ok writes of its
// key completed before the read was invoked with a version above the one it
// showed (when it showed the key absent: the sets and CAS no delete can
// explain, see DeleteCanFollow). One was lost when it is in `lost_ops`
// (durability.h: the final state lacks it) or when the node that answered the
// read leads a newer epoch than the missed write's without it (a power cut, a
// cut log tail, a promoted async follower; a later write of the key can have
// hidden the loss from the final read): it had acknowledged a write of a
// newer epoch before the read completed, or another node acknowledged the
// missed write and the read showed a state of that write's epoch (only a
// leader answers a leader read, and an epoch has one leader, which
// epoch-two-nodes checks). Such a read shows
// the state a loss left; a read that missed a write that survived stays a
// stale-read: a leader of an older epoch, or the write's own epoch, serving
// an old state.
void MarkReadsBehindLostWrites(const History& h, const std::vector<int>& lost_ops,
                               std::vector<Violation>* violations);

}  // namespace kvstore::check

#endif  // KVSTORE_TOOLS_KVCHECK_CHEAP_CHECKS_H_
