#include "services/router/routing_table.h"

#include <algorithm>
#include <utility>

namespace kvstore {
namespace {

void AddOnce(std::vector<std::string>* nodes, const std::string& address) {
  if (std::find(nodes->begin(), nodes->end(), address) == nodes->end()) nodes->push_back(address);
}

}  // namespace

absl::StatusOr<std::shared_ptr<RoutingTable>> RoutingTable::Create(Topology topology) {
  absl::StatusOr<HashRing> ring = topology.BuildRing();
  if (!ring.ok()) return ring.status();
  return std::shared_ptr<RoutingTable>(new RoutingTable(std::move(topology), *std::move(ring)));
}

RoutingTable::RoutingTable(Topology topology, HashRing ring)
    : topology_(std::move(topology)), ring_(std::move(ring)) {
  for (size_t i = 0; i < topology_.shards.size(); ++i) {
    state_.push_back(std::make_unique<ShardState>());
    absl::MutexLock lock(&state_.back()->mu);
    state_.back()->leader_epoch = topology_.shards[i].leader_epoch;
  }
}

std::string RoutingTable::LeaderLocked(const ShardState& state, int shard) const {
  return state.learned_leader.empty() ? topology_.shards[shard].leader : state.learned_leader;
}

std::string RoutingTable::Leader(int shard) const {
  const ShardState& state = *state_[shard];
  absl::MutexLock lock(&state.mu);
  return LeaderLocked(state, shard);
}

bool RoutingTable::SetLeader(int shard, const std::string& address) {
  ShardState& state = *state_[shard];
  absl::MutexLock lock(&state.mu);
  if (LeaderLocked(state, shard) == address) return false;
  state.learned_leader = address;
  state.leader_epoch = 0;
  return true;
}

uint64_t RoutingTable::LeaderEpoch(int shard) const {
  const ShardState& state = *state_[shard];
  absl::MutexLock lock(&state.mu);
  return state.leader_epoch;
}

uint64_t RoutingTable::WriteEpoch(int shard, const std::string& address) const {
  const ShardState& state = *state_[shard];
  absl::MutexLock lock(&state.mu);
  return LeaderLocked(state, shard) == address ? state.leader_epoch : 0;
}

std::optional<RoutingTable::LeaderChange> RoutingTable::ApplyProbes(int shard,
                                                                    const HealthLookup& health) {
  const std::vector<std::string> nodes = ShardNodes(shard);
  ShardState& state = *state_[shard];
  absl::MutexLock lock(&state.mu);
  const std::string current = LeaderLocked(state, shard);
  std::optional<LeaderChoice> choice = ChooseLeader(current, state.leader_epoch, nodes, health);
  if (!choice) {
    const NodeHealth now = health(current);
    if (now.ok() && now.role == "leader") {
      state.leader_epoch = std::max(state.leader_epoch, now.epoch);
    }
    return std::nullopt;
  }
  state.learned_leader = choice->address;
  state.leader_epoch = choice->epoch;
  return LeaderChange{current, choice->address, choice->epoch, std::move(choice->reason)};
}

std::vector<std::string> RoutingTable::ReadNodes(int shard, v1::ReadMode mode,
                                                 const NodeFilter& usable) const {
  std::string leader = Leader(shard);
  if (mode != v1::READ_MODE_ANY_REPLICA) return {std::move(leader)};
  // A learned leader may be one of the listed replicas (a promoted one): list
  // each address once.
  std::vector<std::string> nodes;
  if (!usable || usable(leader)) nodes.push_back(leader);
  for (const std::string& replica : topology_.shards[shard].replicas) {
    if (replica != leader && (!usable || usable(replica))) AddOnce(&nodes, replica);
  }
  if (nodes.empty()) return {std::move(leader)};
  if (nodes.size() == 1) {
    if (nodes[0] != leader) nodes.push_back(std::move(leader));
    return nodes;
  }
  const size_t first =
      state_[shard]->next_read.fetch_add(1, std::memory_order_relaxed) % nodes.size();
  return {nodes[first], nodes[(first + 1) % nodes.size()]};
}

std::vector<std::string> RoutingTable::ShardNodes(int shard) const {
  std::vector<std::string> nodes = {Leader(shard)};
  AddOnce(&nodes, topology_.shards[shard].leader);
  for (const std::string& replica : topology_.shards[shard].replicas) AddOnce(&nodes, replica);
  return nodes;
}

std::vector<std::string> RoutingTable::Addresses() const {
  std::vector<std::string> out;
  for (const ShardTopology& shard : topology_.shards) {
    out.push_back(shard.leader);
    out.insert(out.end(), shard.replicas.begin(), shard.replicas.end());
  }
  return out;
}

std::vector<std::string> RoutingTable::ProbeAddresses() const {
  std::vector<std::string> out = Addresses();
  for (int shard = 0; shard < shard_count(); ++shard) AddOnce(&out, Leader(shard));
  return out;
}

}  // namespace kvstore
