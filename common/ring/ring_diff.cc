#include "common/ring/ring_diff.h"

#include <algorithm>
#include <limits>
#include <map>
#include <utility>

namespace kvstore {

RangeSet::RangeSet(std::vector<PositionRange> ranges) {
  std::sort(ranges.begin(), ranges.end(),
            [](const PositionRange& a, const PositionRange& b) { return a.first < b.first; });
  for (const PositionRange& r : ranges) {
    if (!ranges_.empty() && (ranges_.back().last == std::numeric_limits<uint64_t>::max() ||
                             r.first <= ranges_.back().last + 1)) {
      ranges_.back().last = std::max(ranges_.back().last, r.last);
    } else {
      ranges_.push_back(r);
    }
  }
}

bool RangeSet::Contains(uint64_t position) const {
  // The last range starting at or before `position`.
  auto it = std::upper_bound(ranges_.begin(), ranges_.end(), position,
                             [](uint64_t p, const PositionRange& r) { return p < r.first; });
  if (it == ranges_.begin()) return false;
  --it;
  return position <= it->last;
}

double RangeSet::Fraction() const {
  long double positions = 0;
  for (const PositionRange& r : ranges_) {
    positions += static_cast<long double>(r.last - r.first) + 1.0L;
  }
  constexpr long double kRingSize = 18446744073709551616.0L;  // 2^64
  return static_cast<double>(positions / kRingSize);
}

std::vector<RingMove> DiffRings(const HashRing& before, const HashRing& after) {
  // Between two consecutive boundaries of either ring, both owners are
  // constant: the interval (b[k-1], b[k]] belongs, in each ring, to the owner
  // of position b[k]; the wrap (b[last], 2^64) plus [0, b[0]] to the owner of
  // b[0] (OwnerOfPosition wraps the same way).
  std::vector<uint64_t> bounds = before.token_hashes();
  bounds.insert(bounds.end(), after.token_hashes().begin(), after.token_hashes().end());
  std::sort(bounds.begin(), bounds.end());
  bounds.erase(std::unique(bounds.begin(), bounds.end()), bounds.end());

  std::map<std::pair<std::string, std::string>, std::vector<PositionRange>> moves;
  const auto note = [&](uint64_t owner_position, PositionRange range) {
    const std::string& from = before.shards()[before.OwnerOfPosition(owner_position)];
    const std::string& to = after.shards()[after.OwnerOfPosition(owner_position)];
    if (from != to) moves[{from, to}].push_back(range);
  };
  note(bounds[0], {0, bounds[0]});
  for (size_t k = 1; k < bounds.size(); ++k) note(bounds[k], {bounds[k - 1] + 1, bounds[k]});
  if (bounds.back() != std::numeric_limits<uint64_t>::max()) {
    note(bounds[0], {bounds.back() + 1, std::numeric_limits<uint64_t>::max()});
  }

  std::vector<RingMove> out;
  for (auto& [pair, ranges] : moves) {
    out.push_back({pair.first, pair.second, RangeSet(std::move(ranges))});
  }
  return out;
}

}  // namespace kvstore
