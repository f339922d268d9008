// What `kvctl reshard status` shows of one migration: its record, the
// progress each source reported (written by the driver in kv-shard), and what
// follows from them: percent of the estimate copied, ETA, catch-up lag. Pure:
// reshard_commands.h reads etcd.
#ifndef KVSTORE_TOOLS_KVCTL_RESHARD_STATUS_H_
#define KVSTORE_TOOLS_KVCTL_RESHARD_STATUS_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/coord/schema.h"
#include "nlohmann/json.hpp"

namespace kvstore::reshard {

struct MigrationView {
  coord::MigrationRecord record;
  bool active = false;  // <P>/migrations/active names it.
  std::vector<coord::SourceProgress> sources;
  std::vector<std::string> unreadable;  // Why a source's progress does not parse.
};

// The migration has ended: done, cancelled or failed.
bool IsFinished(absl::string_view phase);
// Ended without moving anything for good: cancelled or failed.
bool IsCancelledOrFailed(absl::string_view phase);
// The new ring is published (switched, cleanup, done): past the point where
// cancel can restore the old one.
bool HasSwitched(absl::string_view phase);

// Percent of the estimate copied (bytes, else keys), at most 100; 100 once the
// source is past its copy. nullopt while there is no estimate.
std::optional<double> CopiedPercent(const coord::SourceProgress& p);
// Time left of the copy: the bytes left of the estimate over the rate.
// nullopt when not copying, or without an estimate or a rate.
std::optional<absl::Duration> CopyEta(const coord::SourceProgress& p);

// Lines for people: the migration, then per source its phase, progress (a
// bar when `terminal`), rate and ETA, catch-up lag, fence index, last cutover
// pause, retries, restarts and error; then the total.
std::string StatusText(const MigrationView& view, absl::Time now, bool terminal);
// One JSON object: the record's fields, "active", "age_seconds", and
// "sources" (each SourceProgress's fields with "source", "percent",
// "eta_seconds" and "catchup_lag"; null where unknown).
nlohmann::json StatusJson(const MigrationView& view, absl::Time now);

}  // namespace kvstore::reshard

#endif  // KVSTORE_TOOLS_KVCTL_RESHARD_STATUS_H_
