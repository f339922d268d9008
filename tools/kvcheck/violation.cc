#include "tools/kvcheck/violation.h"

namespace kvstore::check {

const char* ViolationKindName(ViolationKind kind) {
  switch (kind) {
    case ViolationKind::kInventedRead: return "invented-read";
    case ViolationKind::kPhantom: return "phantom";
    case ViolationKind::kDoubleApply: return "double-apply";
    case ViolationKind::kVersionReuse: return "version-reuse";
    case ViolationKind::kVersionRegression: return "version-regression";
    case ViolationKind::kNotLinearizable: return "not-linearizable";
    case ViolationKind::kUndecided: return "undecided";
    case ViolationKind::kLostWrite: return "lost-write";
  }
  return "?";
}

}  // namespace kvstore::check
