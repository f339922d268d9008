// Metric primitives for the hot path, and the registry a scrape reads.
//
// Counters and histograms are updated with relaxed atomics only: no lock, no
// allocation. A histogram spreads its buckets over a few stripes (one cache
// line apart), each thread writing to its own, so that threads observing at
// once do not fight over one line; a read adds the stripes up. A read taken
// while others write is not a single instant (a bucket may be newer than the
// sum), which Prometheus tolerates.
//
// Everything else is collected when scraped: a collector reads the state the
// server already keeps (Store status, replication, router health) and writes
// it out, so nothing is counted twice.
#ifndef KVSTORE_COMMON_METRICS_METRICS_H_
#define KVSTORE_COMMON_METRICS_METRICS_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/metrics/exposition.h"

namespace kvstore {

// Upper bounds for latencies from 50 µs to 10 s (seconds).
std::vector<double> LatencyBuckets();
// Upper bounds for long operations (snapshots) from 10 ms to 10 min (seconds).
std::vector<double> LongOperationBuckets();

// A histogram with fixed bucket bounds. Thread-safe; Observe is lock-free.
class Histogram {
 public:
  // `bounds`: ascending, finite upper bounds; a +Inf bucket is implied.
  explicit Histogram(std::vector<double> bounds);
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  // Counts `value` in the first bucket whose bound is >= value (NaN: +Inf).
  void Observe(double value);
  void ObserveDuration(absl::Duration d) { Observe(absl::ToDoubleSeconds(d)); }

  HistogramData Read() const;

 private:
  static constexpr size_t kStripes = 4;
  // Per stripe: counts[bounds+1], then the sum (a double's bits).
  std::atomic<uint64_t>& Cell(size_t stripe, size_t i) const {
    return cells_[stripe * stride_ + i];
  }

  const std::vector<double> bounds_;
  const size_t stride_;  // Cells per stripe, rounded up to a cache line.
  const std::unique_ptr<std::atomic<uint64_t>[]> cells_;
};

// Counters keyed by label values, e.g. errors by {backend, code}. Add takes a
// mutex: for events off the fast path (errors), not for every request.
class CounterVec {
 public:
  explicit CounterVec(std::vector<std::string> label_names);
  CounterVec(const CounterVec&) = delete;
  CounterVec& operator=(const CounterVec&) = delete;

  // `label_values` has one entry per label name.
  void Add(const std::vector<std::string>& label_values, uint64_t delta = 1);
  // The count for those values (0 if never added).
  uint64_t Get(const std::vector<std::string>& label_values) const;
  // Declares counter family `name` and writes one sample per label set, in
  // label order.
  void Write(absl::string_view name, absl::string_view help, ExpositionWriter* out) const;

 private:
  const std::vector<std::string> label_names_;
  mutable absl::Mutex mu_;
  absl::btree_map<std::vector<std::string>, uint64_t> counts_ ABSL_GUARDED_BY(mu_);
};

// What a scrape returns: the output of every collector, in the order they
// were added. Thread-safe; collectors may run concurrently with each other
// (two scrapes at once) and must be thread-safe themselves.
class MetricsRegistry {
 public:
  using Collector = std::function<void(ExpositionWriter*)>;

  MetricsRegistry() = default;
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  // Whatever `collector` uses must outlive the registry's last Scrape.
  void AddCollector(Collector collector);
  std::string Scrape() const;

 private:
  mutable absl::Mutex mu_;
  std::vector<Collector> collectors_ ABSL_GUARDED_BY(mu_);
};

// process_cpu_seconds_total, process_resident_memory_bytes,
// process_virtual_memory_bytes, process_open_fds, process_start_time_seconds,
// from /proc/self (Linux); families it cannot read are left out.
void WriteProcessMetrics(ExpositionWriter* out);

}  // namespace kvstore

#endif  // KVSTORE_COMMON_METRICS_METRICS_H_
