#include "tools/kvbench/latency_histogram.h"

#include <algorithm>
#include <cmath>

namespace kvstore::bench {
namespace {

constexpr uint64_t kSub = uint64_t{1} << LatencyHistogram::kSubBucketBits;  // 128
constexpr uint64_t kLinear = 2 * kSub;  // values below this are exact: 256

int HighestBit(uint64_t v) { return 63 - __builtin_clzll(v); }

}  // namespace

LatencyHistogram::LatencyHistogram() : counts_(BucketCount(), 0) {}

size_t LatencyHistogram::BucketIndex(uint64_t value) {
  if (value > kMaxValue) value = kMaxValue;
  if (value < kLinear) return static_cast<size_t>(value);
  // value is in [2^e, 2^(e+1)) with e >= kSubBucketBits + 1; the top
  // kSubBucketBits + 1 bits pick one of kSub buckets in that octave.
  const int e = HighestBit(value);
  const int shift = e - kSubBucketBits;
  const uint64_t sub = (value >> shift) - kSub;  // [0, kSub)
  return static_cast<size_t>(kLinear + (e - kSubBucketBits - 1) * kSub + sub);
}

uint64_t LatencyHistogram::BucketLow(size_t index) {
  if (index < kLinear) return index;
  const uint64_t octave = (index - kLinear) / kSub;  // 0 for [256, 512)
  const uint64_t sub = (index - kLinear) % kSub;
  const int shift = static_cast<int>(octave) + 1;
  return (kSub + sub) << shift;
}

uint64_t LatencyHistogram::BucketHigh(size_t index) {
  if (index < kLinear) return index;
  const uint64_t octave = (index - kLinear) / kSub;
  const int shift = static_cast<int>(octave) + 1;
  return BucketLow(index) + (uint64_t{1} << shift) - 1;
}

size_t LatencyHistogram::BucketCount() { return BucketIndex(kMaxValue) + 1; }

void LatencyHistogram::Record(uint64_t value) {
  if (value > kMaxValue) {
    ++saturated_;
    value = kMaxValue;
  }
  ++counts_[BucketIndex(value)];
  if (count_ == 0 || value < min_) min_ = value;
  if (value > max_) max_ = value;
  ++count_;
  sum_ += value;
}

void LatencyHistogram::Merge(const LatencyHistogram& other) {
  if (other.count_ == 0) return;
  for (size_t i = 0; i < counts_.size(); ++i) counts_[i] += other.counts_[i];
  min_ = count_ == 0 ? other.min_ : std::min(min_, other.min_);
  max_ = std::max(max_, other.max_);
  count_ += other.count_;
  saturated_ += other.saturated_;
  sum_ += other.sum_;
}

double LatencyHistogram::Mean() const {
  return count_ == 0 ? 0.0 : static_cast<double>(sum_ / count_);
}

uint64_t LatencyHistogram::Percentile(double percentile) const {
  if (count_ == 0) return 0;
  percentile = std::clamp(percentile, 0.0, 100.0);
  // The rank (1-based) of the value asked for; at least the first value.
  uint64_t rank = static_cast<uint64_t>(std::ceil(percentile / 100.0 * count_));
  rank = std::clamp<uint64_t>(rank, 1, count_);
  uint64_t seen = 0;
  for (size_t i = 0; i < counts_.size(); ++i) {
    seen += counts_[i];
    if (seen >= rank) return std::clamp(BucketHigh(i), min_, max_);
  }
  return max_;
}

}  // namespace kvstore::bench
