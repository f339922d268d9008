#include "common/metrics/grpc_metrics.h"

#include <algorithm>
#include <chrono>
#include <functional>
#include <utility>

#include "absl/hash/hash.h"
#include "grpcpp/support/interceptor.h"

namespace kvstore {

namespace {
constexpr int kCodes = 17;  // grpc::StatusCode 0 (OK) .. 16 (UNAUTHENTICATED).
}  // namespace

struct GrpcServerMetrics::MethodStats {
  explicit MethodStats(absl::string_view n) : name(n), latency(LatencyBuckets()) {}
  const std::string name;
  std::atomic<uint64_t> started{0};
  std::array<std::atomic<uint64_t>, kCodes> handled{};
  Histogram latency;
};

namespace {

// One per call. Records the start when created and the outcome when the
// status is about to be sent, before the client can see it (so a client that
// got its answer and then scrapes finds the call counted). A call that ends
// with no status sent (the client went away) is counted as CANCELLED when the
// call is torn down.
class MetricsInterceptor : public grpc::experimental::Interceptor {
 public:
  MetricsInterceptor(GrpcServerMetrics* metrics, std::string method)
      : metrics_(metrics), method_(std::move(method)), started_(std::chrono::steady_clock::now()) {
    metrics_->RecordStarted(method_);
  }
  ~MetricsInterceptor() override {
    if (!recorded_) Record(grpc::StatusCode::CANCELLED);
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (!recorded_ && methods->QueryInterceptionHookPoint(
                          grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      Record(methods->GetSendStatus().error_code());
    }
    methods->Proceed();
  }

 private:
  void Record(grpc::StatusCode code) {
    recorded_ = true;
    const auto took = std::chrono::steady_clock::now() - started_;
    metrics_->RecordHandled(method_, code, absl::FromChrono(took));
  }

  GrpcServerMetrics* const metrics_;
  const std::string method_;
  const std::chrono::steady_clock::time_point started_;
  bool recorded_ = false;
};

class MetricsInterceptorFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit MetricsInterceptorFactory(GrpcServerMetrics* metrics) : metrics_(metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new MetricsInterceptor(metrics_, info->method() != nullptr ? info->method() : "");
  }

