// What changes hands between two rings: the ring positions whose owner
// differs, grouped by (from, to) shard, as sorted, disjoint, inclusive ranges.
// Pure: no I/O. Resharding (docs/resharding.md) plans, copies, fences and
// cleans up by these ranges; a node asks RangeSet::Contains per key.
#ifndef KVSTORE_COMMON_RING_RING_DIFF_H_
#define KVSTORE_COMMON_RING_RING_DIFF_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "common/ring/hash_ring.h"

namespace kvstore {

// Positions first..last, both included (first <= last; a range never wraps:
// one that would is split at 2^64 - 1).
struct PositionRange {
  uint64_t first = 0;
  uint64_t last = 0;
  bool operator==(const PositionRange& o) const { return first == o.first && last == o.last; }
};

// Sorted, disjoint, non-adjacent ranges. Immutable once built; any thread.
class RangeSet {
 public:
  RangeSet() = default;
  // Sorts and merges overlapping or adjacent ranges.
  explicit RangeSet(std::vector<PositionRange> ranges);

  bool Contains(uint64_t position) const;
  bool ContainsKey(absl::string_view key) const { return Contains(HashRing::KeyHash(key)); }
  bool empty() const { return ranges_.empty(); }
  const std::vector<PositionRange>& ranges() const { return ranges_; }
  // Share of the 2^64 positions, in [0, 1].
  double Fraction() const;

 private:
  std::vector<PositionRange> ranges_;
};

// The positions `from` owns under the old ring and `to` owns under the new.
struct RingMove {
  std::string from;
  std::string to;
  RangeSet ranges;
};

// Every move from `before` to `after`, ordered by (from, to). Shards present
// in only one ring are fine (an added shard only receives, a removed one only
// gives). Computed exactly from both rings' tokens, not by sampling.
std::vector<RingMove> DiffRings(const HashRing& before, const HashRing& after);

}  // namespace kvstore

#endif  // KVSTORE_COMMON_RING_RING_DIFF_H_
