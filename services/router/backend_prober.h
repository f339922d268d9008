// Polls every backend node of the topology (leaders, replicas and learned
// leaders) with Admin.Status on a short interval, records the answers in a
// HealthBook, and moves a shard's leader when the probes show a newer one
// (RoutingTable::ApplyProbes). One thread; the probes of a round run in
// parallel through gRPC's callback API, each with a short deadline, and the
// thread waits for the round's answers (the callbacks only record them).
#ifndef KVSTORE_SERVICES_ROUTER_BACKEND_PROBER_H_
#define KVSTORE_SERVICES_ROUTER_BACKEND_PROBER_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "services/router/backend_channels.h"
#include "services/router/backend_health.h"
#include "services/router/routing_table.h"

namespace kvstore {

// Applies the latest probes in `health` to every shard of `table`
// (RoutingTable::ApplyProbes) and logs each change of leader, once. Returns
// how many shards changed leader.
int ApplyLeaderProbes(RoutingTable& table, const HealthBook& health);

struct ProbeOptions {
  // Time from the start of one round to the start of the next.
  absl::Duration interval = absl::Milliseconds(500);
  // Deadline of each Admin.Status call; a node that does not answer in time
  // failed its probe.
  absl::Duration timeout = absl::Milliseconds(400);
  // For the log lines only: a replica further behind is not readable
  // (0 = no limit). The read decision itself is RouterService's.
  uint64_t max_replica_lag = 0;
};

// Thread-safe. `channels`, `health` and whatever `tables` reads must outlive
// the prober.
class BackendProber {
 public:
  // `tables` returns the routing table in use (called once per round).
  using TableSource = std::function<std::shared_ptr<RoutingTable>()>;

  BackendProber(BackendChannels* channels, HealthBook* health, TableSource tables,
                ProbeOptions options);
  // Stops the thread, if started.
  ~BackendProber();
  BackendProber(const BackendProber&) = delete;
  BackendProber& operator=(const BackendProber&) = delete;

  // Starts probing every `interval` on a thread of its own. At most once.
  void Start();
  // Stops the thread; returns once the round in progress has ended (within
  // about `timeout`). Idempotent.
  void Stop();

  // Runs one round now, on the calling thread (never a gRPC callback): probes
  // every address of the current table, records the results, applies the
  // leader rules, logs what changed, and releases retired channels. Returns
  // when every probe has answered or timed out. Rounds never overlap.
  void ProbeOnce();

  // Rounds completed so far.
  uint64_t rounds() const;

 private:
  void Loop();
  // Logs a change in whether `address` serves replica reads, or of its role.
  void LogTransition(const RoutingTable& table, const std::string& address,
                     const NodeHealth& before, const NodeHealth& after) const;

  BackendChannels* const channels_;
  HealthBook* const health_;
  const TableSource tables_;
  const ProbeOptions options_;

  absl::Mutex round_mu_;  // Held for a whole round.
  // Probes of the current round not answered yet. A member, not part of the
  // round, so a callback never touches memory the round may have freed.
  absl::Mutex pending_mu_;
  size_t pending_ ABSL_GUARDED_BY(pending_mu_) = 0;

  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t rounds_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread thread_;
};

}  // namespace kvstore

#endif  // KVSTORE_SERVICES_ROUTER_BACKEND_PROBER_H_
