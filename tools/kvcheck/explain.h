// `kvcheck --explain KEY`: the stretch of one key's history around its first
// violation, small enough to read. The window holds the ops the violation
// names and the writes of the values they read, or, when they read no written
// value, the last ok write of the key that completed before all of them (the
// state they started from); it runs
// from the first of their invokes to the last of their completions and lists
// every event of the key in between, the named ops marked with '*'.
#ifndef KVSTORE_TOOLS_KVCHECK_EXPLAIN_H_
#define KVSTORE_TOOLS_KVCHECK_EXPLAIN_H_

#include <string>

#include "absl/strings/string_view.h"
#include "tools/kvcheck/checker.h"
#include "tools/kvcheck/history.h"

namespace kvstore::check {

struct Explanation {
  bool violated = false;  // The key has a violation; text explains the first.
  std::string text;       // Otherwise says there is none (or no such key).
};

// The first violation of a key is the one that becomes evident earliest:
// whose last named event comes first in the history.
Explanation Explain(const History& h, const Report& r, absl::string_view key);

}  // namespace kvstore::check

#endif  // KVSTORE_TOOLS_KVCHECK_EXPLAIN_H_
