// Metrics collected at scrape time from what the servers already report:
// a node's Admin.Status answer (store, log, snapshot, replication), and the
// router's probe results. Pure functions of their inputs, so they are
// unit-tested without a server. Names and meanings: docs/metrics.md.
#ifndef KVSTORE_COMMON_METRICS_STATUS_METRICS_H_
#define KVSTORE_COMMON_METRICS_STATUS_METRICS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "common/metrics/exposition.h"
#include "common/metrics/metrics.h"
#include "kvstore/v1/admin.pb.h"

namespace kvstore {

// Durations the store reports through StoreOptions::on_fsync / on_snapshot.
// Thread-safe.
struct StorageMetrics {
  Histogram fsync{LatencyBuckets()};
  Histogram snapshot{LongOperationBuckets()};

  // kvstore_wal_fsync_seconds, kvstore_snapshot_duration_seconds.
  void Write(ExpositionWriter* out) const;
};

// A kv-shard or kv-replica from its Admin.Status answer: role, epoch,
// positions, keys, memory, log, newest snapshot (its age measured against
// `now`), and replication lag (per follower on a leader; its own on a replica).
void WriteNodeStatusMetrics(const v1::StatusResponse& status, absl::Time now,
                            ExpositionWriter* out);

// What kv-router knows of one backend node from its last probe.
struct BackendProbe {
  std::string backend;  // HOST:PORT.
  std::string shard;
  bool probed = false;  // False until the first probe answered or failed.
  bool up = false;      // The last probe answered.
  std::string role;     // As the node reported it.
  uint64_t epoch = 0;
  uint64_t last_index = 0;
  uint64_t lag_entries = 0;
};

// Shards and their current leaders, and each backend's probe: kvstore_router_
// shards, _shard_leader{shard,backend}, _backend_up, _backend_last_index,
// _backend_lag_entries, _backend_epoch (by backend and shard).
struct ShardLeader {
  std::string shard;
  std::string leader;
};
void WriteRouterBackendMetrics(const std::vector<ShardLeader>& shards,
                               const std::vector<BackendProbe>& backends, ExpositionWriter* out);

// The family name of the router's error counter, written from a CounterVec
// with labels {backend, code}.
inline constexpr char kRouterBackendErrors[] = "kvstore_router_backend_errors_total";
inline constexpr char kRouterBackendErrorsHelp[] =
    "Forwarded calls (each attempt) that a backend node failed, by backend and gRPC status code.";

}  // namespace kvstore

#endif  // KVSTORE_COMMON_METRICS_STATUS_METRICS_H_
