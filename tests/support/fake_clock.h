// A Clock that moves only when told. Thread-safe.
#ifndef KVSTORE_TESTS_SUPPORT_FAKE_CLOCK_H_
#define KVSTORE_TESTS_SUPPORT_FAKE_CLOCK_H_

#include <atomic>
#include <cstdint>

#include "common/storage/clock.h"

namespace kvstore::testing {

class FakeClock final : public Clock {
 public:
  explicit FakeClock(int64_t unix_ms = 1'700'000'000'000) : unix_ms_(unix_ms) {}
  int64_t NowMicros() override { return micros_.load(); }
  int64_t NowUnixMillis() override { return unix_ms_.load(); }
  // Moves both clocks forward.
  void AdvanceMillis(int64_t ms) {
    micros_ += ms * 1000;
    unix_ms_ += ms;
  }

 private:
  std::atomic<int64_t> micros_{0};
  std::atomic<int64_t> unix_ms_;
};

}  // namespace kvstore::testing

#endif  // KVSTORE_TESTS_SUPPORT_FAKE_CLOCK_H_
