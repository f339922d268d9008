// A ring that drains a shard (common/ring/hash_ring.h, RingDrain): draining
// to every other shard gives exactly the owners of the ring without it (every
// token compared, and 1,000,000 random keys); each stage of a removal moves
// exactly one range set, from the drained shard to that stage's destination.
//
// The random test prints its seed; rerun it with
//   KV_TEST_SEED=<seed> build/bin/ring_drain_test --gtest_filter=<test>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "common/ring/hash_ring.h"
#include "common/ring/ring_diff.h"
#include "gtest/gtest.h"

namespace kvstore {
namespace {

const std::vector<std::string> kShards = {"s0", "s1", "s2", "s3"};

uint64_t Seed() {
  uint64_t seed = 0;
  const char* env = std::getenv("KV_TEST_SEED");
  if (env == nullptr || !absl::SimpleAtoi(env, &seed)) seed = std::random_device()();
  std::printf("seed %llu (KV_TEST_SEED=%llu reruns it)\n", static_cast<unsigned long long>(seed),
              static_cast<unsigned long long>(seed));
  return seed;
}

HashRing Drained(const std::vector<std::string>& handed_to, int vnodes = 64) {
  absl::StatusOr<HashRing> ring = HashRing::Build(kShards, vnodes, RingDrain{"s1", handed_to});
  EXPECT_TRUE(ring.ok()) << ring.status();
  return *std::move(ring);
}

HashRing Plain(const std::vector<std::string>& shards, int vnodes = 64) {
  absl::StatusOr<HashRing> ring = HashRing::Build(shards, vnodes);
  EXPECT_TRUE(ring.ok()) << ring.status();
  return *std::move(ring);
}

// The owner at every token of either ring (the points where an owner can
// change), by name.
void ExpectSameOwnersAtEveryToken(const HashRing& a, const HashRing& b) {
  std::set<uint64_t> points(a.token_hashes().begin(), a.token_hashes().end());
  points.insert(b.token_hashes().begin(), b.token_hashes().end());
  int checked = 0;
  for (uint64_t p : points) {
    for (uint64_t q : {p, p + 1}) {
      ASSERT_EQ(a.shards()[a.OwnerOfPosition(q)], b.shards()[b.OwnerOfPosition(q)])
          << "position " << q;
      ++checked;
    }
  }
  EXPECT_GT(checked, 0);
}

TEST(RingDrainTest, DrainingToEveryOtherShardOwnsExactlyAsTheRingWithoutIt) {
  for (int vnodes : {1, 16, 1024}) {
    SCOPED_TRACE(vnodes);
    const HashRing drained = Drained({"s0", "s2", "s3"}, vnodes);
    const HashRing without = Plain({"s0", "s2", "s3"}, vnodes);
    ExpectSameOwnersAtEveryToken(drained, without);
    EXPECT_TRUE(DiffRings(drained, without).empty());
    const std::vector<double> shares = drained.Ownership();
    EXPECT_EQ(shares[1], 0.0);  // s1
  }
}

TEST(RingDrainTest, DrainingToEveryOtherShardMatchesTheRingWithoutItForRandomKeys) {
  std::mt19937_64 random(Seed());
  const HashRing drained = Drained({"s0", "s2", "s3"}, HashRing::kDefaultVirtualNodes);
  const HashRing without = Plain({"s0", "s2", "s3"}, HashRing::kDefaultVirtualNodes);
  for (int i = 0; i < 1'000'000; ++i) {
    const std::string key = std::to_string(random());
    ASSERT_EQ(drained.Owner(key), without.Owner(key)) << "key " << key;
  }
}

TEST(RingDrainTest, AnEmptyHandOverOwnsAsTheRingWithoutADrain) {
  ExpectSameOwnersAtEveryToken(Drained({}), Plain(kShards));
}

TEST(RingDrainTest, EachStageMovesExactlyOneRangeSetFromTheDrainedShardToItsDestination) {
  const HashRing before = Plain(kShards, HashRing::kDefaultVirtualNodes);
  const HashRing stage1 = Drained({"s0"}, HashRing::kDefaultVirtualNodes);
  const HashRing stage2 = Drained({"s0", "s2"}, HashRing::kDefaultVirtualNodes);
  const HashRing last = Plain({"s0", "s2", "s3"}, HashRing::kDefaultVirtualNodes);
  const struct {
    const HashRing* from;
    const HashRing* to;
    std::string destination;
  } stages[] = {{&before, &stage1, "s0"}, {&stage1, &stage2, "s2"}, {&stage2, &last, "s3"}};
  double total = 0;
  for (const auto& stage : stages) {
    SCOPED_TRACE(stage.destination);
    const std::vector<RingMove> moves = DiffRings(*stage.from, *stage.to);
    ASSERT_EQ(moves.size(), 1u);
    EXPECT_EQ(moves[0].from, "s1");
    EXPECT_EQ(moves[0].to, stage.destination);
    EXPECT_GT(moves[0].ranges.Fraction(), 0.05);  // About a third of s1's quarter.
    total += moves[0].ranges.Fraction();
  }
  EXPECT_NEAR(total, before.Ownership()[1], 1e-12);
}

TEST(RingDrainTest, ATokenOfTheDrainedShardGoesToTheShardOfTheNextOtherToken) {
  // One token each: the ring order decides who follows s1.
  const HashRing plain = Plain(kShards, 1);
  size_t k = 0;
  while (plain.shards()[plain.OwnerOfPosition(plain.token_hashes()[k])] != "s1") ++k;
  const std::string next = plain.shards()[plain.OwnerOfPosition(plain.token_hashes()[(k + 1) % 4])];
  std::vector<std::string> others;
  for (const std::string& s : kShards) {
    if (s != "s1" && s != next) others.push_back(s);
  }
  const uint64_t token = plain.token_hashes()[k];
  // Handed to everyone but its successor: s1 keeps its token.
  const HashRing kept = Drained(others, 1);
  EXPECT_EQ(kept.shards()[kept.OwnerOfPosition(token)], "s1");
  // Handed to its successor: the successor owns s1's token.
  const HashRing handed = Drained({next}, 1);
  EXPECT_EQ(handed.shards()[handed.OwnerOfPosition(token)], next);
}

TEST(RingDrainTest, RejectsADrainOfAnUnknownShardOrAHandOverToItself) {
  EXPECT_FALSE(HashRing::Build(kShards, 8, RingDrain{"s9", {}}).ok());
  EXPECT_FALSE(HashRing::Build(kShards, 8, RingDrain{"s1", {"s1"}}).ok());
  EXPECT_FALSE(HashRing::Build(kShards, 8, RingDrain{"s1", {"s9"}}).ok());
}

}  // namespace
}  // namespace kvstore
