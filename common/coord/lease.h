// Lease: an etcd lease kept alive from this process, and the rule that says
// until when this process may act on it.
//
//   valid_until = (monotonic send time of the last answered keepalive)
//                 + (TTL etcd granted in that answer) - margin
//
// etcd starts the TTL when it receives the keepalive, after we sent it, so
// etcd cannot expire the lease before valid_until + margin as long as the two
// clocks run at the same rate. A holder stops acting (acknowledging writes)
// when Valid() turns false; the margin covers the time it needs to notice.
//
// Keepalives go on one stream, one every TTL/5. A broken stream is reopened
// (on the next endpoint, see EtcdClient) every TTL/5 while valid_until has not
// passed. "Lost" is reported exactly once, through on_lost, with why:
//   - UNAVAILABLE: valid_until passed without an answer (etcd unreachable,
//     slow, or keepalives paused by a test);
//   - NOT_FOUND: etcd answered TTL <= 0 (the lease no longer exists);
//   - CANCELLED: Revoke() was called.
// After "lost" the lease is never valid again and no more keepalives are sent:
// take a new lease to continue.
//
// Threads: a keepalive thread, a reader thread per stream and a watchdog
// thread that fires "lost" at valid_until even if a gRPC call blocks. on_lost
// runs on one of them (or on the thread calling Revoke); it must not destroy
// the Lease. All methods are thread-safe.
#ifndef KVSTORE_COMMON_COORD_LEASE_H_
#define KVSTORE_COMMON_COORD_LEASE_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/coord/etcd_client.h"
#include "common/coord/monotonic_clock.h"

namespace kvstore::coord {

struct LeaseOptions {
  // Whole seconds (a fraction is dropped); at least kMinTtl.
  absl::Duration ttl = absl::Seconds(3);
  // Subtracted from each answered keepalive's expiry; in [0, ttl / 2).
  absl::Duration margin = absl::Milliseconds(500);
  MonotonicClock clock = SteadyNanos;
  // Called once when the lease is lost (see above). May be empty.
  std::function<void(const absl::Status& why)> on_lost;
};

class Lease {
 public:
  // etcd 3.4's smallest lease: it raises any shorter TTL to about this
  // (election timeout based), so a shorter one would silently not be kept.
  static constexpr absl::Duration kMinTtl = absl::Seconds(2);

  // Grants a lease in etcd and starts its keepalives. INVALID_ARGUMENT for a
  // TTL below kMinTtl or a margin out of range; etcd's error when the grant
  // fails. valid_until starts at (send time of the grant + TTL - margin).
  static absl::StatusOr<std::unique_ptr<Lease>> Grant(EtcdClient* client, LeaseOptions options);

  // Stops the keepalives without revoking: etcd expires the lease after its
  // TTL (as after a crash). on_lost is not called from the destructor.
  ~Lease();
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;

  int64_t id() const { return id_; }
  // The TTL etcd granted.
  absl::Duration ttl() const { return ttl_; }
  // On the injected clock, in nanoseconds.
  int64_t valid_until() const;
  // Not lost and the clock is before valid_until.
  bool Valid() const;
  bool lost() const;

  // Reports "lost" (CANCELLED) first, stops the keepalives, then revokes the
  // lease in etcd, which deletes every key bound to it. The error of the
  // revoke call, if any (the lease then expires by itself).
  absl::Status Revoke();

  // Test hook: while paused no keepalive is sent, so the lease runs out as if
  // etcd were unreachable.
  void PauseKeepAlivesForTesting(bool paused);

 private:
  struct Stream;

  Lease(EtcdClient* client, LeaseOptions options, int64_t id, absl::Duration ttl,
        int64_t valid_until);

  void KeepAliveLoop();
  void ReadLoop(Stream* stream);
  void WatchdogLoop();
  // Marks the lease lost and calls on_lost, the first time only.
  void Lose(const absl::Status& why);
  // Stops every thread (for Revoke and the destructor).
  void Shutdown();
  // Waits on cv_ for up to `ns` of the injected clock's time, or a signal.
  void WaitNanos(int64_t ns) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  EtcdClient* const client_;
  const LeaseOptions options_;
  const int64_t id_;
  const absl::Duration ttl_;
  const int64_t interval_ns_;  // Between keepalives: TTL / 5.

  mutable absl::Mutex mu_;
  absl::CondVar cv_;
  int64_t valid_until_ ABSL_GUARDED_BY(mu_);
  bool lost_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool paused_ ABSL_GUARDED_BY(mu_) = false;
  // Send times of the keepalives of the open stream not answered yet, oldest
  // first (etcd answers a stream's requests in order).
  std::deque<int64_t> unanswered_ ABSL_GUARDED_BY(mu_);
  bool stream_broken_ ABSL_GUARDED_BY(mu_) = false;
  Stream* stream_ ABSL_GUARDED_BY(mu_) = nullptr;  // Owned by KeepAliveLoop.

  std::thread keepalive_thread_;
  std::thread watchdog_thread_;
};

}  // namespace kvstore::coord

#endif  // KVSTORE_COMMON_COORD_LEASE_H_
