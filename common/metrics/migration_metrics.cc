#include "common/metrics/migration_metrics.h"

#include <algorithm>

namespace kvstore {

void WriteMigrationMetrics(const MigrationMetrics& m, ExpositionWriter* out) {
  if (m.id.empty()) return;

  constexpr char kPhase[] = "kvstore_migration_phase";
  out->Family(kPhase,
              "Phase of the migration this node drives: 1 for the current one, 0 for the others.",
              MetricType::kGauge);
  std::vector<std::string> phases = {"copy",    "catchup", "cutover",  "switched",
                                     "cleanup", "done",    "cancelled"};
  if (std::find(phases.begin(), phases.end(), m.phase) == phases.end()) phases.push_back(m.phase);
  for (const std::string& phase : phases) {
    out->Sample(kPhase, {{"migration", m.id}, {"phase", phase}}, phase == m.phase ? 1 : 0);
  }

  constexpr char kKeys[] = "kvstore_migration_copied_keys_total";
  constexpr char kBytes[] = "kvstore_migration_copied_bytes_total";
  constexpr char kLag[] = "kvstore_migration_catchup_lag_entries";
  constexpr char kRetries[] = "kvstore_migration_cutover_retries_total";
  constexpr char kRestarts[] = "kvstore_migration_copy_restarts_total";
  out->Family(kKeys, "Keys copied from the source shard into this one (the copy phase).",
              MetricType::kCounter);
  out->Family(kBytes, "Key and value bytes received from the source shard (copy and catch-up).",
              MetricType::kCounter);
  out->Family(kLag,
              "Log entries of the source shard not applied here yet (its committed index minus "
              "the one applied); absent before the catch-up starts.",
              MetricType::kGauge);
  out->Family(kRetries, "Cutovers that did not commit in time and went back to catch-up.",
              MetricType::kCounter);
  out->Family(kRestarts, "Copies from the source shard started over from the beginning.",
              MetricType::kCounter);
  for (const MigrationSourceMetrics& s : m.sources) {
    const Labels labels = {{"migration", m.id}, {"source", s.source}};
    out->Sample(kKeys, labels, s.keys_copied);
    out->Sample(kBytes, labels, s.bytes_copied);
    if (s.catchup_lag_entries.has_value()) out->Sample(kLag, labels, *s.catchup_lag_entries);
    out->Sample(kRetries, labels, s.retries);
    out->Sample(kRestarts, labels, s.restarts);
  }

  if (m.last_cutover_pause_seconds.has_value()) {
    constexpr char kPause[] = "kvstore_migration_last_cutover_pause_seconds";
    out->Family(kPause,
                "How long the committed cutover held writes to the moving ranges, in seconds.",
                MetricType::kGauge);
    out->Sample(kPause, {{"migration", m.id}}, *m.last_cutover_pause_seconds);
  }
}

}  // namespace kvstore
