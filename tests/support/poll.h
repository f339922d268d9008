// Waiting on another thread in tests that link no gRPC (process.h's WaitFor
// lives with the process harness): poll a condition until it holds or a
// deadline of real time passes, which only a hang reaches.
#ifndef KVSTORE_TESTS_SUPPORT_POLL_H_
#define KVSTORE_TESTS_SUPPORT_POLL_H_

#include <functional>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace kvstore::testing {

// True once `done` returns true; false if `timeout` passes first.
inline bool PollUntil(const std::function<bool()>& done,
                      absl::Duration timeout = absl::Seconds(20)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!done()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

}  // namespace kvstore::testing

#endif  // KVSTORE_TESTS_SUPPORT_POLL_H_
