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
//                       still acknowledging.
// The history must be one shard's: epochs are per shard.
#ifndef KVSTORE_TOOLS_KVCHECK_CHEAP_CHECKS_H_
#define KVSTORE_TOOLS_KVCHECK_CHEAP_CHECKS_H_

#include <vector>

#include "tools/kvcheck/history.h"
#include "tools/kvcheck/violation.h"

namespace kvstore::check {

// Violations in history order per check, checks in the order above.
std::vector<Violation> RunCheapChecks(const History& h);

}  // namespace kvstore::check

#endif  // KVSTORE_TOOLS_KVCHECK_CHEAP_CHECKS_H_
