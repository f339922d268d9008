// Per-RPC metrics of a gRPC server, fed by a server interceptor: calls started,
// calls handled by method and status code, and handling time by method.
//
//   GrpcServerMetrics grpc_metrics;                      // outlives the server
//   options.interceptors = [&] { return grpc_metrics.InterceptorFactories(); };
//   registry.AddCollector([&](ExpositionWriter* w) { grpc_metrics.Write(w); });
//
// A call costs a few relaxed atomic increments and a lock-free lookup of its
// method in a small open-addressing table. Method names come from the
// client (an unknown method arrives under its own path), so the table holds at
// most kMaxMethods of them; later ones are counted as method="other".
#ifndef KVSTORE_COMMON_METRICS_GRPC_METRICS_H_
#define KVSTORE_COMMON_METRICS_GRPC_METRICS_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/metrics/exposition.h"
#include "common/metrics/metrics.h"
#include "grpcpp/support/server_interceptor.h"
#include "grpcpp/support/status.h"

namespace kvstore {

// Thread-safe.
class GrpcServerMetrics {
 public:
  static constexpr int kMaxMethods = 64;
  static constexpr char kOtherMethod[] = "other";

  GrpcServerMetrics();
  ~GrpcServerMetrics();
  GrpcServerMetrics(const GrpcServerMetrics&) = delete;
  GrpcServerMetrics& operator=(const GrpcServerMetrics&) = delete;

  // Interceptor factories for a grpc::ServerBuilder; they record here, so
  // this object must outlive the server.
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
  InterceptorFactories();

  // What the interceptor records; public for tests. `method` is the full path
  // ("/kvstore.v1.KeyValue/Get").
  void RecordStarted(absl::string_view method);
  void RecordHandled(absl::string_view method, grpc::StatusCode code, absl::Duration took);

  // kvstore_grpc_server_started_total{method}, kvstore_grpc_server_handled_total
  // {method,code} (OK always, other codes once seen) and
  // kvstore_grpc_server_handling_seconds{method}, methods in name order.
  void Write(ExpositionWriter* out) const;

  // Handled calls of `method` with `code`, for tests.
  uint64_t Handled(absl::string_view method, grpc::StatusCode code) const;

  struct MethodStats;  // Defined in the .cc.

 private:
  static constexpr int kSlots = 2 * kMaxMethods;
  // The stats of `method`, created on first use; the "other" entry once the
  // table is full.
  MethodStats* Find(absl::string_view method);
  MethodStats* Lookup(absl::string_view method) const;

  std::array<std::atomic<MethodStats*>, kSlots> slots_;
  std::atomic<int> methods_{0};
  const std::unique_ptr<MethodStats> other_;
};

// The name of a status code as in the gRPC spec ("OK", "UNAVAILABLE", ...).
absl::string_view GrpcCodeName(grpc::StatusCode code);

}  // namespace kvstore

#endif  // KVSTORE_COMMON_METRICS_GRPC_METRICS_H_
