// What the router does when a shard refuses a key it does not serve now
// (docs/router.md "Ownership refusals"): WRONG_SHARD (the key belongs to
// another shard under the ring the shard knows) and RANGE_MOVING (the key's
// range is held for a resharding cutover). Nothing was done for such a key,
// so the router sends it again, once for each kind of refusal:
//
//   WRONG_SHARD   when the refusal's ring version is above the router's
//                 (per-key refusals carry none: one above the version the
//                 request was routed by is assumed), the router asks etcd for
//                 a fresh read of the ring and waits for it; else it uses the
//                 table it has. The key goes to its owner under that table,
//                 unless that is the shard that refused it.
//   RANGE_MOVING  the router waits until its ring version is above the
//                 refusal's (per-key: above the version the request was
//                 routed by), or 2 s, or the request's deadline, whichever
//                 comes first, then sends the key to its owner then.
//
// This file has the pieces: reading a refusal out of a status or a per-key
// error, the budget of retries a request has left, and RingWaiters, which
// runs a callback once the ring version passes a mark or a deadline comes,
// woken by the change itself (no polling).
#ifndef KVSTORE_SERVICES_ROUTER_OWNERSHIP_RETRY_H_
#define KVSTORE_SERVICES_ROUTER_OWNERSHIP_RETRY_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/support/status.h"
#include "kvstore/v1/kv.pb.h"

namespace kvstore {

// The longest a refused request waits for the ring to change before its
// retry (the request's own deadline may be sooner).
inline constexpr absl::Duration kOwnershipWaitBound = absl::Seconds(2);

struct OwnershipRefusal {
  enum class Kind { kNone, kWrongShard, kRangeMoving };
  Kind kind = Kind::kNone;
  // The refusing shard's ring version; -1 when the refusal does not say (a
  // per-key error).
  int64_t ring_version = -1;
  explicit operator bool() const { return kind != Kind::kNone; }
};

// The refusal a call's status carries in its ErrorInfo (code and reason must
// agree: FAILED_PRECONDITION + WRONG_SHARD, UNAVAILABLE + RANGE_MOVING).
OwnershipRefusal RefusalOf(const grpc::Status& status);
// The refusal of one key of a MultiGet or MultiSet answer (KeyError.reason).
OwnershipRefusal RefusalOf(const v1::KeyError& error);

// Which refusals a request may still be retried for: each kind once.
struct OwnershipRetries {
  bool wrong_shard = true;
  bool range_moving = true;
  bool Allows(OwnershipRefusal::Kind kind) const {
    return kind == OwnershipRefusal::Kind::kWrongShard    ? wrong_shard
           : kind == OwnershipRefusal::Kind::kRangeMoving ? range_moving
                                                          : false;
  }
  OwnershipRetries After(OwnershipRefusal::Kind kind) const {
    OwnershipRetries left = *this;
    if (kind == OwnershipRefusal::Kind::kWrongShard) left.wrong_shard = false;
    if (kind == OwnershipRefusal::Kind::kRangeMoving) left.range_moving = false;
    return left;
  }
};

// Callbacks waiting for the router's ring version (SetVersion) to reach a
// mark, each bounded by a deadline. One thread, woken by SetVersion, Poke,
// new waiters and the earliest deadline. Thread-safe.
class RingWaiters {
 public:
  RingWaiters();
  // Stop().
  ~RingWaiters();
  RingWaiters(const RingWaiters&) = delete;
  RingWaiters& operator=(const RingWaiters&) = delete;

  // The ring version of the table the router routes by now.
  void SetVersion(int64_t version);

  // Calls `fn(true)` once the version is at least `at_least`, or `*released`
  // is true (when given: set it, then Poke), or `deadline` has come,
  // whichever is first; `fn(false)` when stopped first. At once, on this
  // thread, when that is already so; else on the waiters' thread. `fn` must
  // not block.
  void Wait(int64_t at_least, std::shared_ptr<std::atomic<bool>> released, absl::Time deadline,
            std::function<void(bool)> fn);
  // Something a waiter looks at (its `released`) changed.
  void Poke();

  // Calls every waiting `fn(false)` and ends the thread; later waits get
  // fn(false) at once. Idempotent.
  void Stop();

  size_t waiting() const;

 private:
  struct Waiter {
    int64_t at_least;
    std::shared_ptr<std::atomic<bool>> released;
    absl::Time deadline;
    std::function<void(bool)> fn;
  };
  bool ReadyLocked(const Waiter& w, absl::Time now) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Run();

  mutable absl::Mutex mu_;
  absl::CondVar changed_;
  int64_t version_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::list<Waiter> waiters_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace kvstore

#endif  // KVSTORE_SERVICES_ROUTER_OWNERSHIP_RETRY_H_
