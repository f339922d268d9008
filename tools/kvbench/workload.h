// What kvbench asks of a target, independent of the protocol: the settings of
// a run, which operation comes next and on which keys, and the per-slot
// statistics every target fills in the same way.
#ifndef KVSTORE_TOOLS_KVBENCH_WORKLOAD_H_
#define KVSTORE_TOOLS_KVBENCH_WORKLOAD_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tools/kvbench/latency_histogram.h"
#include "tools/kvbench/zipfian.h"

namespace kvstore::bench {

enum class Distribution { kUniform, kZipfian };

struct Workload {
  std::string name;      // ycsb-a, ycsb-b, ycsb-c, write-only
  double read_fraction;  // of calls
};

// ycsb-a (50 % reads / 50 % updates), ycsb-b (95/5), ycsb-c (reads only), write-only.
absl::StatusOr<Workload> ParseWorkload(const std::string& name);
absl::StatusOr<Distribution> ParseDistribution(const std::string& name);

// "key:%010d", as kv-load names keys, so a store filled by either tool serves both.
std::string KeyName(uint64_t index);
// Writes KeyName(index) into *out, reusing its buffer.
void FormatKey(uint64_t index, std::string* out);

// Draws key indexes in [0, keyspace). Uniform, or zipfian (scrambled, as YCSB).
// Thread-safe: Next() takes the caller's random generator.
class KeyChooser {
 public:
  KeyChooser(Distribution distribution, uint64_t keyspace);
  uint64_t Next(std::mt19937_64& rng) const;

 private:
  Distribution distribution_;
  uint64_t keyspace_;
  std::unique_ptr<ZipfianGenerator> zipfian_;  // only for kZipfian
};

// A uniform double in [0, 1) from 53 random bits.
inline double UniformDouble(std::mt19937_64& rng) {
  return static_cast<double>(rng() >> 11) * 0x1.0p-53;
}

// Whether the next operation is a read, by the workload's mix.
inline bool NextIsRead(const Workload& workload, std::mt19937_64& rng) {
  return workload.read_fraction >= 1.0 ||
         (workload.read_fraction > 0.0 && UniformDouble(rng) < workload.read_fraction);
}

// Run phases, switched by the main thread, read by every completion.
enum class Phase : int { kWarmup = 0, kMeasure = 1, kStop = 2 };

// Shared by the main thread and the targets.
struct RunControl {
  std::atomic<Phase> phase{Phase::kWarmup};
  // Successful ops (keys) completed so far, in every phase: for the progress line.
  std::atomic<uint64_t> completed_ops{0};
};

// What one request slot saw while measuring. Touched by one completion at a
// time (a slot has one call in flight), merged after the run.
struct SlotStats {
  LatencyHistogram latency;                // per successful call, µs
  uint64_t ops = 0;                        // keys read or written successfully
  uint64_t calls = 0;                      // calls that got an answer (success or not)
  std::map<std::string, uint64_t> errors;  // by code name; one per failed key

  void AddError(const std::string& code, uint64_t keys) { errors[code] += keys; }
  void Merge(const SlotStats& other);
  uint64_t ErrorCount() const;
};

}  // namespace kvstore::bench

#endif  // KVSTORE_TOOLS_KVBENCH_WORKLOAD_H_
