// What the checker reports wrong with a history: a kind with a stable name
// (summary.json and docs/reliability.md use it), the key, a message, and the
// operations involved.
#ifndef KVSTORE_TOOLS_KVCHECK_VIOLATION_H_
#define KVSTORE_TOOLS_KVCHECK_VIOLATION_H_

#include <string>
#include <vector>

namespace kvstore::check {

enum class ViolationKind {
  kInventedRead,         // A value read that was never written, or before its write was invoked.
  kPhantom,              // A value read that a `fail` write wrote.
  kDoubleApply,          // One written value seen with two versions.
  kVersionReuse,         // Two values of one key with the same version.
  kVersionRegression,    // A write's version not above that of a write completed before it began.
  kNotLinearizable,      // No order of the key's operations fits the model.
  kUndecided,            // The search hit its time or memory limit: counts as a failure.
  kLostWrite,            // An acknowledged write missing from the final read.
  kEpochTwoNodes,        // Two nodes acknowledged writes of one leader epoch.
  kStaleEpochAck,        // A write acknowledged in an epoch older than one already acknowledged.
  kStaleRead,            // A leader read older than a write acknowledged before it was invoked.
  kReadBehindLostWrite,  // The same, when every write it missed was lost: the loss, seen by a read.
};

// "invented-read", "phantom", "double-apply", "version-reuse",
// "version-regression", "not-linearizable", "undecided", "lost-write",
// "epoch-two-nodes", "stale-epoch-ack", "stale-read", "read-behind-lost-write".
const char* ViolationKindName(ViolationKind kind);

struct Violation {
  ViolationKind kind;
  std::string key;
  std::string message;
  std::vector<int> ops;  // Op ids (History::ops), the op at fault first.
};

}  // namespace kvstore::check

#endif  // KVSTORE_TOOLS_KVCHECK_VIOLATION_H_
