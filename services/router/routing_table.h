// What the router routes by, for one version of the topology: the ring, each
// shard's nodes, the leaders learned from kv-leader hints since this version
// was loaded, and where the next stale read goes. A reload builds a new table;
// requests keep the table they started with, so they finish against it.
#ifndef KVSTORE_SERVICES_ROUTER_ROUTING_TABLE_H_
#define KVSTORE_SERVICES_ROUTER_ROUTING_TABLE_H_

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "common/ring/hash_ring.h"
#include "common/topology/topology.h"
#include "kvstore/v1/kv.pb.h"

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
  int shard_count() const { return static_cast<int>(topology_.shards.size()); }
  const std::string& shard_name(int shard) const { return topology_.shards[shard].name; }

  // Index of the shard that owns `key`.
  int ShardOf(absl::string_view key) const { return ring_.OwnerIndex(key); }

  // Where writes (and READ_MODE_LEADER reads) of `shard` go: the leader last
  // learned through SetLeader, else the topology's leader.
  std::string Leader(int shard) const;
  // Remembers `address` as the leader of `shard` until this table is replaced.
  void SetLeader(int shard, const std::string& address);

  // The nodes a read of `shard` may try, in order (the second, when there is
  // one, is for a retry): the leader alone for READ_MODE_LEADER; for
  // READ_MODE_ANY_REPLICA the leader and replicas taken round robin, starting
  // one further on each call, then the next different node.
  std::vector<std::string> ReadNodes(int shard, v1::ReadMode mode) const;

  // Every address of the topology (leaders and replicas).
  std::vector<std::string> Addresses() const;

 private:
  struct ShardState {
    mutable absl::Mutex mu;
    std::string learned_leader ABSL_GUARDED_BY(mu);  // Empty: the topology's.
    mutable std::atomic<uint64_t> next_read{0};
  };

  RoutingTable(Topology topology, HashRing ring);

  const Topology topology_;
  const HashRing ring_;
  std::vector<std::unique_ptr<ShardState>> state_;  // One per shard.
};

}  // namespace kvstore

#endif  // KVSTORE_SERVICES_ROUTER_ROUTING_TABLE_H_
