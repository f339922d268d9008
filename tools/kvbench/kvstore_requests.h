// What kvbench's two kvstore targets (unary calls, Pipeline streams) share:
// filling a request of a slot's next operation and counting its answer.
#ifndef KVSTORE_TOOLS_KVBENCH_KVSTORE_REQUESTS_H_
#define KVSTORE_TOOLS_KVBENCH_KVSTORE_REQUESTS_H_

#include <chrono>
#include <cstdint>
#include <random>
#include <string>

#include "kvstore/v1/kv.pb.h"
#include "tools/kvbench/load_target.h"
#include "tools/kvbench/workload.h"

namespace kvstore::bench {

// A gRPC status code's name ("UNAVAILABLE"), as errors are counted.
std::string CodeName(int code);

// Fill a request with `config.batch` keys drawn from `keys` (and, for writes,
// `value`, the ack and read mode of `config`). A message reused from the
// slot's previous call keeps its buffers; a new one grows to size.
void FillGet(const BenchConfig& config, const KeyChooser& keys, std::mt19937_64& rng,
             kvstore::v1::GetRequest* request);
void FillSet(const BenchConfig& config, const KeyChooser& keys, const std::string& value,
             std::mt19937_64& rng, kvstore::v1::SetRequest* request);
void FillMultiGet(const BenchConfig& config, const KeyChooser& keys, std::mt19937_64& rng,
                  kvstore::v1::MultiGetRequest* request);
void FillMultiSet(const BenchConfig& config, const KeyChooser& keys, const std::string& value,
                  std::mt19937_64& rng, kvstore::v1::MultiSetRequest* request);

// Counts one answered request of `config.batch` keys: `code` is its status
// (0 = OK); for a batch, `multi_get` or `multi_set` (the other null) holds the
// per-key results, whose errors count per key. Keys done go to
// control->completed_ops; while measuring, the call, its latency and its
// errors go to *stats.
void CountAnswer(const BenchConfig& config, int code,
                 const kvstore::v1::MultiGetResponse* multi_get,
                 const kvstore::v1::MultiSetResponse* multi_set,
                 std::chrono::steady_clock::duration elapsed, RunControl* control,
                 SlotStats* stats);

}  // namespace kvstore::bench

#endif  // KVSTORE_TOOLS_KVBENCH_KVSTORE_REQUESTS_H_
