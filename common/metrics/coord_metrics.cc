#include "common/metrics/coord_metrics.h"

#include <algorithm>
#include <string>
#include <utility>

namespace kvstore {

CoordMetrics::CoordMetrics(std::function<int64_t()> now_nanos)
    : now_nanos_(std::move(now_nanos)),
      etcd_call_seconds_(LatencyBuckets()),
      etcd_calls_({"method", "code"}),
      election_seconds_(LatencyBuckets()),
      elections_({"reason"}),
      handoff_pause_seconds_(LatencyBuckets()),
      handoffs_({"result"}) {}

void CoordMetrics::EtcdCall(absl::string_view method, absl::Duration took, absl::StatusCode code) {
  etcd_call_seconds_.ObserveDuration(took);
  etcd_calls_.Add({std::string(method), absl::StatusCodeToString(code)});
}

void CoordMetrics::Elected(absl::string_view reason, absl::Duration election) {
  node_ = true;
  elections_.Add({std::string(reason)});
  if (election > absl::ZeroDuration()) election_seconds_.ObserveDuration(election);
}

void CoordMetrics::Handoff(absl::string_view result, absl::Duration pause) {
  node_ = true;
  handoffs_.Add({std::string(result)});
  handoff_pause_seconds_.ObserveDuration(pause);
}

void CoordMetrics::SelfFenced(absl::string_view reason) {
  node_ = true;
  (reason == "router_epoch" ? self_fences_router_ : self_fences_lease_)
      .fetch_add(1, std::memory_order_relaxed);
}

void CoordMetrics::InSyncRecorded(int size, int removed, int added) {
  node_ = true;
  isr_size_.store(size, std::memory_order_relaxed);
  if (removed > 0) isr_shrinks_.fetch_add(1, std::memory_order_relaxed);
  if (added > 0) isr_expands_.fetch_add(1, std::memory_order_relaxed);
}

void CoordMetrics::EndInSync() { isr_size_.store(-1, std::memory_order_relaxed); }

void CoordMetrics::SetLeaseValidUntil(int64_t valid_until_nanos) {
  node_ = true;
  lease_valid_until_.store(valid_until_nanos, std::memory_order_relaxed);
}

void CoordMetrics::SetTopologyRevision(int64_t revision) {
  topology_revision_.store(revision, std::memory_order_relaxed);
}

void CoordMetrics::Write(ExpositionWriter* out) const {
  out->Family("kvstore_etcd_call_seconds",
              "Duration of a call to etcd, all its attempts (endpoints) together.",
              MetricType::kHistogram);
  out->Histogram("kvstore_etcd_call_seconds", {}, etcd_call_seconds_.Read());
  etcd_calls_.Write("kvstore_etcd_calls_total", "Calls to etcd by method and result code.", out);
  if (node_.load(std::memory_order_relaxed)) {
    const int64_t until = lease_valid_until_.load(std::memory_order_relaxed);
    const double left = until == 0 ? 0.0 : std::max<double>(0.0, (until - now_nanos_()) / 1e9);
    out->Family("kvstore_failover_lease_seconds_left",
                "Time left before this node's lease in etcd may expire, as the node counts it "
                "(TTL minus margin after the last answered keepalive); 0 without a lease.",
                MetricType::kGauge);
    out->Sample("kvstore_failover_lease_seconds_left", {}, left);
    elections_.Write("kvstore_failover_elections_total",
                     "Times this node took its shard's leadership, by reason (leader_gone: "
                     "automatic failover; promote, promote_forced: kvctl promote).",
                     out);
    out->Family("kvstore_failover_election_seconds",
                "From seeing the shard's leader key gone to leading (automatic elections won).",
                MetricType::kHistogram);
    out->Histogram("kvstore_failover_election_seconds", {}, election_seconds_.Read());
    handoffs_.Write("kvstore_failover_handoffs_total",
                    "Graceful transfers (kvctl promote --to) this node acted on as the leader, by "
                    "result (transferred, forced, not_caught_up).",
                    out);
    out->Family("kvstore_failover_handoff_pause_seconds",
                "How long this leader paused writes for a graceful transfer.",
                MetricType::kHistogram);
    out->Histogram("kvstore_failover_handoff_pause_seconds", {}, handoff_pause_seconds_.Read());
    out->Family("kvstore_failover_self_fences_total",
                "Times this node fenced itself as leader, by reason (lease_lost: its lease was "
                "lost; router_epoch: a router named a newer epoch).",
                MetricType::kCounter);
    out->Sample("kvstore_failover_self_fences_total", {{"reason", "lease_lost"}},
                self_fences_lease_.load(std::memory_order_relaxed));
    out->Sample("kvstore_failover_self_fences_total", {{"reason", "router_epoch"}},
                self_fences_router_.load(std::memory_order_relaxed));
    const int64_t isr_size = isr_size_.load(std::memory_order_relaxed);
    if (isr_size >= 0) {
      out->Family("kvstore_isr_size",
                  "Members of the in-sync set this leader last recorded in etcd, itself included "
                  "(sync acks in etcd mode; absent on other nodes).",
                  MetricType::kGauge);
      out->Sample("kvstore_isr_size", {}, isr_size);
    }
    out->Family("kvstore_isr_shrinks_total",
                "Times this node, as leader, recorded an in-sync set without a follower the "
                "previous one of the same leadership had.",
                MetricType::kCounter);
    out->Sample("kvstore_isr_shrinks_total", {}, isr_shrinks_.load(std::memory_order_relaxed));
    out->Family("kvstore_isr_expands_total",
                "Times this node, as leader, recorded an in-sync set with a follower the previous "
                "one of the same leadership lacked.",
                MetricType::kCounter);
    out->Sample("kvstore_isr_expands_total", {}, isr_expands_.load(std::memory_order_relaxed));
  }
  const int64_t revision = topology_revision_.load(std::memory_order_relaxed);
  if (revision >= 0) {
    out->Family("kvstore_router_topology_revision",
                "The etcd revision of the topology the router routes by.", MetricType::kGauge);
    out->Sample("kvstore_router_topology_revision", {}, revision);
  }
}

}  // namespace kvstore
