// Metrics of one server binary (kv-shard, kv-replica, kv-router), on when
// --metrics-listen is set: per-RPC metrics through a gRPC interceptor,
// storage durations through the store's observers, process metrics, and the
// binary's own scrape-time collectors, served at http://HOST:PORT/metrics.
// Off, it installs nothing and costs nothing.
//
//   ServerMetrics metrics(MetricsFlagsFromCommandLine());  // before the store
//   metrics.Instrument(&store_options);
//   metrics.Instrument(&server_options);
//   metrics.AddCollector(...);                              // status of the node
//   ... start the gRPC server ...
//   metrics.Serve();
//   ... on SIGTERM: metrics.Stop() before what the collectors read goes away.
#ifndef KVSTORE_COMMON_METRICS_SERVER_METRICS_H_
#define KVSTORE_COMMON_METRICS_SERVER_METRICS_H_

#include <memory>

#include "absl/status/status.h"
#include "common/metrics/grpc_metrics.h"
#include "common/metrics/http_server.h"
#include "common/metrics/metrics.h"
#include "common/metrics/status_metrics.h"
#include "common/server/server.h"
#include "common/storage/store.h"

namespace kvstore {

class ServerMetrics {
 public:
  // Enabled when `http.listen` is not empty.
  explicit ServerMetrics(MetricsHttpOptions http);
  // Stops serving.
  ~ServerMetrics();
  ServerMetrics(const ServerMetrics&) = delete;
  ServerMetrics& operator=(const ServerMetrics&) = delete;

  bool enabled() const { return !http_.listen.empty(); }

  // When enabled: fsync and snapshot durations into kvstore_wal_fsync_seconds
  // and kvstore_snapshot_duration_seconds. This object must outlive the store.
  void Instrument(StoreOptions* options);
  // When enabled: the per-RPC interceptor. This object must outlive the server.
  void Instrument(ServerOptions* options);
  // Adds a scrape-time collector (after the built-in ones).
  void AddCollector(MetricsRegistry::Collector collector);

  // When enabled, starts the HTTP endpoint and logs its address. Errors as
  // MetricsHttpServer::Start.
  absl::Status Serve();
  // Stops the endpoint, so no scrape runs after this returns. Idempotent.
  void Stop();

  const MetricsRegistry& registry() const { return registry_; }

 private:
  const MetricsHttpOptions http_;
  GrpcServerMetrics grpc_;
  StorageMetrics storage_;
  bool storage_instrumented_ = false;
  MetricsRegistry registry_;
  std::unique_ptr<MetricsHttpServer> server_;
};

// --metrics-listen and --metrics-port-file (defined by linking
// kv_metrics_flags), after parsing and --config.
MetricsHttpOptions MetricsFlagsFromCommandLine();

}  // namespace kvstore

#endif  // KVSTORE_COMMON_METRICS_SERVER_METRICS_H_
