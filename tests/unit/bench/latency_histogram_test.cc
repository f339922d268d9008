// LatencyHistogram: the bucket layout (every value in exactly one bucket, each
// bucket at most 1/128 of its value wide), percentiles within that precision of
// the exact order statistics, merging, and the 60 s ceiling.
#include "tools/kvbench/latency_histogram.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace kvstore::bench {
namespace {

// The exact value of rank ceil(p% * n) in a sorted copy.
uint64_t ExactPercentile(std::vector<uint64_t> values, double p) {
  std::sort(values.begin(), values.end());
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * values.size()));
  rank = std::clamp<size_t>(rank, 1, values.size());
  return values[rank - 1];
}

TEST(LatencyHistogramTest, EmptyReportsZeros) {
  LatencyHistogram h;
  EXPECT_EQ(h.Count(), 0u);
  EXPECT_EQ(h.Percentile(50), 0u);
  EXPECT_EQ(h.Min(), 0u);
  EXPECT_EQ(h.Max(), 0u);
  EXPECT_EQ(h.Mean(), 0.0);
}

TEST(LatencyHistogramTest, SmallValuesAreExact) {
  for (uint64_t v = 0; v < 256; ++v) {
    EXPECT_EQ(LatencyHistogram::BucketIndex(v), v);
    EXPECT_EQ(LatencyHistogram::BucketLow(v), v);
    EXPECT_EQ(LatencyHistogram::BucketHigh(v), v);
  }
}

TEST(LatencyHistogramTest, BucketsTileTheRangeWithinOnePercent) {
  const size_t n = LatencyHistogram::BucketCount();
  EXPECT_LT(n, 4000u);  // a fixed, small footprint
  EXPECT_EQ(LatencyHistogram::BucketLow(0), 0u);
  for (size_t i = 0; i + 1 < n; ++i) {
    const uint64_t low = LatencyHistogram::BucketLow(i);
    const uint64_t high = LatencyHistogram::BucketHigh(i);
    ASSERT_LE(low, high) << i;
    ASSERT_EQ(LatencyHistogram::BucketLow(i + 1), high + 1) << "gap or overlap after " << i;
    ASSERT_EQ(LatencyHistogram::BucketIndex(low), i);
    ASSERT_EQ(LatencyHistogram::BucketIndex(high), i);
    ASSERT_LE(static_cast<double>(high - low + 1), std::max(1.0, low / 100.0)) << i;
  }
  EXPECT_EQ(LatencyHistogram::BucketIndex(LatencyHistogram::kMaxValue), n - 1);
  EXPECT_GE(LatencyHistogram::BucketHigh(n - 1), LatencyHistogram::kMaxValue);
}

TEST(LatencyHistogramTest, PercentilesOfOneToHundredThousand) {
  LatencyHistogram h;
  for (uint64_t v = 1; v <= 100000; ++v) h.Record(v);
  EXPECT_EQ(h.Count(), 100000u);
  EXPECT_EQ(h.Min(), 1u);
  EXPECT_EQ(h.Max(), 100000u);
  EXPECT_DOUBLE_EQ(h.Mean(), 50000.5);
  for (const double p : {1.0, 50.0, 90.0, 99.0, 99.9, 99.99}) {
    const double exact = std::ceil(p / 100.0 * 100000);
    const double got = static_cast<double>(h.Percentile(p));
    EXPECT_GE(got, exact) << p;  // the bucket's top: never below the true value
    EXPECT_LE(got, exact * 1.01) << p;
  }
  EXPECT_EQ(h.Percentile(100), 100000u);
  EXPECT_EQ(h.Percentile(0), 1u);
}

TEST(LatencyHistogramTest, PercentilesOfLongTailedSamplesWithinOnePercent) {
  std::mt19937_64 rng(42);  // fixed: the test is deterministic
  std::lognormal_distribution<double> latency(std::log(300.0), 1.0);
  std::vector<uint64_t> values;
  LatencyHistogram h;
  for (int i = 0; i < 200000; ++i) {
    const uint64_t v = static_cast<uint64_t>(latency(rng));
    values.push_back(v);
    h.Record(v);
  }
  for (const double p : {50.0, 99.0, 99.9}) {
    const double exact = static_cast<double>(ExactPercentile(values, p));
    const double got = static_cast<double>(h.Percentile(p));
    EXPECT_GE(got, exact) << p;
    EXPECT_LE(got, exact * 1.01 + 1) << p;
  }
}

TEST(LatencyHistogramTest, MergeEqualsRecordingEverythingInOne) {
  LatencyHistogram a, b, all;
  for (uint64_t v = 0; v < 5000; ++v) {
    const uint64_t x = v * v % 999983;
    (v % 3 == 0 ? a : b).Record(x);
    all.Record(x);
  }
  LatencyHistogram empty;
  a.Merge(empty);
  a.Merge(b);
  EXPECT_EQ(a.Count(), all.Count());
  EXPECT_EQ(a.Min(), all.Min());
  EXPECT_EQ(a.Max(), all.Max());
  EXPECT_DOUBLE_EQ(a.Mean(), all.Mean());
  for (const double p : {10.0, 50.0, 99.0, 99.9}) EXPECT_EQ(a.Percentile(p), all.Percentile(p));
  LatencyHistogram into_empty;
  into_empty.Merge(all);
  EXPECT_EQ(into_empty.Min(), all.Min());
  EXPECT_EQ(into_empty.Percentile(50), all.Percentile(50));
}

TEST(LatencyHistogramTest, ValuesAboveSixtySecondsSaturate) {
  LatencyHistogram h;
  h.Record(100);
  h.Record(LatencyHistogram::kMaxValue + 1);
  h.Record(uint64_t{1} << 62);
  EXPECT_EQ(h.Count(), 3u);
  EXPECT_EQ(h.Saturated(), 2u);
  EXPECT_EQ(h.Max(), LatencyHistogram::kMaxValue);
  EXPECT_EQ(h.Percentile(100), LatencyHistogram::kMaxValue);
  EXPECT_EQ(h.Percentile(10), 100u);
}

}  // namespace
}  // namespace kvstore::bench
