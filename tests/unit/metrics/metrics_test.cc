// Histogram buckets, sum and count; counters by label; the registry; and that
// concurrent updates are neither lost nor torn.
#include "common/metrics/metrics.h"

#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/unit/metrics/exposition_parser.h"

namespace kvstore {
namespace {

using ::kvstore::testing::ParseExposition;

TEST(HistogramTest, ValueOnABoundCountsInThatBucket) {
  Histogram h({1, 2, 5});
  h.Observe(0.5);  // le=1
  h.Observe(1);    // le=1 (bounds are inclusive)
  h.Observe(1.5);  // le=2
  h.Observe(5);    // le=5
  h.Observe(7);    // +Inf
  const HistogramData d = h.Read();
  EXPECT_EQ(d.counts, (std::vector<uint64_t>{2, 1, 1, 1}));
  EXPECT_DOUBLE_EQ(d.sum, 15);
}

TEST(HistogramTest, NanGoesToInfBucket) {
  Histogram h({1});
  h.Observe(std::nan(""));
  EXPECT_EQ(h.Read().counts, (std::vector<uint64_t>{0, 1}));
}

TEST(HistogramTest, DurationsAreSeconds) {
  Histogram h(LatencyBuckets());
  h.ObserveDuration(absl::Milliseconds(3));
  const HistogramData d = h.Read();
  EXPECT_DOUBLE_EQ(d.sum, 0.003);
  // 3 ms lands in the first bucket at or above it (0.005).
  for (size_t i = 0; i < d.bounds.size(); ++i) {
    EXPECT_EQ(d.counts[i], d.bounds[i] == 0.005 ? 1u : 0u) << "le=" << d.bounds[i];
  }
}

TEST(HistogramTest, ConcurrentObservationsAreAllCounted) {
  Histogram h({1, 10, 100});
  constexpr int kThreads = 8;
  constexpr int kEach = 20000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&h, t] {
      // Integer values: the sum is exact, so a lost update would show.
      for (int i = 0; i < kEach; ++i) h.Observe(static_cast<double>((i + t) % 4 * 10));
    });
  }
  for (std::thread& t : threads) t.join();
  const HistogramData d = h.Read();
  uint64_t count = 0;
  for (uint64_t c : d.counts) count += c;
  EXPECT_EQ(count, uint64_t{kThreads} * kEach);
  // Each thread observes 0, 10, 20, 30 equally often: mean 15.
  EXPECT_DOUBLE_EQ(d.sum, 15.0 * kThreads * kEach);
  EXPECT_EQ(d.counts[0], uint64_t{kThreads} * kEach / 4);  // 0
  EXPECT_EQ(d.counts[1], uint64_t{kThreads} * kEach / 4);  // 10
  EXPECT_EQ(d.counts[2], uint64_t{kThreads} * kEach / 2);  // 20, 30
}

TEST(CounterVecTest, CountsPerLabelSetAndWritesInOrder) {
  CounterVec errors({"backend", "code"});
  errors.Add({"b:2", "UNAVAILABLE"});
  errors.Add({"a:1", "UNAVAILABLE"}, 2);
  errors.Add({"b:2", "UNAVAILABLE"});
  EXPECT_EQ(errors.Get({"b:2", "UNAVAILABLE"}), 2u);
  EXPECT_EQ(errors.Get({"b:2", "OK"}), 0u);
  ExpositionWriter w;
  errors.Write("errors_total", "Errors.", &w);
  EXPECT_EQ(w.Finish(),
            "# HELP errors_total Errors.\n# TYPE errors_total counter\n"
            "errors_total{backend=\"a:1\",code=\"UNAVAILABLE\"} 2\n"
            "errors_total{backend=\"b:2\",code=\"UNAVAILABLE\"} 2\n");
}

TEST(CounterVecTest, ConcurrentAddsAreAllCounted) {
  CounterVec c({"k"});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&c, t] {
      for (int i = 0; i < 5000; ++i) c.Add({t % 2 == 0 ? "even" : "odd"});
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(c.Get({"even"}), 10000u);
  EXPECT_EQ(c.Get({"odd"}), 10000u);
}

TEST(MetricsRegistryTest, ScrapeRunsCollectorsInOrderEachTime) {
  MetricsRegistry registry;
  int scrapes = 0;
  registry.AddCollector([&](ExpositionWriter* w) {
    w->Family("scrapes", "Scrapes.", MetricType::kCounter);
    w->Sample("scrapes", {}, ++scrapes);
  });
  registry.AddCollector([](ExpositionWriter* w) {
    w->Family("second", "Second.", MetricType::kGauge);
    w->Sample("second", {}, 2);
  });
  EXPECT_EQ(ParseExposition(registry.Scrape()).Value("scrapes"), 1);
  const std::string text = registry.Scrape();
  EXPECT_EQ(ParseExposition(text).Value("scrapes"), 2);
  EXPECT_LT(text.find("scrapes"), text.find("second"));
}

TEST(ProcessMetricsTest, ReportsCpuMemoryFdsAndStartTime) {
  ExpositionWriter w;
  WriteProcessMetrics(&w);
  const auto parsed = ParseExposition(w.Finish());
  ASSERT_EQ(parsed.error, "");
  EXPECT_GT(parsed.Value("process_resident_memory_bytes").value_or(0), 1 << 20);
  EXPECT_GT(parsed.Value("process_virtual_memory_bytes").value_or(0), 1 << 20);
  EXPECT_GE(parsed.Value("process_cpu_seconds_total").value_or(-1), 0);
  EXPECT_GE(parsed.Value("process_open_fds").value_or(0), 3);  // stdin, stdout, stderr.
  const double start = parsed.Value("process_start_time_seconds").value_or(0);
  const double now = absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch());
  EXPECT_GT(start, now - 3600);
  EXPECT_LE(start, now + 1);
}

}  // namespace
}  // namespace kvstore
