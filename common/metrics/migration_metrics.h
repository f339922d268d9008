// Resharding metrics (docs/resharding.md, docs/metrics.md): what the driver
// of a migration (services/node/migration_driver.h), in the leader of the
// shard being added, reports of the migration it drives. A plain snapshot the
// driver fills and the scrape writes out; a node that drives nothing has an
// empty one and writes no migration series at all.
#ifndef KVSTORE_COMMON_METRICS_MIGRATION_METRICS_H_
#define KVSTORE_COMMON_METRICS_MIGRATION_METRICS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/metrics/exposition.h"

namespace kvstore {

// One source shard of the migration, as its progress record in etcd says
// (coord::SourceProgress).
struct MigrationSourceMetrics {
  std::string source;
  uint64_t keys_copied = 0;   // Keys written here by the copy (restarts included).
  uint64_t bytes_copied = 0;  // Key and value bytes of the copy and the catch-up.
  // The source's committed index minus the one applied here; unknown until
  // the catch-up has asked the source once.
  std::optional<uint64_t> catchup_lag_entries;
  int64_t retries = 0;   // Cutovers that went back to catch-up.
  int64_t restarts = 0;  // Copies started over from the beginning.
};

struct MigrationMetrics {
  std::string id;     // Empty: this node drives no migration now.
  std::string phase;  // The migration record's phase.
  // The write pause of the cutover that committed; unknown before it.
  std::optional<double> last_cutover_pause_seconds;
  std::vector<MigrationSourceMetrics> sources;
};

// kvstore_migration_phase{migration,phase}, and per source (labels
// migration, source) kvstore_migration_copied_keys_total,
// _copied_bytes_total, _catchup_lag_entries, _cutover_retries_total,
// _copy_restarts_total; kvstore_migration_last_cutover_pause_seconds. Nothing
// when `m.id` is empty.
void WriteMigrationMetrics(const MigrationMetrics& m, ExpositionWriter* out);

}  // namespace kvstore

#endif  // KVSTORE_COMMON_METRICS_MIGRATION_METRICS_H_
