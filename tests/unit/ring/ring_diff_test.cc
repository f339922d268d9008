// DiffRings and RangeSet (common/ring/ring_diff.h): the positions that change
// owner between two rings, checked against a brute-force count of random keys
// and, exactly, against every token boundary of both rings; how much a fourth
// shard takes; what a removal gives away; and RangeSet's edge cases (merging,
// the ends of the ring, a range that wraps).
//
// The random tests print their seed; rerun one with
//   KV_TEST_SEED=<seed> build/bin/ring_diff_test --gtest_filter=<test>
#include "common/ring/ring_diff.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/ring/hash_ring.h"
#include "gtest/gtest.h"

namespace kvstore {
namespace {

constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
constexpr int kKeys = 1'000'000;
// The planned fraction must match the sampled one within 0.2 percentage
// points; with 1,000,000 keys a share's standard error is under 0.05 points.
constexpr double kSampleTolerance = 0.002;
// design.md §6: adding a fourth shard moves at most 27 % of the keys.
constexpr double kFourthShardLimit = 0.27;

// $KV_TEST_SEED, else `fallback` (0: a fresh random seed); printed either way.
uint64_t Seed(const char* test, uint64_t fallback = 0) {
  uint64_t seed = fallback;
  const char* env = std::getenv("KV_TEST_SEED");
  if (env == nullptr || !absl::SimpleAtoi(env, &seed)) {
    if (fallback == 0) seed = std::random_device()();
  }
  std::printf("[  SEED    ] %s: KV_TEST_SEED=%llu\n", test, static_cast<unsigned long long>(seed));
  ::testing::Test::RecordProperty("seed", std::to_string(seed));
  return seed;
}

HashRing MustBuild(std::vector<std::string> shards, int vnodes = HashRing::kDefaultVirtualNodes) {
  absl::StatusOr<HashRing> ring = HashRing::Build(std::move(shards), vnodes);
  EXPECT_TRUE(ring.ok()) << ring.status();
  return *std::move(ring);
}

// Random 16-byte keys, generated one at a time into the same buffer.
class RandomKeys {
 public:
  explicit RandomKeys(uint64_t seed) : rng_(seed), key_(16, '\0') {}
  const std::string& Next() {
    const uint64_t a = rng_(), b = rng_();
    std::memcpy(key_.data(), &a, 8);
    std::memcpy(key_.data() + 8, &b, 8);
    return key_;
  }

