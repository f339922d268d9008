// What the router knows about each backend node from its Admin.Status
// probes, and the two decisions it takes from that: which nodes may serve a
// READ_MODE_ANY_REPLICA read, and which node leads a shard. The decisions are
// pure functions of the probe results, so they are unit-tested without gRPC;
// services/router/backend_prober.h runs the probes.
#ifndef KVSTORE_SERVICES_ROUTER_BACKEND_HEALTH_H_
#define KVSTORE_SERVICES_ROUTER_BACKEND_HEALTH_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace kvstore {

// The outcome of the last probe of one node.
struct NodeHealth {
  enum class Probe {
    kUnknown,  // Not probed yet: assumed usable, so a fresh router serves at once.
    kOk,       // Admin.Status answered; the fields below are its answer.
    kFailed,   // Admin.Status failed or timed out; `error` says how.
  };
  Probe probe = Probe::kUnknown;
  std::string role;  // "leader", "replica", "deposed" (or "router", "": not a data node).
  uint64_t epoch = 0;
  uint64_t last_index = 0;
  uint64_t lag_entries = 0;  // On a replica.
  std::string leader;        // The leader the node knows of ("" when none).
  std::string error;         // When the probe failed.
  absl::Time probed_at = absl::InfinitePast();

  bool ok() const { return probe == Probe::kOk; }
  bool deposed() const { return ok() && role == "deposed"; }
};

// Whether a READ_MODE_ANY_REPLICA read may go to a node in this state: not
// when its probe failed, when it is not a "leader" or "replica" (a deposed
// node, say), or when it is a replica more than `max_replica_lag` entries
// behind (0 = no limit). A node not probed yet may. When it may not and `why`
// is given, *why says why, for logs.
bool ServesReplicaReads(const NodeHealth& health, uint64_t max_replica_lag,
                        std::string* why = nullptr);

// The probe result of an address (Probe::kUnknown when it was never probed).
using HealthLookup = std::function<NodeHealth(const std::string& address)>;

// A new leader for a shard, decided from the probes.
struct LeaderChoice {
  std::string address;
  uint64_t epoch = 0;  // The epoch it reported leading at; 0 when not known yet.
  std::string reason;  // For the log line announcing the change.
};

// Which node leads a shard, given the node writes go to now (`current`), the
// highest epoch `current` has been seen leading at (`current_epoch`, 0 when
// never), the shard's nodes (`nodes`; may include `current`) and their
// probes. Returns the node to switch to, or nullopt to stay. The rules:
//  - A node other than `current` that reports role "leader" at an epoch
//    above every epoch `current` was seen leading at takes over (the highest
//    such epoch wins; on a tie, the first in `nodes`). This is how a promoted
//    replica is found without a restart.
//  - When `current` reports "deposed" (or "replica"), the node reporting
//    "leader" at the highest epoch takes over if that epoch is at least the
//    one `current` reports (a smaller one is a stale leader that was not told
//    yet); failing that, the leader `current` names, unless that node is
//    known to be deposed itself.
//  - Nothing else moves the leader: an unreachable leader stays the leader
//    until another node proves it leads a newer epoch.
// Never returns a node whose last probe says "deposed".
std::optional<LeaderChoice> ChooseLeader(const std::string& current, uint64_t current_epoch,
                                         const std::vector<std::string>& nodes,
                                         const HealthLookup& health);

// The latest probe result of each backend address. Thread-safe.
class HealthBook {
 public:
  HealthBook() = default;
  HealthBook(const HealthBook&) = delete;
  HealthBook& operator=(const HealthBook&) = delete;

  // Stores `health` as the state of `address`; returns the previous one.
  NodeHealth Record(const std::string& address, NodeHealth health);
  // The state of `address` (Probe::kUnknown when never recorded).
  NodeHealth Get(const std::string& address) const;
  // The epoch `address` was found deposed at by its last probe, or nullopt
  // when it was not (Get(address).deposed(), without copying the state: it
  // runs for every forwarded request).
  std::optional<uint64_t> DeposedEpoch(const std::string& address) const;
  // Forgets every address not in `addresses` (after a topology reload).
  void Retain(const std::vector<std::string>& addresses);
  // A lookup over this book, for ChooseLeader and RoutingTable. The book must
  // outlive it.
  HealthLookup Lookup() const;

 private:
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, NodeHealth> nodes_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvstore

#endif  // KVSTORE_SERVICES_ROUTER_BACKEND_HEALTH_H_
