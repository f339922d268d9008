// The plan of a resharding (docs/resharding.md, "Operator guide"): the ring
// after adding or removing one shard, the ring positions each source gives to
// each destination (DiffRings, exact), and estimates of the keys and bytes
// that move, from what each source's leader reports of its size. Pure: no
// I/O; `kvctl reshard` (reshard_commands.h) reads etcd and asks the leaders.
#ifndef KVSTORE_TOOLS_KVCTL_RESHARD_PLAN_H_
#define KVSTORE_TOOLS_KVCTL_RESHARD_PLAN_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/coord/schema.h"
#include "common/ring/ring_diff.h"
#include "nlohmann/json.hpp"

namespace kvstore::reshard {

// A plan moving more of the ring than this is refused unless forced
// (design.md §6: a fourth shard moves at most 27 % of the keys).
inline constexpr double kMaxMovedFraction = 0.27;

enum class ReshardKind { kAdd, kRemove };
// "add" or "remove", as MigrationRecord::kind.
const char* KindName(ReshardKind kind);

// The ring positions one source gives one destination.
struct PlannedMove {
  std::string from;
  std::string to;
  RangeSet ranges;
  double fraction = 0;      // Of the whole ring.
  double source_share = 0;  // The source's share of the ring before the move.
};

struct ReshardPlan {
  ReshardKind kind = ReshardKind::kAdd;
  std::string shard;  // Added or removed.
  coord::RingRecord from;
  // An add: from.version + 1, the same vnodes. A remove: the ring its last
  // stage publishes (without the shard).
  coord::RingRecord to;
  std::vector<PlannedMove> moves;  // Ordered by (from, to).
  // A remove: one stage per destination, in this order (sorted by name),
  // each publishing stage_rings[i] (coord::RemoveStageRing); the last of
  // them is `to`. Empty for an add.
  std::vector<std::string> stages;
  std::vector<coord::RingRecord> stage_rings;

  double TotalFraction() const;
  size_t TotalRanges() const;
};

// The plan that adds `shard` to `ring` or removes it. INVALID_ARGUMENT for a
// name a topology file would refuse (CheckShardName); FAILED_PRECONDITION
// when adding a shard the ring has, removing one it has not, removing its
// last shard, when the ring drains another shard (or, for an add, any), or
// when the ring cannot be built (its vnodes). A ring that already drains
// `shard` (a removal cancelled part way) plans only the stages left.
absl::StatusOr<ReshardPlan> PlanReshard(const coord::RingRecord& ring, ReshardKind kind,
                                        absl::string_view shard);

// What a source's leader reports of itself (Admin.Status key_count and
// memory_bytes).
struct SourceSize {
  uint64_t keys = 0;
  uint64_t bytes = 0;
};

// The keys and bytes a move takes: the source's size times the moving
// fraction over the source's share (keys spread evenly over the positions).
// Unknown, with the reason, when the source's size is.
struct MoveEstimate {
  std::optional<uint64_t> keys;
  std::optional<uint64_t> bytes;
  std::string unknown_why;
};
MoveEstimate EstimateMove(const PlannedMove& move, const absl::StatusOr<SourceSize>& source);

// The plan as a table: one row per (source, destination) with the number of
// ranges, the fraction of the ring, and the estimates ("unknown", with the
// reason below the table), then the total. `estimates` is parallel to
// plan.moves.
std::string PlanText(const ReshardPlan& plan, const std::vector<MoveEstimate>& estimates);
// The same as one JSON object, each move with its ranges as
// [["0x<first>","0x<last>"], ...] (inclusive, 16 hex digits).
nlohmann::json PlanJson(const ReshardPlan& plan, const std::vector<MoveEstimate>& estimates);

// "m" + the UTC time as 20261203T110548Z + "-" + 6 hex digits of `random`:
// sorts by time, never "active", never holds a '/'.
std::string NewMigrationId(absl::Time now, uint32_t random);

}  // namespace kvstore::reshard

#endif  // KVSTORE_TOOLS_KVCTL_RESHARD_PLAN_H_
