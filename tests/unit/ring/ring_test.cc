// HashRing: the exact algorithm (golden hashes and owners, so any change of
// hash or token format breaks here first), balance, and how few keys move
// when a shard joins or leaves.
//
// The random tests print their seed; rerun one with
//   KV_TEST_SEED=<seed> build/bin/ring_test --gtest_filter=<test>
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "common/ring/hash_ring.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvstore {
namespace {

using ::testing::HasSubstr;

constexpr int kKeys = 1'000'000;

uint64_t Seed(const char* test) {
  uint64_t seed = 0;
  const char* env = std::getenv("KV_TEST_SEED");
  if (env == nullptr || !absl::SimpleAtoi(env, &seed)) seed = std::random_device()();
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

// ---------------------------------------------------------------- the algorithm, pinned

// Values checked against `printf '%s' KEY | xxh64sum` (Debian's xxhash):
// another implementation of XXH64 with seed 0 must produce the same.
TEST(HashRingTest, KeyHashIsXxh64WithSeedZero) {
  EXPECT_EQ(HashRing::KeyHash(""), 0xef46db3751d8e999ull);
  EXPECT_EQ(HashRing::KeyHash("a"), 0xd24ec4f1a98c6e5bull);
  EXPECT_EQ(HashRing::KeyHash("hello"), 0x26c7827d889f6da3ull);
}

TEST(HashRingTest, TokenIsHashOfNameHashDecimalIndex) {
  EXPECT_EQ(HashRing::TokenHash("shard-0", 0), 0xfb4af3c85fff4892ull);
  EXPECT_EQ(HashRing::TokenHash("shard-1", 0), 0x3ea0b605ca5ec0f3ull);
  EXPECT_EQ(HashRing::TokenHash("shard-2", 0), 0x962f66b1b8cf6fbeull);
  EXPECT_EQ(HashRing::TokenHash("shard-0", 1023), HashRing::KeyHash("shard-0#1023"));
}

// Owners under the 3-shard topology of docs/ring.md, computed once by this
// code and pinned: a change of hash, token format, tie rule or default vnodes
// changes where existing keys live, and must be a deliberate decision.
TEST(HashRingTest, GoldenOwnersOfTheDocumentedTopology) {
  HashRing ring = MustBuild({"shard-0", "shard-1", "shard-2"});
  ASSERT_EQ(ring.vnodes(), 1024);
  struct Golden {
    const char* key;
    uint64_t hash;
    const char* owner;
  };
  const Golden golden[] = {
      {"greeting", 0xe7c5ca42cd4bed7full, "shard-1"},  // Token shard-1#489.
      {"user:42", 0xdc1fea7da8d2d1c2ull, "shard-1"},
      {"session-42", 0x2389e998631f091eull, "shard-2"},
      {"a", 0xd24ec4f1a98c6e5bull, "shard-0"},
      {"key-0001", 0x6d0dee4bbd2ca30bull, "shard-0"},
  };
  for (const Golden& g : golden) {
    EXPECT_EQ(HashRing::KeyHash(g.key), g.hash) << g.key;
    EXPECT_EQ(ring.Owner(g.key), g.owner) << g.key;
  }
  EXPECT_EQ(HashRing::TokenHash("shard-1", 489), 0xe7e63e157173b3b3ull);
}

TEST(HashRingTest, KeyOnATokenBelongsToItAndPastTheLastTokenWrapsToTheFirst) {
  HashRing ring = MustBuild({"a", "b"}, 1);
  const uint64_t a = HashRing::TokenHash("a", 0);
  const uint64_t b = HashRing::TokenHash("b", 0);
  const int ia = 0, ib = 1;
  const uint64_t lo = std::min(a, b), hi = std::max(a, b);
  const int owner_lo = lo == a ? ia : ib, owner_hi = lo == a ? ib : ia;
  EXPECT_EQ(ring.OwnerOfPosition(lo), owner_lo);
  EXPECT_EQ(ring.OwnerOfPosition(lo + 1), owner_hi);
  EXPECT_EQ(ring.OwnerOfPosition(hi), owner_hi);
  EXPECT_EQ(ring.OwnerOfPosition(hi + 1), owner_lo);  // Wraps.
  EXPECT_EQ(ring.OwnerOfPosition(UINT64_MAX), hi == UINT64_MAX ? owner_hi : owner_lo);
  EXPECT_EQ(ring.OwnerOfPosition(0), owner_lo);
}

TEST(HashRingTest, OrderOfShardNamesDoesNotChangeOwners) {
  HashRing forward = MustBuild({"shard-0", "shard-1", "shard-2"});
  HashRing backward = MustBuild({"shard-2", "shard-1", "shard-0"});
  RandomKeys keys(Seed("OrderOfShardNamesDoesNotChangeOwners"));
  for (int i = 0; i < 100'000; ++i) {
    const std::string& key = keys.Next();
    ASSERT_EQ(forward.Owner(key), backward.Owner(key));
  }
}

TEST(HashRingTest, OwnershipSumsToOneAndMatchesKeyCounts) {
  HashRing ring = MustBuild({"shard-0", "shard-1", "shard-2"});
  std::vector<double> fractions = ring.Ownership();
  ASSERT_EQ(fractions.size(), 3u);
  EXPECT_NEAR(std::accumulate(fractions.begin(), fractions.end(), 0.0), 1.0, 1e-12);
  std::vector<int> counts(3, 0);
  RandomKeys keys(Seed("OwnershipSumsToOneAndMatchesKeyCounts"));
  for (int i = 0; i < kKeys; ++i) ++counts[ring.OwnerIndex(keys.Next())];
  for (int s = 0; s < 3; ++s) {
    // 1M samples: a share's standard error is under 0.05 %.
    EXPECT_NEAR(static_cast<double>(counts[s]) / kKeys, fractions[s], 0.003) << "shard " << s;
  }
}

TEST(HashRingTest, OneShardOwnsEverything) {
  HashRing ring = MustBuild({"only"}, 1);
  EXPECT_EQ(ring.Ownership(), std::vector<double>{1.0});
  EXPECT_EQ(ring.Owner("anything"), "only");
}

TEST(HashRingTest, RejectsBadShardListsAndVnodes) {
  EXPECT_THAT(HashRing::Build({}, 8).status().message(), HasSubstr("at least one shard"));
  EXPECT_THAT(HashRing::Build({"a", "b", "a"}, 8).status().message(),
              HasSubstr("'a' appears twice"));
  EXPECT_THAT(HashRing::Build({"a", ""}, 8).status().message(), HasSubstr("empty"));
  EXPECT_THAT(HashRing::Build({"a"}, 0).status().message(), HasSubstr("vnodes is 0"));
  EXPECT_FALSE(HashRing::Build({"a"}, HashRing::kMaxVirtualNodes + 1).ok());
  EXPECT_TRUE(HashRing::Build({"a"}, HashRing::kMaxVirtualNodes).ok());
}

// ---------------------------------------------------------------- balance and movement

TEST(HashRingTest, ThreeShardsGetWithinTenPercentOfTheMean) {
  HashRing ring = MustBuild({"shard-0", "shard-1", "shard-2"});
  std::vector<int> counts(3, 0);
  RandomKeys keys(Seed("ThreeShardsGetWithinTenPercentOfTheMean"));
  for (int i = 0; i < kKeys; ++i) ++counts[ring.OwnerIndex(keys.Next())];
  const double mean = kKeys / 3.0;
  const double max_over_mean = *std::max_element(counts.begin(), counts.end()) / mean;
  std::printf("keys per shard: %d %d %d, max/mean %.4f\n", counts[0], counts[1], counts[2],
              max_over_mean);
  EXPECT_LE(max_over_mean, 1.10);
}

TEST(HashRingTest, AddingAFourthShardMovesAQuarterOfKeysOnlyOntoIt) {
  HashRing three = MustBuild({"shard-0", "shard-1", "shard-2"});
  HashRing four = MustBuild({"shard-0", "shard-1", "shard-2", "shard-3"});
  RandomKeys keys(Seed("AddingAFourthShardMovesAQuarterOfKeysOnlyOntoIt"));
  int moved = 0, moved_elsewhere = 0;
  for (int i = 0; i < kKeys; ++i) {
    const std::string& key = keys.Next();
    const int before = three.OwnerIndex(key);
    const int after = four.OwnerIndex(key);
    if (before == after) continue;
    ++moved;
    if (after != 3) ++moved_elsewhere;
  }
  const double fraction = static_cast<double>(moved) / kKeys;
  std::printf("moved %d of %d keys (%.2f%%)\n", moved, kKeys, fraction * 100);
  EXPECT_EQ(moved_elsewhere, 0) << "keys moved between the old shards";
  EXPECT_GE(fraction, 0.20);
  EXPECT_LE(fraction, 0.30);
}

TEST(HashRingTest, RemovingAShardMovesOnlyItsKeys) {
  HashRing four = MustBuild({"shard-0", "shard-1", "shard-2", "shard-3"});
  HashRing without_1 = MustBuild({"shard-0", "shard-2", "shard-3"});
  RandomKeys keys(Seed("RemovingAShardMovesOnlyItsKeys"));
  int moved = 0, others_moved = 0, on_removed = 0;
  for (int i = 0; i < kKeys; ++i) {
    const std::string& key = keys.Next();
    const std::string& before = four.Owner(key);
    const std::string& after = without_1.Owner(key);
    if (before == "shard-1") ++on_removed;
    if (before == after) continue;
    ++moved;
    if (before != "shard-1") ++others_moved;
  }
  std::printf("moved %d keys, %d were on the removed shard\n", moved, on_removed);
  EXPECT_EQ(others_moved, 0) << "keys of the remaining shards moved";
  EXPECT_EQ(moved, on_removed);
}

}  // namespace
}  // namespace kvstore
