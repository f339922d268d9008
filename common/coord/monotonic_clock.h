// The time source of the coordination library: monotonic nanoseconds from an
// arbitrary origin, injected so a test can read (or drive) what the lease
// compares its validity against. Never wall time: a lease must not move when
// the system clock is set.
#ifndef KVSTORE_COMMON_COORD_MONOTONIC_CLOCK_H_
#define KVSTORE_COMMON_COORD_MONOTONIC_CLOCK_H_

#include <chrono>
#include <cstdint>
#include <functional>

namespace kvstore::coord {

using MonotonicClock = std::function<int64_t()>;

// std::chrono::steady_clock in nanoseconds: the default clock.
inline int64_t SteadyNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace kvstore::coord

#endif  // KVSTORE_COMMON_COORD_MONOTONIC_CLOCK_H_
