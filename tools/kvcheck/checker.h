// The whole check of one history: cheap checks, linearizability per key,
// durability figures, and the violations they add up to. A history is valid
// when there is no violation; an undecided key is a violation.
#ifndef KVSTORE_TOOLS_KVCHECK_CHECKER_H_
#define KVSTORE_TOOLS_KVCHECK_CHECKER_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "tools/kvcheck/availability.h"
#include "tools/kvcheck/durability.h"
#include "tools/kvcheck/history.h"
#include "tools/kvcheck/linearizability.h"
#include "tools/kvcheck/violation.h"

namespace kvstore::check {

struct CheckOptions {
  SearchLimits search;  // Applies to each key on its own.
  // The run's fault windows (availability.h, from nemesis.jsonl); without
  // them there are no availability figures.
  std::optional<std::vector<FaultWindow>> fault_windows;
};

struct Report {
  // Ops by f ("get", ...) and outcome ("ok", "fail", "info").
  std::map<std::string, std::map<std::string, int64_t>> ops;
  DurabilityFigures durability;
  std::optional<AvailabilityFigures> availability;  // When CheckOptions had fault windows.
  std::map<std::string, KeyResult> keys;  // Linearizability, per key.
  // Cheap checks first, then the replica reads' (replica_reads.h), then
  // not-linearizable and undecided keys, then lost writes.
  std::vector<Violation> violations;

  bool valid() const { return violations.empty(); }
  // Violations of one kind: "stale leader reads" is StaleReads().
  int64_t Count(ViolationKind kind) const;
  int64_t StaleReads() const { return Count(ViolationKind::kStaleRead); }
  // Stale by the same test, but every write they missed was lost: counted
  // apart from StaleReads (cheap_checks.h, MarkReadsBehindLostWrites).
  int64_t ReadsBehindLostWrites() const { return Count(ViolationKind::kReadBehindLostWrite); }
};

Report Check(const History& h, const CheckOptions& options);

}  // namespace kvstore::check

#endif  // KVSTORE_TOOLS_KVCHECK_CHECKER_H_
