// What the router routes by, for one version of the topology: the ring, each
// shard's nodes, the leaders learned (from kv-leader hints and from probes
// that show a newer leader) since this version was loaded, and where the next
// stale read goes. A reload builds a new table;
// requests keep the table they started with, so they finish against it.
#ifndef KVSTORE_SERVICES_ROUTER_ROUTING_TABLE_H_
#define KVSTORE_SERVICES_ROUTER_ROUTING_TABLE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "common/ring/hash_ring.h"
#include "common/topology/topology.h"
#include "kvstore/v1/kv.pb.h"
#include "services/router/backend_health.h"

namespace kvstore {

// Immutable but for the learned leaders and the read cursors; all methods are
// thread-safe.
class RoutingTable {
 public:
  // InvalidArgument when the topology cannot make a ring (see HashRing::Build).
  static absl::StatusOr<std::shared_ptr<RoutingTable>> Create(Topology topology);

  RoutingTable(const RoutingTable&) = delete;
  RoutingTable& operator=(const RoutingTable&) = delete;

  const HashRing& ring() const { return ring_; }
  const Topology& topology() const { return topology_; }
  // The version of the ring in etcd this table routes by (0: a topology
  // file, or no ring key in etcd).
  int64_t ring_version() const { return topology_.ring_version; }
  int shard_count() const { return static_cast<int>(topology_.shards.size()); }
  const std::string& shard_name(int shard) const { return topology_.shards[shard].name; }

  // Index of the shard that owns `key`.
  int ShardOf(absl::string_view key) const { return ring_.OwnerIndex(key); }

  // Where writes (and READ_MODE_LEADER reads) of `shard` go: the leader last
  // learned (from a kv-leader hint or the probes), else the topology's leader.
  std::string Leader(int shard) const;
  // Remembers `address` as the leader of `shard` until this table is replaced
  // (a kv-leader hint), its epoch not known yet. True when that changed the
  // leader (so the caller logs the change once).
  bool SetLeader(int shard, const std::string& address);
  // The highest epoch the current leader of `shard` has been seen leading at
  // (etcd's leader key when the topology came from it, then ApplyProbes); 0
  // when never.
  uint64_t LeaderEpoch(int shard) const;
  // The epoch a write sent to `address` for `shard` names (kv-leader-epoch):
  // LeaderEpoch when `address` is the current leader, else 0 (unknown).
  uint64_t WriteEpoch(int shard, const std::string& address) const;

  // A change of leader decided by ApplyProbes.
  struct LeaderChange {
    std::string from;
    std::string to;
    uint64_t epoch = 0;
    std::string reason;
  };
  // Takes in the latest probes of the shard's nodes: notes the epoch the
  // leader reports, and moves the leader as ChooseLeader
  // (services/router/backend_health.h) says. Returns the change, if any.
  std::optional<LeaderChange> ApplyProbes(int shard, const HealthLookup& health);

  // Decides whether a node may serve a READ_MODE_ANY_REPLICA read.
  using NodeFilter = std::function<bool(const std::string& address)>;

  // The nodes a read of `shard` may try, in order (the second, when there is
  // one, is for a retry): the leader alone for READ_MODE_LEADER. For
  // READ_MODE_ANY_REPLICA, among the leader and replicas that `usable`
  // accepts (all when it is empty), one taken round robin, starting one
  // further on each call, then the next one; when only one is accepted, it
  // and then the leader; when none is, the leader alone.
  std::vector<std::string> ReadNodes(int shard, v1::ReadMode mode,
                                     const NodeFilter& usable = nullptr) const;

  // The shard's nodes: its leader (learned or not), the topology's leader
  // and its replicas, each once.
  std::vector<std::string> ShardNodes(int shard) const;

  // Every address of the topology (leaders and replicas).
  std::vector<std::string> Addresses() const;
  // Every address to probe: Addresses() and the learned leaders.
  std::vector<std::string> ProbeAddresses() const;

 private:
  struct ShardState {
    mutable absl::Mutex mu;
    std::string learned_leader ABSL_GUARDED_BY(mu);  // Empty: the topology's.
    uint64_t leader_epoch ABSL_GUARDED_BY(mu) = 0;   // Of the current leader.
    mutable std::atomic<uint64_t> next_read{0};
  };

  RoutingTable(Topology topology, HashRing ring);
  std::string LeaderLocked(const ShardState& state, int shard) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(state.mu);

  const Topology topology_;
  const HashRing ring_;
  std::vector<std::unique_ptr<ShardState>> state_;  // One per shard.
};

}  // namespace kvstore

#endif  // KVSTORE_SERVICES_ROUTER_ROUTING_TABLE_H_
