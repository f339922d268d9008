#include "common/metrics/metrics.h"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "glog/logging.h"

namespace kvstore {
namespace {

constexpr size_t kCellsPerLine = 64 / sizeof(std::atomic<uint64_t>);

// Each thread keeps to one stripe, handed out in turn on first use.
size_t StripeOfThisThread(size_t stripes) {
  static std::atomic<size_t> next{0};
  thread_local const size_t mine = next.fetch_add(1, std::memory_order_relaxed);
  return mine % stripes;
}

uint64_t ToBits(double v) {
  uint64_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  return bits;
}

double FromBits(uint64_t bits) {
  double v;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

}  // namespace

std::vector<double> LatencyBuckets() {
  return {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
          0.05,    0.1,    0.25,    0.5,    1,     2.5,    5,     10};
}

std::vector<double> LongOperationBuckets() {
  return {0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600};
}

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)),
      stride_((bounds_.size() + 2 + kCellsPerLine - 1) / kCellsPerLine * kCellsPerLine),
      cells_(new std::atomic<uint64_t>[kStripes * stride_]) {
  CHECK(std::is_sorted(bounds_.begin(), bounds_.end())) << "histogram bounds must ascend";
  for (size_t i = 0; i < kStripes * stride_; ++i) cells_[i].store(0, std::memory_order_relaxed);
  for (size_t s = 0; s < kStripes; ++s) {
    Cell(s, bounds_.size() + 1).store(ToBits(0.0), std::memory_order_relaxed);
  }
}

void Histogram::Observe(double value) {
  const size_t bucket =
      std::isnan(value)
          ? bounds_.size()
          : static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), value) -
                                bounds_.begin());
  const size_t stripe = StripeOfThisThread(kStripes);
  Cell(stripe, bucket).fetch_add(1, std::memory_order_relaxed);
  // No fetch_add for double in C++17: a compare-exchange loop, on this
  // thread's stripe, so it rarely loops.
  std::atomic<uint64_t>& sum = Cell(stripe, bounds_.size() + 1);
  uint64_t old = sum.load(std::memory_order_relaxed);
  while (
      !sum.compare_exchange_weak(old, ToBits(FromBits(old) + value), std::memory_order_relaxed)) {
  }
}

HistogramData Histogram::Read() const {
  HistogramData data;
  data.bounds = bounds_;
  data.counts.assign(bounds_.size() + 1, 0);
  for (size_t s = 0; s < kStripes; ++s) {
    for (size_t i = 0; i <= bounds_.size(); ++i) {
      data.counts[i] += Cell(s, i).load(std::memory_order_relaxed);
    }
    data.sum += FromBits(Cell(s, bounds_.size() + 1).load(std::memory_order_relaxed));
  }
  return data;
}

CounterVec::CounterVec(std::vector<std::string> label_names)
    : label_names_(std::move(label_names)) {}

void CounterVec::Add(const std::vector<std::string>& label_values, uint64_t delta) {
  DCHECK_EQ(label_values.size(), label_names_.size());
  absl::MutexLock lock(&mu_);
  counts_[label_values] += delta;
}

uint64_t CounterVec::Get(const std::vector<std::string>& label_values) const {
  absl::MutexLock lock(&mu_);
  auto it = counts_.find(label_values);
  return it == counts_.end() ? 0 : it->second;
}

void CounterVec::Write(absl::string_view name, absl::string_view help,
                       ExpositionWriter* out) const {
  out->Family(name, help, MetricType::kCounter);
  absl::MutexLock lock(&mu_);
  for (const auto& [values, count] : counts_) {
    Labels labels;
    for (size_t i = 0; i < label_names_.size(); ++i) {
      labels.emplace_back(label_names_[i], values[i]);
    }
    out->Sample(name, labels, count);
  }
}

void MetricsRegistry::AddCollector(Collector collector) {
  absl::MutexLock lock(&mu_);
  collectors_.push_back(std::move(collector));
}

std::string MetricsRegistry::Scrape() const {
  std::vector<Collector> collectors;
  {
    absl::MutexLock lock(&mu_);
    collectors = collectors_;
  }
  ExpositionWriter out;
  for (const Collector& collect : collectors) collect(&out);
  return out.Finish();
}

void WriteProcessMetrics(ExpositionWriter* out) {
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  std::ifstream stat_file("/proc/self/stat");
  std::string stat((std::istreambuf_iterator<char>(stat_file)), std::istreambuf_iterator<char>());
  // Fields after the command name, which is in parentheses and may hold spaces.
  const size_t paren = stat.rfind(')');
  if (paren != std::string::npos && ticks > 0) {
    std::vector<absl::string_view> f =
        absl::StrSplit(absl::string_view(stat).substr(paren + 1), ' ', absl::SkipEmpty());
    // f[0] is field 3 (state): field N is f[N - 3].
    uint64_t utime = 0, stime = 0, start_ticks = 0, vsize = 0, rss_pages = 0;
    if (f.size() > 21 && absl::SimpleAtoi(f[11], &utime) && absl::SimpleAtoi(f[12], &stime) &&
        absl::SimpleAtoi(f[19], &start_ticks) && absl::SimpleAtoi(f[20], &vsize) &&
        absl::SimpleAtoi(f[21], &rss_pages)) {
      out->Family("process_cpu_seconds_total", "User and system CPU time spent, in seconds.",
                  MetricType::kCounter);
      out->Sample("process_cpu_seconds_total", {}, static_cast<double>(utime + stime) / ticks);
      out->Family("process_resident_memory_bytes", "Resident memory size in bytes.",
                  MetricType::kGauge);
      out->Sample("process_resident_memory_bytes", {},
                  static_cast<uint64_t>(static_cast<double>(rss_pages) * page));
      out->Family("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                  MetricType::kGauge);
      out->Sample("process_virtual_memory_bytes", {}, vsize);
      // Start time = boot time + ticks since boot.
      std::ifstream boot_file("/proc/stat");
      std::string line;
      while (std::getline(boot_file, line)) {
        uint64_t btime = 0;
        if (absl::StartsWith(line, "btime ") &&
            absl::SimpleAtoi(absl::string_view(line).substr(6), &btime)) {
          out->Family("process_start_time_seconds",
                      "Start time of the process since the Unix epoch, in seconds.",
                      MetricType::kGauge);
          out->Sample("process_start_time_seconds", {},
                      static_cast<double>(btime) + static_cast<double>(start_ticks) / ticks);
          break;
        }
      }
    }
  }
  if (DIR* dir = opendir("/proc/self/fd")) {
    int64_t fds = 0;
    while (const dirent* entry = readdir(dir)) {
      if (entry->d_name[0] != '.') ++fds;
    }
    closedir(dir);
    out->Family("process_open_fds", "Open file descriptors.", MetricType::kGauge);
    out->Sample("process_open_fds", {}, fds - 1);  // Less the one reading the directory.
  }
}

}  // namespace kvstore
