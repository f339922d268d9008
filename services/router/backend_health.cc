#include "services/router/backend_health.h"

#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/topology/topology.h"

namespace kvstore {

bool ServesReplicaReads(const NodeHealth& health, uint64_t max_replica_lag, std::string* why) {
  auto no = [why](std::string reason) {
    if (why != nullptr) *why = std::move(reason);
    return false;
  };
  switch (health.probe) {
    case NodeHealth::Probe::kUnknown:
      return true;
    case NodeHealth::Probe::kFailed:
      return no(absl::StrCat("probe failed: ", health.error));
    case NodeHealth::Probe::kOk:
      break;
  }
  if (health.role == "leader") return true;
  if (health.role != "replica") {
    return no(absl::StrCat("role is '", health.role, "', not leader or replica"));
  }
  if (max_replica_lag > 0 && health.lag_entries > max_replica_lag) {
    return no(absl::StrCat("replica lags ", health.lag_entries, " entries (over --max-replica-lag ",
                           max_replica_lag, ")"));
  }
  return true;
}

std::optional<LeaderChoice> ChooseLeader(const std::string& current, uint64_t current_epoch,
                                         const std::vector<std::string>& nodes,
                                         const HealthLookup& health) {
  // The other node that reports leading at the highest epoch.
  std::optional<LeaderChoice> best;
  for (const std::string& node : nodes) {
    if (node == current) continue;
    const NodeHealth h = health(node);
    if (!h.ok() || h.role != "leader") continue;
    if (!best || h.epoch > best->epoch) best = LeaderChoice{node, h.epoch, ""};
  }

  const NodeHealth now = health(current);
  if (now.ok() && (now.role == "deposed" || now.role == "replica")) {
    if (best && best->epoch >= now.epoch) {
      best->reason = absl::StrCat(current, " reports role ", now.role, " (epoch ", now.epoch, "); ",
                                  best->address, " reports leading epoch ", best->epoch);
      return best;
    }
    if (!now.leader.empty() && now.leader != current && CheckHostPort(now.leader).ok() &&
        !health(now.leader).deposed()) {
      LeaderChoice named{now.leader, 0, ""};
      named.reason = absl::StrCat(current, " reports role ", now.role, " (epoch ", now.epoch,
                                  ") and names ", now.leader, " as the leader");
      return named;
    }
    return std::nullopt;
  }
  uint64_t known = current_epoch;
  if (now.ok() && now.role == "leader" && now.epoch > known) known = now.epoch;
  if (best && best->epoch > known) {
    best->reason =
        absl::StrCat(best->address, " reports leading epoch ", best->epoch,
                     known == 0 ? absl::StrCat(", and ", current, " was never seen leading")
                                : absl::StrCat(", above epoch ", known, " of ", current));
    return best;
  }
  return std::nullopt;
}

NodeHealth HealthBook::Record(const std::string& address, NodeHealth health) {
  absl::MutexLock lock(&mu_);
  NodeHealth& slot = nodes_[address];
  std::swap(slot, health);
  return health;
}

NodeHealth HealthBook::Get(const std::string& address) const {
  absl::MutexLock lock(&mu_);
  auto it = nodes_.find(address);
  return it == nodes_.end() ? NodeHealth() : it->second;
}

std::optional<uint64_t> HealthBook::DeposedEpoch(const std::string& address) const {
  absl::MutexLock lock(&mu_);
  auto it = nodes_.find(address);
  if (it == nodes_.end() || !it->second.deposed()) return std::nullopt;
  return it->second.epoch;
}

void HealthBook::Retain(const std::vector<std::string>& addresses) {
  absl::flat_hash_set<std::string> keep(addresses.begin(), addresses.end());
  absl::MutexLock lock(&mu_);
  for (auto it = nodes_.begin(); it != nodes_.end();) {
    if (keep.contains(it->first)) {
      ++it;
    } else {
      nodes_.erase(it++);
    }
  }
}

HealthLookup HealthBook::Lookup() const {
  return [this](const std::string& address) { return Get(address); };
}

}  // namespace kvstore
