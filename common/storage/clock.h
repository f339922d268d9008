// Time seam. Monotonic time (deadlines, the everysec timer, lag) is kept apart
// from wall time (TTL expiry, which must survive restarts and match replicas).
#ifndef KVSTORE_COMMON_STORAGE_CLOCK_H_
#define KVSTORE_COMMON_STORAGE_CLOCK_H_

#include <cstdint>

namespace kvstore {

// Thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;
  // Monotonic microseconds since an arbitrary origin.
  virtual int64_t NowMicros() = 0;
  // Wall-clock milliseconds since the Unix epoch.
  virtual int64_t NowUnixMillis() = 0;
};

// The real clocks (steady_clock and system_clock). Never null, never deleted.
Clock* RealClock();

}  // namespace kvstore

#endif  // KVSTORE_COMMON_STORAGE_CLOCK_H_
