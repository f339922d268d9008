#include "tools/kvbench/workload.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kvstore::bench {

absl::StatusOr<Workload> ParseWorkload(const std::string& name) {
  if (name == "ycsb-a") return Workload{name, 0.5};
  if (name == "ycsb-b") return Workload{name, 0.95};
  if (name == "ycsb-c") return Workload{name, 1.0};
  if (name == "write-only") return Workload{name, 0.0};
  return absl::InvalidArgumentError(
      absl::StrCat("--workload is ycsb-a, ycsb-b, ycsb-c or write-only, not '", name, "'"));
}

absl::StatusOr<Distribution> ParseDistribution(const std::string& name) {
  if (name == "uniform") return Distribution::kUniform;
  if (name == "zipfian") return Distribution::kZipfian;
  return absl::InvalidArgumentError(
      absl::StrCat("--distribution is uniform or zipfian, not '", name, "'"));
}

std::string KeyName(uint64_t index) { return absl::StrFormat("key:%010d", index); }

void FormatKey(uint64_t index, std::string* out) {
  if (index >= 10'000'000'000ull) {  // wider than %010d: same text as StrFormat
    *out = KeyName(index);
    return;
  }
  out->resize(14);
  char* p = out->data();
  p[0] = 'k', p[1] = 'e', p[2] = 'y', p[3] = ':';
  for (int i = 13; i >= 4; --i) {
    p[i] = static_cast<char>('0' + index % 10);
    index /= 10;
  }
}

KeyChooser::KeyChooser(Distribution distribution, uint64_t keyspace)
    : distribution_(distribution), keyspace_(keyspace < 1 ? 1 : keyspace) {
  if (distribution_ == Distribution::kZipfian) {
    zipfian_ = std::make_unique<ZipfianGenerator>(keyspace_);
  }
}

uint64_t KeyChooser::Next(std::mt19937_64& rng) const {
  if (distribution_ == Distribution::kUniform) return rng() % keyspace_;
  return ScrambleRank(zipfian_->Sample(UniformDouble(rng)), keyspace_);
}

void SlotStats::Merge(const SlotStats& other) {
  latency.Merge(other.latency);
  ops += other.ops;
  calls += other.calls;
  for (const auto& [code, n] : other.errors) errors[code] += n;
}

uint64_t SlotStats::ErrorCount() const {
  uint64_t n = 0;
  for (const auto& [code, count] : errors) n += count;
  return n;
}

}  // namespace kvstore::bench
