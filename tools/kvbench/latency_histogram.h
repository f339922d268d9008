// LatencyHistogram: counts of latencies in log-linear buckets, in the manner of
// HdrHistogram (written here: no Debian package fits), so a run of any length
// takes a fixed 20 KiB instead of a sorted vector of every sample.
//
// Values are whole microseconds. 0..255 µs each have their own bucket (exact);
// above that every power of two is split into 128 equal buckets, so a bucket's
// width is at most 1/128 (0.8 %) of its lower bound. Values above kMaxValue
// (60 s) are counted in the last bucket and in Saturated().
//
// Not thread-safe: one histogram per thread or per request slot, Merge() after.
#ifndef KVSTORE_TOOLS_KVBENCH_LATENCY_HISTOGRAM_H_
#define KVSTORE_TOOLS_KVBENCH_LATENCY_HISTOGRAM_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace kvstore::bench {

class LatencyHistogram {
 public:
  static constexpr uint64_t kMaxValue = 60'000'000;  // 60 s in µs
  // 2^kSubBucketBits buckets per power of two; values below 2 * that are exact.
  static constexpr int kSubBucketBits = 7;

  LatencyHistogram();

  void Record(uint64_t value_us);
  // Adds every count of `other` (same bucket layout by construction).
  void Merge(const LatencyHistogram& other);

  uint64_t Count() const { return count_; }
  uint64_t Saturated() const { return saturated_; }
  // Exact, from the recorded values (clamped to kMaxValue). 0 when empty.
  uint64_t Min() const { return count_ == 0 ? 0 : min_; }
  uint64_t Max() const { return max_; }
  double Mean() const;

  // The smallest value v such that at least `percentile` % of the recorded
  // values are <= v, up to the bucket's precision: the highest value of the
  // bucket holding that rank, never above Max(). 0 when empty.
  uint64_t Percentile(double percentile) const;

  // Bucket layout, exposed for tests: every value maps to one index; a bucket
  // covers [BucketLow(i), BucketHigh(i)].
  static size_t BucketIndex(uint64_t value_us);
  static uint64_t BucketLow(size_t index);
  static uint64_t BucketHigh(size_t index);
  static size_t BucketCount();

 private:
  std::vector<uint64_t> counts_;
  uint64_t count_ = 0;
  uint64_t saturated_ = 0;
  uint64_t min_ = 0;
  uint64_t max_ = 0;
  long double sum_ = 0;
};

}  // namespace kvstore::bench

#endif  // KVSTORE_TOOLS_KVBENCH_LATENCY_HISTOGRAM_H_