 private:
  GrpcServerMetrics* const metrics_;
};

size_t SlotOf(absl::string_view method, size_t slots) {
  return absl::Hash<absl::string_view>()(method) % slots;
}

}  // namespace

absl::string_view GrpcCodeName(grpc::StatusCode code) {
  static constexpr absl::string_view kNames[kCodes] = {"OK",
                                                       "CANCELLED",
                                                       "UNKNOWN",
                                                       "INVALID_ARGUMENT",
                                                       "DEADLINE_EXCEEDED",
                                                       "NOT_FOUND",
                                                       "ALREADY_EXISTS",
                                                       "PERMISSION_DENIED",
                                                       "RESOURCE_EXHAUSTED",
                                                       "FAILED_PRECONDITION",
                                                       "ABORTED",
                                                       "OUT_OF_RANGE",
                                                       "UNIMPLEMENTED",
                                                       "INTERNAL",
                                                       "UNAVAILABLE",
                                                       "DATA_LOSS",
                                                       "UNAUTHENTICATED"};
  const int i = static_cast<int>(code);
  return i >= 0 && i < kCodes ? kNames[i] : "UNKNOWN";
}

GrpcServerMetrics::GrpcServerMetrics() : other_(std::make_unique<MethodStats>(kOtherMethod)) {
  for (auto& slot : slots_) slot.store(nullptr, std::memory_order_relaxed);
}

GrpcServerMetrics::~GrpcServerMetrics() {
  for (auto& slot : slots_) delete slot.load(std::memory_order_acquire);
}

std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
GrpcServerMetrics::InterceptorFactories() {
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> out;
  out.push_back(std::make_unique<MetricsInterceptorFactory>(this));
  return out;
}

GrpcServerMetrics::MethodStats* GrpcServerMetrics::Lookup(absl::string_view method) const {
  const size_t start = SlotOf(method, kSlots);
  for (size_t k = 0; k < kSlots; ++k) {
    MethodStats* stats = slots_[(start + k) % kSlots].load(std::memory_order_acquire);
    if (stats == nullptr) return nullptr;
    if (stats->name == method) return stats;
  }
  return nullptr;
}

GrpcServerMetrics::MethodStats* GrpcServerMetrics::Find(absl::string_view method) {
  // Slots only ever go from empty to filled, so a probe that meets an empty
  // slot knows the method is not further on.
  const size_t start = SlotOf(method, kSlots);
  for (size_t k = 0; k < kSlots; ++k) {
    std::atomic<MethodStats*>& slot = slots_[(start + k) % kSlots];
    MethodStats* stats = slot.load(std::memory_order_acquire);
    if (stats == nullptr) {
      // Claims a place in the method budget before filling a slot, so the
      // table never holds more than kMaxMethods and always has empty slots.
      if (methods_.fetch_add(1, std::memory_order_relaxed) >= kMaxMethods) {
        methods_.fetch_sub(1, std::memory_order_relaxed);
        return other_.get();
      }
      auto fresh = std::make_unique<MethodStats>(method);
      if (slot.compare_exchange_strong(stats, fresh.get(), std::memory_order_acq_rel)) {
        return fresh.release();
      }
      methods_.fetch_sub(1, std::memory_order_relaxed);
      // Another thread filled this slot meanwhile; `stats` is what it put.
    }
    if (stats->name == method) return stats;
  }
  return other_.get();
}

void GrpcServerMetrics::RecordStarted(absl::string_view method) {
  Find(method)->started.fetch_add(1, std::memory_order_relaxed);
}

void GrpcServerMetrics::RecordHandled(absl::string_view method, grpc::StatusCode code,
                                      absl::Duration took) {
  MethodStats* stats = Find(method);
  const int c = static_cast<int>(code);
  stats->handled[c >= 0 && c < kCodes ? c : static_cast<int>(grpc::StatusCode::UNKNOWN)].fetch_add(
      1, std::memory_order_relaxed);
  stats->latency.ObserveDuration(took);
}

uint64_t GrpcServerMetrics::Handled(absl::string_view method, grpc::StatusCode code) const {
  const MethodStats* stats = method == kOtherMethod ? other_.get() : Lookup(method);
  if (stats == nullptr) return 0;
  return stats->handled[static_cast<int>(code)].load(std::memory_order_relaxed);
}

void GrpcServerMetrics::Write(ExpositionWriter* out) const {
  std::vector<const MethodStats*> methods;
  for (const auto& slot : slots_) {
    if (const MethodStats* s = slot.load(std::memory_order_acquire)) methods.push_back(s);
  }
  std::sort(methods.begin(), methods.end(),
            [](const MethodStats* a, const MethodStats* b) { return a->name < b->name; });
  if (other_->started.load(std::memory_order_relaxed) > 0) methods.push_back(other_.get());

  constexpr char kStarted[] = "kvstore_grpc_server_started_total";
  constexpr char kHandled[] = "kvstore_grpc_server_handled_total";
  constexpr char kSeconds[] = "kvstore_grpc_server_handling_seconds";
  out->Family(kStarted, "RPCs started on the server, by method.", MetricType::kCounter);
  out->Family(kHandled, "RPCs completed on the server, by method and status code.",
              MetricType::kCounter);
  out->Family(kSeconds,
              "Time from the start of an RPC to its status being sent, by method, in seconds.",
              MetricType::kHistogram);
  for (const MethodStats* m : methods) {
    out->Sample(kStarted, {{"method", m->name}}, m->started.load(std::memory_order_relaxed));
    for (int c = 0; c < kCodes; ++c) {
      const uint64_t n = m->handled[c].load(std::memory_order_relaxed);
      if (n == 0 && c != 0) continue;
      out->Sample(kHandled,
                  {{"method", m->name}, {"code", GrpcCodeName(static_cast<grpc::StatusCode>(c))}},
                  n);
    }
    out->Histogram(kSeconds, {{"method", m->name}}, m->latency.Read());
  }
}

}  // namespace kvstore
