// Linearizability of one key's operations against the versioned register
// (model.h). Keys are independent (P-compositionality), so the caller splits
// the history per key and calls this once per key.
//
// The search is Wing & Gong's with Lowe's memoisation: walk the history's
// events in order, linearize a pending call when the model accepts it, back
// up when a completion is reached whose op is not linearized yet, and never
// revisit a (set of linearized ops, state) pair. `info` ops have no completion
// event: they may be linearized anywhere after their invoke, or never. A fail
// that carried `current_version` is a read of the version; other fails and
// info gets are left out, having no effect.
#ifndef KVSTORE_TOOLS_KVCHECK_LINEARIZABILITY_H_
#define KVSTORE_TOOLS_KVCHECK_LINEARIZABILITY_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "tools/kvcheck/history.h"

namespace kvstore::check {

struct SearchLimits {
  // Per key; 0 = none. Past it the key is kUnknown.
  int64_t time_limit_ms = 0;
  // Memo table size in bytes (estimated); past it the key is kUnknown.
  int64_t max_memo_bytes = int64_t{2} << 30;
  // Monotonic nanoseconds; null = std::chrono::steady_clock. Tests inject one.
  std::function<int64_t()> now_ns;
};

enum class Verdict { kValid, kInvalid, kUnknown };
const char* VerdictName(Verdict v);  // "valid", "invalid", "unknown"

struct KeyResult {
  Verdict verdict = Verdict::kValid;
  // kInvalid: the op whose completion the search could not get past, at the
  // furthest point it reached; -1 otherwise. The op id in History::ops.
  int stuck_op = -1;
  // kInvalid: the states the key could be in when stuck_op had to have taken
  // effect (a few); kUnknown: which limit was hit.
  std::string detail;
  int64_t states = 0;  // Memo entries made.
};

// `ops`: the ids of one key's ops, in invoke order.
KeyResult CheckLinearizable(const History& h, const std::vector<int>& ops, const SearchLimits& limits);

}  // namespace kvstore::check

#endif  // KVSTORE_TOOLS_KVCHECK_LINEARIZABILITY_H_
