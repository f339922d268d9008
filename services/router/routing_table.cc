#include "services/router/routing_table.h"

#include <algorithm>
#include <utility>

namespace kvstore {

absl::StatusOr<std::shared_ptr<RoutingTable>> RoutingTable::Create(Topology topology) {
  absl::StatusOr<HashRing> ring = HashRing::Build(topology.ShardNames(), topology.vnodes);
  if (!ring.ok()) return ring.status();
  return std::shared_ptr<RoutingTable>(new RoutingTable(std::move(topology), *std::move(ring)));
}

RoutingTable::RoutingTable(Topology topology, HashRing ring)
    : topology_(std::move(topology)), ring_(std::move(ring)) {
  for (size_t i = 0; i < topology_.shards.size(); ++i) {
    state_.push_back(std::make_unique<ShardState>());
  }
}

std::string RoutingTable::Leader(int shard) const {
  const ShardState& state = *state_[shard];
  absl::MutexLock lock(&state.mu);
  return state.learned_leader.empty() ? topology_.shards[shard].leader : state.learned_leader;
}

void RoutingTable::SetLeader(int shard, const std::string& address) {
  ShardState& state = *state_[shard];
  absl::MutexLock lock(&state.mu);
  state.learned_leader = address;
}

std::vector<std::string> RoutingTable::ReadNodes(int shard, v1::ReadMode mode) const {
  std::string leader = Leader(shard);
  if (mode != v1::READ_MODE_ANY_REPLICA) return {std::move(leader)};
  // A learned leader may be one of the listed replicas (a promoted one): list
  // each address once.
  std::vector<std::string> nodes = {std::move(leader)};
  for (const std::string& replica : topology_.shards[shard].replicas) {
    if (std::find(nodes.begin(), nodes.end(), replica) == nodes.end()) nodes.push_back(replica);
  }
  if (nodes.size() == 1) return nodes;
  const size_t first =
      state_[shard]->next_read.fetch_add(1, std::memory_order_relaxed) % nodes.size();
  return {nodes[first], nodes[(first + 1) % nodes.size()]};
}

std::vector<std::string> RoutingTable::Addresses() const {
  std::vector<std::string> out;
  for (const ShardTopology& shard : topology_.shards) {
    out.push_back(shard.leader);
    out.insert(out.end(), shard.replicas.begin(), shard.replicas.end());
  }
  return out;
}

}  // namespace kvstore
