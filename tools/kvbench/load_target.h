// LoadTarget: one protocol kvbench can drive (kvstore gRPC, Redis). The main
// thread owns the clock and the phases; a target keeps `concurrency` requests
// in flight, each completion starting the next one, without a thread per
// request.
#ifndef KVSTORE_TOOLS_KVBENCH_LOAD_TARGET_H_
#define KVSTORE_TOOLS_KVBENCH_LOAD_TARGET_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "tools/kvbench/workload.h"

namespace kvstore::bench {

// The settings of one run, checked before any target sees them.
struct BenchConfig {
  std::string host;  // of the target
  int port = 0;
  Workload workload;
  Distribution distribution = Distribution::kUniform;
  uint64_t keyspace = 100000;
  uint64_t value_size = 100;
  uint64_t batch = 1;         // keys per call; 1 = unary Get/Set
  uint64_t concurrency = 64;  // calls in flight
  uint64_t channels = 4;      // gRPC channels or Redis connections
  uint64_t seed = 1;
  absl::Duration call_timeout = absl::Seconds(5);
  absl::Duration connect_timeout = absl::Seconds(5);
  // kvstore only: the WriteAck and ReadMode as proto enum numbers.
  int ack_mode = 0;
  uint32_t ack_replicas = 0;
  int read_mode = 0;
};

// Call order: Connect, Preload (optional), Start, Tick (repeatedly, from the
// main thread), Stop, Collect. Only Start's completions run on other threads.
class LoadTarget {
 public:
  virtual ~LoadTarget() = default;

  // Checks the target answers; an error here means "unreachable".
  virtual absl::Status Connect() = 0;
  // Writes every key of the key space (batches of many keys).
  virtual absl::Status Preload() = 0;
  // Starts `concurrency` request slots; they count into stats while
  // control->phase is kMeasure and stop issuing once it is kStop.
  virtual void Start(RunControl* control) = 0;
  // Main-thread housekeeping between progress lines (retries after errors).
  virtual void Tick() = 0;
  // Call after setting phase kStop: waits (bounded by `grace`) for the calls in
  // flight to finish. False if some did not.
  virtual bool Drain(absl::Duration grace) = 0;
  // Every slot's statistics, merged. Only after Drain.
  virtual SlotStats Collect() = 0;
};

}  // namespace kvstore::bench

#endif  // KVSTORE_TOOLS_KVBENCH_LOAD_TARGET_H_
