// ZipfianGenerator (YCSB's algorithm) and the key choice built on it: ranks stay
// in range, the two most popular ranks come up as often as zipf's law says,
// popularity falls with rank, and the same seed gives the same keys.
#include "tools/kvbench/zipfian.h"

#include <cmath>
#include <cstdint>
#include <random>
#include <set>
#include <vector>

#include "gtest/gtest.h"
#include "tools/kvbench/workload.h"

namespace kvstore::bench {
namespace {

TEST(ZipfianTest, ZetaOfSmallN) {
  EXPECT_DOUBLE_EQ(ZipfianGenerator::Zeta(1, 0.99), 1.0);
  EXPECT_DOUBLE_EQ(ZipfianGenerator::Zeta(2, 0.99), 1.0 + std::pow(2.0, -0.99));
  EXPECT_NEAR(ZipfianGenerator::Zeta(3, 0.5), 1.0 + 1 / std::sqrt(2.0) + 1 / std::sqrt(3.0), 1e-12);
}

TEST(ZipfianTest, SamplesStayInRangeAtTheEdges) {
  for (const uint64_t n : {1ull, 2ull, 3ull, 10ull, 100000ull}) {
    ZipfianGenerator z(n);
    EXPECT_EQ(z.Sample(0.0), 0u) << n;
    EXPECT_LT(z.Sample(std::nextafter(1.0, 0.0)), n) << n;
    for (int i = 0; i <= 1000; ++i) ASSERT_LT(z.Sample(i / 1001.0), n) << n;
  }
}

TEST(ZipfianTest, FrequenciesFollowZipfsLaw) {
  constexpr uint64_t kItems = 1000;
  constexpr int kSamples = 400000;
  ZipfianGenerator z(kItems);
  std::mt19937_64 rng(7);  // fixed: deterministic
  std::vector<uint64_t> counts(kItems, 0);
  for (int i = 0; i < kSamples; ++i) ++counts[z.Sample(UniformDouble(rng))];
  // P(rank r) = 1 / ((r + 1)^theta * zeta(n)); ranks 0 and 1 are exact in YCSB's
  // algorithm, the rest follow an approximation of the CDF.
  auto expected = [&](uint64_t r) {
    return kSamples / (std::pow(static_cast<double>(r + 1), 0.99) * z.zetan());
  };
  EXPECT_NEAR(counts[0], expected(0), expected(0) * 0.02);
  EXPECT_NEAR(counts[1], expected(1), expected(1) * 0.03);
  // The head holds most of the mass, and popularity falls with rank.
  uint64_t head = 0, tail = 0;
  for (uint64_t r = 0; r < 10; ++r) head += counts[r];
  for (uint64_t r = kItems - 10; r < kItems; ++r) tail += counts[r];
  EXPECT_GT(head, 20 * tail);
  uint64_t first_hundred = 0, last_hundred = 0;
  for (uint64_t r = 0; r < 100; ++r) first_hundred += counts[r];
  for (uint64_t r = kItems - 100; r < kItems; ++r) last_hundred += counts[r];
  EXPECT_GT(first_hundred, 4 * last_hundred);
  // Every rank's total over [100, 1000) within 10 % of the law's.
  double expected_mid = 0;
  uint64_t mid = 0;
  for (uint64_t r = 100; r < kItems; ++r) {
    expected_mid += expected(r);
    mid += counts[r];
  }
  EXPECT_NEAR(mid, expected_mid, expected_mid * 0.10);
}

TEST(ZipfianTest, ScrambleSpreadsTheHotRanksOverTheKeySpace) {
  constexpr uint64_t kItems = 100000;
  std::set<uint64_t> keys;
  for (uint64_t r = 0; r < 100; ++r) {
    const uint64_t k = ScrambleRank(r, kItems);
    ASSERT_LT(k, kItems);
    keys.insert(k);
  }
  EXPECT_GE(keys.size(), 95u);                            // few collisions
  EXPECT_GT(*keys.rbegin() - *keys.begin(), kItems / 2);  // not clustered at 0
  EXPECT_EQ(Fnv1a64(0), 0xA8C7F832281A39C5ull);           // FNV-1a of eight zero bytes
}

TEST(KeyChooserTest, SameSeedSameKeys) {
  for (const Distribution d : {Distribution::kUniform, Distribution::kZipfian}) {
    KeyChooser chooser(d, 5000);
    std::mt19937_64 a(99), b(99);
    for (int i = 0; i < 1000; ++i) {
      const uint64_t k = chooser.Next(a);
      ASSERT_EQ(k, chooser.Next(b));
      ASSERT_LT(k, 5000u);
    }
  }
}

TEST(KeyChooserTest, KeyNamesMatchKvLoad) {
  EXPECT_EQ(KeyName(0), "key:0000000000");
  EXPECT_EQ(KeyName(1234567), "key:0001234567");
  std::string buffer = "something longer than a key";
  FormatKey(42, &buffer);
  EXPECT_EQ(buffer, "key:0000000042");
  FormatKey(9999999999ull, &buffer);
  EXPECT_EQ(buffer, "key:9999999999");
  FormatKey(12345678901ull, &buffer);
  EXPECT_EQ(buffer, "key:12345678901");
}

}  // namespace
}  // namespace kvstore::bench
