#include "tools/kvctl/reshard_plan.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/config/units.h"
#include "common/ring/hash_ring.h"
#include "common/topology/topology.h"

namespace kvstore::reshard {
namespace {

std::string RingLine(const coord::RingRecord& ring) {
  std::string drain;
  if (!ring.draining.empty()) {
    drain =
        absl::StrCat(", draining ", ring.draining.shard, " to ",
                     ring.draining.handed_to.empty() ? std::string("none yet")
                                                     : absl::StrJoin(ring.draining.handed_to, ","));
  }
  return absl::StrFormat("version %d (vnodes %d, shards %s%s)", ring.version, ring.vnodes,
                         absl::StrJoin(ring.shards, ","), drain);
}

std::string Percent(double fraction) { return absl::StrFormat("%.2f%%", fraction * 100); }

std::string Count(const std::optional<uint64_t>& n) {
  return n ? absl::StrCat(*n) : std::string("unknown");
}

std::string Size(const std::optional<uint64_t>& n) {
  return n ? HumanBytes(*n) : std::string("unknown");
}

nlohmann::json RingJson(const coord::RingRecord& ring) {
  nlohmann::json out = {
      {"version", ring.version}, {"vnodes", ring.vnodes}, {"shards", ring.shards}};
  if (!ring.draining.empty()) {
    out["draining"] = {{"shard", ring.draining.shard}, {"handed_to", ring.draining.handed_to}};
  }
  return out;
}

nlohmann::json Optional(const std::optional<uint64_t>& n) {
  return n ? nlohmann::json(*n) : nlohmann::json(nullptr);
}

// The sums of the estimates, or unknown if any one is.
MoveEstimate Total(const std::vector<MoveEstimate>& estimates) {
  MoveEstimate total;
  total.keys = 0;
  total.bytes = 0;
  for (const MoveEstimate& e : estimates) {
    if (!e.keys || !e.bytes) {
      total.keys.reset();
      total.bytes.reset();
      total.unknown_why = "a source's size is unknown";
      break;
    }
    *total.keys += *e.keys;
    *total.bytes += *e.bytes;
  }
  return total;
}

}  // namespace

const char* KindName(ReshardKind kind) { return kind == ReshardKind::kAdd ? "add" : "remove"; }

double ReshardPlan::TotalFraction() const {
  double total = 0;
  for (const PlannedMove& m : moves) total += m.fraction;
  return total;
}

size_t ReshardPlan::TotalRanges() const {
  size_t total = 0;
  for (const PlannedMove& m : moves) total += m.ranges.ranges().size();
  return total;
}

absl::StatusOr<ReshardPlan> PlanReshard(const coord::RingRecord& ring, ReshardKind kind,
                                        absl::string_view shard) {
  if (absl::Status s = CheckShardName(shard); !s.ok()) return s;
  const bool present =
      std::find(ring.shards.begin(), ring.shards.end(), shard) != ring.shards.end();
  std::vector<std::string> shards = ring.shards;
  if (!ring.draining.empty() && (kind == ReshardKind::kAdd || ring.draining.shard != shard)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the ring drains shard ", ring.draining.shard,
        " (a removal that was cancelled part way): ", RingLine(ring),
        "; finish it first with 'kvctl reshard remove-shard ", ring.draining.shard, "'"));
  }
  if (kind == ReshardKind::kAdd) {
    if (present) {
      return absl::FailedPreconditionError(
          absl::StrCat("shard ", shard, " is in the ring already: ", RingLine(ring)));
    }
    shards.emplace_back(shard);
  } else {
    if (!present) {
      return absl::FailedPreconditionError(
          absl::StrCat("shard ", shard, " is not in the ring: ", RingLine(ring)));
    }
    if (ring.shards.size() == 1) {
      return absl::FailedPreconditionError(absl::StrCat(
          "shard ", shard, " is the ring's only shard: without it no shard would own the keys"));
    }
    shards.erase(std::find(shards.begin(), shards.end(), shard));
  }
  absl::StatusOr<HashRing> before = coord::BuildRing(ring);
  if (!before.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the ring in etcd cannot be built: ", before.status().message()));
  }
  absl::StatusOr<HashRing> after = HashRing::Build(shards, ring.vnodes);
  if (!after.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the new ring cannot be built: ", after.status().message()));
  }
  std::map<std::string, double> share;
  const std::vector<double> ownership = before->Ownership();
  for (size_t i = 0; i < before->shards().size(); ++i) share[before->shards()[i]] = ownership[i];

  ReshardPlan plan;
  plan.kind = kind;
  plan.shard = std::string(shard);
  plan.from = ring;
  plan.to.format = 1;
  plan.to.version = ring.version + 1;
  plan.to.vnodes = ring.vnodes;
  plan.to.shards = shards;
  std::sort(plan.to.shards.begin(), plan.to.shards.end());
  for (RingMove& m : DiffRings(*before, *after)) {
    PlannedMove move;
    move.from = std::move(m.from);
    move.to = std::move(m.to);
    move.fraction = m.ranges.Fraction();
    move.source_share = share[move.from];
    move.ranges = std::move(m.ranges);
    plan.moves.push_back(std::move(move));
  }
  if (kind == ReshardKind::kRemove) {
    // One stage per destination (DiffRings orders them by name); shards
    // already handed to take nothing more and are not among them.
    for (const PlannedMove& m : plan.moves) plan.stages.push_back(m.to);
    if (plan.stages.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "shard ", shard,
          " owns no part of the ring, so no stage would move anything: ", RingLine(ring)));
    }
    coord::RingRecord stage_ring = ring;
    for (size_t i = 0; i < plan.stages.size(); ++i) {
      stage_ring = coord::RemoveStageRing(stage_ring, shard, plan.stages[i],
                                          /*last=*/i + 1 == plan.stages.size());
      plan.stage_rings.push_back(stage_ring);
    }
    plan.to = plan.stage_rings.back();
  }
  return plan;
}

