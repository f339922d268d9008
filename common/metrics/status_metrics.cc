#include "common/metrics/status_metrics.h"

#include <algorithm>

namespace kvstore {
namespace {

void Gauge(ExpositionWriter* out, absl::string_view name, absl::string_view help, double value,
           const Labels& labels = {}) {
  out->Family(name, help, MetricType::kGauge);
  out->Sample(name, labels, value);
}

// One series per state, 1 for the current one: the Prometheus way to expose
// an enumeration. An unexpected `current` gets a series of its own.
void StateSet(ExpositionWriter* out, absl::string_view name, absl::string_view help, Labels labels,
              absl::string_view label, std::vector<absl::string_view> states,
              absl::string_view current) {
  out->Family(name, help, MetricType::kGauge);
  if (std::find(states.begin(), states.end(), current) == states.end()) states.push_back(current);
  labels.emplace_back(label, "");
  for (absl::string_view state : states) {
    labels.back().second = state;
    out->Sample(name, labels, state == current ? 1 : 0);
  }
}

}  // namespace

void StorageMetrics::Write(ExpositionWriter* out) const {
  out->Family("kvstore_wal_fsync_seconds",
              "Duration of each fsync of the write-ahead log (one covers a group of writes), in "
              "seconds.",
              MetricType::kHistogram);
  out->Histogram("kvstore_wal_fsync_seconds", {}, fsync.Read());
  out->Family("kvstore_snapshot_duration_seconds",
              "Duration of each snapshot this process took, in seconds.", MetricType::kHistogram);
  out->Histogram("kvstore_snapshot_duration_seconds", {}, snapshot.Read());
}

void WriteNodeStatusMetrics(const v1::StatusResponse& st, absl::Time now, ExpositionWriter* out) {
  StateSet(out, "kvstore_node_role", "The node's role: 1 for the current one, 0 for the others.",
           {}, "role", {"leader", "replica", "deposed"}, st.role());
  out->Family("kvstore_node_info", "Always 1; labels: build version, fsync policy, default ack.",
              MetricType::kGauge);
  out->Sample("kvstore_node_info",
              {{"version", st.version()}, {"fsync", st.fsync()}, {"ack", st.ack()}}, 1);
  Gauge(out, "kvstore_node_epoch", "Leader epoch the node is at.", st.epoch());
  Gauge(out, "kvstore_node_last_index", "Highest log index applied on this node.", st.last_index());
  Gauge(out, "kvstore_node_uptime_seconds", "Seconds since the node started.", st.uptime_seconds());
  Gauge(out, "kvstore_keys", "Keys in the map (expired keys not yet reclaimed included).",
        st.key_count());
  Gauge(out, "kvstore_memory_bytes", "Approximate bytes held by keys, values and the map itself.",
        st.memory_bytes());

  const v1::LogStatus& log = st.log();
  Gauge(out, "kvstore_wal_bytes", "Bytes of write-ahead log on disk.", log.bytes());
  Gauge(out, "kvstore_wal_segments", "Write-ahead log segment files on disk.", log.segments());
  Gauge(out, "kvstore_wal_first_index", "Lowest index still in the log (0: empty).",
        log.first_index());
  Gauge(out, "kvstore_wal_last_index", "Highest index written to the log.", log.last_index());
  Gauge(out, "kvstore_wal_durable_index", "Highest log index known to be fsynced.",
        log.durable_index());

  if (st.has_snapshot()) {
    const v1::SnapshotInfo& snap = st.snapshot();
    const double age = absl::ToDoubleSeconds(now - absl::FromUnixMillis(snap.created_unix_ms()));
    Gauge(out, "kvstore_snapshot_age_seconds", "Seconds since the newest snapshot was written.",
          std::max(0.0, age));
    Gauge(out, "kvstore_snapshot_last_duration_seconds",
          "How long the newest snapshot took to write, in seconds (0 when it was found on disk "
          "at start).",
          snap.duration_seconds());
    Gauge(out, "kvstore_snapshot_keys", "Keys in the newest snapshot.", snap.keys());
    Gauge(out, "kvstore_snapshot_bytes", "Size of the newest snapshot file in bytes.",
          snap.bytes());
    Gauge(out, "kvstore_snapshot_start_index",
          "Log index the newest snapshot covers (recovery replays from the next one).",
          snap.start_index());
  }

  if (st.followers_size() > 0) {
    constexpr char kLagEntries[] = "kvstore_replication_follower_lag_entries";
    constexpr char kLagSeconds[] = "kvstore_replication_follower_lag_seconds";
    constexpr char kAcked[] = "kvstore_replication_follower_acked_index";
    constexpr char kSnapshots[] = "kvstore_replication_follower_snapshots_sent_total";
    out->Family(kLagEntries, "Log entries the follower is behind this leader.", MetricType::kGauge);
    out->Family(kLagSeconds,
                "Seconds since the follower was last caught up with this leader (0: caught up).",
                MetricType::kGauge);
    out->Family(kAcked, "Highest log index the follower confirmed as durable.", MetricType::kGauge);
    out->Family(kSnapshots, "Full resyncs (snapshot transfers) sent to the follower.",
                MetricType::kCounter);
    for (const v1::FollowerStatus& f : st.followers()) {
      const Labels follower = {{"follower", f.address()}};
      out->Sample(kLagEntries, follower, f.lag_entries());
      out->Sample(kLagSeconds, follower, f.lag_seconds());
      out->Sample(kAcked, follower, f.acked_index());
      out->Sample(kSnapshots, follower, f.snapshots_sent());
    }
    for (const v1::FollowerStatus& f : st.followers()) {
      StateSet(out, "kvstore_replication_follower_state",
               "State of the stream to each follower: 1 for the current one.",
               {{"follower", f.address()}}, "state",
               {"connecting", "streaming", "snapshotting", "disconnected", "refused"}, f.state());
    }
  }
  if (st.role() != "leader") {
    Gauge(out, "kvstore_replica_lag_entries",
          "On a replica: log entries behind its leader's last known index.", st.lag_entries());
    Gauge(out, "kvstore_replica_lag_seconds",
          "On a replica: seconds since it was last caught up (0: caught up).", st.lag_seconds());
  }
}

void WriteRouterBackendMetrics(const std::vector<ShardLeader>& shards,
                               const std::vector<BackendProbe>& backends, ExpositionWriter* out) {
  Gauge(out, "kvstore_router_shards", "Shards in the router's topology.",
        static_cast<double>(shards.size()));
  out->Family("kvstore_router_shard_leader",
              "Always 1: the node the router sends a shard's writes to.", MetricType::kGauge);
  for (const ShardLeader& s : shards) {
    out->Sample("kvstore_router_shard_leader", {{"shard", s.shard}, {"backend", s.leader}}, 1);
  }
  constexpr char kUp[] = "kvstore_router_backend_up";
  constexpr char kEpoch[] = "kvstore_router_backend_epoch";
  constexpr char kLastIndex[] = "kvstore_router_backend_last_index";
  constexpr char kLag[] = "kvstore_router_backend_lag_entries";
  out->Family(kUp, "1 when the backend's last health probe (Admin.Status) answered, else 0.",
              MetricType::kGauge);
  out->Family(kEpoch, "Epoch the backend reported in its last answered probe.", MetricType::kGauge);
  out->Family(kLastIndex, "Log index the backend reported in its last answered probe.",
              MetricType::kGauge);
  out->Family(kLag, "Entries behind its leader a replica reported in its last answered probe.",
              MetricType::kGauge);
  for (const BackendProbe& b : backends) {
    if (!b.probed) continue;
    const Labels labels = {{"backend", b.backend}, {"shard", b.shard}};
    out->Sample(kUp, labels, b.up ? 1 : 0);
    if (!b.up) continue;
    out->Sample(kEpoch, labels, b.epoch);
    out->Sample(kLastIndex, labels, b.last_index);
    out->Sample(kLag, labels, b.lag_entries);
  }
}

}  // namespace kvstore
