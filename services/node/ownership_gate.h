// OwnershipGate: which keys this shard may serve (issue 14, docs/failover.md
// "Ownership"). A key is this shard's when the ring in etcd (<P>/ring,
// docs/ring.md) names it as the owner; a key of another shard is refused with
// WRONG_SHARD, and a key in a range held for a resharding cutover with
// RANGE_MOVING, so that a shard never answers found=false for a key that
// lives elsewhere, nor writes a second copy of it.
//
// Until a ring is set (static mode, or a cluster in etcd without a ring key)
// the gate is disabled and allows everything. A node that loses etcd keeps
// the last ring it was given.
//
// Writes and the cutover: a write holds an Admission (a shared lock) from its
// Check until it has been handed to Store::Write, which gives it its log
// index. HoldAndRun takes the lock exclusively: it waits for the writes
// admitted before it, installs the held ranges, and runs its function while
// no write is between Check and Store::Write. So the function sees the log
// index of every write admitted before the hold, and every write admitted
// after it has been checked against the held ranges.
//
// Thread-safe. Check and Owns cost a reader lock and one ring lookup.
#ifndef KVSTORE_SERVICES_NODE_OWNERSHIP_GATE_H_
#define KVSTORE_SERVICES_NODE_OWNERSHIP_GATE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "common/ring/hash_ring.h"
#include "common/ring/ring_diff.h"

namespace kvstore {

class OwnershipGate {
 public:
  // `shard` is this node's shard name, as the ring lists it.
  explicit OwnershipGate(std::string shard);
  OwnershipGate(const OwnershipGate&) = delete;
  OwnershipGate& operator=(const OwnershipGate&) = delete;

  const std::string& shard() const { return shard_; }

  // False until a ring is set: then every key is allowed.
  bool enabled() const;

  // Checks keys against `ring` (version `version`) from now on. A ring whose
  // version is not above the current one is ignored (a late or repeated
  // watch event), except that the first ring is always taken. Null is ignored.
  void SetRing(std::shared_ptr<const HashRing> ring, int64_t version);
  // The version of the ring in use (0 before the first).
  int64_t ring_version() const;
  // The ring in use (null before the first), e.g. for this shard's share.
  std::shared_ptr<const HashRing> ring() const;

  // Keys whose ring position is in `held` are refused with RANGE_MOVING while
  // ring_version() < `until_version`; a ring of that version ends the hold by
  // itself. Replaces any earlier hold; an empty set releases it.
  void SetHeld(RangeSet held, int64_t until_version);

  // OK when this shard may serve `key` now; else FAILED_PRECONDITION with
  // ErrorInfo WRONG_SHARD (metadata ring_version, owner), or UNAVAILABLE with
  // ErrorInfo RANGE_MOVING (metadata ring_version) while its range is held
  // (common/server/grpc_status.h).
  absl::Status Check(absl::string_view key) const;
  // Whether this shard owns `key` under the current ring (true while
  // disabled). Held keys are still owned. For scans.
  bool Owns(absl::string_view key) const;

  // A shared admission of writes (see the top of this file). Release it on
  // the thread that took it. One thread may nest admissions of the same gate
  // (a write's callback may start another write on the thread still inside
  // Store::Write): the inner ones take no lock, so they never wait behind a
  // HoldAndRun that waits for the outer one.
  class Admission {
   public:
    Admission(Admission&& other) noexcept;
    Admission& operator=(Admission&&) = delete;
    Admission(const Admission&) = delete;
    Admission& operator=(const Admission&) = delete;
    ~Admission();

   private:
    friend class OwnershipGate;
    Admission(const OwnershipGate* gate, bool untracked) : gate_(gate), untracked_(untracked) {}
    const OwnershipGate* gate_;  // Null once moved from.
    bool untracked_;  // Locked outside the thread's record (another gate's admission is open).
  };
  // Blocks while a HoldAndRun runs (or waits to run).
  Admission Admit() const;

  // Installs `held` as SetHeld does and runs `fn`, with no admission in
  // progress: waits for the admissions open now, and admits no write until
  // `fn` returns. Must not be called by a thread holding an Admission of
  // this gate. Returns after `fn`.
  void HoldAndRun(RangeSet held, int64_t until_version, const std::function<void()>& fn);

 private:
  const std::string shard_;

  mutable absl::Mutex mu_;
  std::shared_ptr<const HashRing> ring_ ABSL_GUARDED_BY(mu_);
  int64_t version_ ABSL_GUARDED_BY(mu_) = 0;
  int self_ ABSL_GUARDED_BY(mu_) = -1;  // This shard's index in ring_->shards(); -1: absent.
  RangeSet held_ ABSL_GUARDED_BY(mu_);
  int64_t held_until_ ABSL_GUARDED_BY(mu_) = 0;

  // Shared by writes between Check and Store::Write; exclusive in HoldAndRun.
  mutable absl::Mutex admission_mu_;
};

}  // namespace kvstore

#endif  // KVSTORE_SERVICES_NODE_OWNERSHIP_GATE_H_
