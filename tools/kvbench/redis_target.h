// RedisTarget: drives Redis (the peer of design §6) with hiredis's asynchronous
// API on a small epoll loop written here. `channels` connections share
// `concurrency` slots (so each pipelines concurrency/channels requests; with
// --channels equal to --concurrency it is redis-benchmark's non-pipelined
// -c N -P 1); one to nproc loop threads serve the connections, each reply
// starting its slot's next command. Batches are MGET / MSET.
#ifndef KVSTORE_TOOLS_KVBENCH_REDIS_TARGET_H_
#define KVSTORE_TOOLS_KVBENCH_REDIS_TARGET_H_

#include <memory>
#include <thread>
#include <vector>

#include "tools/kvbench/load_target.h"

namespace kvstore::bench {

class RedisTarget : public LoadTarget {
 public:
  explicit RedisTarget(const BenchConfig& config);
  ~RedisTarget() override;
  RedisTarget(const RedisTarget&) = delete;
  RedisTarget& operator=(const RedisTarget&) = delete;

  absl::Status Connect() override;
  absl::Status Preload() override;
  void Start(RunControl* control) override;
  void Tick() override {}
  bool Drain(absl::Duration grace) override;
  SlotStats Collect() override;

  class Loop;  // public for the C callbacks in the .cc; opaque here

 private:
  const BenchConfig config_;
  const KeyChooser keys_;
  const std::string value_;
  std::vector<std::unique_ptr<Loop>> loops_;
  std::vector<std::thread> threads_;
};

}  // namespace kvstore::bench

#endif  // KVSTORE_TOOLS_KVBENCH_REDIS_TARGET_H_
