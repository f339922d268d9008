// kv-router in etcd mode (--etcd-endpoints): the topology comes from the
// cluster's keys in etcd instead of a file, and follows every change without
// a restart. The keys are mapped onto the same Topology the file gives, so
// the RoutingTable, probes and leader hints work as in static mode:
//
//   ring      <P>/ring {version, vnodes, shards}: the shards that own keys
//             and the vnodes; the version is Topology::ring_version. A shard
//             group registered under <P>/shards/ but not in the ring (a new
//             one, before a migration gives it ranges) owns nothing and is
//             not routed to.
//   fallback  without a ring key (a cluster initialised by an older kvctl),
//             every shard with a spec, leader or member key under <P>/shards/,
//             and <P>/cluster's vnodes, as before; logged once
//   leader    the address in the shard's leader key, and the epoch its value
//             names (ShardTopology::leader_epoch, sent with writes); while
//             nobody holds it,
//             the leader of the previous topology (writes then fail over
//             there, or on the probes' evidence, until a new leader is known)
//   replicas  the addresses of the shard's other members
//
// While etcd is unreachable the view keeps its last snapshot, so the router
// keeps routing by the last topology it built. Besides the watch, a fresh
// read can be asked for (Refresh): the router does after a WRONG_SHARD from a
// shard that knows a newer ring than its own, rather than wait for the watch.
#ifndef KVSTORE_SERVICES_ROUTER_ETCD_TOPOLOGY_H_
#define KVSTORE_SERVICES_ROUTER_ETCD_TOPOLOGY_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/coord/etcd_client.h"
#include "common/coord/topology_view.h"
#include "common/topology/topology.h"

namespace kvstore {

// The topology in `entries` (keys relative to the prefix, as a
// coord::TopologySnapshot holds them). `previous` supplies the leader of a
// shard whose leader key is absent. FAILED_PRECONDITION when the cluster is
// not initialised or a shard of the ring has no address at all yet;
// INVALID_ARGUMENT when the ring key is malformed.
absl::StatusOr<Topology> TopologyFromEtcd(const std::map<std::string, std::string>& entries,
                                          const Topology* previous);

bool SameTopology(const Topology& a, const Topology& b);

// Keeps a Topology built from a live view of `prefix` (and fresh reads when
// asked), and hands each change to a callback, one at a time, in the order of
// the etcd revisions they reflect. Thread-safe.
class EtcdTopologySource {
 public:
  // `client` must outlive the source.
  EtcdTopologySource(coord::EtcdClient* client, const std::string& prefix);
  ~EtcdTopologySource();
  EtcdTopologySource(const EtcdTopologySource&) = delete;
  EtcdTopologySource& operator=(const EtcdTopologySource&) = delete;

  // Starts watching and waits up to `timeout` for a first topology.
  absl::StatusOr<Topology> Start(absl::Duration timeout);
  // Each later change goes to `on_change`, on the view's thread or the
  // refresh thread (and one made since Start at once, on this thread).
  void Follow(std::function<void(const Topology&)> on_change);
  // Starts a linearizable read of the prefix, begun after this call (a read
  // already under way does not count; calls made meanwhile share the next),
  // and calls `done` on the refresh thread once its topology has been handed
  // on (to Follow's callback, when anything changed) or the read failed; at
  // once after Stop. A snapshot of the watch older than a read is ignored.
  void Refresh(std::function<void()> done);
  // Ends the watch and the refresh thread (pending Refresh calls get their
  // `done`). Idempotent.
  void Stop();
  // The etcd revision the last snapshot of the view is complete up to (0
  // before the first): the routing table reflects every change through it.
  int64_t revision() const { return revision_.load(std::memory_order_relaxed); }

 private:
  void OnSnapshot(const coord::TopologySnapshot& snapshot);
  void RefreshLoop();
  // Builds the topology of `entries` (complete at `revision`) and hands it
  // on if it changed; nothing when a later revision was applied already.
  void Apply(const std::map<std::string, std::string>& entries, int64_t revision);

  coord::EtcdClient* const client_;
  const std::string prefix_;  // With its trailing "/".
  std::unique_ptr<coord::TopologyView> view_;
  std::atomic<int64_t> revision_{0};
  // Held while a topology is built and handed on, so that changes reach the
  // callback one at a time and in revision order.
  absl::Mutex apply_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  absl::Mutex mu_;
  int64_t applied_revision_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::function<void()>> refresh_waiting_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread refresher_;
  std::optional<Topology> current_ ABSL_GUARDED_BY(mu_);
  std::optional<Topology> handed_ ABSL_GUARDED_BY(mu_);  // Returned by Start.
  std::string last_error_ ABSL_GUARDED_BY(mu_);
  bool warned_no_ring_ ABSL_GUARDED_BY(mu_) = false;
  std::function<void(const Topology&)> on_change_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvstore

#endif  // KVSTORE_SERVICES_ROUTER_ETCD_TOPOLOGY_H_