MoveEstimate EstimateMove(const PlannedMove& move, const absl::StatusOr<SourceSize>& source) {
  MoveEstimate estimate;
  if (!source.ok()) {
    estimate.unknown_why = std::string(source.status().message());
    return estimate;
  }
  // The part of the source's positions that moves; at most all of them.
  const double part =
      move.source_share > 0 ? std::min(1.0, move.fraction / move.source_share) : 0.0;
  estimate.keys = static_cast<uint64_t>(std::llround(static_cast<double>(source->keys) * part));
  estimate.bytes = static_cast<uint64_t>(std::llround(static_cast<double>(source->bytes) * part));
  return estimate;
}

std::string PlanText(const ReshardPlan& plan, const std::vector<MoveEstimate>& estimates) {
  std::string out =
      absl::StrFormat("plan: %s shard %s\n  ring %s\n    -> %s\n", KindName(plan.kind), plan.shard,
                      RingLine(plan.from), RingLine(plan.to));
  size_t from_width = std::string("source").size();
  size_t to_width = std::string("destination").size();
  for (const PlannedMove& m : plan.moves) {
    from_width = std::max(from_width, m.from.size());
    to_width = std::max(to_width, m.to.size());
  }
  const auto row = [&](absl::string_view from, absl::string_view to, absl::string_view ranges,
                       absl::string_view fraction, absl::string_view keys,
                       absl::string_view bytes) {
    return absl::StrFormat("%-*s  %-*s  %7s  %8s  %12s  %11s\n", from_width, from, to_width, to,
                           ranges, fraction, keys, bytes);
  };
  absl::StrAppend(&out,
                  row("source", "destination", "ranges", "fraction", "est. keys", "est. bytes"));
  std::vector<std::string> notes;
  for (size_t i = 0; i < plan.moves.size(); ++i) {
    const PlannedMove& m = plan.moves[i];
    const MoveEstimate& e = estimates.at(i);
    absl::StrAppend(&out, row(m.from, m.to, absl::StrCat(m.ranges.ranges().size()),
                              Percent(m.fraction), Count(e.keys), Size(e.bytes)));
    if (!e.keys && !e.unknown_why.empty()) {
      notes.push_back(absl::StrCat("  ", m.from, ": size unknown: ", e.unknown_why, "\n"));
    }
  }
  const MoveEstimate total = Total(estimates);
  absl::StrAppend(&out, row("total", "", absl::StrCat(plan.TotalRanges()),
                            Percent(plan.TotalFraction()), Count(total.keys), Size(total.bytes)));
  for (size_t i = 0; i < plan.stages.size(); ++i) {
    absl::StrAppend(
        &out, absl::StrFormat("stage %d/%d: %s -> %s, then ring %s\n", i + 1, plan.stages.size(),
                              plan.shard, plan.stages[i], RingLine(plan.stage_rings[i])));
  }
  // One note per source, not per move.
  notes.erase(std::unique(notes.begin(), notes.end()), notes.end());
  for (const std::string& note : notes) absl::StrAppend(&out, note);
  return out;
}

nlohmann::json PlanJson(const ReshardPlan& plan, const std::vector<MoveEstimate>& estimates) {
  nlohmann::json moves = nlohmann::json::array();
  for (size_t i = 0; i < plan.moves.size(); ++i) {
    const PlannedMove& m = plan.moves[i];
    const MoveEstimate& e = estimates.at(i);
    nlohmann::json ranges = nlohmann::json::array();
    for (const PositionRange& r : m.ranges.ranges()) {
      ranges.push_back({absl::StrFormat("0x%016x", r.first), absl::StrFormat("0x%016x", r.last)});
    }
    nlohmann::json move = {{"from", m.from},
                           {"to", m.to},
                           {"range_count", m.ranges.ranges().size()},
                           {"fraction", m.fraction},
                           {"source_share", m.source_share},
                           {"keys_estimate", Optional(e.keys)},
                           {"bytes_estimate", Optional(e.bytes)},
                           {"ranges", ranges}};
    if (!e.keys) move["estimate_unknown"] = e.unknown_why;
    moves.push_back(move);
  }
  const MoveEstimate total = Total(estimates);
  nlohmann::json stages = nlohmann::json::array();
  for (size_t i = 0; i < plan.stages.size(); ++i) {
    stages.push_back({{"stage", i + 1},
                      {"from", plan.shard},
                      {"to", plan.stages[i]},
                      {"ring", RingJson(plan.stage_rings[i])}});
  }
  return {{"kind", KindName(plan.kind)},
          {"stages", stages},
          {"shard", plan.shard},
          {"from", RingJson(plan.from)},
          {"to", RingJson(plan.to)},
          {"moves", moves},
          {"total",
           {{"range_count", plan.TotalRanges()},
            {"fraction", plan.TotalFraction()},
            {"keys_estimate", Optional(total.keys)},
            {"bytes_estimate", Optional(total.bytes)}}},
          {"limit", kMaxMovedFraction},
          {"over_limit", plan.TotalFraction() > kMaxMovedFraction}};
}

std::string NewMigrationId(absl::Time now, uint32_t random) {
  return absl::StrFormat("m%s-%06x", absl::FormatTime("%Y%m%dT%H%M%SZ", now, absl::UTCTimeZone()),
                         random & 0xffffffu);
}

}  // namespace kvstore::reshard
