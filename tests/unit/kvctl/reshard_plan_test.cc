// kvctl reshard's plan (tools/kvctl/reshard_plan.h): the new ring, the moves
// and their fractions, what is refused and why, the estimates from the
// sources' sizes, the table and JSON people and scripts read; and the byte
// rates --throttle takes (units.h).
#include "tools/kvctl/reshard_plan.h"

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "common/config/units.h"
#include "common/ring/hash_ring.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvstore::reshard {
namespace {

using ::testing::HasSubstr;

coord::RingRecord Ring(std::vector<std::string> shards, int64_t version = 1, int vnodes = 1024) {
  coord::RingRecord ring;
  ring.version = version;
  ring.vnodes = vnodes;
  ring.shards = std::move(shards);
  return ring;
}

ReshardPlan MustPlan(const coord::RingRecord& ring, ReshardKind kind, const std::string& shard) {
  absl::StatusOr<ReshardPlan> plan = PlanReshard(ring, kind, shard);
  EXPECT_TRUE(plan.ok()) << plan.status();
  return *std::move(plan);
}

TEST(ReshardPlanTest, AddingAShardMovesOnlyOntoItAndBumpsTheVersion) {
  const ReshardPlan plan =
      MustPlan(Ring({"shard-2", "shard-0", "shard-1"}, 4), ReshardKind::kAdd, "shard-3");
  EXPECT_EQ(plan.to.version, 5);
  EXPECT_EQ(plan.to.vnodes, 1024);
  EXPECT_EQ(plan.to.shards, (std::vector<std::string>{"shard-0", "shard-1", "shard-2", "shard-3"}));
  ASSERT_EQ(plan.moves.size(), 3u);
  double shares = 0;
  for (const PlannedMove& m : plan.moves) {
    EXPECT_EQ(m.to, "shard-3");
    EXPECT_DOUBLE_EQ(m.fraction, m.ranges.Fraction());
    EXPECT_GT(m.fraction, 0.05);
    EXPECT_LT(m.fraction, m.source_share);
    shares += m.source_share;
  }
  EXPECT_NEAR(shares, 1.0, 1e-9);  // Each old shard gives, each is a source once.
  // Exactly the new shard's share of the new ring, and under the limit.
  absl::StatusOr<HashRing> four =
      HashRing::Build({"shard-0", "shard-1", "shard-2", "shard-3"}, 1024);
  ASSERT_TRUE(four.ok());
  EXPECT_NEAR(plan.TotalFraction(), four->Ownership()[3], 1e-12);
  EXPECT_LE(plan.TotalFraction(), kMaxMovedFraction);
  EXPECT_EQ(plan.TotalRanges(), plan.moves[0].ranges.ranges().size() +
                                    plan.moves[1].ranges.ranges().size() +
                                    plan.moves[2].ranges.ranges().size());
}

TEST(ReshardPlanTest, RemovingAShardGivesItsWholeShareToTheOthers) {
  const ReshardPlan plan = MustPlan(Ring({"shard-0", "shard-1", "shard-2", "shard-3"}, 2),
                                    ReshardKind::kRemove, "shard-1");
  // One stage, and one ring version, per destination.
  EXPECT_EQ(plan.to.version, 2 + static_cast<int64_t>(plan.stages.size()));
  EXPECT_EQ(plan.to.shards, (std::vector<std::string>{"shard-0", "shard-2", "shard-3"}));
  ASSERT_FALSE(plan.moves.empty());
  for (const PlannedMove& m : plan.moves) {
    EXPECT_EQ(m.from, "shard-1");
    EXPECT_NE(m.to, "shard-1");
  }
  EXPECT_NEAR(plan.TotalFraction(), plan.moves[0].source_share, 1e-12);
}

TEST(ReshardPlanTest, RemovingAShardPlansOneStagePerDestinationEachMovingOnlyToIt) {
  const coord::RingRecord ring = Ring({"shard-0", "shard-1", "shard-2", "shard-3"}, 2);
  const ReshardPlan plan = MustPlan(ring, ReshardKind::kRemove, "shard-1");
  ASSERT_EQ(plan.stages, (std::vector<std::string>{"shard-0", "shard-2", "shard-3"}));
  ASSERT_EQ(plan.stage_rings.size(), 3u);
  EXPECT_EQ(plan.stage_rings[0].draining, (RingDrain{"shard-1", {"shard-0"}}));
  EXPECT_EQ(plan.stage_rings[1].draining, (RingDrain{"shard-1", {"shard-0", "shard-2"}}));
  EXPECT_TRUE(plan.stage_rings[2].draining.empty());
  EXPECT_EQ(plan.stage_rings[2].shards,
            (std::vector<std::string>{"shard-0", "shard-2", "shard-3"}));
  coord::RingRecord from = ring;
  for (size_t i = 0; i < plan.stages.size(); ++i) {
    const coord::RingRecord& to = plan.stage_rings[i];
    EXPECT_EQ(to.version, from.version + 1);
    absl::StatusOr<HashRing> a = coord::BuildRing(from);
    absl::StatusOr<HashRing> b = coord::BuildRing(to);
    ASSERT_TRUE(a.ok() && b.ok());
    const std::vector<RingMove> moves = DiffRings(*a, *b);
    ASSERT_EQ(moves.size(), 1u) << "stage " << i + 1;
    EXPECT_EQ(moves[0].from, "shard-1");
    EXPECT_EQ(moves[0].to, plan.stages[i]);
    from = to;
  }
  const std::string text = PlanText(plan, std::vector<MoveEstimate>(plan.moves.size()));
  EXPECT_THAT(text, HasSubstr("stage 2/3: shard-1 -> shard-2, then ring version 4 (vnodes 1024, "
                              "shards shard-0,shard-1,shard-2,shard-3, draining shard-1 to "
                              "shard-0,shard-2)"));
  EXPECT_EQ(PlanJson(plan, std::vector<MoveEstimate>(plan.moves.size()))["stages"].size(), 3u);

  // Cancelled after stage 1 switched: planning again plans what is left.
  const ReshardPlan again = MustPlan(plan.stage_rings[0], ReshardKind::kRemove, "shard-1");
  EXPECT_EQ(again.stages, (std::vector<std::string>{"shard-2", "shard-3"}));
  EXPECT_EQ(again.to.version, plan.to.version);
  EXPECT_EQ(again.to.shards, plan.to.shards);
}

TEST(ReshardPlanTest, RefusesAnotherChangeWhileTheRingDrainsAShard) {
  coord::RingRecord ring = Ring({"shard-0", "shard-1", "shard-2"}, 3);
  ring.draining = RingDrain{"shard-1", {"shard-0"}};
  EXPECT_EQ(PlanReshard(ring, ReshardKind::kAdd, "shard-3").status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(PlanReshard(ring, ReshardKind::kRemove, "shard-2").status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(ReshardPlanTest, RefusesWhatCannotBeDone) {
  const coord::RingRecord three = Ring({"shard-0", "shard-1", "shard-2"});
  struct Case {
    coord::RingRecord ring;
    ReshardKind kind;
    std::string shard;
    absl::StatusCode code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {three, ReshardKind::kAdd, "shard-1", absl::StatusCode::kFailedPrecondition,
       "shard shard-1 is in the ring already: version 1 (vnodes 1024, shards "
       "shard-0,shard-1,shard-2)"},
      {three, ReshardKind::kRemove, "shard-9", absl::StatusCode::kFailedPrecondition,
       "shard shard-9 is not in the ring"},
      {Ring({"only"}), ReshardKind::kRemove, "only", absl::StatusCode::kFailedPrecondition,
       "the ring's only shard"},
      {three, ReshardKind::kAdd, "shard#3", absl::StatusCode::kInvalidArgument,
       "may only hold letters, digits"},
      {three, ReshardKind::kAdd, "", absl::StatusCode::kInvalidArgument, "empty"},
      {three, ReshardKind::kAdd, std::string(65, 's'), absl::StatusCode::kInvalidArgument,
       "longer than 64"},
      {three, ReshardKind::kRemove, "a/b", absl::StatusCode::kInvalidArgument, "may only hold"},
      {Ring({"a", "b"}, 1, 0), ReshardKind::kAdd, "c", absl::StatusCode::kFailedPrecondition,
       "the ring in etcd cannot be built: vnodes is 0"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<ReshardPlan> plan = PlanReshard(c.ring, c.kind, c.shard);
    ASSERT_FALSE(plan.ok()) << c.shard;
    EXPECT_EQ(plan.status().code(), c.code) << plan.status();
    EXPECT_THAT(plan.status().message(), HasSubstr(c.message));
  }
}

TEST(ReshardPlanTest, EstimatesScaleTheSourceBySharesAndSayWhyWhenUnknown) {
  PlannedMove move;
  move.from = "shard-0";
  move.to = "shard-3";
  move.fraction = 0.08;
  move.source_share = 0.32;  // A quarter of the source's positions move.
  const MoveEstimate known = EstimateMove(move, SourceSize{100'000, 40'000'000});
  ASSERT_TRUE(known.keys.has_value());
  EXPECT_EQ(*known.keys, 25'000u);
  EXPECT_EQ(*known.bytes, 10'000'000u);
  const MoveEstimate unknown = EstimateMove(move, absl::DeadlineExceededError("deadline exceeded"));
  EXPECT_FALSE(unknown.keys.has_value());
  EXPECT_FALSE(unknown.bytes.has_value());
  EXPECT_EQ(unknown.unknown_why, "deadline exceeded");
  // Never more than the source holds, whatever rounding gives.
  move.fraction = 0.3200001;
  EXPECT_EQ(*EstimateMove(move, SourceSize{7, 7}).keys, 7u);
}

TEST(ReshardPlanTest, TextHasARowPerMoveATotalAndWhyAnEstimateIsUnknown) {
  const ReshardPlan plan =
      MustPlan(Ring({"shard-0", "shard-1", "shard-2"}), ReshardKind::kAdd, "shard-3");
  std::vector<MoveEstimate> estimates;
  for (const PlannedMove& m : plan.moves) {
    estimates.push_back(m.from == "shard-1" ? EstimateMove(m, absl::UnavailableError("no leader"))
                                            : EstimateMove(m, SourceSize{1000, 1 << 20}));
  }
  const std::string text = PlanText(plan, estimates);
  EXPECT_THAT(text, HasSubstr("plan: add shard shard-3"));
  EXPECT_THAT(text,
              HasSubstr("-> version 2 (vnodes 1024, shards shard-0,shard-1,shard-2,shard-3)"));
  EXPECT_THAT(text, HasSubstr("source   destination   ranges  fraction"));
  EXPECT_THAT(text, HasSubstr("shard-1: size unknown: no leader"));
  EXPECT_THAT(text, HasSubstr(absl::StrFormat("%.2f%%", plan.TotalFraction() * 100)));
  // One row per move, a header and a total.
  int rows = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::StartsWith(line, "shard-") && absl::StrContains(line, "%")) ++rows;
    if (absl::StartsWith(line, "total")) {
      EXPECT_THAT(std::string(line), HasSubstr("unknown"));
    }
  }
  EXPECT_EQ(rows, 3);
}

TEST(ReshardPlanTest, JsonCarriesTheRangesAndNullForUnknownEstimates) {
  const ReshardPlan plan =
      MustPlan(Ring({"shard-0", "shard-1", "shard-2"}), ReshardKind::kAdd, "shard-3");
  std::vector<MoveEstimate> estimates;
  for (const PlannedMove& m : plan.moves) {
    estimates.push_back(m.from == "shard-2" ? EstimateMove(m, absl::UnavailableError("down"))
                                            : EstimateMove(m, SourceSize{3000, 3000}));
  }
  const nlohmann::json json = PlanJson(plan, estimates);
  EXPECT_EQ(json["kind"], "add");
  EXPECT_EQ(json["shard"], "shard-3");
  EXPECT_EQ(json["from"]["version"], 1);
  EXPECT_EQ(json["to"]["version"], 2);
  EXPECT_EQ(json["limit"], kMaxMovedFraction);
  EXPECT_EQ(json["over_limit"], false);
  ASSERT_EQ(json["moves"].size(), 3u);
  double sum = 0;
  for (size_t i = 0; i < 3; ++i) {
    const nlohmann::json& m = json["moves"][i];
    sum += m["fraction"].get<double>();
    EXPECT_EQ(m["range_count"], plan.moves[i].ranges.ranges().size());
    ASSERT_EQ(m["ranges"].size(), plan.moves[i].ranges.ranges().size());
    const PositionRange& first = plan.moves[i].ranges.ranges()[0];
    EXPECT_EQ(m["ranges"][0][0], absl::StrFormat("0x%016x", first.first));
    EXPECT_EQ(m["ranges"][0][1], absl::StrFormat("0x%016x", first.last));
    if (plan.moves[i].from == "shard-2") {
      EXPECT_TRUE(m["keys_estimate"].is_null());
      EXPECT_EQ(m["estimate_unknown"], "down");
    } else {
      EXPECT_TRUE(m["keys_estimate"].is_number_unsigned());
    }
  }
  EXPECT_NEAR(json["total"]["fraction"].get<double>(), sum, 1e-12);
  EXPECT_TRUE(json["total"]["keys_estimate"].is_null());
}

TEST(ReshardPlanTest, MigrationIdsSortByTimeAndNeverClashWithActive) {
  const absl::Time t = absl::FromUnixSeconds(1796296933);  // 2026-12-03T11:22:13Z
  EXPECT_EQ(NewMigrationId(t, 0x0ce9ce), "m20261203T112213Z-0ce9ce");
  EXPECT_EQ(NewMigrationId(t, 0xff0ce9ce), "m20261203T112213Z-0ce9ce");  // 6 hex digits.
  EXPECT_LT(NewMigrationId(t, 0xffffff), NewMigrationId(t + absl::Seconds(1), 0));
}

TEST(UnitsTest, ByteRatesTakePlainBytesAndBinaryUnits) {
  struct Case {
    const char* text;
    int64_t bytes;
  };
  const Case good[] = {
      {"33554432", 33554432},
      {"32MiB/s", 32 << 20},
      {"32 MiB/s", 32 << 20},
      {"32mib/s", 32 << 20},
      {"32MiB", 32 << 20},
      {"512KiB/s", 512 << 10},
      {"1GiB/s", int64_t{1} << 30},
      {"1.5GiB/s", int64_t{3} << 29},
      {"100B/s", 100},
      {"100B", 100},
      {" 4MiB/s ", 4 << 20},
      {"1", 1},
  };
  for (const Case& c : good) {
    absl::StatusOr<int64_t> rate = ParseByteRate(c.text);
    ASSERT_TRUE(rate.ok()) << c.text << ": " << rate.status();
    EXPECT_EQ(*rate, c.bytes) << c.text;
  }
  const char* bad[] = {"",    "fast", "32MB/s", "-1MiB/s", "0",     "0.5",
                       "1e6", "/s",   "MiB/s",  "1..5MiB", "32TiB", "99999999999GiB/s"};
  for (const char* text : bad) {
    absl::StatusOr<int64_t> rate = ParseByteRate(text);
    EXPECT_FALSE(rate.ok()) << text << " -> " << (rate.ok() ? *rate : 0);
    if (!rate.ok()) {
      EXPECT_THAT(rate.status().message(), HasSubstr("32MiB/s")) << "names the forms";
    }
  }
}

TEST(UnitsTest, SizesAndRatesReadAsPeopleWriteThem) {
  EXPECT_EQ(HumanBytes(512), "512 B");
  EXPECT_EQ(HumanBytes(1536), "1.5 KiB");
  EXPECT_EQ(HumanBytes(32 << 20), "32.0 MiB");
  EXPECT_EQ(HumanRate(32 << 20), "32.0 MiB/s");
  EXPECT_EQ(HumanRate(0), "0 B/s");
}

}  // namespace
}  // namespace kvstore::reshard
