// Checks of replica reads (f "read-any": a get with read_mode ANY_REPLICA,
// History::replica_reads). A replica may lag its leader, so such a read may
// return any value the key held, or none: it is never checked for
// linearizability or staleness. What it must never do:
//   invented-read  return a value no write of that key wrote, or one whose
//                  write was invoked only after the read completed;
//   phantom        return the value of a `fail` write (definitely not applied).
// The kinds are those of the leader reads' checks (cheap_checks.h), so a run's
// expectations treat both alike; the messages say "replica read". A violation
// names the write (an id in History::ops) when there is one: a replica read is
// not in History::ops, so it is described in the message, with its `i`.
#ifndef KVSTORE_TOOLS_KVCHECK_REPLICA_READS_H_
#define KVSTORE_TOOLS_KVCHECK_REPLICA_READS_H_

#include <vector>

#include "tools/kvcheck/history.h"
#include "tools/kvcheck/violation.h"

namespace kvstore::check {

// Violations in the order of the replica reads.
std::vector<Violation> CheckReplicaReads(const History& h);

}  // namespace kvstore::check

#endif  // KVSTORE_TOOLS_KVCHECK_REPLICA_READS_H_
