// Coordination metrics of one process in etcd mode (docs/failover.md): its
// calls to etcd and, on a storage node, what its failover agent did; on a
// router, the topology revision it routes by. Every method is thread-safe and
// cheap (atomics, or a mutex for the per-method counts); Write is the
// scrape-time collector. A process not in etcd mode has none.
#ifndef KVSTORE_COMMON_METRICS_COORD_METRICS_H_
#define KVSTORE_COMMON_METRICS_COORD_METRICS_H_

#include <atomic>
#include <cstdint>
#include <functional>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/metrics/exposition.h"
#include "common/metrics/metrics.h"

namespace kvstore {

class CoordMetrics {
 public:
  // `now_nanos`: the monotonic clock lease deadlines are kept in.
  explicit CoordMetrics(std::function<int64_t()> now_nanos);
  CoordMetrics(const CoordMetrics&) = delete;
  CoordMetrics& operator=(const CoordMetrics&) = delete;

  // One etcd call, all its attempts together.
  void EtcdCall(absl::string_view method, absl::Duration took, absl::StatusCode code);

  // Storage node. This node won its shard's leader key and leads; `reason`:
  // "leader_gone" (the automatic election), "promote" or "promote_forced"
  // (kvctl promote); `election`: from seeing the key gone to leading (0 for a
  // promote).
  void Elected(absl::string_view reason, absl::Duration election);
  // A leader acted on a graceful transfer request; `result`: "transferred",
  // "forced" (handed over to a member that lacked entries) or
  // "not_caught_up" (writes resumed, nothing changed); `pause`: how long its
  // writes were paused.
  void Handoff(absl::string_view result, absl::Duration pause);
  // A leader fenced itself; `reason`: "lease_lost" (etcd unreachable or the
  // lease expired while it led) or "router_epoch" (a router named a newer
  // epoch than the one it leads).
  void SelfFenced(absl::string_view reason);
  // A sync-mode leader recorded its in-sync set (docs/failover.md §9) with
  // `size` members, itself included; `removed` and `added` members since the
  // set it last recorded in the same leadership (0 and 0 for a leadership's
  // first record). EndInSync: it keeps no set any more (no longer leads).
  void InSyncRecorded(int size, int removed, int added);
  void EndInSync();
  // The node's lease lasts until `valid_until_nanos` (0: it holds none).
  void SetLeaseValidUntil(int64_t valid_until_nanos);

  // Router: the etcd revision its routing table is complete up to.
  void SetTopologyRevision(int64_t revision);

  void Write(ExpositionWriter* out) const;

 private:
  const std::function<int64_t()> now_nanos_;
  Histogram etcd_call_seconds_;
  CounterVec etcd_calls_;  // {method, code}
  Histogram election_seconds_;
  CounterVec elections_;  // {reason}
  Histogram handoff_pause_seconds_;
  CounterVec handoffs_;  // {result}
  std::atomic<uint64_t> self_fences_lease_{0};
  std::atomic<uint64_t> self_fences_router_{0};
  std::atomic<int64_t> lease_valid_until_{0};
  std::atomic<int64_t> isr_size_{-1};  // -1: not a leader keeping a set.
  std::atomic<uint64_t> isr_shrinks_{0};
  std::atomic<uint64_t> isr_expands_{0};
  std::atomic<int64_t> topology_revision_{-1};  // -1: not a router.
  std::atomic<bool> node_{false};               // Set by the node's hooks.
};

}  // namespace kvstore

#endif  // KVSTORE_COMMON_METRICS_COORD_METRICS_H_
