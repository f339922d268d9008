#include "common/metrics/server_metrics.h"

#include <utility>

#include "glog/logging.h"

namespace kvstore {

ServerMetrics::ServerMetrics(MetricsHttpOptions http) : http_(std::move(http)) {
  registry_.AddCollector([this](ExpositionWriter* out) {
    grpc_.Write(out);
    if (storage_instrumented_) storage_.Write(out);
    WriteProcessMetrics(out);
  });
}

ServerMetrics::~ServerMetrics() { Stop(); }

void ServerMetrics::Instrument(StoreOptions* options) {
  if (!enabled()) return;
  storage_instrumented_ = true;
  options->on_fsync = [this](absl::Duration d) { storage_.fsync.ObserveDuration(d); };
  options->on_snapshot = [this](absl::Duration d) { storage_.snapshot.ObserveDuration(d); };
}

void ServerMetrics::Instrument(ServerOptions* options) {
  if (!enabled()) return;
  options->interceptors = [this] { return grpc_.InterceptorFactories(); };
}

void ServerMetrics::AddCollector(MetricsRegistry::Collector collector) {
  registry_.AddCollector(std::move(collector));
}

absl::Status ServerMetrics::Serve() {
  if (!enabled() || server_ != nullptr) return absl::OkStatus();
  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> server =
      MetricsHttpServer::Start(http_, &registry_);
  if (!server.ok()) return server.status();
  server_ = *std::move(server);
  LOG(INFO) << "Metrics at http://" << server_->address() << "/metrics";
  return absl::OkStatus();
}

void ServerMetrics::Stop() {
  if (server_ != nullptr) server_->Stop();
}

}  // namespace kvstore
