#include "tools/kvcheck/violation.h"

namespace kvstore::check {

const char* ViolationKindName(ViolationKind kind) {
  // One line per kind: it reads as the table it is.
  // clang-format off
  switch (kind) {
    case ViolationKind::kInventedRead: return "invented-read";
    case ViolationKind::kPhantom: return "phantom";
    case ViolationKind::kDoubleApply: return "double-apply";
    case ViolationKind::kVersionReuse: return "version-reuse";
    case ViolationKind::kVersionRegression: return "version-regression";
    case ViolationKind::kNotLinearizable: return "not-linearizable";
    case ViolationKind::kUndecided: return "undecided";
    case ViolationKind::kLostWrite: return "lost-write";
    case ViolationKind::kEpochTwoNodes: return "epoch-two-nodes";
    case ViolationKind::kStaleEpochAck: return "stale-epoch-ack";
    case ViolationKind::kStaleRead: return "stale-read";
    case ViolationKind::kReadBehindLostWrite: return "read-behind-lost-write";
  }
  // clang-format on
  return "?";
}

}  // namespace kvstore::check
