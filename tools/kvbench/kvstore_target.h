// KvStoreTarget: drives a kvstore router, shard or replica over the public
// kvstore.v1.KeyValue API with gRPC's callback client API. Each of the
// `concurrency` slots has one call in flight; its completion (on a gRPC thread)
// records the result and starts the slot's next call, so no thread waits per
// request. Slots spread over `channels` channels, each its own connection.
#ifndef KVSTORE_TOOLS_KVBENCH_KVSTORE_TARGET_H_
#define KVSTORE_TOOLS_KVBENCH_KVSTORE_TARGET_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/security/credentials.h"
#include "grpcpp/channel.h"
#include "kvstore/v1/kv.grpc.pb.h"
#include "tools/kvbench/load_target.h"

namespace kvstore::bench {

class KvStoreTarget : public LoadTarget {
 public:
  // `security`: TLS and the bearer token (docs/security.md); default plaintext.
  explicit KvStoreTarget(const BenchConfig& config, const ClientSecurity& security = {});
  ~KvStoreTarget() override;
  KvStoreTarget(const KvStoreTarget&) = delete;
  KvStoreTarget& operator=(const KvStoreTarget&) = delete;

  absl::Status Connect() override;
  absl::Status Preload() override;
  void Start(RunControl* control) override;
  void Tick() override;
  bool Drain(absl::Duration grace) override;
  SlotStats Collect() override;

  // The channels (config.channels of them), for a target that shares them.
  std::shared_ptr<grpc::Channel> channel(size_t i) const { return channels_[i]; }
  kvstore::v1::KeyValue::Stub* stub(size_t i) const { return stubs_[i].get(); }

 private:
  struct Slot;

  // Starts the slot's next call. The slot must have none in flight.
  void Issue(Slot* slot);
  // Completion of the slot's call, on a gRPC callback thread.
  void OnDone(Slot* slot, const grpc::Status& status);

  const BenchConfig config_;
  const KeyChooser keys_;
  const std::string value_;
  std::vector<std::shared_ptr<grpc::Channel>> channels_;
  std::vector<std::unique_ptr<kvstore::v1::KeyValue::Stub>> stubs_;
  std::vector<std::unique_ptr<Slot>> slots_;
  RunControl* control_ = nullptr;

  absl::Mutex mu_;
  // Slots whose last call failed wait here for the next Tick rather than
  // retrying at once, so a target that is down is not hammered in a tight loop.
  std::vector<Slot*> parked_ ABSL_GUARDED_BY(mu_);
  // Slots with a call in flight or parked.
  uint64_t active_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace kvstore::bench

#endif  // KVSTORE_TOOLS_KVBENCH_KVSTORE_TARGET_H_