 private:
  std::mt19937_64 rng_;
  std::string key_;
};

double TotalFraction(const std::vector<RingMove>& moves) {
  double total = 0;
  for (const RingMove& m : moves) total += m.ranges.Fraction();
  return total;
}

// Positions in a set, exactly (2^64 does not fit a uint64_t).
unsigned __int128 Positions(const RangeSet& set) {
  unsigned __int128 n = 0;
  for (const PositionRange& r : set.ranges())
    n += static_cast<unsigned __int128>(r.last - r.first) + 1;
  return n;
}

// Positions `ring` gives to `shard`, exactly, from its tokens: token k owns
// (token[k-1], token[k]], the first token also the wrap.
unsigned __int128 OwnedPositions(const HashRing& ring, const std::string& shard) {
  const std::vector<uint64_t>& t = ring.token_hashes();
  unsigned __int128 n = 0;
  for (size_t k = 0; k < t.size(); ++k) {
    if (ring.shards()[ring.OwnerOfPosition(t[k])] != shard) continue;
    if (k == 0) {
      n += static_cast<unsigned __int128>(t[0]) + 1 + (kMax - t.back());
    } else {
      n += t[k] - t[k - 1];
    }
  }
  return n;
}

// The exact check: every range of every move starts and ends on positions
// owned by `from` before and by `to` after (owners are constant between token
// boundaries, and each boundary of either ring is a range end or inside an
// unmoved stretch), and on every boundary of either ring, the position and the
// one after it are in a move exactly when their owner changes, in that move.
void ExpectMovesMatchOwners(const HashRing& before, const HashRing& after,
                            const std::vector<RingMove>& moves) {
  std::map<std::pair<std::string, std::string>, const RangeSet*> by_pair;
  for (const RingMove& m : moves) {
    ASSERT_NE(m.from, m.to);
    ASSERT_FALSE(m.ranges.empty()) << m.from << " -> " << m.to;
    by_pair[{m.from, m.to}] = &m.ranges;
    for (const PositionRange& r : m.ranges.ranges()) {
      for (uint64_t p : {r.first, r.last}) {
        ASSERT_EQ(before.shards()[before.OwnerOfPosition(p)], m.from) << absl::StrFormat("%#x", p);
        ASSERT_EQ(after.shards()[after.OwnerOfPosition(p)], m.to) << absl::StrFormat("%#x", p);
      }
    }
  }
  std::vector<uint64_t> bounds = before.token_hashes();
  bounds.insert(bounds.end(), after.token_hashes().begin(), after.token_hashes().end());
  bounds.push_back(0);
  bounds.push_back(kMax);
  size_t checked = 0;
  for (uint64_t b : bounds) {
    for (uint64_t p : {b, b + 1}) {  // b + 1 wraps to 0 at the top: fine.
      const std::string& from = before.shards()[before.OwnerOfPosition(p)];
      const std::string& to = after.shards()[after.OwnerOfPosition(p)];
      for (const auto& [pair, set] : by_pair) {
        const bool expected = pair.first == from && pair.second == to;
        ASSERT_EQ(set->Contains(p), expected) << absl::StrFormat(
            "position %#x: %s -> %s, move %s -> %s", p, from, to, pair.first, pair.second);
      }
      ++checked;
    }
  }
  EXPECT_GT(checked, 0u);
}

// Moves keys between `before` and `after` one by one and compares each
// (from, to) count, and the total, with the planned fractions; every key is
// in the move of its own owners and in no other.
void ExpectPlanMatchesKeyCount(const HashRing& before, const HashRing& after, uint64_t seed) {
  const std::vector<RingMove> moves = DiffRings(before, after);
  std::map<std::pair<std::string, std::string>, const RangeSet*> by_pair;
  for (const RingMove& m : moves) by_pair[{m.from, m.to}] = &m.ranges;
  std::map<std::pair<std::string, std::string>, int> counted;
  int moved = 0;
  RandomKeys keys(seed);
  for (int i = 0; i < kKeys; ++i) {
    const std::string& key = keys.Next();
    const std::string& from = before.Owner(key);
    const std::string& to = after.Owner(key);
    if (from != to) {
      ++counted[{from, to}];
      ++moved;
    }
    for (const auto& [pair, set] : by_pair) {
      ASSERT_EQ(set->ContainsKey(key), pair.first == from && pair.second == to)
          << "key " << absl::BytesToHexString(key) << " " << from << " -> " << to;
    }
  }
  for (const RingMove& m : moves) {
    const double sampled = static_cast<double>(counted[{m.from, m.to}]) / kKeys;
    std::printf("  %s -> %s: planned %.4f%%, sampled %.4f%%\n", m.from.c_str(), m.to.c_str(),
                m.ranges.Fraction() * 100, sampled * 100);
    EXPECT_NEAR(m.ranges.Fraction(), sampled, kSampleTolerance) << m.from << " -> " << m.to;
  }
  for (const auto& [pair, count] : counted) {
    EXPECT_EQ(by_pair.count(pair), 1u)
        << pair.first << " -> " << pair.second << " moved " << count << " keys but is not planned";
  }
  const double sampled_total = static_cast<double>(moved) / kKeys;
  std::printf("  total: planned %.4f%%, sampled %.4f%%\n", TotalFraction(moves) * 100,
              sampled_total * 100);
  EXPECT_NEAR(TotalFraction(moves), sampled_total, kSampleTolerance);
}

// ---------------------------------------------------------------- plan vs. keys

TEST(RingDiffTest, PlannedFractionsOfAnAddedShardMatchABruteForceKeyCount) {
  HashRing three = MustBuild({"shard-0", "shard-1", "shard-2"});
  HashRing four = MustBuild({"shard-0", "shard-1", "shard-2", "shard-3"});
  const uint64_t seed = Seed("PlannedFractionsOfAnAddedShardMatchABruteForceKeyCount");
  ExpectPlanMatchesKeyCount(three, four, seed);
  ExpectMovesMatchOwners(three, four, DiffRings(three, four));
}

TEST(RingDiffTest, PlannedFractionsOfARemovedShardMatchABruteForceKeyCount) {
  HashRing four = MustBuild({"shard-0", "shard-1", "shard-2", "shard-3"});
  HashRing three = MustBuild({"shard-0", "shard-2", "shard-3"});
  const uint64_t seed = Seed("PlannedFractionsOfARemovedShardMatchABruteForceKeyCount");
  ExpectPlanMatchesKeyCount(four, three, seed);
  ExpectMovesMatchOwners(four, three, DiffRings(four, three));
}

TEST(RingDiffTest, PlannedFractionsMatchAKeyCountWhenVnodesChangeToo) {
  // Every shard moves to every other: many (from, to) pairs, all checked.
  HashRing before = MustBuild({"a", "b", "c"}, 64);
  HashRing after = MustBuild({"a", "b", "c", "d"}, 256);
  const uint64_t seed = Seed("PlannedFractionsMatchAKeyCountWhenVnodesChangeToo");
  ExpectPlanMatchesKeyCount(before, after, seed);
  ExpectMovesMatchOwners(before, after, DiffRings(before, after));
}

// ---------------------------------------------------------------- how much moves

TEST(RingDiffTest, AFourthShardWithTheDefaultNamesTakesAtMost27PercentOnlyFromTheOthers) {
  HashRing three = MustBuild({"shard-0", "shard-1", "shard-2"});
  HashRing four = MustBuild({"shard-0", "shard-1", "shard-2", "shard-3"});
  const std::vector<RingMove> moves = DiffRings(three, four);
  ASSERT_EQ(moves.size(), 3u);
  for (const RingMove& m : moves) EXPECT_EQ(m.to, "shard-3") << m.from;
  const double total = TotalFraction(moves);
  std::printf("shard-3 takes %.4f%%\n", total * 100);
  EXPECT_LE(total, kFourthShardLimit);
  // Exactly the share the new ring gives it.
  EXPECT_NEAR(total, four.Ownership()[3], 1e-12);
  unsigned __int128 moved = 0;
  for (const RingMove& m : moves) moved += Positions(m.ranges);
  EXPECT_TRUE(moved == OwnedPositions(four, "shard-3"));
}

// design.md §7: over 300 random name sets with 1024 vnodes a 4th shard takes
// at most about 27 %. That is a property of the sets measured, not of every
// set: about 1 random set in 500 gives a 4th shard more than 27 % (14-29 sets
// of 10,000 for seeds 1, 2, 3 and 7, at most 28.1 %), so with a fresh seed each
// run this test would fail about every other time. It uses seed 1 with the
// name generator of tests/bench/ring_balance.cc (23.2-26.8 % over the first
// 300 sets; the first set above 27 % is number 694). KV_TEST_SEED explores
// other sets, and may find one.
TEST(RingDiffTest, AFourthShardTakesAtMost27PercentFor300RandomNameSets) {
  std::mt19937_64 rng(Seed("AFourthShardTakesAtMost27PercentFor300RandomNameSets", 1));
  double lowest = 1, highest = 0;
  for (int set = 0; set < 300; ++set) {
    std::vector<std::string> names;
    for (int i = 0; i < 4; ++i) names.push_back(absl::StrFormat("node-%016x", rng()));
    HashRing three = MustBuild({names[0], names[1], names[2]}, 1024);
    HashRing four = MustBuild(names, 1024);
    const std::vector<RingMove> moves = DiffRings(three, four);
    for (const RingMove& m : moves) ASSERT_EQ(m.to, names[3]) << "set " << set;
    const double total = TotalFraction(moves);
    ASSERT_NEAR(total, four.Ownership()[3], 1e-12) << "set " << set;
    EXPECT_LE(total, kFourthShardLimit) << "set " << set << ": " << names[0] << "," << names[1]
                                        << "," << names[2] << " + " << names[3];
    lowest = std::min(lowest, total);
    highest = std::max(highest, total);
  }
  std::printf("a 4th shard takes %.2f%% - %.2f%% over 300 name sets\n", lowest * 100,
              highest * 100);
}

TEST(RingDiffTest, RemovingAShardMovesExactlyItsShareToTheOthers) {
  HashRing four = MustBuild({"shard-0", "shard-1", "shard-2", "shard-3"});
  HashRing three = MustBuild({"shard-0", "shard-2", "shard-3"});
  const std::vector<RingMove> moves = DiffRings(four, three);
  ASSERT_EQ(moves.size(), 3u);  // To each of its ring neighbours.
  unsigned __int128 moved = 0;
  for (const RingMove& m : moves) {
    EXPECT_EQ(m.from, "shard-1") << m.to;
    EXPECT_NE(m.to, "shard-1");
    moved += Positions(m.ranges);
  }
  EXPECT_TRUE(moved == OwnedPositions(four, "shard-1"))
      << "moved " << static_cast<double>(moved) << " positions, shard-1 owned "
      << static_cast<double>(OwnedPositions(four, "shard-1"));
  EXPECT_NEAR(TotalFraction(moves), four.Ownership()[1], 1e-12);
  ExpectMovesMatchOwners(four, three, moves);
}

TEST(RingDiffTest, TheSameRingMovesNothing) {
  HashRing a = MustBuild({"shard-0", "shard-1"});
  HashRing b = MustBuild({"shard-1", "shard-0"});  // Order does not matter.
  EXPECT_TRUE(DiffRings(a, b).empty());
}

TEST(RingDiffTest, ARangeThatWrapsIsSplitAtTheTopOfTheRing) {
  // One token each: "a#0", and a second shard whose token is below it, so the
  // new shard owns the wrap: (a, 2^64) and [0, its token].
  const uint64_t a = HashRing::TokenHash("a", 0);
  std::string name;
  for (int i = 0; name.empty(); ++i) {
    const std::string candidate = absl::StrCat("b", i);
    if (HashRing::TokenHash(candidate, 0) < a) name = candidate;
  }
  const uint64_t b = HashRing::TokenHash(name, 0);
  HashRing before = MustBuild({"a"}, 1);
  HashRing after = MustBuild({"a", name}, 1);
  const std::vector<RingMove> moves = DiffRings(before, after);
  ASSERT_EQ(moves.size(), 1u);
  EXPECT_EQ(moves[0].from, "a");
  EXPECT_EQ(moves[0].to, name);
  const std::vector<PositionRange> expected = {{0, b}, {a + 1, kMax}};
  EXPECT_EQ(moves[0].ranges.ranges(), expected);
  EXPECT_TRUE(moves[0].ranges.Contains(0));
  EXPECT_TRUE(moves[0].ranges.Contains(kMax));
  EXPECT_FALSE(moves[0].ranges.Contains(a));
  EXPECT_FALSE(moves[0].ranges.Contains(b + 1));
  EXPECT_NEAR(moves[0].ranges.Fraction(), after.Ownership()[1], 1e-15);

  // And back: the removal gives the same two ranges to "a".
  const std::vector<RingMove> back = DiffRings(after, before);
  ASSERT_EQ(back.size(), 1u);
  EXPECT_EQ(back[0].from, name);
  EXPECT_EQ(back[0].ranges.ranges(), expected);
}

// ---------------------------------------------------------------- RangeSet

TEST(RangeSetTest, OverlappingContainedAndAdjacentRangesMergeInAnyOrder) {
  RangeSet set({{40, 50}, {10, 20}, {15, 30}, {31, 35}, {12, 13}, {52, 60}});
  const std::vector<PositionRange> expected = {{10, 35}, {40, 50}, {52, 60}};
  EXPECT_EQ(set.ranges(), expected);
  EXPECT_FALSE(set.Contains(9));
  EXPECT_TRUE(set.Contains(10));
  EXPECT_TRUE(set.Contains(35));
  EXPECT_FALSE(set.Contains(36));
  EXPECT_FALSE(set.Contains(51));  // A gap of one position stays a gap.
  EXPECT_TRUE(set.Contains(52));
  EXPECT_FALSE(set.Contains(61));
  EXPECT_DOUBLE_EQ(set.Fraction(), (26.0 + 11.0 + 9.0) / 18446744073709551616.0);
}

TEST(RangeSetTest, EmptySetContainsNothing) {
  RangeSet set;
  EXPECT_TRUE(set.empty());
  EXPECT_FALSE(set.Contains(0));
  EXPECT_FALSE(set.Contains(kMax));
  EXPECT_EQ(set.Fraction(), 0.0);
  EXPECT_TRUE(RangeSet(std::vector<PositionRange>{}).empty());
}

TEST(RangeSetTest, TheFirstAndLastPositionsOfTheRing) {
  RangeSet ends({{kMax, kMax}, {0, 0}});
  const std::vector<PositionRange> expected = {{0, 0}, {kMax, kMax}};
  EXPECT_EQ(ends.ranges(), expected);  // Never merged across the top: ranges do not wrap.
  EXPECT_TRUE(ends.Contains(0));
  EXPECT_FALSE(ends.Contains(1));
  EXPECT_FALSE(ends.Contains(kMax - 1));
  EXPECT_TRUE(ends.Contains(kMax));
  EXPECT_DOUBLE_EQ(ends.Fraction(), 2.0 / 18446744073709551616.0);

  // Merging into a range that already ends at 2^64 - 1 must not overflow.
  RangeSet top({{5, kMax}, {kMax, kMax}, {kMax - 3, kMax - 1}});
  EXPECT_EQ(top.ranges(), (std::vector<PositionRange>{{5, kMax}}));
  RangeSet adjacent_to_top({{kMax - 1, kMax - 1}, {kMax, kMax}});
  EXPECT_EQ(adjacent_to_top.ranges(), (std::vector<PositionRange>{{kMax - 1, kMax}}));

  RangeSet whole({{0, kMax}});
  EXPECT_TRUE(whole.Contains(0));
  EXPECT_TRUE(whole.Contains(kMax));
  EXPECT_EQ(whole.Fraction(), 1.0);
  RangeSet halves({{1ull << 63, kMax}, {0, (1ull << 63) - 1}});
  EXPECT_EQ(halves.ranges(), (std::vector<PositionRange>{{0, kMax}}));
  EXPECT_EQ(halves.Fraction(), 1.0);
}

}  // namespace
}  // namespace kvstore
